"""Pieces the controller manager and the scheduler share: leader election, pod and owner helpers,
taints and tolerations. (Clock, events and the work queue are the shared library's: skiff/.)"""
