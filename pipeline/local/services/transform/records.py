"""A Batch Transform's records: read from an input object one at a time, packed into requests,
filtered and joined as ``DataProcessing`` says, and written as the job's output.

What SageMaker documents, and these functions do:

- ``SplitType Line``: each line is a record (a blank line is none); ``None``: the whole object is
  one record. A record longer than ``MaxPayloadInMB`` fails the job, read no further than that.
- ``BatchStrategy MultiRecord``: as many records per request as fit in ``MaxPayloadInMB``, one a
  line; ``SingleRecord``: one per request.
- ``DataProcessing`` works on JSON (``application/json``, ``application/jsonlines``) and CSV
  (``text/csv``) records only. ``InputFilter`` chooses what is sent; ``JoinSource Input`` joins
  each answer to its *original* record: a JSON object gains ``SageMakerOutput``, any other JSON
  value becomes ``{"SageMakerInput": ..., "SageMakerOutput": ...}``, a CSV row has the answer's
  fields appended. ``OutputFilter`` chooses what of that is written.
- ``AssembleWith Line`` puts a line break after each answer (or each joined record); ``None``
  writes the answers as they came.

Joining needs one answer per record: with ``MultiRecord``, the model's answer must have as many
lines as the request had records (the model server's ``application/jsonlines`` answer does; a
CSV answer, for a model that gives one, would too).
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from pipeline.local.services.transform.jsonpath import JsonPath, JsonPathError, compile_path

JSON_TYPES = ("application/json", "application/jsonlines", "application/x-jsonlines", "application/jsonl")
CSV_TYPE = "text/csv"
JOIN_OUTPUT_KEY = "SageMakerOutput"
JOIN_INPUT_KEY = "SageMakerInput"


class RecordError(ValueError):
    """A record or an answer the job cannot use; the message says which and why."""


def record_format(content_type: str | None) -> str | None:
    """``"json"``, ``"csv"``, or None for a type that data processing cannot read."""
    base = (content_type or "").split(";")[0].strip().lower()
    return "json" if base in JSON_TYPES else "csv" if base == CSV_TYPE else None


@dataclass(frozen=True)
class DataProcessing:
    """``DataProcessing`` of CreateTransformJob, parsed."""

    input_filter: JsonPath
    output_filter: JsonPath
    join_input: bool

    @classmethod
    def parse(cls, request: dict[str, Any] | None) -> DataProcessing:
        request = request or {}
        return cls(compile_path(request.get("InputFilter") or "$"), compile_path(request.get("OutputFilter") or "$"),
                   request.get("JoinSource", "None") == "Input")

    @property
    def passthrough(self) -> bool:
        """Nothing to filter or join: records go as read and answers are written as they come."""
        return self.input_filter.is_identity and self.output_filter.is_identity and not self.join_input


def read_records(stream: IO[bytes], split_lines: bool, max_record_bytes: int, where: str) -> Iterator[bytes]:
    """The object's records, each without its line break, never holding more than one record
    (and never reading a line past ``max_record_bytes``)."""
    if not split_lines:
        whole = stream.read(max_record_bytes + 1)
        if len(whole) > max_record_bytes:
            raise RecordError(f"{where} is larger than MaxPayloadInMB ({max_record_bytes:,} bytes) and SplitType is "
                              "None: split it into lines with SplitType Line, or raise MaxPayloadInMB")
        if whole:
            yield whole
        return
    number = 0
    while True:
        line = stream.readline(max_record_bytes + 2)  # the record and its "\r\n"
        if not line:
            return
        number += 1
        record = line.rstrip(b"\r\n")
        if len(record) > max_record_bytes:
            raise RecordError(f"{where} line {number} is longer than MaxPayloadInMB ({max_record_bytes:,} bytes): "
                              "shorten the record or raise MaxPayloadInMB")
        if record.strip():
            yield record


@dataclass(frozen=True)
class Prepared:
    """One record as read (what a join joins) and as sent (after ``InputFilter``)."""

    raw: bytes
    sent: bytes


def prepare(records: Iterable[bytes], processing: DataProcessing, fmt: str | None, where: str,
            max_record_bytes: int) -> Iterator[Prepared]:
    """Each record with what a request carries of it; a record that, filtered, is longer than the
    payload limit fails here, since the limit is on what is sent."""
    for number, record in enumerate(records, 1):
        sent = record if processing.input_filter.is_identity else _filtered(record, processing, fmt,
                                                                            f"{where} record {number}")
        if len(sent) > max_record_bytes:
            raise RecordError(f"{where} record {number} is {len(sent):,} bytes as sent, over MaxPayloadInMB "
                              f"({max_record_bytes:,} bytes): shorten the record or raise MaxPayloadInMB")
        yield Prepared(record, sent)


def _filtered(record: bytes, processing: DataProcessing, fmt: str | None, what: str) -> bytes:
    assert fmt is not None  # the job refuses a filter on a type it cannot read
    try:
        return dump_record(processing.input_filter.apply(parse_record(record, fmt, what)), fmt, what)
    except JsonPathError as error:
        raise RecordError(f"{what}: InputFilter {error}") from None


def batches(records: Iterable[Prepared], multi_record: bool, max_payload_bytes: int) -> Iterator[list[Prepared]]:
    """Records packed into requests: one each, or as many as fit in ``max_payload_bytes`` (what
    is sent, with the line breaks between them)."""
    batch: list[Prepared] = []
    size = 0
    for record in records:
        added = len(record.sent) + (1 if batch else 0)
        if batch and (not multi_record or size + added > max_payload_bytes):
            yield batch
            batch, size, added = [], 0, len(record.sent)
        batch.append(record)
        size += added
    if batch:
        yield batch


def parse_record(raw: bytes | str, fmt: str, what: str) -> Any:
    """One record or answer line as a value: JSON's value, or a CSV row's fields."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if fmt == "json":
            return json.loads(text)
        return next(csv.reader([text]), [])
    except (UnicodeDecodeError, ValueError, RecursionError, csv.Error) as error:
        kind = "JSON" if fmt == "json" else "CSV"
        raise RecordError(f"{what} is not valid {kind} ({error})") from None


