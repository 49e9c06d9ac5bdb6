"""CheckAccuracy (Condition): Register the model for manual approval when its test accuracy
reaches AccuracyThreshold, Fail with the figures otherwise."""
from __future__ import annotations

from sagemaker.core.model_metrics import MetricsSource, ModelMetrics
from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo
from sagemaker.core.workflow.functions import Join, JsonGet
from sagemaker.core.workflow.properties import PropertyFile
from sagemaker.mlops.workflow.condition_step import ConditionStep
from sagemaker.mlops.workflow.fail_step import FailStep
from sagemaker.mlops.workflow.model_step import ModelStep
from sagemaker.mlops.workflow.steps import ProcessingStep, TrainingStep
from sagemaker.serve.model_builder import ModelBuilder

from evaluation.outputs import LINKS, REPORT_FILE
from pipeline.definition.context import BuildContext, service_retries
from pipeline.definition.contracts import (
    ACCURACY_PATH,
    CHECK_ACCURACY,
    CONTENT_TYPES,
    EVALUATE,
    EVALUATION_OUTPUT,
    FAIL,
    REGISTER,
    RESPONSE_TYPES,
    customer_metadata_problem,
)
from pipeline.definition.evaluate_step import evaluation_uri
from pipeline.definition.images import supported_instance_types
from pipeline.definition.train_step import model_data
from pipeline.errors import UserError


class DefinitionError(UserError, ValueError):
    """Settings the definition cannot be built from; the message says which to change."""


def evaluation_links(ctx: BuildContext, evaluate: ProcessingStep) -> dict[str, Join]:
    """CustomerMetadataProperties that link the package to the Evaluate step's files
    (``evaluation.outputs.LINKS``): what an approver opens from the registry, in Studio or with
    ``registry show``. Checked now against SageMaker's limits with the URIs they resolve to, so
    a bucket and prefix too long for them fail the build, not the Register step of a run."""
    resolved = {key: f"{ctx.resolved_output_uri(EVALUATE, EVALUATION_OUTPUT)}/{name}" for key, name in LINKS.items()}
    problem = customer_metadata_problem(resolved)
    if problem:
        raise DefinitionError(f"the Register step's links to the evaluation files cannot be registered: {problem}. "
                              f"Shorten SENTIMENT_MLOPS_PREFIX (now {ctx.settings.prefix!r}) or the bucket's name "
                              f"({ctx.settings.bucket!r}), and keep to the characters SageMaker takes")
    return {key: Join(on="/", values=[evaluation_uri(evaluate), name]) for key, name in LINKS.items()}


def register_step(ctx: BuildContext, train: TrainingStep, evaluate: ProcessingStep) -> ModelStep:
    """The model package, pending approval, with evaluation.json as its model metrics and links
    to every file of the evaluation (the report, the plots, the worst mistakes, the predictions)
    as its CustomerMetadataProperties.

    The artifact already holds ``code/inference.py``, so the container is pointed at it through
    ``SAGEMAKER_PROGRAM``/``SAGEMAKER_SUBMIT_DIRECTORY`` and the SDK adds no repack step.
    """
    settings = ctx.settings
    instance_types = supported_instance_types(ctx.images.inference)
    builder = ModelBuilder(
        s3_model_data_url=model_data(train), image_uri=ctx.images.inference, role_arn=settings.role_arn,
        sagemaker_session=ctx.session, instance_type=instance_types["inference"][0], dependencies=None,
        env_vars={"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                  "SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "SAGEMAKER_REGION": settings.region, **ctx.pip_env},
    )
    metrics = ModelMetrics(model_statistics=MetricsSource(
        content_type="application/json",
        s3_uri=Join(on="/", values=[evaluation_uri(evaluate), REPORT_FILE])))
    step_args = builder.register(
        model_package_group_name=settings.model_package_group, approval_status=ctx.params.model_approval_status,
        content_types=CONTENT_TYPES, response_types=RESPONSE_TYPES,
        inference_instances=instance_types["inference"], transform_instances=instance_types["transform"],
        model_metrics=metrics, domain="NATURAL_LANGUAGE_PROCESSING", task="CLASSIFICATION",
        customer_metadata_properties=evaluation_links(ctx, evaluate),
    )
    return ModelStep(name=REGISTER, step_args=step_args, retry_policies=service_retries(),
                     description="Register the model version for manual approval")


def check_accuracy_step(ctx: BuildContext, report: PropertyFile, register: ModelStep) -> ConditionStep:
    accuracy = JsonGet(step_name=EVALUATE, property_file=report, json_path=ACCURACY_PATH)
    threshold = ctx.params.accuracy_threshold
    fail = FailStep(name=FAIL, error_message=Join(on=" ", values=[
        "Test accuracy", accuracy, "is below the threshold", threshold, "- the model was not registered."]))
    return ConditionStep(
        name=CHECK_ACCURACY,
        conditions=[ConditionGreaterThanOrEqualTo(left=accuracy, right=threshold)],
        if_steps=[register], else_steps=[fail],
        description="Register only a model whose test accuracy reaches AccuracyThreshold")
