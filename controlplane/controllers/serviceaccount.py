"""The service account controller: every namespace has a ServiceAccount named `default`.

What must hold (as Kubernetes' serviceaccounts-controller):
- an active namespace without `default` gets one, also when a user deletes it;
- a namespace being deleted gets nothing (its content is being removed);
- an existing `default` is never rewritten.
"""

from __future__ import annotations

import logging

from controlplane.controllers.base import QueueController
from skiff import errors
from skiff.client import ApiClient
from skiff.informer import InformerFactory
from skiffpb.api.v1 import types_pb2 as t

log = logging.getLogger("skiff.controllers.serviceaccount")

DEFAULT_NAME = "default"


def needs_default(namespace: t.Namespace | None, existing: t.ServiceAccount | None) -> bool:
    """Whether the `default` ServiceAccount must be created in this namespace."""
    if namespace is None or existing is not None:
        return False
    return not namespace.metadata.HasField("deletion_timestamp") and namespace.status.phase != "Terminating"


class ServiceAccountController(QueueController):
    name = "serviceaccount"

    def __init__(self, client: ApiClient, factory: InformerFactory) -> None:
        super().__init__()
        self.client = client
        self.namespaces = factory.informer(t.Namespace)
        self.accounts = factory.informer(t.ServiceAccount)
        self.namespaces.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))
        self.accounts.add_handler(on_delete=self._account_deleted)

    def _account_deleted(self, sa: t.ServiceAccount) -> None:
        if sa.metadata.name == DEFAULT_NAME:
            self.queue.add(sa.metadata.namespace)

    async def sync(self, key: str) -> None:
        namespace = self.namespaces.get(key)
        if not needs_default(namespace, self.accounts.get(DEFAULT_NAME, key)):
            return
        sa = t.ServiceAccount(api_version="v1", kind="ServiceAccount",
                              metadata=t.ObjectMeta(name=DEFAULT_NAME, namespace=key))
        try:
            await self.client.create(sa)
            log.info("created ServiceAccount %s/%s", key, DEFAULT_NAME)
        except errors.AlreadyExistsError:
            pass  # the cache has not shown it yet
        except errors.ForbiddenError:
            pass  # the namespace started terminating
