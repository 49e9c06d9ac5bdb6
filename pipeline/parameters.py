"""Every pipeline parameter in one place: what a user may change per execution.

Each parameter becomes an entry of the definition's ``Parameters`` list; SageMaker (and the
local runtime) substitute the execution's values, or these defaults, wherever the definition
says ``{"Get": "Parameters.<Name>"}``. Everything else about the pipeline is fixed when the
definition is built. Preprocessing defaults mirror ``steps.preprocess`` (written out here, as
importing that module costs seconds of numpy/scipy; a test keeps them equal).

``InputDataVersion`` names the data behind ``InputDataUri`` (a digest of its S3 listing, or the
local run's content fingerprint). SageMaker's cache key holds URIs, not the bytes behind them:
data replaced in place keeps its URI, so without a version that changes with the data every
cached step would be reused and Register would add the same model again. Preprocess receives
it as ``--data-version``, so it is part of Preprocess's cache key (and Train's and Evaluate's
follow), and it is written into the model's config.json for approvers to see.

Training takes a profile (``gpu`` on SageMaker) and the epochs. Only hyperparameters that do
not silently override the profile's architecture are parameters: a ``HiddenDim`` parameter
would always be sent, so choosing ``TrainingProfile=cpu`` would still get the gpu width.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from mlops_rules.approvals import APPROVAL_STATUSES, DEFAULT_APPROVAL_STATUS
from mlops_rules.parameters import INPUT_PARAMETER, VERSION_PARAMETER
from train.profiles import PROFILES

if TYPE_CHECKING:  # the SDK is imported when the parameters are built: the constants here are cheap to import
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString

# Tied to the PyTorch image: a GPU DLC for training, a CPU one for processing.
DEFAULT_PROCESSING_INSTANCE_TYPE = "ml.m5.xlarge"
DEFAULT_TRAINING_INSTANCE_TYPE = "ml.g5.xlarge"
DEFAULT_ACCURACY_THRESHOLD = 0.88  # on reviews (IMDb's test set)
# On sentences (SST-2's test set), when the run has a sentence dataset: single sentences carry less
# evidence than a review, so the same model scores lower on them (Kim's CNN: 0.881 on SST-2).
DEFAULT_SENTENCE_ACCURACY_THRESHOLD = 0.82
# steps.preprocess's --data-version default: no version given (a run started by hand).
DEFAULT_INPUT_DATA_VERSION = ""
# steps.preprocess.PreprocessOptions defaults (max_len is TextConfig's).
DEFAULT_MAX_LEN = 1000
DEFAULT_VOCAB_SIZE = 20_000
DEFAULT_EMBEDDING_DIM = 128
DEFAULT_TRAINING_PROFILE = "gpu"


@dataclass(frozen=True)
class PipelineParameters:
    """The parameters, as SDK objects the steps refer to; ``all()`` is the definition's order."""

    input_data_uri: ParameterString
    input_data_version: ParameterString
    accuracy_threshold: ParameterFloat
    sentence_accuracy_threshold: ParameterFloat
    model_approval_status: ParameterString
    processing_instance_type: ParameterString
    processing_instance_count: ParameterInteger
    training_instance_type: ParameterString
    training_instance_count: ParameterInteger
    max_len: ParameterInteger
    vocab_size: ParameterInteger
    embedding_dim: ParameterInteger
    training_profile: ParameterString
    epochs: ParameterInteger

    def all(self) -> list:
        return [getattr(self, f.name) for f in fields(self)]

    def training_hyperparameters(self) -> dict:
        """Hyperparameters as SageMaker wants them: string values only.

        ``.to_string()`` is needed because the SDK would otherwise write a raw Integer ``Get``
        into the string-only ``HyperParameters`` map, which CreateTrainingJob refuses.
        """
        return {
            "profile": self.training_profile.to_string(),
            "epochs": self.epochs.to_string(),
        }


def default_input_data_uri(bucket_uri: str) -> str:
    """Where the raw reviews are expected unless an execution says otherwise.

    The trailing "/" matters: Preprocess reads it as an ``S3Prefix`` input, which takes every
    object whose key starts with the URI, so without it ``data/imdb`` would also read
    ``data/imdb-2026-11/…`` (a dataset that ``aws upload-data --name`` put beside it) and
    ``data/imdb.csv``.
    """
    return f"{bucket_uri.rstrip('/')}/data/imdb/"


def pipeline_parameters(input_data_uri: str) -> PipelineParameters:
    """The parameters with their defaults; ``input_data_uri`` comes from the settings."""
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString

    return PipelineParameters(
        input_data_uri=ParameterString(name=INPUT_PARAMETER, default_value=input_data_uri),
        input_data_version=ParameterString(name=VERSION_PARAMETER, default_value=DEFAULT_INPUT_DATA_VERSION),
        accuracy_threshold=ParameterFloat(name="AccuracyThreshold", default_value=DEFAULT_ACCURACY_THRESHOLD),
        sentence_accuracy_threshold=ParameterFloat(name="SentenceAccuracyThreshold",
                                                   default_value=DEFAULT_SENTENCE_ACCURACY_THRESHOLD),
        model_approval_status=ParameterString(name="ModelApprovalStatus", default_value=DEFAULT_APPROVAL_STATUS,
                                              enum_values=list(APPROVAL_STATUSES)),
        processing_instance_type=ParameterString(name="ProcessingInstanceType", default_value=DEFAULT_PROCESSING_INSTANCE_TYPE),
        processing_instance_count=ParameterInteger(name="ProcessingInstanceCount", default_value=1),
        training_instance_type=ParameterString(name="TrainingInstanceType", default_value=DEFAULT_TRAINING_INSTANCE_TYPE),
        training_instance_count=ParameterInteger(name="TrainingInstanceCount", default_value=1),
        max_len=ParameterInteger(name="MaxLen", default_value=DEFAULT_MAX_LEN),
        vocab_size=ParameterInteger(name="VocabSize", default_value=DEFAULT_VOCAB_SIZE),
        embedding_dim=ParameterInteger(name="EmbeddingDim", default_value=DEFAULT_EMBEDDING_DIM),
        training_profile=ParameterString(name="TrainingProfile", default_value=DEFAULT_TRAINING_PROFILE,
                                         enum_values=sorted(PROFILES)),
        epochs=ParameterInteger(name="Epochs", default_value=PROFILES[DEFAULT_TRAINING_PROFILE].epochs),
    )
