"""The approvers' workspace: what a person needs to approve or reject a registered model version,
read from the local registry and artifact store, and the one path a decision takes.

- ``evidence``: finds and reads a version's files in the store (evaluation.json, the plots, the
  saved predictions, the test reviews the Evaluate step scored, the model's config.json);
- ``versions``: the views of the registry page, as dataclasses: every version, one version in
  detail, and what the endpoint serves now;
- ``compare``: a challenger beside a champion (the serving version, by default): metric deltas
  and the test reviews on which the two disagree, from each version's saved predictions;
- ``decisions``: approve or reject, the one path the CLI and the page take (registry update,
  the EventBridge-shaped event, the deploy handler, the endpoint);
- ``web``: the registry page's aiohttp routes (``/registry``), mounted into ``sentiment-mlops api``,
  with ``templates/`` (Jinja2, autoescaped) and ``static/``.

This package reads the local runtime's state and services; it imports neither the commands nor
the CLI nor the engine that runs pipelines (``tests/test_code_checks.py`` holds that rule).
"""
