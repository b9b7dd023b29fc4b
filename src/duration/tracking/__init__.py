"""MLflow client helpers: the client, experiments, runs and their tags, datasets, and
reaping runs that dead processes left RUNNING. Cheap to import: MLflow loads on use."""