def dump_record(value: Any, fmt: str, what: str) -> bytes:
    """A value written as one line of its format (no line break)."""
    if fmt == "json":
        return json.dumps(value, separators=(",", ":")).encode("ascii")  # escaped: no U+2028 for a line splitter to cut at
    row = value if isinstance(value, list) else [value]
    if any(isinstance(field, (dict, list)) for field in row):
        raise RecordError(f"{what} is not a CSV row: a filter on CSV must select fields")
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue().encode("utf-8")


def request_body(batch: list[Prepared]) -> bytes:
    """What one request sends: the records as sent, one a line."""
    return b"\n".join(record.sent for record in batch)


@dataclass(frozen=True)
class Assembly:
    """How answers become the output object: ``AssembleWith`` and, when joining or filtering,
    the records' format. An answer is read by the ``Content-Type`` the model gave it."""

    line_per_answer: bool
    processing: DataProcessing
    input_format: str | None

    def output(self, batch: list[Prepared], answer: bytes, answer_type: str | None, where: str) -> bytes:
        """The bytes one request's answer adds to the output object."""
        if self.processing.passthrough:
            return answer + b"\n" if self.line_per_answer and not answer.endswith(b"\n") else answer
        lines = [answer] if len(batch) == 1 else [line for line in answer.split(b"\n") if line.strip()]
        if len(lines) != len(batch):
            raise RecordError(f"{where}: the model answered {len(lines)} lines for {len(batch)} records; joining or "
                              "filtering needs one answer line per record (Accept application/jsonlines)")
        answer_format = record_format(answer_type)
        written = [self._one(record.raw, line, answer_format, f"{where} record {number}")
                   for number, (record, line) in enumerate(zip(batch, lines, strict=True), 1)]
        separator = b"\n" if self.line_per_answer else b""
        return b"".join(line + separator for line in written)

    def _one(self, record: bytes, answer: bytes, answer_format: str | None, what: str) -> bytes:
        fmt = self.input_format if self.processing.join_input else answer_format
        if fmt is None:
            raise RecordError(f"{what}: OutputFilter needs an answer in JSON or CSV; ask for one with Accept")
        answer_value = _answer(answer.rstrip(b"\r\n"), answer_format, what)
        if self.processing.join_input:
            joined = _join(parse_record(record, fmt, what), answer_value, fmt)
        else:
            joined = answer_value
        try:
            return dump_record(self.processing.output_filter.apply(joined), fmt, what)
        except JsonPathError as error:
            raise RecordError(f"{what}: OutputFilter {error}") from None


def _answer(line: bytes, fmt: str | None, what: str) -> Any:
    """An answer line as a value; text of another type is kept as a string."""
    if fmt is None:
        return line.decode("utf-8", errors="replace")
    return parse_record(line, fmt, f"{what}'s answer")


def _join(record: Any, answer: Any, fmt: str) -> Any:
    if fmt == "csv":
        return [*record, *(answer if isinstance(answer, list) else [answer])]
    if isinstance(record, dict):
        return {**record, JOIN_OUTPUT_KEY: answer}
    return {JOIN_INPUT_KEY: record, JOIN_OUTPUT_KEY: answer}
