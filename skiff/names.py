"""Kubernetes' name alphabet for generated suffixes and hashes (generateName, pod-template-hash).

No vowels, so no words are spelled by chance, and none of the easily confused 0, 1 and 3.
"""

from __future__ import annotations

SAFE_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


def safe_encode(text: str) -> str:
    """Each byte of `text` mapped onto SAFE_ALPHANUMS (Kubernetes' SafeEncodeString)."""
    return "".join(SAFE_ALPHANUMS[b % len(SAFE_ALPHANUMS)] for b in text.encode())
