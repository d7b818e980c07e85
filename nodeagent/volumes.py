"""Pod volumes on the node: planned from the pod spec (pure), set up on the host, passed to CRI as
bind mounts, removed with the pod.

Layout: `<volume_dir>/<pod uid>/<volume name>/`. emptyDir is that directory (for `medium:
Memory` a tmpfs mounted on it, sized by `sizeLimit`); configMap, secret, downwardAPI and
projected volumes hold their files there, written the kubelet's way (AtomicWriter): the files
live in a timestamped directory `..<stamp>`, `..data` is a symlink to it and every top-level
name is a symlink through `..data`. An update writes a new stamped directory and renames a new
`..data` symlink over the old one, so a container reading the volume sees either all old or all
new files, never a mix; then the old directory is removed. hostPath volumes are the host path
itself, after the `type` check. A persistentVolumeClaim volume is its bound PersistentVolume's
directory (local or hostPath); a local-path volume's directory is made on first use (0777, as
rancher's provisioner makes it) and outlives the pod: it is removed only when the volume is
reclaimed (`reclaimable`: Released, policy Delete, provisioned here, inside this node's
local-path directory), after which the agent deletes the PersistentVolume object.

What must hold:
- `plan_files` and `plan_mounts` are pure: the same pod and objects give the same files and
  mounts; a missing non-optional ConfigMap/Secret/key raises ContainerConfigError (the container
  is not created until it appears), an optional one gives an empty volume;
- configMap/secret/downwardAPI/projected mounts are read-only, whatever the volumeMount says;
- a serviceAccountToken projection's file is the token the token manager holds (tokens.py);
  without one the volume is not ready; a renewed token is written like any other change, in
  one `..data` swap with the projection's other files;
- a disk emptyDir with a sizeLimit is measured (`disk_usage`, as du: allocated blocks, hard
  links once, not crossing mounts); over its limit, the pod is evicted (`empty_dir_over_limit`
  gives the kubelet's message); a `medium: Memory` one is a tmpfs of that size instead;
- a claim that is missing, being deleted or not Bound yet raises VolumeNotReady (the container
  waits in ContainerCreating until the PV controller binds it);
- every container attempt gets its own empty termination-message file, mounted at
  `terminationMessagePath`; what it holds when the container exits is `terminated.message`;
- a write that changes nothing leaves the volume untouched (no new `..data`), so refreshing on
  every sync is cheap and never disturbs readers;
- volumes survive an agent restart (they are plain directories and mounts on the host) and are
  removed only when the pod is gone from the node: mounts under the pod's directory are
  unmounted first, so removal never follows a mount into other data.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from nodeagent.envs import ConfigSource, ContainerConfigError
from skiff import downward, quantity, storage
from skiffpb.api.v1 import types_pb2 as t
from skiffpb.cri.v1 import api_pb2 as cri

log = logging.getLogger("nodeagent.volumes")

DATA_LINK = "..data"
TERMINATION_DIR = "..termination"  # not a valid volume name, so it never clashes with one
MAX_TERMINATION_MESSAGE = 4096  # bytes, as the kubelet reads
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048
FILE_SOURCES = ("config_map", "secret", "downward_api", "projected")
DEFAULT_MODE = 0o644
_PROPAGATION = {"": cri.PROPAGATION_PRIVATE, "None": cri.PROPAGATION_PRIVATE,
                "HostToContainer": cri.PROPAGATION_HOST_TO_CONTAINER,
                "Bidirectional": cri.PROPAGATION_BIDIRECTIONAL}

Files = dict[str, tuple[bytes, int]]  # relative path -> (content, mode)


@dataclass(frozen=True)
class HostPathProblem:
    message: str


class VolumeNotReady(ContainerConfigError):
    """The volume cannot be mounted yet (an unbound claim); the container stays ContainerCreating."""


class TokenSource(Protocol):
    """Where the node agent finds the service-account token of a projection (tokens.py)."""

    def token(self, pod: t.Pod, projection: t.ServiceAccountTokenProjection) -> str: ...


class ClaimSource(Protocol):
    """Where the node agent finds PersistentVolumeClaims and PersistentVolumes."""

    def claim(self, namespace: str, name: str) -> t.PersistentVolumeClaim | None: ...

    def persistent_volume(self, name: str) -> t.PersistentVolume | None: ...


def source_of(volume: t.Volume) -> str:
    for field in ("host_path", "empty_dir", "persistent_volume_claim", *FILE_SOURCES):
        if volume.HasField(field):
            return field
    return ""


# ---------------------------------------------------------------- pure: files of a volume

def _key_files(values: Mapping[str, bytes], items: list[t.KeyToPath], mode: int, *, optional: bool,
               what: str) -> Files:
    if not items:
        return {key: (value, mode) for key, value in values.items()}
    out: Files = {}
    for item in items:
        if item.key not in values:
            if optional:
                continue
            raise ContainerConfigError(f"configuration key {item.key} not found in {what}")
        out[item.path] = (values[item.key], item.mode if item.HasField("mode") else mode)
    return out


def _config_map(namespace: str, name: str, items: list[t.KeyToPath], mode: int, optional: bool,
                source: ConfigSource) -> Files:
    cm = source.config_map(namespace, name)
    if cm is None:
        if optional:
            return {}
        raise ContainerConfigError(f'configmap "{name}" not found')
    values = {**dict(cm.binary_data), **{k: v.encode() for k, v in cm.data.items()}}
    return _key_files(values, items, mode, optional=optional, what=f"ConfigMap {namespace}/{name}")


def _secret(namespace: str, name: str, items: list[t.KeyToPath], mode: int, optional: bool,
            source: ConfigSource) -> Files:
    secret = source.secret(namespace, name)
    if secret is None:
        if optional:
            return {}
        raise ContainerConfigError(f'secret "{name}" not found')
    return _key_files(dict(secret.data), items, mode, optional=optional, what=f"Secret {namespace}/{name}")


def _downward(pod: t.Pod, items: list[t.DownwardAPIVolumeFile], mode: int,
              node_allocatable: Mapping[str, str] | None) -> Files:
    out: Files = {}
    for item in items:
        if item.HasField("field_ref"):
            text = downward.field_value(pod, item.field_ref.field_path)
        else:
            ref = item.resource_field_ref
            container = next((c for c in pod.spec.containers if c.name == ref.container_name), None)
            if container is None:
                raise ContainerConfigError(f'resourceFieldRef: no container "{ref.container_name}" in the pod')
            text = downward.resource_value(container, ref.resource, ref.divisor, node_allocatable)
        out[item.path] = (text.encode(), item.mode if item.HasField("mode") else mode)
    return out


def _optional(msg: t.ConfigMapVolumeSource | t.SecretVolumeSource | t.ConfigMapProjection | t.SecretProjection,
              ) -> bool:
    return msg.HasField("optional") and msg.optional


def plan_files(pod: t.Pod, volume: t.Volume, source: ConfigSource, *,
               node_allocatable: Mapping[str, str] | None = None, tokens: TokenSource | None = None) -> Files:
    """The files of a configMap, secret, downwardAPI or projected volume (a serviceAccountToken
    projection's file is the token `tokens` holds; VolumeNotReady without one)."""
    ns = pod.metadata.namespace
    if volume.HasField("config_map"):
        v = volume.config_map
        mode = v.default_mode if v.HasField("default_mode") else DEFAULT_MODE
        return _config_map(ns, v.name, list(v.items), mode, _optional(v), source)
    if volume.HasField("secret"):
        s = volume.secret
        mode = s.default_mode if s.HasField("default_mode") else DEFAULT_MODE
        return _secret(ns, s.secret_name, list(s.items), mode, _optional(s), source)
    if volume.HasField("downward_api"):
        d = volume.downward_api
        mode = d.default_mode if d.HasField("default_mode") else DEFAULT_MODE
        return _downward(pod, list(d.items), mode, node_allocatable)
    if volume.HasField("projected"):
        p = volume.projected
        mode = p.default_mode if p.HasField("default_mode") else DEFAULT_MODE
        out: Files = {}
        for src in p.sources:
            if src.HasField("config_map"):
                out.update(_config_map(ns, src.config_map.name, list(src.config_map.items), mode,
                                       _optional(src.config_map), source))
            elif src.HasField("secret"):
                out.update(_secret(ns, src.secret.name, list(src.secret.items), mode, _optional(src.secret), source))
            elif src.HasField("downward_api"):
                out.update(_downward(pod, list(src.downward_api.items), mode, node_allocatable))
            elif src.HasField("service_account_token"):
                if tokens is None:
                    raise VolumeNotReady("this node agent requests no service-account tokens")
                # The projection's mode, as the kubelet's (0644 from admission: any container user reads it).
                out[src.service_account_token.path] = (tokens.token(pod, src.service_account_token).encode(), mode)
        return out
    raise ValueError(f'volume "{volume.name}" has no file source')


# ---------------------------------------------------------------- pure: mounts and hostPath checks

def plan_mounts(pod: t.Pod, container: t.Container, paths: Mapping[str, str]) -> list[cri.Mount]:
    """CRI bind mounts for a container's volumeMounts; `paths` maps volume name -> host path."""
    by_name = {v.name: v for v in pod.spec.volumes}
    out = []
    for m in container.volume_mounts:
        volume = by_name[m.name]
        host = paths[m.name]
        if m.sub_path:
            host = os.path.join(host, m.sub_path)
        readonly = m.read_only or source_of(volume) in FILE_SOURCES or (
            volume.HasField("persistent_volume_claim") and volume.persistent_volume_claim.read_only)
        out.append(cri.Mount(container_path=m.mount_path, host_path=host, readonly=readonly,
                             propagation=_PROPAGATION.get(m.mount_propagation, cri.PROPAGATION_PRIVATE)))
    return out


_TYPE_CHECKS = {
    "Directory": (stat.S_ISDIR, "a directory"),
    "DirectoryOrCreate": (stat.S_ISDIR, "a directory"),
    "File": (stat.S_ISREG, "a file"),
    "FileOrCreate": (stat.S_ISREG, "a file"),
    "Socket": (stat.S_ISSOCK, "a socket"),
    "CharDevice": (stat.S_ISCHR, "a character device"),
    "BlockDevice": (stat.S_ISBLK, "a block device"),
}


def check_host_path(path: str, type_: str, mode: int | None) -> str | None:
    """None when `path` (with st_mode `mode`, None if absent) fits hostPath `type`, else why not."""
    if not type_:
        return None  # no check, as in Kubernetes
    if mode is None:
        return None if type_.endswith("OrCreate") else f'hostPath type check failed: {path} does not exist'
    check, what = _TYPE_CHECKS[type_]
    return None if check(mode) else f"hostPath type check failed: {path} is not {what}"


def claim_volume(namespace: str, name: str, claims: ClaimSource) -> t.PersistentVolume:
    """The volume bound to claim `name`; VolumeNotReady when there is none (yet)."""
    pvc = claims.claim(namespace, name)
    if pvc is None:
        raise VolumeNotReady(f'persistentvolumeclaim "{name}" not found')
    if pvc.metadata.HasField("deletion_timestamp"):
        raise VolumeNotReady(f'persistentvolumeclaim "{name}" is being deleted')
    if pvc.status.phase != "Bound" or not pvc.spec.volume_name:
        raise VolumeNotReady(f'persistentvolumeclaim "{name}" is not bound yet')
    pv = claims.persistent_volume(pvc.spec.volume_name)
    if pv is None:
        raise VolumeNotReady(f'persistentvolume "{pvc.spec.volume_name}" not found')
    if not storage.volume_path(pv):
        raise ContainerConfigError(f'persistentvolume "{pv.metadata.name}": only local and hostPath volumes '
                                   "can be mounted")
    return pv


def _inside(path: str, directory: str) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(directory)
    return real != base and real.startswith(base.rstrip("/") + "/")


def reclaimable(pv: t.PersistentVolume, *, node_name: str, local_path_dir: str) -> bool:
    """Whether this node removes the volume's directory and then the PersistentVolume object."""
    return (bool(local_path_dir) and storage.provisioned_by_local_path(pv) and storage.volume_node(pv) == node_name
            and pv.status.phase == "Released" and pv.spec.persistent_volume_reclaim_policy == "Delete"
            and pv.spec.HasField("local") and _inside(pv.spec.local.path, local_path_dir))


def limited_empty_dirs(pod: t.Pod) -> list[t.Volume]:
    """The pod's disk emptyDirs with a sizeLimit (the ones the agent measures)."""
    return [v for v in pod.spec.volumes if v.HasField("empty_dir") and v.empty_dir.medium != "Memory"
            and v.empty_dir.size_limit]


def empty_dir_over_limit(pod: t.Pod, usage: Mapping[str, int]) -> str:
    """The eviction message for the first disk emptyDir whose usage (bytes, by volume) is over its
    sizeLimit, as the kubelet words it; "" when none is."""
    for v in limited_empty_dirs(pod):
        try:
            limit = quantity.to_bytes(v.empty_dir.size_limit)
        except quantity.QuantityError:
            continue
        if usage.get(v.name, 0) > limit:
            return f'Usage of EmptyDir volume "{v.name}" exceeds the limit "{v.empty_dir.size_limit}". '
    return ""


def disk_usage(path: str) -> int:
    """Bytes allocated under `path` (du -s -x): blocks of every file once, symlinks not followed."""
    try:
        device = os.lstat(path).st_dev
    except OSError:
        return 0
    seen: set[tuple[int, int]] = set()
    total = 0
    for base, dirs, names in os.walk(path):
        for name in [*names, *dirs]:
            try:
                st = os.lstat(os.path.join(base, name))
            except OSError:
                continue
            if st.st_dev != device or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(base, d)).st_dev == device]
    return total


