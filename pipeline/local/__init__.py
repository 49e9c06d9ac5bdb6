"""The local runtime: runs the pipeline definition on one machine, with its state in SQLite."""
