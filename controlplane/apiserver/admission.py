"""Namespace admission: LimitRange defaults and bounds, ResourceQuota limits. Pure functions; the
registry gives them the namespace's LimitRanges, ResourceQuotas and current objects.

What must hold, as Kubernetes' LimitRanger and ResourceQuota admission plugins:
- LimitRange (type Container): a container without a limit gets `default`; without a request
  gets `defaultRequest`, else its (possibly defaulted) limit; then every container must lie
  within `min`/`max` (requests and limits) and limit/request ≤ `maxLimitRequestRatio`.
  Type Pod: the sums over the pod's containers must lie within `min`/`max`. Defaults never
  replace a value the user gave.
- ResourceQuota: creating an object is refused when, for any resource in a quota's `hard`, the
  namespace's usage plus what the object adds would exceed it. Pods count `pods`, `requests.cpu`
  (also `cpu`), `requests.memory` (also `memory`), `limits.cpu`, `limits.memory`,
  `requests.ephemeral-storage`, `limits.ephemeral-storage`; a finished pod (Succeeded/Failed) or
  one being deleted counts nothing; every namespaced object counts `count/<resource>` (and
  `<resource>` for the core kinds Kubernetes names so). A quota with compute `hard` limits makes
  such requests/limits mandatory on new pods, as in Kubernetes.
- Usage (what each object adds) is `skiff/quota.py`, shared with the quota controller, and is
  computed from a consistent List at admission time. An admitted create is charged to every
  quota whose `hard` names something it adds (`charged_quotas`: status.used raised by what it
  adds); the registry writes those quotas in the create's own transaction, guarded by their
  resourceVersions, so creates racing on one or several api-servers serialise through the
  quota object as in Kubernetes (whose admission updates status.used with the quota's
  resourceVersion before admitting), and a create that is refused or fails charges nothing.
- Storage (Kubernetes' DefaultStorageClass and StorageObjectInUseProtection plugins): a new
  claim without storageClassName gets the default class (none when there is no default); a
  new claim gets the `kubernetes.io/pvc-protection` finalizer and a new volume
  `kubernetes.io/pv-protection`, which the persistent volume controller removes once no pod
  uses the claim (no claim is bound to the volume).
- ServiceAccount (Kubernetes' ServiceAccount admission plugin, its token-volume part): a new pod
  whose automountServiceAccountToken (the pod's if set, else its ServiceAccount's, else true)
  is not false gets, in every container and init container without a mount at
  /var/run/secrets/kubernetes.io/serviceaccount, a read-only mount there of the projected volume
  `kube-api-access-<5 random characters>` (a serviceAccountToken `token` of 3607 s, the
  `kube-root-ca.crt` ConfigMap's `ca.crt`, the pod's namespace as `namespace`); the volume is
  added only when some container mounts it, and an existing `kube-api-access-*` volume is
  reused. Unlike Kubernetes, a pod whose ServiceAccount does not exist (yet) is admitted (as if
  the account did not say): the node agent's token request fails until it exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction

from google.protobuf.message import Message

from skiff import errors, kinds, quantity, serviceaccounts, storage
from skiff.convert import FieldError
from skiff.quota import POD_RESOURCES, fmt, usage
from skiffpb.api.v1 import types_pb2 as t


def _q(text: str) -> Fraction:
    return quantity.parse(text)


# ---------------------------------------------------------------- LimitRange

def apply_limit_ranges(pod: t.Pod, ranges: Sequence[t.LimitRange]) -> list[FieldError]:
    """Default the pod's container resources in place from `ranges`; the bounds it violates."""
    problems: list[FieldError] = []
    items = [(lr.metadata.name, item) for lr in ranges for item in lr.spec.limits]
    for _, item in items:
        if (item.type or "Container") != "Container":
            continue
        for c in pod.spec.containers:
            for name, value in item.default.items():
                if name not in c.resources.limits:
                    c.resources.limits[name] = value
            for name, value in item.default_request.items():
                if name not in c.resources.requests:
                    c.resources.requests[name] = value
            for name, value in c.resources.limits.items():
                if name not in c.resources.requests:
                    c.resources.requests[name] = value
    for lr_name, item in items:
        kind = item.type or "Container"
        if kind == "Container":
            for i, c in enumerate(pod.spec.containers):
                where = f"spec.containers[{i}].resources"
                problems += _bounds(lr_name, kind, where, item, dict(c.resources.requests), dict(c.resources.limits))
        elif kind == "Pod":
            requests = _sum(c.resources.requests for c in pod.spec.containers)
            limits = _sum(c.resources.limits for c in pod.spec.containers)
            problems += _bounds(lr_name, kind, "spec.containers[*].resources", item,
                                {k: fmt(k, v) for k, v in requests.items()}, {k: fmt(k, v) for k, v in limits.items()})
    return problems


