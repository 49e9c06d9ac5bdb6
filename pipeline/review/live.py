"""The shadow on live traffic: how often a version run as the endpoint's shadow answers as the
serving version does, on the requests web users actually sent, and how fast each answers.

The pairs come from data capture, as they would on AWS: the endpoint captures the production
answer under its variant and the shadow's answer to the same request under the shadow variant,
both carrying the request's ``InferenceId`` (the API sends one with every request). A shadow
answer is paired with the production answer of the same id; one without an id, or whose
production answer was not captured, is counted as unpaired. Each review in a request is one
comparison (a request may carry several). Only the records since the shadow started are read,
hour folder by hour folder, so a long capture history costs nothing here.

Latency is the runtime's: the average ``ModelLatency`` each fleet showed over the runtime's
last ten minutes (``GET /_local/metrics/NAME``), gone when the runtime restarts.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from mlops_rules.capture import CaptureLineError, read_capture_line
from mlops_rules.hosting import SHADOW_VARIANT_NAME, VARIANT_NAME
from monitor.statistics import wilson_interval
from pipeline.local.services.runtime import read_runtime_metrics, runtime_url
from pipeline.local.state.db import parse_iso
from pipeline.local.state.store import ArtifactStore

log = logging.getLogger(__name__)

# Agreement is shown with its 95 % Wilson interval; below this many paired reviews it is too wide to read.
MIN_PAIRS = 30


@dataclass(frozen=True)
class LiveComparison:
    since: str  # when the shadow started (ISO 8601)
    pairs: int  # reviews both answered, paired by InferenceId
    agreeing: int  # of those, how many got the same label
    unpaired: int  # shadow answers with no production answer to pair
    unreadable: int  # capture lines that are not captured invocations (skipped, counted)
    production_latency_ms: float | None
    shadow_latency_ms: float | None

    @property
    def agreement(self) -> float | None:
        return self.agreeing / self.pairs if self.pairs else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """The agreement's 95 % Wilson score interval (None with no pairs)."""
        return wilson_interval(self.agreeing, self.pairs)

    @property
    def enough(self) -> bool:
        return self.pairs >= MIN_PAIRS


def _labels(output: str | None) -> list[str] | None:
    """The labels of an answer the model server gave (``{"predictions": [{"label": ...}]}``)."""
    try:
        predictions = json.loads(output or "").get("predictions")
        return [str(p["label"]) for p in predictions]
    except (ValueError, AttributeError, KeyError, TypeError):
        return None


def _hour_folders(store: ArtifactStore, prefix: str, since: datetime) -> list[str]:
    """The capture files under ``prefix`` (an endpoint's variant) in hour folders from ``since``'s hour on."""
    first = since.strftime("%Y/%m/%d/%H")
    keys = store.keys(prefix.rstrip("/") + "/")
    bucket = prefix.split("/", 3)[2]
    return [f"s3://{bucket}/{key}" for key in keys
            if key.endswith(".jsonl") and "/".join(key.rsplit("/", 5)[1:5]) >= first]


def _records(store: ArtifactStore, prefix: str, since: datetime) -> tuple[list[dict], int]:
    """The captured invocations under ``prefix`` since ``since``, and how many lines were unreadable."""
    found, unreadable = [], 0
    stamp = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    for uri in _hour_folders(store, prefix, since):
        for line in store.read_bytes(uri).splitlines():
            if not line.strip():
                continue
            try:
                record = read_capture_line(line)
            except CaptureLineError as error:
                unreadable += 1
                log.warning("%s: a line skipped: %s", uri, error)
                continue
            if (record["time"] or "") >= stamp:
                found.append(record)
    return found, unreadable


def _latency_ms(fleet: dict | None) -> float | None:
    """The average latency of a fleet's per-second buckets ``[second, count, errors, sum_us, max, min]``."""
    buckets = [b for buckets in (fleet or {}).values() for b in buckets]
    count = sum(b[1] for b in buckets)
    return sum(b[3] for b in buckets) / count / 1000 if count else None


def live_comparison(home, endpoint: str, config: dict, since: str) -> LiveComparison:
    """The shadow of the endpoint config ``config`` (DescribeEndpointConfig's answer) against its
    production variant, from the capture since ``since`` (when the config took the endpoint)."""
    store, started = ArtifactStore(home), parse_iso(since).astimezone(UTC)
    destination = (config.get("DataCaptureConfig") or {}).get("DestinationS3Uri", "").rstrip("/")
    production_variant = config["ProductionVariants"][0].get("VariantName", VARIANT_NAME)
    shadow_variant = (config.get("ShadowProductionVariants") or [{}])[0].get("VariantName", SHADOW_VARIANT_NAME)
    pairs = agreeing = unpaired = unreadable = 0
    if destination:
        production, bad = _records(store, f"{destination}/{endpoint}/{production_variant}", started)
        shadow, worse = _records(store, f"{destination}/{endpoint}/{shadow_variant}", started)
        unreadable = bad + worse
        answers = {r["inference_id"]: _labels(r["output"]) for r in production if r["inference_id"]}
        for record in shadow:
            ours, theirs = answers.get(record["inference_id"]), _labels(record["output"])
            if not record["inference_id"] or ours is None or theirs is None or len(ours) != len(theirs):
                unpaired += 1
                continue
            pairs += len(ours)
            agreeing += sum(a == b for a, b in zip(ours, theirs))
    production_ms = shadow_ms = None
    url = runtime_url(home)
    if url:
        try:
            metrics = read_runtime_metrics(url, endpoint)
            production_ms = _latency_ms({config["EndpointConfigName"]: metrics["fleets"].get(config["EndpointConfigName"], [])})
            # The runtime files a shadow's answers under the endpoint config that copied them.
            shadow_ms = _latency_ms({config["EndpointConfigName"]: (metrics.get("shadow") or {}).get(
                config["EndpointConfigName"], [])})
        except (OSError, ValueError, KeyError) as error:
            log.warning("the runtime's latency figures could not be read: %s", error)
    return LiveComparison(since, pairs, agreeing, unpaired, unreadable, production_ms, shadow_ms)
