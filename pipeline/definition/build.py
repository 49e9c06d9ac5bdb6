"""The pipeline assembled from its steps, and its canonical JSON."""
from __future__ import annotations

import json
import logging
import warnings
from typing import TYPE_CHECKING

from pipeline.bundles import CodeBundles, build_bundles
from pipeline.definition.offline import offline_sdk
from pipeline.settings import Settings

if TYPE_CHECKING:  # the SDK is imported lazily, once offline_sdk has set the environment
    from sagemaker.mlops.workflow.pipeline import Pipeline


def build_pipeline(settings: Settings | None = None, bundles: CodeBundles | None = None) -> Pipeline:
    """The pipeline as an SDK ``Pipeline`` object; nothing is sent anywhere.

    Its ``definition()`` is where the SDK computes the steps' arguments: call it through
    ``definition_json``, which also keeps that part offline and fast.
    """
    settings = settings or Settings()
    bundles = bundles or build_bundles(settings)
    with offline_sdk(settings):
        return _assemble(settings, bundles)


def _assemble(settings: Settings, bundles: CodeBundles) -> Pipeline:
    # Imported here: each step module imports the SDK, which must not happen before offline_sdk.
    from sagemaker.mlops.workflow.pipeline import Pipeline

    from pipeline.definition.context import BuildContext
    from pipeline.definition.evaluate_step import evaluate_step, evaluation_report
    from pipeline.definition.gate_step import check_accuracy_step, register_step
    from pipeline.definition.preprocess_step import preprocess_step
    from pipeline.definition.train_step import train_step
    from pipeline.definition.transform_step import create_model_step, transform_step

    ctx = BuildContext.create(settings, bundles)
    preprocess = preprocess_step(ctx)
    train = train_step(ctx, preprocess)
    model = create_model_step(ctx, train)
    transform = transform_step(ctx, preprocess, model)
    report = evaluation_report()
    evaluate = evaluate_step(ctx, preprocess, train, transform, report)
    check = check_accuracy_step(ctx, report, register_step(ctx, train, evaluate))
    # No experiment tracking: nothing here reads it, and it would need the pipeline role to
    # create experiments and trials besides the jobs (see lambda/template.yaml's PipelineRole).
    return Pipeline(name=settings.pipeline_name, parameters=ctx.params.all(),
                    steps=[preprocess, train, model, transform, evaluate, check], sagemaker_session=ctx.session,
                    pipeline_experiment_config=None)


def definition_json(settings: Settings | None = None, bundles: CodeBundles | None = None) -> str:
    """The canonical definition: the SDK's JSON, re-serialized with sorted keys and 2-space
    indentation, so that equal definitions are equal strings."""
    settings = settings or Settings()
    with offline_sdk(settings):
        # The steps' arguments are computed by definition(), so it runs inside the block too.
        pipeline = build_pipeline(settings, bundles)
        return canonical_json(json.loads(pipeline.definition()))


def canonical_json(definition: dict) -> str:
    return json.dumps(definition, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def quiet_definition_json(settings: Settings, bundles: CodeBundles | None = None) -> str:
    """The definition JSON, without the SDK's own log lines and warnings about its choices.
    Some SDK modules give their loggers levels and handlers of their own (ModelBuilder's say
    "Model has been created" where nothing is), so logging below ERROR is off for the build."""
    for name in ("sagemaker", "sagemaker.config"):
        logging.getLogger(name).setLevel(logging.ERROR)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return definition_json(settings, bundles)
    finally:
        logging.disable(previous)
