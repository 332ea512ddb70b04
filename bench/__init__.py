"""Benchmarks with their own harness; figures go to bench/RESULTS.md."""
