"""Endpoint data capture in SageMaker's format: the ``DataCaptureConfig`` an endpoint config
carries, the JSON Lines record each captured invocation becomes, and where its file goes.

SageMaker writes a captured request and its answer as one line (Model Monitor's
``sagemakerCaptureJson`` dataset format, which AWS keeps as the convention after closing Model
Monitor to new customers)::

    {"captureData": {"endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                                       "data": "{\\"review\\": \\"...\\"}", "encoding": "JSON"},
                     "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                        "data": "{\\"predictions\\": [...]}", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid>", "inferenceId": "<the caller's>", "inferenceTime": "2026-12-07T19:50:49Z"},
     "eventVersion": "0"}

``encoding`` is ``JSON`` for a content type the config lists as JSON (the data is the text
itself), ``CSV`` for one it lists as CSV, else ``BASE64``. Files lie under
``<DestinationS3Uri>/<endpoint>/<variant>/yyyy/mm/dd/hh/`` by the hour of the inference (UTC).

The deploy function builds the config (``capture_config``); the local runtime writes the records
(``capture_record``, ``capture_key``); the monitoring job reads them (``read_capture_line``).
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# The folder under the project's prefix where endpoints write their capture (the stack's
# CAPTURE_DESTINATION, the local deploy's, the monitoring job's input).
CAPTURE_FOLDER = "datacapture"
JSON_CONTENT_TYPES = ("application/json", "application/jsonlines")
CSV_CONTENT_TYPES = ("text/csv",)
CAPTURE_MODES = ("Input", "Output")
EVENT_VERSION = "0"


def capture_config(destination: str, percent: int, json_types: Iterable[str] = JSON_CONTENT_TYPES,
                   csv_types: Iterable[str] = CSV_CONTENT_TYPES) -> dict[str, Any]:
    """CreateEndpointConfig's ``DataCaptureConfig``: requests and answers, ``percent`` of them."""
    return {"EnableCapture": True, "InitialSamplingPercentage": percent, "DestinationS3Uri": destination,
            "CaptureOptions": [{"CaptureMode": mode} for mode in CAPTURE_MODES],
            "CaptureContentTypeHeader": {"CsvContentTypes": list(csv_types), "JsonContentTypes": list(json_types)}}


def config_problems(config: Mapping[str, Any]) -> list[str]:
    """What SageMaker would refuse in a ``DataCaptureConfig`` (botocore checks the types)."""
    problems = []
    percent = config.get("InitialSamplingPercentage")
    if not isinstance(percent, int) or not 0 <= percent <= 100:
        problems.append(f"InitialSamplingPercentage {percent!r} is not between 0 and 100")
    destination = config.get("DestinationS3Uri")
    if not isinstance(destination, str) or not destination.startswith("s3://") or len(destination) > 512:
        problems.append(f"DestinationS3Uri {destination!r} is not an s3:// URI of at most 512 characters")
    modes = [option.get("CaptureMode") for option in config.get("CaptureOptions") or []]
    if not 1 <= len(modes) <= 2 or not set(modes) <= set(CAPTURE_MODES):
        problems.append(f"CaptureOptions {modes!r} must be Input, Output or both")
    return problems


@dataclass(frozen=True)
class CaptureRules:
    """What an endpoint config's DataCaptureConfig says to capture, and how to encode it."""

    destination: str
    percent: int
    modes: frozenset[str]
    json_types: tuple[str, ...]
    csv_types: tuple[str, ...]

    @classmethod
    def of(cls, config: Mapping[str, Any] | None) -> CaptureRules | None:
        """The rules of an enabled config, or None."""
        if not config or not config.get("EnableCapture"):
            return None
        header = config.get("CaptureContentTypeHeader") or {}
        return cls(config["DestinationS3Uri"].rstrip("/"), int(config["InitialSamplingPercentage"]),
                   frozenset(o["CaptureMode"] for o in config.get("CaptureOptions") or []),
                   tuple(header.get("JsonContentTypes") or JSON_CONTENT_TYPES),
                   tuple(header.get("CsvContentTypes") or CSV_CONTENT_TYPES))

    def encode(self, content_type: str, body: bytes, mode: str) -> dict[str, str]:
        base = content_type.split(";", 1)[0].strip().lower()
        if base in self.json_types or base in self.csv_types:
            try:
                data, encoding = body.decode("utf-8"), "JSON" if base in self.json_types else "CSV"
            except UnicodeDecodeError:
                data, encoding = base64.b64encode(body).decode("ascii"), "BASE64"
        else:
            data, encoding = base64.b64encode(body).decode("ascii"), "BASE64"
        return {"observedContentType": content_type, "mode": mode, "data": data, "encoding": encoding}

    def record(self, request: tuple[str, bytes], answer: tuple[str, bytes], event_id: str, when: datetime,
               inference_id: str | None = None) -> dict[str, Any]:
        """One captured invocation: ``request`` and ``answer`` are (content type, body)."""
        captured = {}
        if "Input" in self.modes:
            captured["endpointInput"] = self.encode(*request, "INPUT")
        if "Output" in self.modes:
            captured["endpointOutput"] = self.encode(*answer, "OUTPUT")
        metadata = {"eventId": event_id, **({"inferenceId": inference_id} if inference_id else {}),
                    "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
        return {"captureData": captured, "eventMetadata": metadata, "eventVersion": EVENT_VERSION}


def capture_prefix(destination: str, endpoint: str, variant: str, when: datetime) -> str:
    """``<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh``: where the hour's files go."""
    return f"{destination.rstrip('/')}/{endpoint}/{variant}/{when:%Y/%m/%d/%H}"


class CaptureLineError(ValueError):
    """A line that is not a captured invocation; the message says what is wrong."""


def read_capture_line(line: str | bytes) -> dict[str, Any]:
    """One captured invocation from its line, with ``input`` and ``output`` decoded to text
    (None where not captured) and their ``input_type`` and ``output_type``; CaptureLineError for anything else."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError) as error:
        raise CaptureLineError(f"not JSON: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("captureData"), dict) \
            or not isinstance(record.get("eventMetadata"), dict):
        raise CaptureLineError("not a capture record: captureData and eventMetadata are missing")
    metadata = record["eventMetadata"]
    for key in ("eventId", "inferenceId", "inferenceTime"):
        if not isinstance(metadata.get(key, ""), str):
            raise CaptureLineError(f"eventMetadata.{key} is not a string")
    decoded: dict[str, Any] = {"event_id": metadata.get("eventId"), "inference_id": metadata.get("inferenceId"),
                               "time": metadata.get("inferenceTime")}
    for key, name in (("endpointInput", "input"), ("endpointOutput", "output")):
        part = record["captureData"].get(key)
        decoded[name] = None if part is None else _decode(part, key)
        decoded[f"{name}_type"] = part.get("observedContentType") if isinstance(part, dict) else None
    return decoded


def _decode(part: Any, key: str) -> str:
    if not isinstance(part, dict) or not isinstance(part.get("data"), str):
        raise CaptureLineError(f"{key} has no data")
    if part.get("encoding") == "BASE64":
        try:
            return base64.b64decode(part["data"], validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            raise CaptureLineError(f"{key}'s BASE64 data does not decode") from None
    return part["data"]
