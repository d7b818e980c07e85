"""iptables mode: render the whole ruleset as iptables-restore text; apply changed chains only."""
