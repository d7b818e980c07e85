"""IPVS mode: virtual servers planned as a diff of desired against observed kernel state."""
