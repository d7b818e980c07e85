"""Pieces the controller manager and the scheduler share: clock, events, leader election, pod helpers."""