def tmpfs_options(volume: t.EmptyDirVolumeSource) -> str:
    """mount -o options of a `medium: Memory` emptyDir (size from sizeLimit, else the kernel's default)."""
    opts = ["mode=0777"]
    if volume.size_limit:
        opts.append(f"size={quantity.to_bytes(volume.size_limit)}")
    return ",".join(opts)


def termination_message(written: bytes, *, policy: str, exit_code: int, log_tail: bytes) -> str:
    """terminated.message: what the container wrote (at most 4096 bytes); with FallbackToLogsOnError
    and nothing written, a failed container's last log lines (80 lines, 2048 bytes)."""
    if written:
        return written[:MAX_TERMINATION_MESSAGE].decode(errors="replace")
    if policy == "FallbackToLogsOnError" and exit_code != 0:
        lines = log_tail.splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
        return b"".join(lines)[-FALLBACK_LOG_BYTES:].decode(errors="replace")
    return ""


# ---------------------------------------------------------------- host side

def read_files(volume_dir: str) -> Files | None:
    """What the atomic writer last wrote into `volume_dir` (None when nothing was written yet)."""
    data = os.path.join(volume_dir, DATA_LINK)
    if not os.path.islink(data):
        return None
    root = os.path.realpath(data)
    out: Files = {}
    for base, _dirs, names in os.walk(root):
        for name in names:
            full = os.path.join(base, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, root)] = (f.read(), stat.S_IMODE(os.lstat(full).st_mode))
    return out


