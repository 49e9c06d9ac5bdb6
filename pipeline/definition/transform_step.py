"""CreateModel (a ModelStep) and Transform (a TransformStep): the trained artifact served by the
inference image scores the test texts as a Batch Transform, so that Evaluate's figures are what
the serving container answered, with its content types, batching and limits.

The transform reads Preprocess's ``reviews.jsonl`` (one ``{"text", "label", "dataset", "kind"}`` a
line), sends each record's ``text`` (InputFilter ``$.text``) as JSON Lines, as many records a
request as fit in ``TRANSFORM_MAX_PAYLOAD_MB``, and joins each answer to its record
(``JoinSource Input``): ``reviews.jsonl.out`` is the test set with ``SageMakerOutput`` on every line.

The payload is set, not left to the container's ``/execution-parameters``: SageMaker's default
(6 MB) is over the model server's body limit (5 MiB), and the PyTorch image's server may not
answer that route. Requests at once are left to the container (SageMaker: 1 unless it says).
"""
from __future__ import annotations

from typing import Any

from sagemaker.core.transformer import Transformer
from sagemaker.core.workflow.functions import Join
from sagemaker.mlops.workflow.model_step import ModelStep
from sagemaker.mlops.workflow.steps import ProcessingStep, TrainingStep, TransformStep
from sagemaker.serve.model_builder import ModelBuilder

from pipeline.definition.context import BuildContext, job_retries, service_retries
from pipeline.definition.contracts import (
    CREATE_MODEL,
    TRANSFORM,
    TRANSFORM_CONTENT_TYPE,
    TRANSFORM_INPUT_FILTER,
    TRANSFORM_MAX_PAYLOAD_MB,
    TRANSFORM_OUTPUT,
)
from pipeline.definition.images import supported_instance_types
from pipeline.definition.preprocess_step import split_uri
from pipeline.definition.train_step import model_data
from steps.arrays import REVIEWS_FILE


def model_builder(ctx: BuildContext, train: TrainingStep) -> ModelBuilder:
    """The trained artifact in the inference image: what Register registers and CreateModel makes.

    The artifact already holds ``code/inference.py``, so the container is pointed at it through
    ``SAGEMAKER_PROGRAM``/``SAGEMAKER_SUBMIT_DIRECTORY`` and the SDK adds no repack step.
    """
    settings = ctx.settings
    return ModelBuilder(
        s3_model_data_url=model_data(train), image_uri=ctx.images.inference, role_arn=settings.role_arn,
        sagemaker_session=ctx.session, instance_type=supported_instance_types(ctx.images.inference)["inference"][0],
        dependencies=None,
        env_vars={"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                  "SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "SAGEMAKER_REGION": settings.region, **ctx.pip_env},
    )


def create_model_step(ctx: BuildContext, train: TrainingStep) -> ModelStep:
    return ModelStep(name=CREATE_MODEL, step_args=model_builder(ctx, train).build(), retry_policies=service_retries(),
                     description="The trained artifact in the inference image, for the test set's transform")


def transform_step(ctx: BuildContext, preprocess: ProcessingStep, model: ModelStep) -> TransformStep:
    transformer = Transformer(
        model_name=model.properties.ModelName, instance_count=1,
        instance_type=supported_instance_types(ctx.images.inference)["transform"][0],
        strategy="MultiRecord", assemble_with="Line", accept=TRANSFORM_CONTENT_TYPE,
        max_payload=TRANSFORM_MAX_PAYLOAD_MB, output_path=ctx.output_uri(TRANSFORM, TRANSFORM_OUTPUT),
        sagemaker_session=ctx.session)
    step_args = transformer.transform(
        data=Join(on="/", values=[split_uri(preprocess, "test"), REVIEWS_FILE]), data_type="S3Prefix",
        content_type=TRANSFORM_CONTENT_TYPE, split_type="Line", input_filter=TRANSFORM_INPUT_FILTER,
        join_source="Input")
    return TransformStep(name=TRANSFORM, step_args=step_args, cache_config=ctx.cache, retry_policies=job_retries(),
                         description="Score the test texts through the serving container, as a Batch Transform")


def transform_output_uri(transform: TransformStep) -> Any:
    """The S3 prefix holding ``reviews.jsonl.out``, as a property read at run time."""
    return transform.properties.TransformOutput.S3OutputPath
