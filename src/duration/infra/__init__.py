"""The machinery under the pipeline: ports, processes, files, resources, and the services
the project starts itself (the MLflow server, PostgreSQL, scoring servers behind nginx,
the Spark cluster), all bound to 127.0.0.1."""