def _sum(values: Iterable[Mapping[str, str]]) -> dict[str, Fraction]:
    out: dict[str, Fraction] = {}
    for m in values:
        for k, v in m.items():
            out[k] = out.get(k, Fraction(0)) + _q(v)
    return out


def _bounds(lr_name: str, kind: str, where: str, item: t.LimitRangeItem, requests: Mapping[str, str],
            limits: Mapping[str, str]) -> list[FieldError]:
    out = []
    for name, low in item.min.items():
        for what, values in (("requests", requests), ("limits", limits)):
            if name in values and _q(values[name]) < _q(low):
                out.append(FieldError(f"{where}.{what}.{name}", f"minimum {name} usage per {kind} is {low}, "
                                      f"but {what[:-1]} is {values[name]} (LimitRange {lr_name})"))
        if name not in requests and name not in limits:
            out.append(FieldError(f"{where}.requests.{name}", f"minimum {name} usage per {kind} is {low}, "
                                  f"but no request is set (LimitRange {lr_name})"))
    for name, high in item.max.items():
        if name not in limits:
            out.append(FieldError(f"{where}.limits.{name}", f"maximum {name} usage per {kind} is {high}, "
                                  f"but no limit is set (LimitRange {lr_name})"))
        elif _q(limits[name]) > _q(high):
            out.append(FieldError(f"{where}.limits.{name}", f"maximum {name} usage per {kind} is {high}, "
                                  f"but limit is {limits[name]} (LimitRange {lr_name})"))
    for name, ratio in item.max_limit_request_ratio.items():
        if name in limits and name in requests and _q(requests[name]) > 0:
            actual = _q(limits[name]) / _q(requests[name])
            if actual > _q(ratio):
                out.append(FieldError(f"{where}.limits.{name}", f"{name} max limit to request ratio per {kind} is "
                                      f"{ratio}, but provided ratio is {float(actual):g} (LimitRange {lr_name})"))
    return out


# ---------------------------------------------------------------- ResourceQuota

def quota_delta(obj: Message, old: Message | None = None) -> dict[str, Fraction]:
    """What writing `obj` adds to its namespace's usage: all of its usage on a create; on an
    update (`old`), only what grows (Kubernetes' quota admission on UPDATE charges increases; a
    decrease is the quota controller's to count)."""
    adds = usage(obj)
    if old is None:
        return adds
    before = usage(old)
    return {name: value - before.get(name, Fraction(0)) for name, value in adds.items()
            if value > before.get(name, Fraction(0))}


def check_quotas(obj: Message, quotas: Sequence[t.ResourceQuota], used: Mapping[str, Fraction],
                 old: Message | None = None) -> None:
    """Raise ForbiddenError when creating `obj` (updating `old` to it) would exceed one of
    `quotas` (Kubernetes' message); `used` is the namespace's usage (with `old`, if any)."""
    adds = quota_delta(obj, old)
    for quota in quotas:
        hard = quota.spec.hard
        if isinstance(obj, t.Pod) and old is None:
            missing = sorted({name for name, _, _ in POD_RESOURCES if name in hard and name not in adds
                              and name.split(".")[-1] in ("cpu", "memory")})
            if missing:
                raise errors.ForbiddenError(f'pods "{obj.metadata.name}" is forbidden: failed quota: '
                                            f"{quota.metadata.name}: must specify {','.join(missing)}")
        over = [name for name in sorted(hard) if name in adds
                and used.get(name, Fraction(0)) + adds[name] > _q(hard[name])]
        if over:
            kind = kinds.of_message(obj)
            name = obj.metadata.name  # type: ignore[attr-defined]
            req = ",".join(f"{n}={fmt(n, adds[n])}" for n in over)
            use = ",".join(f"{n}={fmt(n, used.get(n, Fraction(0)))}" for n in over)
            lim = ",".join(f"{n}={hard[n]}" for n in over)
            raise errors.ForbiddenError(f'{kind.resource} "{name}" is forbidden: exceeded quota: '
                                        f"{quota.metadata.name}, requested: {req}, used: {use}, limited: {lim}")


