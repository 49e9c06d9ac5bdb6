"""Batch Transform on this machine: SageMaker's transform-job calls (``jobs.py``), the job's
work (``runner.py``), its records and data processing (``records.py``, ``jsonpath.py``) and
the request's checks (``spec.py``)."""
