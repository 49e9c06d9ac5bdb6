"""The state: what the local runtime records, in SQLite (executions, steps, the model registry,
hosting's tables) and in the artifact store. From ``pipeline.local`` it imports only the shared root
modules (``aws_identity``, ``processes``): never the engine or the services."""
