"""Level 4: the orchestrator (Dagster) acts on each TLC month as it is published."""
