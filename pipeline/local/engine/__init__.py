"""The engine: runs a pipeline definition (the step plan, expressions, conditions, jobs, cache and
retry policies). It may import ``pipeline.local.state`` and the shared root modules."""
