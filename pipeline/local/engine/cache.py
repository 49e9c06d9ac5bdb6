"""Step caching as SageMaker Pipelines does it: a step whose CacheConfig is enabled reuses the
result of an earlier Succeeded run of the same step, in the same pipeline, whose cache-key
attributes (resolved) were the same, if that run ended within ``ExpireAfter``.

The attributes are those SageMaker documents per step type ("Default cache key attributes by
pipeline step type"): for a Processing step its AppSpecification, Environment and
ProcessingInputs; for a Training step its algorithm, checkpoints, debugger settings,
Environment, HyperParameters and InputDataConfig; for a Transform step its DataProcessing,
Environment, ModelName and TransformInput (a model made by the execution's own CreateModel step
has the execution's name, so such a transform is never reused, on SageMaker as here). Output locations are not part of the key, so
a step reused from the cache hands on the outputs of the execution that really ran it.

Like SageMaker, the key holds URIs, not the bytes behind them: the project keeps its URIs
content-addressed (code bundles, staged data) so that changed content means a changed URI.
One local addition: an entry whose outputs are gone from the artifact store (a cleaned
``.mlops/s3``) is not reused, because the steps after it could not read them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mlops_rules import caching
from pipeline.local.engine.errors import PolicyError
from pipeline.local.state.db import sha256_text, to_json
from pipeline.local.state.store import ArtifactStore

CACHE_KEY_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "Processing": ("AppSpecification", "Environment", "ProcessingInputs"),
    "Training": ("AlgorithmSpecification", "CheckpointConfig", "DebugHookConfig", "DebugRuleConfigurations",
                 "Environment", "HyperParameters", "InputDataConfig"),
    "Transform": ("DataProcessing", "Environment", "ModelName", "TransformInput"),
}
# A CacheConfig without ExpireAfter never expires; a century stands for "never" in SQL text order.
NO_EXPIRY = timedelta(days=36500)


def parse_expire_after(text: str) -> timedelta:
    """CacheConfig's ``ExpireAfter`` as a duration (mlops_rules.caching reads it, for the retrain
    function's lookback too); PolicyError for one it cannot read."""
    try:
        return caching.parse_expire_after(text)
    except ValueError as error:
        raise PolicyError(str(error)) from None


@dataclass(frozen=True)
class CachePolicy:
    expire_after: timedelta


def cache_policy(step: Mapping[str, Any]) -> CachePolicy | None:
    """The step's CacheConfig when caching is on for it (and its type can be cached), else None."""
    config = step.get("CacheConfig") or {}
    if not config.get("Enabled") or step.get("Type") not in CACHE_KEY_ATTRIBUTES:
        return None
    expire_after = config.get("ExpireAfter")
    try:
        return CachePolicy(parse_expire_after(expire_after) if expire_after else NO_EXPIRY)
    except PolicyError as exc:
        raise PolicyError(f"step {step.get('Name')}: {exc}") from None


def step_cache_key(step_name: str, arguments: Any) -> str:
    """sha256 of the step name and its resolved cache-key attributes (canonical JSON).

    Like SageMaker, a step is reused only when what it would run is identical. The key holds
    the step's URIs, not the content behind them (see the module's docstring). The empty
    ``inputs`` member keeps keys equal to those that earlier versions recorded in the state.
    """
    return sha256_text(to_json({"step": step_name, "arguments": arguments, "inputs": {}}))


def cache_key(step_name: str, step_type: str, arguments: Mapping[str, Any]) -> str:
    """The key of a step's resolved request: its name and its type's cache-key attributes."""
    return step_cache_key(step_name, {name: arguments.get(name) for name in CACHE_KEY_ATTRIBUTES[step_type]})


def output_uris(step_type: str, properties: Mapping[str, Any]) -> list[str]:
    """What a later step reads from a cached step's result: its outputs in the store."""
    if step_type == "Processing":
        outputs = (properties.get("ProcessingOutputConfig") or {}).get("Outputs") or []
        return [o["S3Output"]["S3Uri"] for o in outputs if o.get("S3Output")]
    if step_type == "Training":
        return [(properties.get("ModelArtifacts") or {}).get("S3ModelArtifacts", "")]
    if step_type == "Transform":
        return [(properties.get("TransformOutput") or {}).get("S3OutputPath", "")]
    return []


def missing_outputs(step_type: str, properties: Mapping[str, Any], store: ArtifactStore) -> list[str]:
    """Outputs gone from the store: a training job's model is one object; a processing output a prefix."""
    present = store.has_object if step_type == "Training" else store.exists
    return [uri for uri in output_uris(step_type, properties) if not uri or not present(uri)]
