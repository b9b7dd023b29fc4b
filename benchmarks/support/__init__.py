"""What the benchmarks and `scripts/` share: reports, runs in their own process, the
yellow-scale TLC site, wrk, and the transport floor."""
