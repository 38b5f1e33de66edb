"""Shared parts of the load test: configuration, event payloads and the pass/fail targets (no locust import here,
so they can be checked without a load run)."""
