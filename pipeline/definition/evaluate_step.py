"""Evaluate (Processing): the metrics of the Transform's answers on the test texts (what the
serving container answered), plus the slices it scores through the artifact's own inference code
(texts cut from the test reviews), and evaluation.json as the property file the gate reads."""
from __future__ import annotations

from typing import Any

from sagemaker.core.workflow.properties import PropertyFile
from sagemaker.mlops.workflow.steps import ProcessingStep, TrainingStep, TransformStep

from evaluation.outputs import REPORT_FILE
from pipeline.definition.context import BuildContext, job_retries
from pipeline.definition.contracts import (
    EVALUATE,
    EVALUATE_SCRIPT,
    EVALUATION_OUTPUT,
    EVALUATION_OUTPUT_DIR,
    EVALUATION_REPORT,
    MODEL_INPUT_DIR,
    PREDICTIONS_INPUT_DIR,
    TEST_INPUT_DIR,
)
from pipeline.definition.preprocess_step import split_uri
from pipeline.definition.train_step import model_data
from pipeline.definition.transform_step import transform_output_uri


def evaluation_report() -> PropertyFile:
    return PropertyFile(name=EVALUATION_REPORT, output_name=EVALUATION_OUTPUT, path=REPORT_FILE)


def evaluate_step(ctx: BuildContext, preprocess: ProcessingStep, train: TrainingStep, transform: TransformStep,
                  report: PropertyFile) -> ProcessingStep:
    step_args = ctx.processor(EVALUATE).run(
        inputs=[ctx.s3_input("model", model_data(train), MODEL_INPUT_DIR),
                ctx.s3_input("test", split_uri(preprocess, "test"), TEST_INPUT_DIR),
                ctx.s3_input("predictions", transform_output_uri(transform), PREDICTIONS_INPUT_DIR),
                *ctx.code_inputs()],
        outputs=[ctx.s3_output(EVALUATE, EVALUATION_OUTPUT, EVALUATION_OUTPUT_DIR)],
        arguments=[EVALUATE_SCRIPT, "--model", MODEL_INPUT_DIR, "--test", TEST_INPUT_DIR,
                   "--predictions", PREDICTIONS_INPUT_DIR, "--output-dir", EVALUATION_OUTPUT_DIR],
    )
    return ProcessingStep(name=EVALUATE, step_args=step_args, property_files=[report], cache_config=ctx.cache,
                          retry_policies=job_retries(),
                          description="The metrics of the serving container's answers on the test texts")


def evaluation_uri(evaluate: ProcessingStep) -> Any:
    """The S3 folder holding evaluation.json and the plots (``evaluation/outputs.py`` names the
    files), as a property read at run time."""
    return evaluate.properties.ProcessingOutputConfig.Outputs[EVALUATION_OUTPUT].S3Output.S3Uri
