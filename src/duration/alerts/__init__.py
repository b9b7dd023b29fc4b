"""Alerts: one JSON message for each event a person should hear of, posted to
DURATION_ALERT_URL (Slack-compatible) and always kept in the home's alert log."""
