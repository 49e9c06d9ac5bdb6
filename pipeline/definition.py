"""The SageMaker Pipelines definition, built offline with the SageMaker Python SDK v3.

Preprocess (Processing) → Train (Training) → Evaluate (Processing, evaluation.json as a
PropertyFile) → CheckAccuracy (Condition) → Register (RegisterModel) or Fail.

Building makes no AWS call, and the same settings and source give the same JSON byte for byte:

- every piece of step code is an ``s3://`` URI of a content-addressed bundle
  (``pipeline.bundles``), so the SDK never uploads anything;
- every S3 path is given explicitly (outputs are a ``Join`` of the prefix, the execution id,
  the step and the output name; checkpoints, see :func:`checkpoint_uri`, are per profile), so
  the SDK never calls ``default_bucket()``;
- the session carries its own SDK config (telemetry off, no config files read), the role is not
  validated, and the region is set before the SDK's import-time boto3 clients are made;
- training uses script mode through the ``sagemaker_program`` / ``sagemaker_submit_directory``
  hyperparameters (``SourceCode`` would upload the SDK's driver files);
- the model artifact already holds ``code/inference.py``, so registration names it through
  ``SAGEMAKER_PROGRAM``/``SAGEMAKER_SUBMIT_DIRECTORY`` and the SDK adds no repack step.

The same JSON is what the local runtime executes.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.bundles import CodeBundles, build_bundles
from pipeline.parameters import DEFAULT_PROCESSING_INSTANCE_TYPE, DEFAULT_TRAINING_INSTANCE_TYPE
from pipeline.settings import DEFAULT_ENDPOINT_INSTANCE_TYPE, Settings

if TYPE_CHECKING:  # the SDK is imported lazily, after the environment below is set
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow.pipeline import Pipeline

    from pipeline.parameters import PipelineParameters

# Step names: the definition's public interface (the local runtime, tests and docs use them).
PREPROCESS, TRAIN, EVALUATE, CHECK_ACCURACY, REGISTER, FAIL = (
    "Preprocess", "Train", "Evaluate", "CheckAccuracy", "Register", "Fail")
EVALUATION_REPORT = "EvaluationReport"
EVALUATION_OUTPUT = "evaluation"
ACCURACY_PATH = "binary_classification_metrics.accuracy.value"


def report_accuracy(report: object) -> float | None:
    """The number the CheckAccuracy gate reads (``ACCURACY_PATH``) from an evaluation.json report;
    None when the report has none (SageMaker's reports write undefined values as "NaN")."""
    for key in ACCURACY_PATH.split("."):
        report = report.get(key) if isinstance(report, dict) else None
    return float(report) if isinstance(report, (int, float)) and not isinstance(report, bool) else None

# Container paths: the contracts the job scripts honour (see README "Running on AWS").
PROCESSING = "/opt/ml/processing"
CODE_INPUT_DIR = f"{PROCESSING}/input/code"
RUNNER_INPUT_DIR = f"{PROCESSING}/input/entrypoint"
DATA_INPUT_DIR = f"{PROCESSING}/input/data"
PREPROCESS_OUTPUT_DIR = f"{PROCESSING}/output"
SPLITS = ("train", "validation", "test")
MODEL_INPUT_DIR = f"{PROCESSING}/model"
TEST_INPUT_DIR = f"{PROCESSING}/test"
EVALUATION_OUTPUT_DIR = f"{PROCESSING}/evaluation"
CHECKPOINT_DIR = "/opt/ml/checkpoints"

# Script paths inside the bundles (relative to the unpacked bundle's root).
PREPROCESS_SCRIPT = "steps/preprocess.py"
EVALUATE_SCRIPT = "evaluation/evaluate.py"
TRAIN_SCRIPT = "train/train.py"

CONTENT_TYPES = ["application/json", "text/plain", "text/csv"]
RESPONSE_TYPES = ["application/json", "text/plain"]
# What a registered package says it runs on, by the processor its inference image is built for:
# the CPU image cannot use a GPU instance's accelerator, and the GPU image needs one.
# The first inference type is the one the SDK's ModelBuilder is given: the endpoint's default.
INSTANCE_TYPES = {
    "cpu": {"inference": [DEFAULT_ENDPOINT_INSTANCE_TYPE, "ml.m5.xlarge"], "transform": ["ml.m5.xlarge"]},
    "gpu": {"inference": ["ml.g4dn.xlarge"], "transform": ["ml.g4dn.xlarge"]},
}

# Training: a spot job may wait for capacity; the wait budget includes the run time.
TRAINING_MAX_RUNTIME_S = 4 * 3600
TRAINING_MAX_WAIT_S = 8 * 3600
PROCESSING_MAX_RUNTIME_S = 2 * 3600
CACHE_EXPIRE_AFTER = "P30D"


def checkpoint_uri(settings: Settings, params: PipelineParameters) -> Join:
    """Where Train's checkpoints live: per training profile and epochs, not per execution.

    CheckpointConfig is part of a Training step's cache key; a URI with the execution id would
    make every execution's key differ, so Train would never be reused from the cache. Sharing the
    folder is safe because a checkpoint carries the signature of its hyperparameters and data
    (one written for other data or settings is ignored) and a finished job marks its checkpoint
    finished (it is not resumed by the next job). Two executions training the same profile at
    once may overwrite each other's checkpoints: a spot restart then starts that job over.

    The URI ends with "/": SageMaker syncs every object whose key starts with it into
    ``/opt/ml/checkpoints``, and ``epochs-8`` is a prefix of ``epochs-80``.
    """
    from sagemaker.core.workflow.functions import Join

    return Join(on="/", values=[settings.s3_uri("checkpoints"), params.training_profile,
                                Join(on="", values=["epochs-", params.epochs, "/"])])


def _prepare_sdk_environment(settings: Settings) -> None:
    """What must hold before the SDK is imported or used, so that building calls nothing.

    ``sagemaker.mlops`` builds boto3 clients at import (it needs a region); ``ModelTrainer``
    simulates the role's IAM policy unless told not to.
    """
    os.environ.setdefault("AWS_DEFAULT_REGION", settings.region)
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"


@contextlib.contextmanager
def _no_instance_metadata() -> Iterator[None]:
    """Keep boto3 from asking the EC2 instance metadata service for credentials while building.

    The SDK creates boto3 clients at import; with no credentials configured, botocore's
    credential chain ends by calling 169.254.169.254 (with retries: seconds on a laptop).
    Only for the build: afterwards a backend on EC2 still gets its instance role.
    """
    previous = os.environ.get("AWS_EC2_METADATA_DISABLED")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("AWS_EC2_METADATA_DISABLED", None)
        else:
            os.environ["AWS_EC2_METADATA_DISABLED"] = previous


# The session's SDK config: telemetry off (the SDK would otherwise call STS and send an HTTPS
# request from a background thread). Giving a config also keeps the session from reading the
# user's config files, which would make the JSON depend on the machine it is built on.
SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


@contextlib.contextmanager
def _config_validated_once(config: dict) -> Iterator[None]:
    """Validate ``config`` once instead of at each of the SDK's ~45 lookups while building.

    Every lookup runs ``jsonschema.validate``, which re-checks the whole SDK schema itself
    (0.25 s each): 10 s of a 12 s build. The config never changes during a build, so it is
    checked once with the SDK's own validator, and only this very object skips the check, only
    inside this block.
    """
    from sagemaker.core.config.config_manager import SageMakerConfig

    original = SageMakerConfig.__dict__["validate_sagemaker_config"]
    original.__func__(config)

    def validate(sagemaker_config: dict | None = None) -> None:
        if sagemaker_config is not config:
            original.__func__(sagemaker_config)

    SageMakerConfig.validate_sagemaker_config = staticmethod(validate)
    try:
        yield
    finally:
        SageMakerConfig.validate_sagemaker_config = original


@dataclass(frozen=True)
class Images:
    """The container images: PyTorch DLCs for processing, training (GPU) and inference."""

    processing: str
    training: str
    inference: str


def resolve_images(settings: Settings) -> Images:
    """Image URIs from the SDK's bundled image table (offline), unless the settings pin them.

    Processing runs on the CPU training image (as the SDK's PyTorch FrameworkProcessor does);
    training uses the GPU image, matching the default GPU instance type; the endpoint uses the
    CPU inference image, which also serves the model on a GPU-less instance. The registered
    package lists the instance types of the inference image in use (``supported_instance_types``).
    """
    from sagemaker.core import image_uris

    def retrieve(scope: str, instance_type: str) -> str:
        return image_uris.retrieve("pytorch", region=settings.region, version=settings.framework_version,
                                   py_version=settings.py_version, instance_type=instance_type, image_scope=scope)

    return Images(
        processing=settings.processing_image_uri or retrieve("training", DEFAULT_PROCESSING_INSTANCE_TYPE),
        training=settings.training_image_uri or retrieve("training", DEFAULT_TRAINING_INSTANCE_TYPE),
        inference=settings.inference_image_uri or retrieve("inference", DEFAULT_ENDPOINT_INSTANCE_TYPE),
    )


def image_processor(image_uri: str) -> str:
    """``gpu`` or ``cpu``: what a Deep Learning Container is built for, read from its tag
    (``pytorch-inference:2.5-gpu-py311``). An image pinned by digest, or with a tag that does not
    say, counts as CPU, which is what ``resolve_images`` picks for inference."""
    name = image_uri.rsplit("/", 1)[-1]
    tag = name.partition(":")[2] if "@" not in name else ""
    return "gpu" if "-gpu-" in f"-{tag}-" else "cpu"


def supported_instance_types(image_uri: str) -> dict[str, list[str]]:
    """``{"inference": [...], "transform": [...]}`` that a model package serving ``image_uri``
    registers: only instances that image can run on (``INSTANCE_TYPES``)."""
    return INSTANCE_TYPES[image_processor(image_uri)]


def build_pipeline(settings: Settings | None = None, bundles: CodeBundles | None = None) -> Pipeline:
    """The pipeline as an SDK ``Pipeline`` object; nothing is sent anywhere.

    Its ``definition()`` is where the SDK computes the steps' arguments: call it through
    ``definition_json``, which also keeps that part offline and fast.
    """
    settings = settings or Settings()
    bundles = bundles or build_bundles(settings)
    _prepare_sdk_environment(settings)
    with _no_instance_metadata():
        return _build_pipeline(settings, bundles)


def _build_pipeline(settings: Settings, bundles: CodeBundles) -> Pipeline:

    import boto3
    from sagemaker.core.model_metrics import MetricsSource, ModelMetrics
    from sagemaker.core.processing import Processor
    from sagemaker.core.shapes import (
        MetricDefinition,
        ProcessingInput,
        ProcessingOutput,
        ProcessingS3Input,
        ProcessingS3Output,
    )
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        InputData,
        OutputDataConfig,
        StoppingCondition,
    )
    from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.core.workflow.pipeline_context import PipelineSession
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.model_step import ModelStep
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.retry import (
        SageMakerJobExceptionTypeEnum,
        SageMakerJobStepRetryPolicy,
        StepExceptionTypeEnum,
        StepRetryPolicy,
    )
    from sagemaker.mlops.workflow.steps import CacheConfig, ProcessingStep, TrainingStep
    from sagemaker.serve.model_builder import ModelBuilder
    from sagemaker.train.model_trainer import ModelTrainer

    from pipeline.parameters import default_input_data_uri, pipeline_parameters
    from train.train import METRIC_DEFINITIONS

    session = PipelineSession(boto_session=boto3.Session(region_name=settings.region),
                              default_bucket=settings.bucket, sagemaker_config=SDK_CONFIG,
                              default_bucket_prefix=settings.prefix or None)
    params = pipeline_parameters(default_input_data_uri(settings.s3_uri()))
    images = resolve_images(settings)
    role = settings.role_arn
    # The index the start-up installs (requirements.txt) read: a mirror where there is no NAT.
    pip_env = {"PIP_INDEX_URL": settings.pip_index_url} if settings.pip_index_url else {}
    cache = CacheConfig(enable_caching=True, expire_after=CACHE_EXPIRE_AFTER)
    # Retry what is worth retrying: capacity and throttling, never a script's own failure.
    job_retries = [
        StepRetryPolicy(exception_types=[StepExceptionTypeEnum.SERVICE_FAULT, StepExceptionTypeEnum.THROTTLING],
                        interval_seconds=10, backoff_rate=2.0, max_attempts=3),
        SageMakerJobStepRetryPolicy(exception_types=[SageMakerJobExceptionTypeEnum.CAPACITY_ERROR,
                                                     SageMakerJobExceptionTypeEnum.RESOURCE_LIMIT,
                                                     SageMakerJobExceptionTypeEnum.INTERNAL_ERROR],
                                    interval_seconds=60, backoff_rate=2.0, max_attempts=3),
    ]

    def output_uri(step: str, name: str) -> Join:
        return Join(on="/", values=[settings.s3_uri("executions"), ExecutionVariables.PIPELINE_EXECUTION_ID, step, name])

    def s3_input(name: str, source, destination: str, data_type: str = "S3Prefix") -> ProcessingInput:
        return ProcessingInput(input_name=name, s3_input=ProcessingS3Input(
            s3_uri=source, local_path=destination, s3_data_type=data_type, s3_input_mode="File",
            s3_data_distribution_type="FullyReplicated"))

    def s3_output(step: str, name: str, source: str) -> ProcessingOutput:
        return ProcessingOutput(output_name=name, s3_output=ProcessingS3Output(
            s3_uri=output_uri(step, name), local_path=source, s3_upload_mode="EndOfJob"))

    def processor(step: str) -> Processor:
        """A plain Processor whose entry point is the bundle runner (FrameworkProcessor's shape
        without its uploads): the runner unpacks the code input and installs requirements.txt."""
        return Processor(
            role=role, image_uri=images.processing, instance_type=params.processing_instance_type,
            instance_count=params.processing_instance_count, max_runtime_in_seconds=PROCESSING_MAX_RUNTIME_S,
            entrypoint=["/bin/bash", f"{RUNNER_INPUT_DIR}/{bundles.runner.name}"],
            base_job_name=f"{settings.pipeline_name}-{step.lower()}", sagemaker_session=session,
            env={"PYTHONUNBUFFERED": "1", **pip_env})

    def code_inputs() -> list[ProcessingInput]:
        return [s3_input("code", bundles.processing.s3_uri, CODE_INPUT_DIR),
                s3_input("entrypoint", bundles.runner.s3_uri, RUNNER_INPUT_DIR)]

    # --- Preprocess -----------------------------------------------------------------------
    preprocess_args = processor(PREPROCESS).run(
        inputs=[s3_input("data", params.input_data_uri, DATA_INPUT_DIR), *code_inputs()],
        outputs=[s3_output(PREPROCESS, split, f"{PREPROCESS_OUTPUT_DIR}/{split}") for split in SPLITS],
        arguments=[PREPROCESS_SCRIPT, "--input-dir", DATA_INPUT_DIR, "--output-dir", PREPROCESS_OUTPUT_DIR,
                   "--max-len", params.max_len.to_string(), "--vocab-size", params.vocab_size.to_string(),
                   "--embedding-dim", params.embedding_dim.to_string(),
                   "--data-version", params.input_data_version],
    )
    preprocess = ProcessingStep(name=PREPROCESS, step_args=preprocess_args, cache_config=cache,
                                retry_policies=job_retries,
                                description="Clean, tokenize and encode the reviews; split train/validation/test")

    def split_uri(split: str):
        return preprocess.properties.ProcessingOutputConfig.Outputs[split].S3Output.S3Uri

    # --- Train ----------------------------------------------------------------------------
    hyperparameters = {
        **params.training_hyperparameters(),
        "sagemaker_program": TRAIN_SCRIPT,
        "sagemaker_submit_directory": bundles.training.s3_uri,
        "sagemaker_region": settings.region,
    }
    trainer = ModelTrainer(
        training_image=images.training, role=role, sagemaker_session=session,
        base_job_name=f"{settings.pipeline_name}-train",
        compute=Compute(instance_type=params.training_instance_type, instance_count=params.training_instance_count,
                        volume_size_in_gb=30, enable_managed_spot_training=True),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=TRAINING_MAX_RUNTIME_S,
                                             max_wait_time_in_seconds=TRAINING_MAX_WAIT_S),
        output_data_config=OutputDataConfig(s3_output_path=settings.s3_uri("models")),
        checkpoint_config=CheckpointConfig(s3_uri=checkpoint_uri(settings, params), local_path=CHECKPOINT_DIR),
        hyperparameters=hyperparameters,
        environment={"PYTHONUNBUFFERED": "1", **pip_env},
    ).with_metric_definitions([MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in METRIC_DEFINITIONS])
    train_args = trainer.train(input_data_config=[
        InputData(channel_name=split, data_source=split_uri(split)) for split in ("train", "validation")])
    train = TrainingStep(name=TRAIN, step_args=train_args, cache_config=cache, retry_policies=job_retries,
                         description="Train the LSTM (script mode, managed spot, checkpoints)")
    model_data = train.properties.ModelArtifacts.S3ModelArtifacts

    # --- Evaluate -------------------------------------------------------------------------
    report = PropertyFile(name=EVALUATION_REPORT, output_name=EVALUATION_OUTPUT, path="evaluation.json")
    evaluate_args = processor(EVALUATE).run(
        inputs=[s3_input("model", model_data, MODEL_INPUT_DIR), s3_input("test", split_uri("test"), TEST_INPUT_DIR),
                *code_inputs()],
        outputs=[s3_output(EVALUATE, EVALUATION_OUTPUT, EVALUATION_OUTPUT_DIR)],
        arguments=[EVALUATE_SCRIPT, "--model", MODEL_INPUT_DIR, "--test", TEST_INPUT_DIR,
                   "--output-dir", EVALUATION_OUTPUT_DIR],
    )
    evaluate = ProcessingStep(name=EVALUATE, step_args=evaluate_args, property_files=[report], cache_config=cache,
                              retry_policies=job_retries,
                              description="Score the raw test reviews through the artifact's own inference code")
    evaluation_uri = evaluate.properties.ProcessingOutputConfig.Outputs[EVALUATION_OUTPUT].S3Output.S3Uri

    # --- Register (if the gate passes) ----------------------------------------------------
    instance_types = supported_instance_types(images.inference)
    builder = ModelBuilder(
        s3_model_data_url=model_data, image_uri=images.inference, role_arn=role, sagemaker_session=session,
        instance_type=instance_types["inference"][0], dependencies=None,
        env_vars={"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                  "SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "SAGEMAKER_REGION": settings.region, **pip_env},
    )
    metrics = ModelMetrics(model_statistics=MetricsSource(
        content_type="application/json",
        s3_uri=Join(on="/", values=[evaluation_uri, "evaluation.json"])))
    register_args = builder.register(
        model_package_group_name=settings.model_package_group, approval_status=params.model_approval_status,
        content_types=CONTENT_TYPES, response_types=RESPONSE_TYPES,
        inference_instances=instance_types["inference"], transform_instances=instance_types["transform"],
        model_metrics=metrics, domain="NATURAL_LANGUAGE_PROCESSING", task="CLASSIFICATION",
    )
    register = ModelStep(name=REGISTER, step_args=register_args,
                         retry_policies=[StepRetryPolicy(exception_types=[StepExceptionTypeEnum.SERVICE_FAULT,
                                                                          StepExceptionTypeEnum.THROTTLING],
                                                         interval_seconds=10, backoff_rate=2.0, max_attempts=3)],
                         description="Register the model version for manual approval")

    # --- Fail (if it does not) ------------------------------------------------------------
    accuracy = JsonGet(step_name=EVALUATE, property_file=report, json_path=ACCURACY_PATH)
    fail = FailStep(name=FAIL, error_message=Join(on=" ", values=[
        "Test accuracy", accuracy, "is below the threshold", params.accuracy_threshold, "- the model was not registered."]))

    check = ConditionStep(
        name=CHECK_ACCURACY,
        conditions=[ConditionGreaterThanOrEqualTo(left=accuracy, right=params.accuracy_threshold)],
        if_steps=[register], else_steps=[fail],
        description="Register only a model whose test accuracy reaches AccuracyThreshold")

    # No experiment tracking: nothing here reads it, and it would need the pipeline role to
    # create experiments and trials besides the jobs (see lambda/template.yaml's PipelineRole).
    return Pipeline(name=settings.pipeline_name, parameters=params.all(),
                    steps=[preprocess, train, evaluate, check], sagemaker_session=session,
                    pipeline_experiment_config=None)


def definition_json(settings: Settings | None = None, bundles: CodeBundles | None = None) -> str:
    """The canonical definition: the SDK's JSON, re-serialized with sorted keys and 2-space
    indentation, so that equal definitions are equal strings."""
    settings = settings or Settings()
    _prepare_sdk_environment(settings)
    with _no_instance_metadata(), _config_validated_once(SDK_CONFIG):
        # The steps' arguments are computed by definition(), so it runs inside the block too.
        pipeline = build_pipeline(settings, bundles)
        return canonical_json(json.loads(pipeline.definition()))


def canonical_json(definition: dict) -> str:
    return json.dumps(definition, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
