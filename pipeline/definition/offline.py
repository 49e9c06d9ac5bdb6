"""Building the definition with the SageMaker SDK without calling AWS, quickly, and the same on
every machine.

The SDK is written for a notebook with credentials: it builds boto3 clients at import, asks the
EC2 metadata service for credentials, simulates the role's IAM policy, reads the user's config
files and sends telemetry. Everything here turns one of those off for the duration of a build,
and nothing else: afterwards a backend on EC2 still gets its instance role.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from pipeline.settings import Settings

log = logging.getLogger(__name__)

# The session's SDK config: telemetry off (the SDK would otherwise call STS and send an HTTPS
# request from a background thread). Giving a config also keeps the session from reading the
# user's config files, which would make the JSON depend on the machine it is built on.
SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


def prepare_sdk_environment(settings: Settings) -> None:
    """What must hold before the SDK is imported or used, so that building calls nothing.

    ``sagemaker.mlops`` builds boto3 clients at import (it needs a region); ``ModelTrainer``
    simulates the role's IAM policy unless told not to.
    """
    os.environ.setdefault("AWS_DEFAULT_REGION", settings.region)
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"


@contextlib.contextmanager
def no_instance_metadata() -> Iterator[None]:
    """Keep boto3 from asking the EC2 instance metadata service for credentials while building.

    The SDK creates boto3 clients at import; with no credentials configured, botocore's
    credential chain ends by calling 169.254.169.254 (with retries: seconds on a laptop).
    """
    previous = os.environ.get("AWS_EC2_METADATA_DISABLED")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("AWS_EC2_METADATA_DISABLED", None)
        else:
            os.environ["AWS_EC2_METADATA_DISABLED"] = previous


@contextlib.contextmanager
def config_validated_once(config: dict) -> Iterator[bool]:
    """Validate ``config`` once instead of at each of the SDK's ~45 lookups while building;
    yields whether the shortcut is in place.

    Every lookup runs ``jsonschema.validate``, which re-checks the whole SDK schema itself
    (0.25 s each): 10 s of a 12 s build. The SDK offers no switch for it, so this replaces its
    validator, a static method of ``SageMakerConfig``, for this block only: the config never
    changes during a build, so it is checked once with the SDK's own validator, and only this
    very object skips the check. Should an SDK release rename or reshape that method, the build
    is slower but still right (``tests/test_definition.py`` notices and names the method).
    """
    from sagemaker.core.config.config_manager import SageMakerConfig

    original = SageMakerConfig.__dict__.get("validate_sagemaker_config")
    if not isinstance(original, staticmethod):
        log.debug("SageMakerConfig.validate_sagemaker_config is not a static method: building unshortened")
        yield False
        return
    original.__func__(config)

    def validate(sagemaker_config: dict | None = None) -> None:
        if sagemaker_config is not config:
            original.__func__(sagemaker_config)

    SageMakerConfig.validate_sagemaker_config = staticmethod(validate)
    try:
        yield True
    finally:
        SageMakerConfig.validate_sagemaker_config = original


@contextlib.contextmanager
def offline_sdk(settings: Settings) -> Iterator[None]:
    """The whole build runs inside this: the environment set, no metadata service, and the
    session's config validated once."""
    prepare_sdk_environment(settings)
    with no_instance_metadata(), config_validated_once(SDK_CONFIG):
        yield
