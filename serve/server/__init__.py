"""A SageMaker-compatible model server: ``GET /ping`` and ``POST /invocations`` on port 8080.

It plays the part of the SageMaker PyTorch inference container for ``sentiment-mlops serve`` and
for every local endpoint: worker processes (``supervisor``), each an event-loop HTTP server
(``app``, on aiohttp) that batches requests arriving together into one forward pass
(``batching``), tuned with the container's own environment variables (``settings``).

It is a package of its own, not a module of ``serve/``, so that the model artifact, which ships
``serve/*.py`` in its ``code/``, carries none of it: in SageMaker the container is the server.

Run it by hand::

    python -m serve.server --model-dir path/to/model  # or a model.tar.gz
"""
