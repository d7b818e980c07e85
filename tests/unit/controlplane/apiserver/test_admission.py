"""LimitRange defaults and bounds, ResourceQuota accounting and refusal: pure tables, then the
registry (in process) enforcing them on create and the quota controller keeping status.used."""

from __future__ import annotations

from fractions import Fraction

import pytest
from google.protobuf.message import Message

from controlplane.apiserver.admission import apply_limit_ranges, charged_quotas, check_quotas, quota_delta
from controlplane.controllers.resourcequota import ResourceQuotaController, kinds_for
from skiff import errors, quota
from skiffpb.api.v1 import types_pb2 as t
from tests.unit.controlplane.harness import Cluster


def lr(*items: t.LimitRangeItem, name: str = "limits") -> t.LimitRange:
    return t.LimitRange(api_version="v1", kind="LimitRange", metadata=t.ObjectMeta(name=name, namespace="default"),
                        spec=t.LimitRangeSpec(limits=items))


def item(type_: str = "Container", **maps: dict[str, str]) -> t.LimitRangeItem:
    return t.LimitRangeItem(type=type_, **maps)  # type: ignore[arg-type]


def pod(name: str = "p", *resources: tuple[dict[str, str], dict[str, str]]) -> t.Pod:
    out = t.Pod(api_version="v1", kind="Pod", metadata=t.ObjectMeta(name=name, namespace="default"))
    for i, (requests, limits) in enumerate(resources or (({}, {}),)):
        c = out.spec.containers.add(name=f"c{i}", image="img")
        c.resources.requests.update(requests)
        c.resources.limits.update(limits)
    return out


@pytest.mark.parametrize(("ranges", "resources", "want_requests", "want_limits", "problems"), [
    ([lr(item(default={"cpu": "500m", "memory": "64Mi"}, default_request={"cpu": "100m"}))], ({}, {}),
     {"cpu": "100m", "memory": "64Mi"}, {"cpu": "500m", "memory": "64Mi"}, []),
    ([lr(item(default={"cpu": "500m"}))], ({"cpu": "200m"}, {"cpu": "1"}), {"cpu": "200m"}, {"cpu": "1"}, []),
    ([lr(item(max={"memory": "128Mi"}))], ({}, {"memory": "256Mi"}), {"memory": "256Mi"}, {"memory": "256Mi"},
     ["maximum memory usage per Container is 128Mi, but limit is 256Mi"]),
    ([lr(item(max={"memory": "128Mi"}))], ({}, {}), {}, {}, ["maximum memory usage per Container is 128Mi, "
                                                             "but no limit is set"]),
    ([lr(item(min={"cpu": "100m"}))], ({"cpu": "50m"}, {}), {"cpu": "50m"}, {},
     ["minimum cpu usage per Container is 100m, but request is 50m"]),
    ([lr(item(max_limit_request_ratio={"cpu": "2"}))], ({"cpu": "100m"}, {"cpu": "500m"}), {"cpu": "100m"},
     {"cpu": "500m"}, ["cpu max limit to request ratio per Container is 2, but provided ratio is 5"]),
    ([lr(item("Pod", max={"cpu": "1"}))], ({}, {"cpu": "800m"}), {}, {"cpu": "800m"}, []),
], ids=["defaults", "user-values-kept", "over-max", "max-needs-limit", "under-min", "ratio", "pod-within"])
def test_limit_ranges(ranges: list[t.LimitRange], resources: tuple[dict[str, str], dict[str, str]],
                      want_requests: dict[str, str], want_limits: dict[str, str], problems: list[str]) -> None:
    p = pod("p", resources)
    got = [str(e) for e in apply_limit_ranges(p, ranges)]
    c = p.spec.containers[0]
    assert (dict(c.resources.requests), dict(c.resources.limits)) == (want_requests, want_limits)
    assert len(got) == len(problems) and all(want in line for want, line in zip(problems, got, strict=True)), got


def test_pod_limit_range_sums_containers() -> None:
    p = pod("p", ({}, {"cpu": "600m"}), ({}, {"cpu": "600m"}))
    [problem] = apply_limit_ranges(p, [lr(item("Pod", max={"cpu": "1"}))])
    assert str(problem) == ("spec.containers[*].resources.limits.cpu: maximum cpu usage per Pod is 1, "
                            "but limit is 1200m (LimitRange limits)")


