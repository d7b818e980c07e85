"""NetworkPolicy enforcement: a pure planner and the adapter that keeps iptables equal to it."""
