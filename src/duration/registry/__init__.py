"""The model registry: registry URIs and the load cache, scoring, registering a search's
best trial, promoting through the one gate, and the promote lock and lease."""
