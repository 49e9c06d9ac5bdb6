"""Train (Training): the LSTM in script mode on managed spot, with checkpoints to resume from."""
from __future__ import annotations

from typing import Any

from sagemaker.core.shapes import MetricDefinition
from sagemaker.core.training.configs import CheckpointConfig, Compute, InputData, OutputDataConfig, StoppingCondition
from sagemaker.core.workflow.functions import Join
from sagemaker.mlops.workflow.steps import ProcessingStep, TrainingStep
from sagemaker.train.model_trainer import ModelTrainer

from pipeline.definition.context import BuildContext, job_retries
from pipeline.definition.contracts import (
    CHECKPOINT_DIR,
    TORCH_DISTRIBUTED,
    TRAIN,
    TRAIN_SCRIPT,
    TRAINING_MAX_RUNTIME_S,
    TRAINING_MAX_WAIT_S,
)
from pipeline.definition.preprocess_step import split_uri
from pipeline.parameters import PipelineParameters
from pipeline.settings import Settings
from train.epoch_log import METRIC_DEFINITIONS


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
    return Join(on="/", values=[settings.s3_uri("checkpoints"), params.training_profile,
                                Join(on="", values=["epochs-", params.epochs, "/"])])


def train_step(ctx: BuildContext, preprocess: ProcessingStep) -> TrainingStep:
    settings, params = ctx.settings, ctx.params
    hyperparameters = {
        **params.training_hyperparameters(),
        "sagemaker_program": TRAIN_SCRIPT,
        "sagemaker_submit_directory": ctx.bundles.training.s3_uri,
        "sagemaker_region": settings.region,
        # The PyTorch training toolkit's torchrun launcher: one process per GPU on each host, every
        # host joined (TrainingInstanceCount > 1); one process in all is the plain path in train.py.
        TORCH_DISTRIBUTED: "true",
    }
    trainer = ModelTrainer(
        training_image=ctx.images.training, role=settings.role_arn, sagemaker_session=ctx.session,
        base_job_name=f"{settings.pipeline_name}-train",
        compute=Compute(instance_type=params.training_instance_type, instance_count=params.training_instance_count,
                        volume_size_in_gb=30, enable_managed_spot_training=True),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=TRAINING_MAX_RUNTIME_S,
                                             max_wait_time_in_seconds=TRAINING_MAX_WAIT_S),
        output_data_config=OutputDataConfig(s3_output_path=settings.s3_uri("models")),
        checkpoint_config=CheckpointConfig(s3_uri=checkpoint_uri(settings, params), local_path=CHECKPOINT_DIR),
        hyperparameters=hyperparameters,
        environment={"PYTHONUNBUFFERED": "1", **ctx.pip_env},
    ).with_metric_definitions([MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in METRIC_DEFINITIONS])
    step_args = trainer.train(input_data_config=[
        InputData(channel_name=split, data_source=split_uri(preprocess, split)) for split in ("train", "validation")])
    return TrainingStep(name=TRAIN, step_args=step_args, cache_config=ctx.cache, retry_policies=job_retries(),
                        description="Train the LSTM (script mode, managed spot, checkpoints)")


def model_data(train: TrainingStep) -> Any:
    """The trained artifact's S3 URI (model.tar.gz), as a property later steps read at run time."""
    return train.properties.ModelArtifacts.S3ModelArtifacts
