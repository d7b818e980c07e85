"""Cluster DNS facts that the node agent (what pods are told) and clusterdns (where it serves) share.

What must hold: both sides read these from here, so a pod's nameserver is always the address
the node-local DNS server listens on.
"""

from __future__ import annotations

CLUSTER_DOMAIN = "cluster.local"
# Link-local, the same on every host (NodeLocal DNSCache's address): each host's pods ask their
# own host's server, so losing another host never breaks a pod's DNS.
NODE_LOCAL_DNS_IP = "169.254.20.10"
NODE_LOCAL_DNS_INTERFACE = "lo"  # a /32 there is local to the host for packets from its pods