@pytest.mark.parametrize(("obj", "want"), [
    (pod("p", ({"cpu": "250m", "memory": "64Mi"}, {"cpu": "500m", "memory": "128Mi"}), ({"cpu": "250m"}, {})),
     {"count/pods": 1, "pods": 1, "requests.cpu": Fraction(1, 2), "cpu": Fraction(1, 2),
      "requests.memory": 64 * 2**20, "memory": 64 * 2**20, "limits.cpu": Fraction(1, 2),
      "limits.memory": 128 * 2**20}),
    (t.ConfigMap(metadata=t.ObjectMeta(name="c")), {"count/configmaps": 1, "configmaps": 1}),
    (t.Deployment(metadata=t.ObjectMeta(name="d")), {"count/deployments.apps": 1}),
], ids=["pod", "configmap", "deployment"])
def test_usage(obj: t.Pod, want: dict[str, Fraction]) -> None:
    assert quota.usage(obj) == want


def test_finished_and_deleting_pods_use_nothing() -> None:
    done, gone, live = pod("a"), pod("b"), pod("c")
    done.status.phase = "Succeeded"
    gone.metadata.deletion_timestamp.seconds = 5
    assert quota.namespace_usage([done, gone, live])["pods"] == 1


def rq(name: str = "q", **hard: str) -> t.ResourceQuota:
    return t.ResourceQuota(metadata=t.ObjectMeta(name=name, namespace="default"),
                           spec=t.ResourceQuotaSpec(hard=hard))


@pytest.mark.parametrize(("obj", "quotas", "used", "error"), [
    (pod("p"), [rq(pods="2")], {"pods": Fraction(1)}, None),
    (pod("p"), [rq(pods="2")], {"pods": Fraction(2)},
     'pods "p" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2'),
    (pod("p", ({"memory": "1Gi"}, {})), [rq(**{"requests.memory": "1536Mi"})],
     {"requests.memory": Fraction(768 * 2**20)},
     "requested: requests.memory=1Gi, used: requests.memory=768Mi, limited: requests.memory=1536Mi"),
    (pod("p"), [rq(**{"limits.cpu": "2"})], {}, "failed quota: q: must specify limits.cpu"),
    (t.ConfigMap(metadata=t.ObjectMeta(name="c")), [rq(**{"count/configmaps": "1"})],
     {"count/configmaps": Fraction(1)}, 'configmaps "c" is forbidden: exceeded quota: q'),
], ids=["room", "pods-full", "memory", "compute-required", "count"])
def test_check_quotas(obj: t.Pod, quotas: list[t.ResourceQuota], used: dict[str, Fraction], error: str | None) -> None:
    if error is None:
        check_quotas(obj, quotas, used)
        return
    with pytest.raises(errors.ForbiddenError) as info:
        check_quotas(obj, quotas, used)
    assert error in str(info.value)


def _used(q: t.ResourceQuota, **used: str) -> t.ResourceQuota:
    q.status.used.update(used)
    return q


@pytest.mark.parametrize(("obj", "quotas", "used", "want"), [
    (pod("p"), [rq(pods="2")], {"pods": Fraction(1)}, {"q": {"pods": "2"}}),
    (pod("p", ({"cpu": "250m"}, {})), [rq("a", pods="3"), rq("b", **{"requests.cpu": "1"})],
     {"pods": Fraction(2), "requests.cpu": Fraction(1, 2)}, {"a": {"pods": "3"}, "b": {"requests.cpu": "750m"}}),
    (pod("p"), [rq(**{"count/configmaps": "1"})], {}, {}),
    (pod("p"), [_used(rq(pods="2", services="1"), pods="0", services="1")], {}, {"q": {"pods": "1", "services": "1"}}),
], ids=["pods", "two-quotas", "not-charged", "other-used-kept"])
def test_charged_quotas(obj: t.Pod, quotas: list[t.ResourceQuota], used: dict[str, Fraction],
                        want: dict[str, dict[str, str]]) -> None:
    before = [q.SerializeToString() for q in quotas]
    charged = charged_quotas(obj, quotas, used)
    assert {q.metadata.name: dict(q.status.used) for q in charged} == want
    assert all(dict(q.status.hard) == dict(q.spec.hard) for q in charged)
    assert [q.SerializeToString() for q in quotas] == before  # the inputs (cached objects) are left alone


def _svc(kind: str, ports: int = 1) -> t.Service:
    return t.Service(metadata=t.ObjectMeta(name="s", namespace="default"),
                     spec=t.ServiceSpec(type=kind, ports=[t.ServicePort(port=80 + i) for i in range(ports)]))


