"""The endpoint's resources as the deploy function names them, and the endpoint statuses in which
it must not be changed: what the deploy function and a teardown agree on."""
from __future__ import annotations

import re

# The endpoint's instance type when none is chosen (the stack's EndpointInstanceType, a local
# endpoint's record): the smallest general-purpose type the CPU inference image runs on.
DEFAULT_ENDPOINT_INSTANCE_TYPE = "ml.m5.large"
# The one production variant of the deploy function's endpoint configs: a blue/green update with
# guardrails needs the new config to keep the variant's name.
VARIANT_NAME = "AllTraffic"
# EndpointStatus values during which UpdateEndpoint and DeleteEndpoint are refused.
BUSY_STATUSES = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


def model_name(endpoint: str, version: int) -> str:
    """``<endpoint>-v<version>``: the Model made for a version; its endpoint configs add a settings hash."""
    return f"{endpoint}-v{version}"


def transform_model_name(endpoint: str, version: int) -> str:
    """``<endpoint>-v<version>-transform``: the Model ``sentiment-mlops transform`` makes for a
    version. Not the endpoint's: that one runs as the endpoint's role, which may not write a
    transform's output; this one runs as the pipeline's role, which may."""
    return f"{model_name(endpoint, version)}-transform"


def made_for(endpoint: str, name: str) -> bool:
    """Whether a Model or endpoint config of this name is one the project makes for ``endpoint``
    (the deploy function, or ``transform``): what a teardown may delete."""
    # model_name's shape, then the variant hash's eight hex digits (an endpoint config) or -transform
    return re.fullmatch(rf"{re.escape(endpoint)}-v\d+(-[0-9a-f]{{8}}|-transform)?", name) is not None
