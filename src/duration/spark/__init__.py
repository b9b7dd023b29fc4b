"""Spark for the search: a session for hyperopt's SparkTrials, and a local standalone
cluster."""
