"""Defaults the api-server fills in before validating and storing an object (as Kubernetes does).

`apply_defaults(obj)` sets every unset field that has a default, in place, and nothing else:
a value the user gave is never changed, and applying it twice changes nothing the second
time (so an unchanged manifest re-applied is a no-op). Pure: no clock, no I/O.

Defaults, by kind (Kubernetes' values):
- every object: apiVersion and kind;
- Pod (and pod templates): restartPolicy Always, terminationGracePeriodSeconds 30,
  schedulerName default-scheduler, dnsPolicy ClusterFirst, enableServiceLinks true,
  container terminationMessagePath /dev/termination-log and
  terminationMessagePolicy File, container imagePullPolicy by tag (Always for `:latest`
  or no tag, else IfNotPresent), port protocol TCP, probe timeout 1 / period 10 /
  success 1 / failure 3, httpGet scheme HTTP and path /;
- Deployment: replicas 1, strategy RollingUpdate with maxUnavailable 25% and maxSurge 25%,
  revisionHistoryLimit 10, progressDeadlineSeconds 600; ReplicaSet: replicas 1;
- Service: type ClusterIP, sessionAffinity None (ClientIP: timeout 10800 s), port protocol
  TCP, targetPort = port, externalTrafficPolicy Cluster for NodePort (an ExternalName
  Service gets no ClusterIP);
- Endpoints: port protocol TCP; Namespace: phase Active; Event: type Normal, count 1;
- Pod (not templates): serviceAccountName `default`, a container's requests default to its
  limits; pods and templates: configMap/secret/downwardAPI/projected volumes
  defaultMode 0644, a serviceAccountToken projection's expirationSeconds 3600;
- Secret: type Opaque; `stringData` is merged into `data` and cleared (it is write-only,
  as in Kubernetes: a stringData key wins over the same data key).
- Job: parallelism 1, completions 1 (unless parallelism was given without completions: a work
  queue), backoffLimit 6, completionMode NonIndexed, suspend false, restartPolicy left to the
  user (validation requires OnFailure or Never); CronJob: concurrencyPolicy Allow, suspend
  false, successfulJobsHistoryLimit 3, failedJobsHistoryLimit 1;
- Pod init containers: as containers (terminationMessagePath/Policy, imagePullPolicy, probes);
- StorageClass: reclaimPolicy Delete, volumeBindingMode Immediate; PersistentVolume:
  persistentVolumeReclaimPolicy Retain, volumeMode Filesystem; PersistentVolumeClaim (and a
  StatefulSet's volumeClaimTemplates): volumeMode Filesystem; StatefulSet:
  persistentVolumeClaimRetentionPolicy Retain/Retain. (A claim without storageClassName is
  given the default class by the persistent volume controller, not here: defaults read nothing.)
- DaemonSet: updateStrategy RollingUpdate with maxUnavailable 1 and maxSurge 0,
  revisionHistoryLimit 10; StatefulSet: replicas 1, podManagementPolicy OrderedReady,
  updateStrategy RollingUpdate with partition 0, revisionHistoryLimit 10.

`default_tolerations(spec, ...)` is Kubernetes' DefaultTolerationSeconds admission, applied to
a Pod when it is created (never on update): tolerations of the node lifecycle's NoExecute
taints `node.kubernetes.io/not-ready` and `unreachable` for 300 s (the api-server's
--default-not-ready-toleration-seconds / --default-unreachable-toleration-seconds), each added
only when the pod has no toleration of that taint already (an empty key or effect matches).
"""

from __future__ import annotations

from google.protobuf.message import Message

from skiff import defaults as skiff_defaults
from skiff import kinds, networkpolicy, serviceaccounts, taints
from skiffpb.api.v1 import types_pb2 as t

GRACE_PERIOD_SECONDS = 30
DEFAULT_TOLERATION_SECONDS = 300
DEFAULT_SCHEDULER = "default-scheduler"
SESSION_AFFINITY_TIMEOUT = 10800


