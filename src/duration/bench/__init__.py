"""Benchmark support shared by `scripts/`: the resampled yellow-scale TLC site, pipeline
runs in their own process, and report tables."""