def _pvc(size: str) -> t.PersistentVolumeClaim:
    return t.PersistentVolumeClaim(metadata=t.ObjectMeta(name="c", namespace="default"),
                                   spec=t.PersistentVolumeClaimSpec(resources=t.VolumeResourceRequirements(
                                       requests={"storage": size})))


@pytest.mark.parametrize(("obj", "old", "want"), [
    (_svc("NodePort", 2), None, {"count/services": 1, "services": 1, "services.nodeports": 2}),
    (_svc("LoadBalancer"), None, {"count/services": 1, "services": 1, "services.nodeports": 1,
                                  "services.loadbalancers": 1}),
    (_svc("NodePort", 2), _svc("ClusterIP", 2), {"services.nodeports": 2}),
    (_svc("LoadBalancer"), _svc("NodePort"), {"services.loadbalancers": 1}),
    (_svc("ClusterIP"), _svc("NodePort"), {}),  # a decrease is not charged
    (_pvc("3Gi"), _pvc("1Gi"), {"requests.storage": 2 * 2**30}),
    (_pvc("1Gi"), _pvc("1Gi"), {}),
    (pod("p"), pod("p"), {}),
], ids=["nodeport-create", "loadbalancer-create", "to-nodeport", "to-loadbalancer", "to-clusterip",
        "claim-grows", "claim-same", "pod-unchanged"])
def test_quota_delta(obj: Message, old: Message | None, want: dict[str, Fraction]) -> None:
    assert quota_delta(obj, old) == want


def test_update_is_checked_and_charged_by_what_it_adds() -> None:
    q = rq(**{"requests.storage": "4Gi"})
    used = {"requests.storage": Fraction(3 * 2**30)}  # with the claim's 1Gi
    check_quotas(_pvc("2Gi"), [q], used, _pvc("1Gi"))  # +1Gi: 4Gi, fits
    [charged] = charged_quotas(_pvc("2Gi"), [q], used, _pvc("1Gi"))
    assert dict(charged.status.used) == {"requests.storage": "4Gi"}
    with pytest.raises(errors.ForbiddenError, match=r"requested: requests\.storage=2Gi, used: requests\.storage=3Gi"):
        check_quotas(_pvc("3Gi"), [q], used, _pvc("1Gi"))


def test_kinds_for() -> None:
    assert sorted(k.resource for k in kinds_for(["pods", "requests.cpu", "count/configmaps", "secrets",
                                                  "count/deployments.apps", "unknown"])) == [
        "configmaps", "deployments", "pods", "secrets"]


async def test_registry_enforces_limit_ranges_and_quotas(cluster: Cluster) -> None:
    api = cluster.api
    await api.create(lr(item(default={"cpu": "500m", "memory": "64Mi"}, default_request={"cpu": "100m"},
                              max={"memory": "256Mi"})))
    await api.create(rq("compute", pods="2", **{"requests.cpu": "1"}))
    await cluster.start()
    first = await api.create(pod("first"))
    c = first.spec.containers[0]
    assert (dict(c.resources.requests), dict(c.resources.limits)) == (
        {"cpu": "100m", "memory": "64Mi"}, {"cpu": "500m", "memory": "64Mi"})
    assert first.status.qos_class == "Burstable"
    with pytest.raises(errors.InvalidError, match="maximum memory usage per Container is 256Mi"):
        await api.create(pod("big", ({}, {"memory": "1Gi"})))
    await cluster.settle()
    with pytest.raises(errors.ForbiddenError, match=r"requested: requests\.cpu=1, used: requests\.cpu=100m"):
        await api.create(pod("greedy", ({"cpu": "1"}, {"cpu": "1"})))
    await api.create(pod("second"))
    await cluster.settle()
    with pytest.raises(errors.ForbiddenError, match="exceeded quota: compute, requested: pods=1, used: pods=2"):
        await api.create(pod("third"))

    ctrl = ResourceQuotaController(api, cluster.factory)
    await cluster.factory.start()
    await cluster.factory.wait_synced(5)
    await cluster.drain(ctrl)
    status = (await api.get(t.ResourceQuota, "compute")).status
    assert (dict(status.hard), dict(status.used)) == ({"pods": "2", "requests.cpu": "1"},
                                                      {"pods": "2", "requests.cpu": "200m"})
    await api.delete(t.Pod, "second", grace_period_seconds=0)
    await cluster.drain(ctrl)
    assert dict((await api.get(t.ResourceQuota, "compute")).status.used) == {"pods": "1", "requests.cpu": "100m"}