def charged_quotas(obj: Message, quotas: Sequence[t.ResourceQuota],
                   used: Mapping[str, Fraction], old: Message | None = None) -> list[t.ResourceQuota]:
    """The quotas creating `obj` (updating `old` to it) is charged to, copies with status.hard =
    spec.hard and status.used = `used` + what the write adds (quota_delta) for each resource both
    name (other entries of status.used kept); call check_quotas first. `used` is the namespace's
    usage without `obj` (with `old`)."""
    adds = quota_delta(obj, old)
    out = []
    for quota in quotas:
        names = sorted(name for name in quota.spec.hard if name in adds)
        if not names:
            continue
        charged = t.ResourceQuota()
        charged.CopyFrom(quota)
        charged.status.hard.clear()
        charged.status.hard.update(quota.spec.hard)
        for name in names:
            charged.status.used[name] = fmt(name, used.get(name, Fraction(0)) + adds[name])
        out.append(charged)
    return out


def default_storage_class(pvc: t.PersistentVolumeClaim, classes: Sequence[t.StorageClass]) -> None:
    """Give a claim that names no class the default class, when there is one."""
    if pvc.spec.HasField("storage_class_name"):
        return
    default = storage.default_class(classes)
    if default is not None:
        pvc.spec.storage_class_name = default.metadata.name


def protect_claim(pvc: t.PersistentVolumeClaim) -> None:
    if storage.PVC_PROTECTION not in pvc.metadata.finalizers:
        pvc.metadata.finalizers.append(storage.PVC_PROTECTION)


def protect_volume(pv: t.PersistentVolume) -> None:
    if storage.PV_PROTECTION not in pv.metadata.finalizers:
        pv.metadata.finalizers.append(storage.PV_PROTECTION)


# ---------------------------------------------------------------- ServiceAccount

def should_automount(pod: t.Pod, account: t.ServiceAccount | None) -> bool:
    """automountServiceAccountToken: the pod's if set, else its ServiceAccount's, else true."""
    if pod.spec.HasField("automount_service_account_token"):
        return pod.spec.automount_service_account_token
    if account is not None and account.HasField("automount_service_account_token"):
        return account.automount_service_account_token
    return True


def api_access_volume(name: str) -> t.Volume:
    """The projected volume the admission plugin adds (upstream's, field for field)."""
    volume = t.Volume(name=name)
    projected = volume.projected
    projected.default_mode = 0o644
    projected.sources.add().service_account_token.CopyFrom(t.ServiceAccountTokenProjection(
        path=serviceaccounts.TOKEN_FILE, expiration_seconds=serviceaccounts.ADMISSION_TOKEN_EXPIRATION))
    projected.sources.add().config_map.CopyFrom(t.ConfigMapProjection(
        name=serviceaccounts.ROOT_CA_CONFIGMAP,
        items=[t.KeyToPath(key=serviceaccounts.ROOT_CA_KEY, path=serviceaccounts.CA_FILE)]))
    projected.sources.add().downward_api.items.add(
        path=serviceaccounts.NAMESPACE_FILE,
        field_ref=t.ObjectFieldSelector(api_version="v1", field_path="metadata.namespace"))
    return volume


def mount_service_account_token(pod: t.Pod, account: t.ServiceAccount | None, suffix: str) -> None:
    """Add the API-access volume and its mounts to a new pod in place (see the module docstring);
    `suffix` (5 random characters) names a new volume."""
    if not should_automount(pod, account):
        return
    name = next((v.name for v in pod.spec.volumes if v.name.startswith(serviceaccounts.API_ACCESS_PREFIX)), "")
    has_volume = bool(name)
    name = name or serviceaccounts.API_ACCESS_PREFIX + suffix
    needed = False
    for container in (*pod.spec.init_containers, *pod.spec.containers):
        if any(m.mount_path == serviceaccounts.TOKEN_MOUNT_PATH for m in container.volume_mounts):
            continue
        container.volume_mounts.add(name=name, read_only=True, mount_path=serviceaccounts.TOKEN_MOUNT_PATH)
        needed = True
    if needed and not has_volume:
        pod.spec.volumes.append(api_access_volume(name))
