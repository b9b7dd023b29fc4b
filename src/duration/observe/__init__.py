"""Observe serving: Prometheus scrapes each worker group, alert rules with runbooks, and
Alertmanager's alerts relayed into the alert channel."""
