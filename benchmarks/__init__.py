"""Benchmarks that print figures (run by ``ecrm bench``); outside the product packages, never timed tests."""
