"""Benchmarks: scripts that print figures and assert nothing (results: bench/RESULTS.md)."""
