"""CheckAccuracy and CheckSentenceAccuracy (Conditions): Register the model for manual approval
when its test accuracy on reviews reaches AccuracyThreshold and on sentences reaches
SentenceAccuracyThreshold; Fail (or FailSentences) with the figure that missed otherwise."""
from __future__ import annotations

from typing import Any

from sagemaker.core.drift_check_baselines import DriftCheckBaselines
from sagemaker.core.model_metrics import MetricsSource, ModelMetrics
from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo, ConditionLessThanOrEqualTo, ConditionOr
from sagemaker.core.workflow.functions import Join, JsonGet
from sagemaker.core.workflow.properties import PropertyFile
from sagemaker.mlops.workflow.condition_step import ConditionStep
from sagemaker.mlops.workflow.fail_step import FailStep
from sagemaker.mlops.workflow.model_step import ModelStep
from sagemaker.mlops.workflow.steps import ProcessingStep, TrainingStep

from evaluation.outputs import BASELINE_CONSTRAINTS_FILE, BASELINE_FOLDER, BASELINE_STATISTICS_FILE, LINKS, REPORT_FILE
from pipeline.definition.context import BuildContext, service_retries
from pipeline.definition.contracts import (
    CHECK_ACCURACY,
    CHECK_SENTENCE_ACCURACY,
    CONTENT_TYPES,
    EVALUATE,
    EVALUATION_OUTPUT,
    FAIL,
    FAIL_SENTENCES,
    REGISTER,
    RESPONSE_TYPES,
    customer_metadata_problem,
    gate_path,
)
from pipeline.definition.evaluate_step import evaluation_uri
from pipeline.definition.images import supported_instance_types
from pipeline.definition.transform_step import model_builder
from pipeline.errors import UserError
from serve.text import REVIEWS, SENTENCES


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
    """The model package, pending approval, with evaluation.json as its model metrics, the
    monitoring baseline as its drift-check baselines, and links
    to every file of the evaluation (the report, the plots, the worst mistakes, the predictions)
    as its CustomerMetadataProperties."""
    settings = ctx.settings
    instance_types = supported_instance_types(ctx.images.inference)
    builder = model_builder(ctx, train)
    metrics = ModelMetrics(model_statistics=MetricsSource(
        content_type="application/json",
        s3_uri=Join(on="/", values=[evaluation_uri(evaluate), REPORT_FILE])))
    # What a monitoring job (monitor/) compares the live traffic with, from the same evaluation.
    baselines = DriftCheckBaselines(**{key: MetricsSource(content_type="application/json", s3_uri=Join(
        on="/", values=[evaluation_uri(evaluate), BASELINE_FOLDER, name])) for key, name in (
        ("model_data_statistics", BASELINE_STATISTICS_FILE), ("model_data_constraints", BASELINE_CONSTRAINTS_FILE))})
    step_args = builder.register(
        model_package_group_name=settings.model_package_group, approval_status=ctx.params.model_approval_status,
        content_types=CONTENT_TYPES, response_types=RESPONSE_TYPES,
        inference_instances=instance_types["inference"], transform_instances=instance_types["transform"],
        model_metrics=metrics, drift_check_baselines=baselines, domain="NATURAL_LANGUAGE_PROCESSING", task="CLASSIFICATION",
        customer_metadata_properties=evaluation_links(ctx, evaluate),
    )
    return ModelStep(name=REGISTER, step_args=step_args, retry_policies=service_retries(),
                     description="Register the model version for manual approval")


def _gate(ctx: BuildContext, report: PropertyFile, kind: str, threshold: Any, name: str, fail_name: str,
          next_step: ConditionStep | ModelStep) -> ConditionStep:
    """Go on to ``next_step`` when this kind's test texts reach ``threshold`` or the run has none of
    them (``gate.<kind>.texts`` 0); Fail, saying which figure missed which threshold, otherwise."""
    accuracy = JsonGet(step_name=EVALUATE, property_file=report, json_path=gate_path(kind, "accuracy"))
    texts = JsonGet(step_name=EVALUATE, property_file=report, json_path=gate_path(kind, "texts"))
    fail = FailStep(name=fail_name, error_message=Join(on=" ", values=[
        f"Test accuracy on {kind}", accuracy, "is below the threshold", threshold, "- the model was not registered."]))
    return ConditionStep(
        name=name,
        # texts ≤ 0, not == 0: an ordering compares numbers only, whatever type the report writes.
        conditions=[ConditionOr(conditions=[ConditionLessThanOrEqualTo(left=texts, right=0),
                                            ConditionGreaterThanOrEqualTo(left=accuracy, right=threshold)])],
        if_steps=[next_step], else_steps=[fail],
        description=f"Go on only when the test accuracy on {kind} reaches its threshold (or the run tests no {kind})")


def check_accuracy_step(ctx: BuildContext, report: PropertyFile, register: ModelStep) -> ConditionStep:
    """CheckAccuracy holds the reviews to AccuracyThreshold, then CheckSentenceAccuracy the sentences
    to SentenceAccuracyThreshold, then Register: two gates in a row, so that the Fail step that
    ends a run names the one figure that missed."""
    sentences = _gate(ctx, report, SENTENCES, ctx.params.sentence_accuracy_threshold, CHECK_SENTENCE_ACCURACY,
                      FAIL_SENTENCES, register)
    return _gate(ctx, report, REVIEWS, ctx.params.accuracy_threshold, CHECK_ACCURACY, FAIL, sentences)