def write_atomic(volume_dir: str, files: Files, *, now: float | None = None) -> bool:
    """Make `volume_dir` hold exactly `files`, atomically; False when it already did."""
    if read_files(volume_dir) == files:
        return False
    os.makedirs(volume_dir, exist_ok=True)
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(now if now is not None else time.time()))
    new_dir = os.path.join(volume_dir, f"..{stamp}.{os.getpid()}.{time.monotonic_ns() % 10**9}")
    os.makedirs(new_dir)
    for rel, (content, mode) in files.items():
        full = os.path.join(new_dir, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(content)
        os.chmod(full, mode)
    os.chmod(new_dir, 0o755)
    data = os.path.join(volume_dir, DATA_LINK)
    old = os.path.realpath(data) if os.path.islink(data) else None
    tmp = os.path.join(volume_dir, "..data_tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.basename(new_dir), tmp)
    os.rename(tmp, data)  # the atomic switch: readers see all old or all new files
    tops = {rel.split("/", 1)[0] for rel in files}
    for top in tops:
        link = os.path.join(volume_dir, top)
        if not os.path.islink(link):
            os.symlink(os.path.join(DATA_LINK, top), link)
    for entry in os.listdir(volume_dir):
        full = os.path.join(volume_dir, entry)
        if entry.startswith(".."):
            continue
        if os.path.islink(full) and entry not in tops:
            os.unlink(full)  # a key that went away
    if old and old != os.path.realpath(new_dir):
        shutil.rmtree(old, ignore_errors=True)
    return True


def _mounts_under(path: str) -> list[str]:
    prefix = os.path.realpath(path).rstrip("/") + "/"
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mount_point = line.split()[4].replace("\\040", " ")
                if mount_point.startswith(prefix) or mount_point == prefix.rstrip("/"):
                    out.append(mount_point)
    except OSError:
        return []
    return sorted(out, key=len, reverse=True)


class VolumeManager:
    """Sets up, refreshes and removes the volumes of the pods on this node (see the module docstring)."""

    def __init__(self, volume_dir: str) -> None:
        self.volume_dir = volume_dir

    def pod_dir(self, uid: str) -> str:
        return os.path.join(self.volume_dir, uid)

    def setup(self, pod: t.Pod, source: ConfigSource, *, claims: ClaimSource | None = None,
              node_allocatable: Mapping[str, str] | None = None,
              tokens: TokenSource | None = None) -> dict[str, str]:
        """Make every volume of `pod` ready; volume name -> host path. Raises ContainerConfigError."""
        paths: dict[str, str] = {}
        for volume in pod.spec.volumes:
            kind = source_of(volume)
            if kind == "host_path":
                paths[volume.name] = self._host_path(volume.host_path)
                continue
            if kind == "persistent_volume_claim":
                if claims is None:
                    raise ContainerConfigError("this node agent cannot mount persistent volumes")
                pv = claim_volume(pod.metadata.namespace, volume.persistent_volume_claim.claim_name, claims)
                paths[volume.name] = self._claim_path(pv)
                continue
            path = os.path.join(self.pod_dir(pod.metadata.uid), volume.name)
            if kind == "empty_dir":
                os.makedirs(path, exist_ok=True)
                if volume.empty_dir.medium == "Memory" and not os.path.ismount(path):
                    _run(["mount", "-t", "tmpfs", "-o", tmpfs_options(volume.empty_dir), "tmpfs", path])
                else:
                    os.chmod(path, 0o777)  # as the kubelet makes emptyDir: any container user may write
            else:
                write_atomic(path, plan_files(pod, volume, source, node_allocatable=node_allocatable,
                                              tokens=tokens))
            paths[volume.name] = path
        return paths

    def prepare_sub_paths(self, pod: t.Pod, container: t.Container, paths: Mapping[str, str]) -> None:
        """A subPath of an emptyDir or hostPath that does not exist yet is created as a directory."""
        by_name = {v.name: v for v in pod.spec.volumes}
        for m in container.volume_mounts:
            if m.sub_path and source_of(by_name[m.name]) in ("empty_dir", "host_path", "persistent_volume_claim"):
                os.makedirs(os.path.join(paths[m.name], m.sub_path), exist_ok=True)

    def refresh(self, pod: t.Pod, source: ConfigSource, *, node_allocatable: Mapping[str, str] | None = None,
                tokens: TokenSource | None = None) -> None:
        """Rewrite changed file volumes of a running pod (a renewed token too); a missing object
        (or token) keeps the last content."""
        for volume in pod.spec.volumes:
            if source_of(volume) not in FILE_SOURCES:
                continue
            path = os.path.join(self.pod_dir(pod.metadata.uid), volume.name)
            if not os.path.isdir(path):
                continue
            try:
                if write_atomic(path, plan_files(pod, volume, source, node_allocatable=node_allocatable,
                                                 tokens=tokens)):
                    log.info("pod %s/%s: volume %s updated", pod.metadata.namespace, pod.metadata.name, volume.name)
            except (ContainerConfigError, downward.DownwardError) as exc:
                log.debug("pod %s: volume %s not refreshed: %s", pod.metadata.name, volume.name, exc)

    def read_file(self, uid: str, volume: str, path: str) -> bytes | None:
        """What file `path` of a pod's file volume holds now (None: nothing yet)."""
        try:
            with open(os.path.join(self.pod_dir(uid), volume, DATA_LINK, path), "rb") as f:
                return f.read()
        except OSError:
            return None

    def _claim_path(self, pv: t.PersistentVolume) -> str:
        if storage.provisioned_by_local_path(pv):
            path = pv.spec.local.path
            if not os.path.isdir(path):
                os.makedirs(path, exist_ok=True)
                os.chmod(path, 0o777)  # any container user may write, as the provisioner's helper makes it
            return path
        if pv.spec.HasField("host_path"):
            return self._host_path(pv.spec.host_path)
        if not os.path.isdir(pv.spec.local.path):
            raise ContainerConfigError(f'persistentvolume "{pv.metadata.name}": local path {pv.spec.local.path} '
                                       "does not exist on this node")
        return pv.spec.local.path

    @staticmethod
    def reclaim(pv: t.PersistentVolume) -> None:
        """Remove a reclaimable local-path volume's directory (the caller checked `reclaimable`)."""
        shutil.rmtree(pv.spec.local.path, ignore_errors=True)
        if os.path.exists(pv.spec.local.path):
            raise OSError(f"could not remove {pv.spec.local.path}")

    @staticmethod
    def _host_path(src: t.HostPathVolumeSource) -> str:
        path, type_ = src.path, src.type if src.HasField("type") else ""
        try:
            mode: int | None = os.stat(path).st_mode
        except FileNotFoundError:
            mode = None
        if mode is None and type_ == "DirectoryOrCreate":
            os.makedirs(path, mode=0o755, exist_ok=True)
        elif mode is None and type_ == "FileOrCreate":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a"):
                pass
            os.chmod(path, 0o644)
        problem = check_host_path(path, type_, mode)
        if problem:
            raise ContainerConfigError(problem)
        return path

    def empty_dir_usage(self, pod: t.Pod) -> dict[str, int]:
        """Bytes used by each of the pod's limited disk emptyDirs."""
        return {v.name: disk_usage(os.path.join(self.pod_dir(pod.metadata.uid), v.name))
                for v in limited_empty_dirs(pod)}

    def termination_file(self, uid: str, container: str, attempt: int) -> str:
        return os.path.join(self.pod_dir(uid), TERMINATION_DIR, f"{container}-{attempt}")

    def termination_mount(self, pod: t.Pod, container: t.Container, attempt: int) -> cri.Mount:
        """An empty host file bind-mounted at terminationMessagePath, for the container to write into."""
        path = self.termination_file(pod.metadata.uid, container.name, attempt)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb"):
            pass
        os.chmod(path, 0o666)  # any container user may write its message
        return cri.Mount(container_path=container.termination_message_path, host_path=path)

    def teardown(self, uid: str) -> None:
        """Remove the pod's volumes: unmount what is mounted under its directory, then delete it."""
        root = self.pod_dir(uid)
        if not os.path.isdir(root):
            return
        for mount_point in _mounts_under(root):
            _run(["umount", mount_point])
        if _mounts_under(root):
            log.warning("pod %s: mounts remain under %s; not removing it", uid, root)
            return
        shutil.rmtree(root, ignore_errors=True)

    def pod_uids(self) -> list[str]:
        try:
            return sorted(os.listdir(self.volume_dir))
        except FileNotFoundError:
            return []


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(f"{' '.join(cmd)}: {done.stderr.strip() or done.returncode}")
