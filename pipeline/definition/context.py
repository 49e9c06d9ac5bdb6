"""What every step of the definition is built from: the settings, the code bundles, the SDK
session, the pipeline parameters and images, and the few shapes the steps share (S3 inputs and
outputs, the bundle-running processor, the cache and retry policies).

Imports the SDK at module level: import this only once ``offline.prepare_sdk_environment`` ran
(``build.build_pipeline`` does).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
from sagemaker.core.processing import Processor
from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output
from sagemaker.core.workflow.execution_variables import ExecutionVariables
from sagemaker.core.workflow.functions import Join
from sagemaker.core.workflow.pipeline_context import PipelineSession
from sagemaker.mlops.workflow.retry import (
    SageMakerJobExceptionTypeEnum,
    SageMakerJobStepRetryPolicy,
    StepExceptionTypeEnum,
    StepRetryPolicy,
)
from sagemaker.mlops.workflow.steps import CacheConfig

from mlops_rules.caching import CACHE_EXPIRE_AFTER
from pipeline.bundles import CodeBundles
from pipeline.definition.contracts import (
    CODE_INPUT_DIR,
    EXECUTION_ID_LENGTH,
    FULLY_REPLICATED,
    PROCESSING_MAX_RUNTIME_S,
    RUNNER_INPUT_DIR,
)
from pipeline.definition.images import Images, resolve_images
from pipeline.definition.offline import SDK_CONFIG
from pipeline.parameters import PipelineParameters, default_input_data_uri, pipeline_parameters
from pipeline.settings import Settings


def service_retries() -> list[StepRetryPolicy]:
    """A SageMaker API call that failed on AWS's side or was throttled: tried again."""
    return [StepRetryPolicy(exception_types=[StepExceptionTypeEnum.SERVICE_FAULT, StepExceptionTypeEnum.THROTTLING],
                            interval_seconds=10, backoff_rate=2.0, max_attempts=3)]


def job_retries() -> list[Any]:
    """Retry what is worth retrying: capacity and throttling, never a script's own failure."""
    return [*service_retries(),
            SageMakerJobStepRetryPolicy(exception_types=[SageMakerJobExceptionTypeEnum.CAPACITY_ERROR,
                                                         SageMakerJobExceptionTypeEnum.RESOURCE_LIMIT,
                                                         SageMakerJobExceptionTypeEnum.INTERNAL_ERROR],
                                        interval_seconds=60, backoff_rate=2.0, max_attempts=3)]


@dataclass
class BuildContext:
    settings: Settings
    bundles: CodeBundles
    session: PipelineSession
    params: PipelineParameters
    images: Images
    cache: CacheConfig = field(default_factory=lambda: CacheConfig(enable_caching=True, expire_after=CACHE_EXPIRE_AFTER))

    @classmethod
    def create(cls, settings: Settings, bundles: CodeBundles) -> BuildContext:
        session = PipelineSession(boto_session=boto3.Session(region_name=settings.region),
                                  default_bucket=settings.bucket, sagemaker_config=SDK_CONFIG,
                                  default_bucket_prefix=settings.prefix or None)
        return cls(settings=settings, bundles=bundles, session=session,
                   params=pipeline_parameters(default_input_data_uri(settings.s3_uri())),
                   images=resolve_images(settings))

    @property
    def pip_env(self) -> dict[str, str]:
        """The index the start-up installs (requirements.txt) read: a mirror where there is no NAT."""
        return {"PIP_INDEX_URL": self.settings.pip_index_url} if self.settings.pip_index_url else {}

    def output_uri(self, step: str, name: str) -> Join:
        """Where a step's output goes: per execution, so two executions never share outputs."""
        return Join(on="/", values=[self.settings.s3_uri("executions"), ExecutionVariables.PIPELINE_EXECUTION_ID,
                                    step, name])

    def resolved_output_uri(self, step: str, name: str, execution_id: str = "x" * EXECUTION_ID_LENGTH) -> str:
        """``output_uri`` as it resolves in an execution (any execution: the ids have one length),
        for checks at build time of what is only known at run time."""
        return "/".join([self.settings.s3_uri("executions"), execution_id, step, name])

    def s3_input(self, name: str, source: Any, destination: str, data_type: str = "S3Prefix",
                 distribution: str = FULLY_REPLICATED) -> ProcessingInput:
        """``distribution``: ``ShardedByS3Key`` gives each instance its share of the objects."""
        return ProcessingInput(input_name=name, s3_input=ProcessingS3Input(
            s3_uri=source, local_path=destination, s3_data_type=data_type, s3_input_mode="File",
            s3_data_distribution_type=distribution))

    def s3_output(self, step: str, name: str, source: str) -> ProcessingOutput:
        return ProcessingOutput(output_name=name, s3_output=ProcessingS3Output(
            s3_uri=self.output_uri(step, name), local_path=source, s3_upload_mode="EndOfJob"))

    def code_inputs(self) -> list[ProcessingInput]:
        """The processing bundle and the runner that unpacks it: every processing step's code."""
        return [self.s3_input("code", self.bundles.processing.s3_uri, CODE_INPUT_DIR),
                self.s3_input("entrypoint", self.bundles.runner.s3_uri, RUNNER_INPUT_DIR)]

    def processor(self, step: str, instance_count: Any = 1) -> Processor:
        """A plain Processor whose entry point is the bundle runner (FrameworkProcessor's shape
        without its uploads): the runner unpacks the code input and installs requirements.txt.
        One instance unless the step shares its work among more (Preprocess: ProcessingInstanceCount);
        a step that writes one report runs on one."""
        return Processor(
            role=self.settings.role_arn, image_uri=self.images.processing,
            instance_type=self.params.processing_instance_type,
            instance_count=instance_count, max_runtime_in_seconds=PROCESSING_MAX_RUNTIME_S,
            entrypoint=["/bin/bash", f"{RUNNER_INPUT_DIR}/{self.bundles.runner.name}"],
            base_job_name=f"{self.settings.pipeline_name}-{step.lower()}", sagemaker_session=self.session,
            env={"PYTHONUNBUFFERED": "1", **self.pip_env})
