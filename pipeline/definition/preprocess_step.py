"""Preprocess (Processing): clean, tokenize and encode the reviews into train/validation/test."""
from __future__ import annotations

from typing import Any

from sagemaker.mlops.workflow.steps import ProcessingStep

from pipeline.definition.context import BuildContext, job_retries
from pipeline.definition.contracts import (
    DATA_INPUT_DIR,
    PREPROCESS,
    PREPROCESS_OUTPUT_DIR,
    PREPROCESS_SCRIPT,
    PROCESSING_RESOURCE_CONFIG,
    SHARDED_BY_S3_KEY,
    SPLITS,
)


def preprocess_step(ctx: BuildContext) -> ProcessingStep:
    params = ctx.params
    step_args = ctx.processor(PREPROCESS, params.processing_instance_count).run(
        # Each instance gets its share of the data's objects (staging writes many; steps.hosts).
        inputs=[ctx.s3_input("data", params.input_data_uri, DATA_INPUT_DIR, distribution=SHARDED_BY_S3_KEY),
                *ctx.code_inputs()],
        outputs=[ctx.s3_output(PREPROCESS, split, f"{PREPROCESS_OUTPUT_DIR}/{split}") for split in SPLITS],
        arguments=[PREPROCESS_SCRIPT, "--input-dir", DATA_INPUT_DIR, "--output-dir", PREPROCESS_OUTPUT_DIR,
                   "--max-len", params.max_len.to_string(), "--vocab-size", params.vocab_size.to_string(),
                   "--embedding-dim", params.embedding_dim.to_string(),
                   "--data-version", params.input_data_version, "--resource-config", PROCESSING_RESOURCE_CONFIG],
    )
    return ProcessingStep(name=PREPROCESS, step_args=step_args, cache_config=ctx.cache, retry_policies=job_retries(),
                          description="Clean, tokenize and encode the reviews; split train/validation/test")


def split_uri(preprocess: ProcessingStep, split: str) -> Any:
    """The S3 folder of one of Preprocess's splits, as a property later steps read at run time."""
    return preprocess.properties.ProcessingOutputConfig.Outputs[split].S3Output.S3Uri
