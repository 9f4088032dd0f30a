"""Shared helpers for the smoke suite: HTTP calls, simulated agents, assertions."""