def image_pull_policy(image: str) -> str:
    """Always for `:latest` or an untagged image (unless pinned by digest), else IfNotPresent."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _probe(p: t.Probe) -> None:
    if not p.timeout_seconds:
        p.timeout_seconds = 1
    if not p.period_seconds:
        p.period_seconds = 10
    if not p.success_threshold:
        p.success_threshold = 1
    if not p.failure_threshold:
        p.failure_threshold = 3
    if p.HasField("http_get"):
        if not p.http_get.scheme:
            p.http_get.scheme = "HTTP"
        if not p.http_get.path:
            p.http_get.path = "/"


DEFAULT_MODE = 0o644
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_SERVICE_ACCOUNT = "default"


def _volumes(spec: t.PodSpec) -> None:
    for v in spec.volumes:
        for field in ("config_map", "secret", "downward_api", "projected"):
            if v.HasField(field) and not getattr(v, field).HasField("default_mode"):
                getattr(v, field).default_mode = DEFAULT_MODE
        for src in v.projected.sources:
            if src.HasField("service_account_token") and not src.service_account_token.HasField("expiration_seconds"):
                src.service_account_token.expiration_seconds = serviceaccounts.DEFAULT_TOKEN_EXPIRATION


def _requests_from_limits(spec: t.PodSpec) -> None:
    for c in (*spec.containers, *spec.init_containers):
        for name, value in c.resources.limits.items():
            if name not in c.resources.requests:
                c.resources.requests[name] = value


def pod_spec(spec: t.PodSpec) -> None:
    _volumes(spec)
    if not spec.restart_policy:
        spec.restart_policy = "Always"
    if not spec.HasField("termination_grace_period_seconds"):
        spec.termination_grace_period_seconds = GRACE_PERIOD_SECONDS
    if not spec.scheduler_name:
        spec.scheduler_name = DEFAULT_SCHEDULER
    if not spec.dns_policy:
        spec.dns_policy = "ClusterFirst"
    if not spec.HasField("enable_service_links"):
        spec.enable_service_links = True
    for c in (*spec.containers, *spec.init_containers):
        if not c.termination_message_path:
            c.termination_message_path = TERMINATION_MESSAGE_PATH
        if not c.termination_message_policy:
            c.termination_message_policy = "File"
        if not c.image_pull_policy:
            c.image_pull_policy = image_pull_policy(c.image)
        for port in c.ports:
            if not port.protocol:
                port.protocol = "TCP"
        for name in ("liveness_probe", "readiness_probe", "startup_probe"):
            if c.HasField(name):
                _probe(getattr(c, name))
    for tol in spec.tolerations:
        if not tol.operator:
            tol.operator = "Equal"


def default_tolerations(spec: t.PodSpec, *, not_ready_seconds: int = DEFAULT_TOLERATION_SECONDS,
                        unreachable_seconds: int = DEFAULT_TOLERATION_SECONDS) -> None:
    """Add the not-ready/unreachable NoExecute tolerations a pod lacks (see the module docstring)."""
    for key, seconds in ((taints.NOT_READY, not_ready_seconds), (taints.UNREACHABLE, unreachable_seconds)):
        if any(tol.key in ("", key) and tol.effect in ("", taints.NO_EXECUTE) for tol in spec.tolerations):
            continue
        spec.tolerations.add(key=key, operator="Exists", effect=taints.NO_EXECUTE, toleration_seconds=seconds)


def _deployment(d: t.Deployment) -> None:
    spec = d.spec
    if not spec.HasField("replicas"):
        spec.replicas = skiff_defaults.REPLICAS
    if not spec.strategy.type:
        spec.strategy.type = "RollingUpdate"
    if spec.strategy.type == "RollingUpdate":
        ru = spec.strategy.rolling_update
        if not ru.HasField("max_unavailable"):
            ru.max_unavailable.str_val = "25%"
        if not ru.HasField("max_surge"):
            ru.max_surge.str_val = "25%"
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = 10
    if not spec.HasField("progress_deadline_seconds"):
        spec.progress_deadline_seconds = 600
    pod_spec(spec.template.spec)


def _replica_set(rs: t.ReplicaSet) -> None:
    if not rs.spec.HasField("replicas"):
        rs.spec.replicas = skiff_defaults.REPLICAS
    pod_spec(rs.spec.template.spec)


def _job_spec(spec: t.JobSpec) -> None:
    if not spec.HasField("completions") and not spec.HasField("parallelism"):
        spec.completions = 1
    if not spec.HasField("parallelism"):
        spec.parallelism = 1
    if not spec.HasField("backoff_limit"):
        spec.backoff_limit = 6
    if not spec.completion_mode:
        spec.completion_mode = "NonIndexed"
    if not spec.HasField("suspend"):
        spec.suspend = False
    restart = spec.template.spec.restart_policy
    pod_spec(spec.template.spec)
    # A Job's pods must not restart forever: no Always default, the user names the policy.
    spec.template.spec.restart_policy = restart


def _cron_job(cj: t.CronJob) -> None:
    spec = cj.spec
    if not spec.concurrency_policy:
        spec.concurrency_policy = "Allow"
    if not spec.HasField("suspend"):
        spec.suspend = False
    if not spec.HasField("successful_jobs_history_limit"):
        spec.successful_jobs_history_limit = 3
    if not spec.HasField("failed_jobs_history_limit"):
        spec.failed_jobs_history_limit = 1
    _job_spec(spec.job_template.spec)


def _daemon_set(ds: t.DaemonSet) -> None:
    spec = ds.spec
    if not spec.update_strategy.type:
        spec.update_strategy.type = "RollingUpdate"
    if spec.update_strategy.type == "RollingUpdate":
        ru = spec.update_strategy.rolling_update
        if not ru.HasField("max_unavailable"):
            ru.max_unavailable.int_val = 1
        if not ru.HasField("max_surge"):
            ru.max_surge.int_val = 0
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = 10
    pod_spec(spec.template.spec)


def _stateful_set(ss: t.StatefulSet) -> None:
    spec = ss.spec
    if not spec.HasField("replicas"):
        spec.replicas = 1
    if not spec.pod_management_policy:
        spec.pod_management_policy = "OrderedReady"
    if not spec.update_strategy.type:
        spec.update_strategy.type = "RollingUpdate"
    if spec.update_strategy.type == "RollingUpdate" and not spec.update_strategy.rolling_update.HasField("partition"):
        spec.update_strategy.rolling_update.partition = 0
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = 10
    policy = spec.persistent_volume_claim_retention_policy
    policy.when_deleted = policy.when_deleted or "Retain"
    policy.when_scaled = policy.when_scaled or "Retain"
    for claim in spec.volume_claim_templates:
        _claim_spec(claim.spec)
    pod_spec(spec.template.spec)


def _claim_spec(spec: t.PersistentVolumeClaimSpec) -> None:
    if not spec.volume_mode:
        spec.volume_mode = "Filesystem"


def _persistent_volume(pv: t.PersistentVolume) -> None:
    if not pv.spec.persistent_volume_reclaim_policy:
        pv.spec.persistent_volume_reclaim_policy = "Retain"
    if not pv.spec.volume_mode:
        pv.spec.volume_mode = "Filesystem"


def _storage_class(sc: t.StorageClass) -> None:
    if not sc.HasField("reclaim_policy"):
        sc.reclaim_policy = "Delete"
    if not sc.HasField("volume_binding_mode"):
        sc.volume_binding_mode = "Immediate"


def _service(s: t.Service) -> None:
    spec = s.spec
    if not spec.type:
        spec.type = "ClusterIP"
    if not spec.session_affinity:
        spec.session_affinity = "None"
    if spec.session_affinity == "ClientIP" and not spec.session_affinity_config.client_ip.HasField("timeout_seconds"):
        spec.session_affinity_config.client_ip.timeout_seconds = SESSION_AFFINITY_TIMEOUT
    if spec.type == "NodePort" and not spec.external_traffic_policy:
        spec.external_traffic_policy = "Cluster"
    for port in spec.ports:
        if not port.protocol:
            port.protocol = "TCP"
        if not port.HasField("target_port") or (
                port.target_port.WhichOneof("value") == "int_val" and port.target_port.int_val == 0):
            port.target_port.int_val = port.port


def _endpoints(e: t.Endpoints) -> None:
    for subset in e.subsets:
        for port in subset.ports:
            if not port.protocol:
                port.protocol = "TCP"


def _namespace(ns: t.Namespace) -> None:
    if not ns.status.phase:
        ns.status.phase = "Active"
    if ns.metadata.name:
        ns.metadata.labels[networkpolicy.NAMESPACE_NAME_LABEL] = ns.metadata.name


def _network_policy(np: t.NetworkPolicy) -> None:
    spec = np.spec
    if not spec.policy_types:
        spec.policy_types.extend(networkpolicy.policy_types(spec))
    ports = [p for r in spec.ingress for p in r.ports] + [p for r in spec.egress for p in r.ports]
    for port in ports:
        if not port.HasField("protocol"):
            port.protocol = networkpolicy.DEFAULT_PROTOCOL


def _event(ev: t.Event) -> None:
    if not ev.type:
        ev.type = "Normal"
    if not ev.count:
        ev.count = 1


def _secret(s: t.Secret) -> None:
    if not s.type:
        s.type = "Opaque"
    for key, value in s.string_data.items():
        s.data[key] = value.encode()
    s.ClearField("string_data")


def apply_defaults(obj: Message) -> None:
    """Fill in the defaults of `obj` in place (see the module docstring)."""
    kind = kinds.of_message(obj)
    obj.api_version = kind.api_version  # type: ignore[attr-defined]
    obj.kind = kind.kind  # type: ignore[attr-defined]
    if isinstance(obj, t.Pod):
        pod_spec(obj.spec)
        if not obj.spec.service_account_name:  # set on pods only (templates stay as written)
            obj.spec.service_account_name = DEFAULT_SERVICE_ACCOUNT
        _requests_from_limits(obj.spec)
    elif isinstance(obj, t.Deployment):
        _deployment(obj)
    elif isinstance(obj, t.ReplicaSet):
        _replica_set(obj)
    elif isinstance(obj, t.Service):
        _service(obj)
    elif isinstance(obj, t.Endpoints):
        _endpoints(obj)
    elif isinstance(obj, t.Namespace):
        _namespace(obj)
    elif isinstance(obj, t.Event):
        _event(obj)
    elif isinstance(obj, t.NetworkPolicy):
        _network_policy(obj)
    elif isinstance(obj, t.Secret):
        _secret(obj)
    elif isinstance(obj, t.Job):
        _job_spec(obj.spec)
    elif isinstance(obj, t.CronJob):
        _cron_job(obj)
    elif isinstance(obj, t.DaemonSet):
        _daemon_set(obj)
    elif isinstance(obj, t.StatefulSet):
        _stateful_set(obj)
    elif isinstance(obj, t.PersistentVolumeClaim):
        _claim_spec(obj.spec)
    elif isinstance(obj, t.PersistentVolume):
        _persistent_volume(obj)
    elif isinstance(obj, t.StorageClass):
        _storage_class(obj)
