"""The endpoint's resources as the deploy function names them, and the endpoint statuses in which
it must not be changed: what the deploy function and a teardown agree on."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# The endpoint's instance type when none is chosen (the stack's EndpointInstanceType, a local
# endpoint's record): the smallest general-purpose type the CPU inference image runs on.
DEFAULT_ENDPOINT_INSTANCE_TYPE = "ml.m5.large"
# The one production variant of the deploy function's endpoint configs: a blue/green update with
# guardrails needs the new config to keep the variant's name.
VARIANT_NAME = "AllTraffic"
# The one shadow variant a config may carry beside it (SageMaker allows one of each): a pending
# version that receives a copy of a sample of the requests and whose answers are never returned.
SHADOW_VARIANT_NAME = "Shadow"
# EndpointStatus values during which UpdateEndpoint and DeleteEndpoint are refused.
BUSY_STATUSES = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


def model_name(endpoint: str, version: int) -> str:
    """``<endpoint>-v<version>``: the Model made for a version; its endpoint configs add a settings hash."""
    return f"{endpoint}-v{version}"


def model_version(endpoint: str, model: str | None) -> int | None:
    """The version a Model of ``model_name``'s shape was made for, or None."""
    found = re.fullmatch(rf"{re.escape(endpoint)}-v(\d+)", model or "")
    return int(found.group(1)) if found else None


def transform_model_name(endpoint: str, version: int) -> str:
    """``<endpoint>-v<version>-transform``: the Model ``sentiment-mlops transform`` makes for a
    version. Not the endpoint's: that one runs as the endpoint's role, which may not write a
    transform's output; this one runs as the pipeline's role, which may."""
    return f"{model_name(endpoint, version)}-transform"


def shadow_model_name(endpoint: str, version: int) -> str:
    """``<endpoint>-v<version>-shadow``: the Model made for a pending version run as a shadow,
    from its package's container (not from the package: approval would make the endpoint's own)."""
    return f"{model_name(endpoint, version)}-shadow"


def shadow_config_name(endpoint: str, version: int, settings_hash: str) -> str:
    """``<endpoint>-s<version>-<hash>``: an endpoint config that runs a version as the shadow; the
    hash covers the production model and the settings, so the name stays within SageMaker's 63."""
    return f"{endpoint}-s{version}-{settings_hash}"


def shadow_version(endpoint: str, config_name: str | None) -> int | None:
    """The version an endpoint config of ``shadow_config_name``'s shape runs as the shadow, or None."""
    found = re.fullmatch(rf"{re.escape(endpoint)}-s(\d+)-[0-9a-f]{{8}}", config_name or "")
    return int(found.group(1)) if found else None


def shadow_weight(percent: int) -> float:
    """The shadow variant's ``InitialVariantWeight`` beside the production variant's 1.0: SageMaker
    copies to the shadow the share of requests that the ratio of the two weights gives."""
    return round(percent / 100, 2)


def shadow_share(shadow: Mapping[str, Any], production: Mapping[str, Any]) -> float:
    """The share of the requests a config's shadow variant is copied: its weight over the
    production variant's (``shadow_weight``), at most all of them."""
    weight = float(production.get("InitialVariantWeight", 1.0))
    return min(1.0, float(shadow.get("InitialVariantWeight", 1.0)) / weight) if weight > 0 else 0.0


def made_for(endpoint: str, name: str) -> bool:
    """Whether a Model or endpoint config of this name is one the project makes for ``endpoint``
    (the deploy function, or ``transform``): what a teardown may delete."""
    # model_name's shape, then the variant hash's eight hex digits (an endpoint config), -transform
    # or -shadow; or a shadow's endpoint config
    return re.fullmatch(rf"{re.escape(endpoint)}-(v\d+(-[0-9a-f]{{8}}|-transform|-shadow)?|s\d+-[0-9a-f]{{8}})",
                        name) is not None
