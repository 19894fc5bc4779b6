"""Benchmarks: throughput and WSI/min, PLISM and synthetic-domain robustness, fidelity, reports."""
