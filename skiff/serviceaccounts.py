"""Service accounts in pods: the names and numbers the api-server's admission, the controller
manager's root-CA publisher and the node agent's token projection must agree on (Kubernetes'
own, so an in-cluster client written for Kubernetes finds everything where it looks).

What must hold: each fact is written here once; the admission plugin (controlplane/apiserver/
admission.py), the publisher (controlplane/controllers/rootcacert.py) and the node agent
(nodeagent/tokens.py) import it.
"""

from __future__ import annotations

# The ConfigMap in every namespace holding the cluster CA bundle (key `ca.crt`).
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROOT_CA_KEY = "ca.crt"
# Where every container finds token, ca.crt and namespace (client-go's rest.InClusterConfig).
TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_FILE, CA_FILE, NAMESPACE_FILE = "token", "ca.crt", "namespace"
# The projected volume's name: this prefix and 5 random characters (kube-api-access-xxxxx).
API_ACCESS_PREFIX = "kube-api-access-"
# The admission plugin asks for 3607 s (upstream's "legacy" marker: an hour and a few seconds, so
# the api-server can tell the tokens it made for pods apart); a TokenRequest may ask for ≥ 600 s.
ADMISSION_TOKEN_EXPIRATION = 3607
MIN_TOKEN_EXPIRATION = 600
DEFAULT_TOKEN_EXPIRATION = 3600
