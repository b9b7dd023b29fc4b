"""OS plumbing under everything else: loopback ports and health checks, process groups,
atomic files and locks, a stopwatch of stages, and nginx as the project runs it."""
