"""The boto3 clients the backend uses, made from the settings' region.

Credentials are never part of the project: boto3's own chain finds them (environment,
``AWS_PROFILE``/SSO, instance or container role). Only the region comes from the settings, so
the pipeline, its bucket and its registry are always looked for in the same place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from pipeline.settings import Settings

USER_AGENT = "sentiment-mlops"


@dataclass(frozen=True)
class AwsClients:
    """The clients for one region; every backend function takes this."""

    s3: Any
    sagemaker: Any
    region: str
    cloudformation: Any = None  # the stack's outputs and its teardown


def make_clients(settings: Settings, session: boto3.Session | None = None) -> AwsClients:
    """Clients for ``settings.region``, with the standard retry mode (throttling and transient
    errors are retried with backoff by botocore itself).

    ``session`` lets a caller choose a profile (``boto3.Session(profile_name=...)``); its own
    region is ignored in favour of the settings' one.
    """
    session = session or boto3.Session(region_name=settings.region)
    config = Config(region_name=settings.region, retries={"mode": "standard", "max_attempts": 8},
                    user_agent_extra=USER_AGENT)
    # SigV4 for the links it presigns too (botocore presigns S3 with the legacy SigV2 unless told,
    # which regions opened since 2014 refuse); its API calls are SigV4 either way.
    s3_config = config.merge(Config(signature_version="s3v4"))
    return AwsClients(s3=session.client("s3", config=s3_config),
                      sagemaker=session.client("sagemaker", config=config),
                      region=settings.region, cloudformation=session.client("cloudformation", config=config))
