"""The cluster DNS server's Prometheus metrics, named and labelled as CoreDNS's (its prometheus
plugin), so CoreDNS's dashboards apply: requests by protocol and type, responses by rcode,
request latency, forwarded requests.

What must hold: every query read off the wire counts once in coredns_dns_requests_total, and
every reply sent once in coredns_dns_responses_total; a query that is not valid DNS is not a
request (CoreDNS drops it too).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ZONE = "."  # one server block for everything, as a node-local cache's
# CoreDNS's buckets: 0.25 ms doubling to about 8 s.
BUCKETS = tuple(0.00025 * 2 ** i for i in range(16))

REQUESTS = Counter("coredns_dns_requests", "Counter of DNS requests made per zone, protocol and family.",
                   ["server", "zone", "proto", "family", "type"])
RESPONSES = Counter("coredns_dns_responses", "Counter of response status codes.",
                    ["server", "zone", "rcode", "plugin"])
DURATION = Histogram("coredns_dns_request_duration_seconds", "Histogram of the time (in seconds) each request took "
                     "per zone.", ["server", "zone", "type"], buckets=BUCKETS)
FORWARDS = Counter("coredns_forward_requests", "Counter of requests made per upstream.", ["to"])
