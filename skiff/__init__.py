"""Skiff: a small, real Kubernetes-style orchestrator. Shared library (client, manifests, CLI)."""

__version__ = "0.1.0"
