"""Web users' feedback as ground truth, in SageMaker Model Monitor's format: what the predict
function writes (on AWS into S3, locally into the store) and what a monitoring job reads.

A web user who sees an answer may say it is right or wrong. That becomes a ground-truth record,
one JSON line, joined to the captured invocation by its ``InferenceId`` (Model Monitor matches a
ground-truth record's ``eventId`` to a captured record's ``inferenceId``)::

    {"groundTruthData": {"data": "1", "encoding": "CSV"},
     "eventMetadata": {"eventId": "<the InferenceId>"}, "eventVersion": "0"}

``data`` is the true label (1 positive, 0 negative): the label shown if the user said right, the
other one if wrong. Records are filed by the hour the label arrived,
``<destination>/yyyy/mm/dd/hh/<inference id>.jsonl``, one object per answer: a second word on the
same answer in the same hour replaces the first, and a reader keeps the latest of any others.

Nobody can label an answer that was never given: the predict function signs each answer it gives
(``feedback_token``, an HMAC over the InferenceId and the label shown, with a key only the
function holds), and a feedback whose token does not match is refused. So no lookup in the
capture is needed, and a guessed or replayed id labels nothing new.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GROUND_TRUTH_FOLDER = "groundtruth"
EVENT_VERSION = "0"
LABELS = ("negative", "positive")  # index = the label's number
VERDICTS = ("right", "wrong")
# A feedback is a few short fields; anything bigger is not one.
MAX_FEEDBACK_BYTES = 1024
TOKEN_CHARS = 32
# SageMaker's InferenceId: 1 to 64 printable characters, not starting with a space.
_INFERENCE_ID = re.compile(r"\A[!-~][ -~]{0,63}\Z")


class FeedbackError(ValueError):
    """A feedback that cannot be taken; the message says what is wrong."""


@dataclass(frozen=True)
class Feedback:
    inference_id: str
    label: str  # the label the user was shown
    verdict: str  # "right" or "wrong"
    token: str

    @property
    def true_label(self) -> int:
        """1 positive, 0 negative: the label shown if it was right, the other if not."""
        shown = LABELS.index(self.label)
        return shown if self.verdict == "right" else 1 - shown


def feedback_token(key: bytes, inference_id: str, label: str) -> str:
    """The signature of one answer: whoever holds it was given that label for that InferenceId."""
    message = f"{inference_id}\n{label}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:TOKEN_CHARS]


def parse_feedback(body: bytes) -> Feedback:
    """``{"inference_id", "label", "verdict", "token"}`` from a request body; FeedbackError otherwise."""
    if len(body) > MAX_FEEDBACK_BYTES:
        raise FeedbackError(f"the feedback is {len(body):,} bytes; the limit is {MAX_FEEDBACK_BYTES:,}")
    try:
        fields = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise FeedbackError("the feedback is not JSON: send {\"inference_id\", \"label\", \"verdict\", \"token\"}") from None
    if not isinstance(fields, dict):
        raise FeedbackError("the feedback is not a JSON object")
    inference_id, label, verdict, token = (fields.get(k) for k in ("inference_id", "label", "verdict", "token"))
    if not isinstance(inference_id, str) or not _INFERENCE_ID.match(inference_id):
        raise FeedbackError("inference_id must be the id the answer came with (1 to 64 printable characters)")
    if label not in LABELS:
        raise FeedbackError(f"label must be one of {', '.join(LABELS)}: the label the answer gave")
    if verdict not in VERDICTS:
        raise FeedbackError(f"verdict must be one of {', '.join(VERDICTS)}")
    if not isinstance(token, str) or not re.fullmatch(rf"[0-9a-f]{{{TOKEN_CHARS}}}", token):
        raise FeedbackError("token must be the feedback_token the answer came with")
    return Feedback(inference_id, label, verdict, token)


def is_signed(key: bytes, feedback: Feedback) -> bool:
    """Whether the feedback's token is the one this key gave that answer (compared in constant time)."""
    return hmac.compare_digest(feedback_token(key, feedback.inference_id, feedback.label), feedback.token)


def ground_truth_record(inference_id: str, true_label: int) -> dict[str, Any]:
    return {"groundTruthData": {"data": str(int(true_label)), "encoding": "CSV"},
            "eventMetadata": {"eventId": inference_id}, "eventVersion": EVENT_VERSION}


def ground_truth_key(destination: str, when: datetime, inference_id: str) -> str:
    """``<destination>/yyyy/mm/dd/hh/<id>.jsonl``: filed by the hour the label arrived. The id is
    made safe for a key (SageMaker allows ``/`` in it; a key must not gain folders)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", inference_id)
    return f"{destination.rstrip('/')}/{when:%Y/%m/%d/%H}/{safe}.jsonl"


def read_ground_truth_line(line: str | bytes) -> tuple[str, int]:
    """The ``(eventId, label)`` of one ground-truth line; FeedbackError for anything else."""
    try:
        record = json.loads(line)
        event_id = record["eventMetadata"]["eventId"]
        data = record["groundTruthData"]["data"]
    except (ValueError, TypeError, KeyError):
        raise FeedbackError("not a ground-truth record: groundTruthData.data and eventMetadata.eventId are needed") from None
    if not isinstance(event_id, str) or str(data).strip() not in ("0", "1"):
        raise FeedbackError(f"a ground-truth label must be 0 or 1, not {data!r}")
    return event_id, int(str(data).strip())
