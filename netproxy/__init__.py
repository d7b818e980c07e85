"""The network proxy (kube-proxy's role): every node programs its Services into the kernel.

`model` turns Services and Endpoints into plain, hashable `ServicePort`s; each proxy mode
(`iptables/`, `ipvs/`) renders or plans from those with pure functions, and a thin adapter
applies the result. `app` wires informers to a bounded-frequency `sync` runner.
"""
