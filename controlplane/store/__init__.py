"""The Raft-replicated key-value store (the etcd role), speaking the etcd v3 gRPC API.

Importing pysyncobj 0.3.17 replaces `socket.inet_ntop` for the whole process with a pure-Python
Windows fallback (pysyncobj/win_inet_pton.py does it unconditionally). pyroute2 and anything
else in the same process would then parse addresses through it, so the original is put back
here, before any module of this package imports pysyncobj.
"""

import socket as _socket

_inet_ntop = _socket.inet_ntop
import pysyncobj  # noqa: E402,F401 - imported here so that the patch below runs after it

_socket.inet_ntop = _inet_ntop
