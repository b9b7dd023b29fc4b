"""The benchmarks (`make bench*`): not part of the package, never shipped."""
