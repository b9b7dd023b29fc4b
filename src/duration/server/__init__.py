"""The tracking server and its team: MLflow on 127.0.0.1, PostgreSQL, users and roles, and a
TLS front."""
