"""The root CA publisher: the `kube-root-ca.crt` ConfigMap in every namespace (Kubernetes'
root-ca-cert-publisher), so a pod's projected API-access volume has the CA to verify the
api-server with (`ca.crt`).

What must hold:
- every active namespace has a ConfigMap `kube-root-ca.crt` whose data is exactly
  {`ca.crt`: the CA bundle this controller manager was given (`--root-ca-file`)}: a missing one
  is created, a changed one (data edited, keys added, binaryData set) is written back; other
  metadata (labels, annotations a user added) is left as it is;
- a namespace being deleted gets nothing (its content is being removed);
- `plan` is pure: the namespace, the current ConfigMap and the bundle decide the one write.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from controlplane.common import podutil
from controlplane.controllers.base import QueueController
from skiff import errors
from skiff.client import ApiClient
from skiff.informer import InformerFactory
from skiff.serviceaccounts import ROOT_CA_CONFIGMAP, ROOT_CA_KEY
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.rootcacert")

DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
               "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
               "guaranteed across distributions of Kubernetes clusters.")


@dataclass(frozen=True)
class Write:
    """What to write: `create` a new ConfigMap or `update` the existing one to `config_map`."""

    verb: str
    config_map: t.ConfigMap


def _active(namespace: t.Namespace | None) -> bool:
    return namespace is not None and not namespace.metadata.HasField("deletion_timestamp") \
        and namespace.status.phase != "Terminating"


def plan(namespace: t.Namespace | None, existing: t.ConfigMap | None, bundle: str) -> Write | None:
    """The write that makes the namespace's kube-root-ca.crt hold `bundle`; None when nothing to do."""
    if not _active(namespace) or not bundle:
        return None
    assert namespace is not None
    if existing is None:
        cm = t.ConfigMap(api_version="v1", kind="ConfigMap",
                         metadata=t.ObjectMeta(name=ROOT_CA_CONFIGMAP, namespace=namespace.metadata.name,
                                               annotations={"kubernetes.io/description": DESCRIPTION}))
        cm.data[ROOT_CA_KEY] = bundle
        return Write("create", cm)
    if existing.metadata.HasField("deletion_timestamp"):
        return None  # recreated once it is gone
    if dict(existing.data) == {ROOT_CA_KEY: bundle} and not existing.binary_data:
        return None
    cm = podutil.copy(existing)
    cm.data.clear()
    cm.binary_data.clear()
    cm.data[ROOT_CA_KEY] = bundle
    return Write("update", cm)


class RootCACertPublisher(QueueController):
    name = "rootcacertpublisher"

    def __init__(self, client: ApiClient, factory: InformerFactory, *, root_ca_file: str) -> None:
        super().__init__()
        self.client = client
        self.root_ca_file = root_ca_file
        self.bundle = Path(root_ca_file).read_text()
        self.namespaces = factory.informer(t.Namespace)
        self.config_maps = factory.informer(t.ConfigMap)
        self.namespaces.add_handler(on_add=self._namespace, on_update=lambda _old, new: self._namespace(new))
        self.config_maps.add_handler(on_add=self._config_map, on_update=lambda _old, new: self._config_map(new),
                                     on_delete=self._config_map)

    def _namespace(self, ns: t.Namespace) -> None:
        self.queue.add(ns.metadata.name)

    def _config_map(self, cm: t.ConfigMap) -> None:
        if cm.metadata.name == ROOT_CA_CONFIGMAP:
            self.queue.add(cm.metadata.namespace)

    async def sync(self, key: str) -> None:
        write = plan(self.namespaces.get(key), self.config_maps.get(ROOT_CA_CONFIGMAP, key), self.bundle)
        if write is None:
            return
        try:
            if write.verb == "create":
                await self.client.create(write.config_map)
            else:
                await self.client.update(write.config_map)
            log.info("%sd ConfigMap %s/%s", write.verb, key, ROOT_CA_CONFIGMAP)
        except errors.AlreadyExistsError:
            pass  # the cache has not shown it yet: its add event comes next
        except errors.ForbiddenError:
            pass  # the namespace started terminating
