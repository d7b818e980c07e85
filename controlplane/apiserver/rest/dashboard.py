"""The dashboard: a read-only web UI the api-server serves beside its REST API, at /dashboard/.

Nodes with their conditions and usage, workloads with their rollout, pods with status and
restarts, Services with their endpoints, recent events, updating live without page reloads.

What must hold:
- the page is the files in controlplane/apiserver/dashboard/, served as they are: no build
  step, nothing loaded from the internet;
- /dashboard/watch is one newline-delimited JSON stream for everything the page shows (a
  browser opens at most six HTTP/1.1 connections to a host): per resource a
  `{"resource", "type": "SYNC", "items"}` line (its list), then its watch events
  `{"resource", "type", "object"}` in Kubernetes' JSON form. A resource whose watch fails
  (too old, too slow) is announced with an ERROR line and listed and watched again;
- every read is a list or watch of the Registry, authorized as the REST API's own (`authorize`
  in http.py), so the dashboard shows nothing its caller could not read with kubectl;
- the page's files (PUBLIC_PATHS) are served without authentication: they carry no data, and
  with TLS on the browser must get the page before it can log in. Logging in is giving a bearer
  token (a bootstrap token bound to a role, docs/observability.md): the page keeps it in
  sessionStorage and sends it as `Authorization: Bearer` on its own requests, so no cookie
  authenticates anything (no CSRF). A browser holding a client certificate needs no token.
"""

from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).resolve().parents[1] / "dashboard"
RESOURCES = ("nodes", "pods", "services", "endpoints", "deployments", "statefulsets", "daemonsets", "events")
WATCH = "watch"  # /dashboard/watch
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
FILES = ("index.html", "app.js", "style.css")
PUBLIC_PATHS = frozenset({"/dashboard", "/dashboard/", *(f"/dashboard/{name}" for name in FILES)})


def asset(name: str) -> tuple[bytes, str] | None:
    """(content, content type) of the dashboard file `name` ("" is the page), None when there is none."""
    name = name or "index.html"
    if name not in FILES:
        return None
    path = DIR / name
    return path.read_bytes(), TYPES[path.suffix]
