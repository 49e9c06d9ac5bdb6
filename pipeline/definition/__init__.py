"""The SageMaker Pipelines definition, built offline with the SageMaker Python SDK v3.

Preprocess (Processing) → Train (Training) → Evaluate (Processing, evaluation.json as a
PropertyFile) → CheckAccuracy (Condition) → Register (RegisterModel) or Fail.

Building makes no AWS call, and the same settings and source give the same JSON byte for byte:

- every piece of step code is an ``s3://`` URI of a content-addressed bundle
  (``pipeline.bundles``), so the SDK never uploads anything;
- every S3 path is given explicitly (outputs are a ``Join`` of the prefix, the execution id,
  the step and the output name; checkpoints, see ``train_step.checkpoint_uri``, are per profile), so
  the SDK never calls ``default_bucket()``;
- the session carries its own SDK config (telemetry off, no config files read), the role is not
  validated, and the region is set before the SDK's import-time boto3 clients are made;
- training uses script mode through the ``sagemaker_program`` / ``sagemaker_submit_directory``
  hyperparameters (``SourceCode`` would upload the SDK's driver files);
- the model artifact already holds ``code/inference.py``, so registration names it through
  ``SAGEMAKER_PROGRAM``/``SAGEMAKER_SUBMIT_DIRECTORY`` and the SDK adds no repack step.

The same JSON is what the local runtime executes.

The package, one module per concern (``build`` imports the SDK-using ones only inside
``offline.offline_sdk``):

- ``contracts``: step names, the report's shape, container paths, limits (no SDK);
- ``images``: the container images and the instance types a package registers (no SDK at import);
- ``offline``: what keeps the SDK from calling AWS, and fast;
- ``context``: what every step is built from (session, parameters, shared inputs and policies);
- ``preprocess_step``, ``train_step``, ``evaluate_step``, ``gate_step``: one builder per step
  (the gates are CheckAccuracy, then CheckSentenceAccuracy, with Register, Fail and FailSentences);
- ``build``: the pipeline assembled, and its canonical JSON.

What other packages use is exported here.
"""
from mlops_rules.caching import CACHE_EXPIRE_AFTER
from pipeline.definition.build import build_pipeline, canonical_json, definition_json, quiet_definition_json
from pipeline.definition.contracts import (
    ACCURACY_PATH,
    CHECK_ACCURACY,
    CHECK_SENTENCE_ACCURACY,
    EVALUATE,
    EVALUATION_OUTPUT,
    EVALUATION_REPORT,
    FAIL,
    FAIL_SENTENCES,
    PREPROCESS,
    REGISTER,
    TRAIN,
    report_accuracy,
    report_accuracy_by_dataset,
)
from pipeline.definition.images import Images, image_processor, resolve_images, supported_instance_types

__all__ = [
    "ACCURACY_PATH", "CACHE_EXPIRE_AFTER", "CHECK_ACCURACY", "CHECK_SENTENCE_ACCURACY", "EVALUATE", "EVALUATION_OUTPUT", "EVALUATION_REPORT",
    "FAIL", "FAIL_SENTENCES", "PREPROCESS", "REGISTER", "TRAIN", "Images", "build_pipeline", "canonical_json", "definition_json", "quiet_definition_json",
    "image_processor", "report_accuracy", "report_accuracy_by_dataset", "resolve_images", "supported_instance_types",
]
