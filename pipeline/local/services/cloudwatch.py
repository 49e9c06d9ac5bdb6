"""CloudWatch metric alarms on this machine: the alarms a rollout watches, kept as PutMetricAlarm
was given them, and judged against the endpoint metrics the local runtime measures.

``LocalCloudWatch`` offers the two calls the deploy handler makes (``describe_alarms``,
``put_metric_alarm``) with boto3's shapes. ``alarm_state`` judges one alarm the way CloudWatch
does for SageMaker's endpoint metrics, over what the runtime recorded per fleet
(``pipeline/local/services/runtime.py``, ``FleetMetrics``):

- ``Invocations`` (each request counts 1), ``Invocation5XXErrors`` (1 for a 5xx answer or a
  server that did not answer, else 0) and ``ModelLatency`` (microseconds) on the dimensions
  ``EndpointName`` and ``VariantName``; with ``EndpointConfigName`` too, one fleet's only;
- the statistics ``Sum``, ``SampleCount``, ``Average``, ``Minimum``, ``Maximum``;
- the last ``EvaluationPeriods`` periods of ``Period`` seconds, ending now (a sliding window, so
  a rollout does not wait for a minute's boundary), in ALARM when ``DatapointsToAlarm`` of them
  (default: all) breach; a period with no requests is missing data, and missing data does not
  breach (``TreatMissingData`` ``notBreaching``, what the stack sets).
"""
from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from pipeline.local.aws_identity import alarm_arn
from pipeline.local.state.db import iso, to_json, utc_now, write_transaction

# One second of one fleet's requests, as the runtime records it.
# (second, requests, 5xx answers, latency sum µs, latency max µs, latency min µs)
Bucket = Sequence[float]
COMPARISONS = {"GreaterThanThreshold": operator.gt, "GreaterThanOrEqualToThreshold": operator.ge,
               "LessThanThreshold": operator.lt, "LessThanOrEqualToThreshold": operator.le}
METRICS = ("Invocations", "Invocation5XXErrors", "ModelLatency")
STATISTICS = ("Sum", "SampleCount", "Average", "Minimum", "Maximum")
REQUIRED = ("AlarmName", "Namespace", "MetricName", "Period", "EvaluationPeriods", "Threshold", "ComparisonOperator")


def _error(operation: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": "ValidationError", "Message": message}}, operation)


class LocalCloudWatch:
    """The alarm calls of a CloudWatch client, kept in the local state database."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def put_metric_alarm(self, **alarm: Any) -> dict:
        missing = [key for key in REQUIRED if key not in alarm]
        if missing:
            raise _error("PutMetricAlarm", f"missing {', '.join(missing)}")
        if not isinstance(alarm["Period"], int) or alarm["Period"] < 1 or not isinstance(alarm["EvaluationPeriods"], int) \
                or alarm["EvaluationPeriods"] < 1:
            raise _error("PutMetricAlarm", f"Period {alarm['Period']!r} and EvaluationPeriods "
                                           f"{alarm['EvaluationPeriods']!r} must be whole numbers of at least 1 "
                                           "(locally: SENTIMENT_MLOPS_ALARM_PERIOD)")
        if alarm["ComparisonOperator"] not in COMPARISONS or alarm.get("Statistic", "Sum") not in STATISTICS:
            raise _error("PutMetricAlarm", f"the local CloudWatch judges {', '.join(STATISTICS)} with "
                                           f"{', '.join(COMPARISONS)}, not {alarm.get('Statistic')} {alarm['ComparisonOperator']}")
        with write_transaction(self.conn):
            self.conn.execute("INSERT OR REPLACE INTO alarms VALUES (?,?,?,?)",
                              (alarm["AlarmName"], alarm_arn(alarm["AlarmName"]), to_json(alarm), iso(utc_now())))
        return {}

    def describe_alarms(self, AlarmNames: Iterable[str] = (), **_: Any) -> dict:  # noqa: N803 (boto3's names)
        names = list(AlarmNames)
        rows = self.conn.execute("SELECT * FROM alarms ORDER BY name").fetchall()
        return {"MetricAlarms": [{**json.loads(row["definition"]), "AlarmArn": row["arn"]}
                                 for row in rows if not names or row["name"] in names], "CompositeAlarms": []}

    def alarms(self, names: Iterable[str]) -> list[dict]:
        """The named alarms' definitions; ClientError naming any that does not exist."""
        wanted = list(names)
        found = {a["AlarmName"]: a for a in self.describe_alarms(AlarmNames=wanted)["MetricAlarms"]}
        missing = [name for name in wanted if name not in found]
        if missing:
            raise _error("DescribeAlarms", f"no alarm named {', '.join(missing)}")
        return [found[name] for name in wanted]


def _statistic(name: str, buckets: list[Bucket], metric: str) -> float | None:
    """One statistic of one metric over the buckets; None when no request fell in them."""
    requests = sum(b[1] for b in buckets)
    if not requests:
        return None
    if metric == "Invocations":
        return {"Sum": requests, "SampleCount": requests}.get(name, 1.0)
    if metric == "Invocation5XXErrors":
        errors = sum(b[2] for b in buckets)
        return {"Sum": errors, "SampleCount": requests, "Average": errors / requests,
                "Minimum": 0.0 if errors < requests else 1.0, "Maximum": 1.0 if errors else 0.0}[name]
    return {"Sum": sum(b[3] for b in buckets), "SampleCount": requests,
            "Average": sum(b[3] for b in buckets) / requests,
            "Maximum": max(b[4] for b in buckets if b[1]), "Minimum": min(b[5] for b in buckets if b[1])}[name]


def alarm_state(alarm: Mapping[str, Any], endpoint: str, fleets: Mapping[str, list[Bucket]], now: float) -> str | None:
    """``"ALARM"`` with the breaching figure in words, or None: ``alarm`` judged over the
    endpoint's per-fleet buckets (``fleets``: endpoint config → buckets) at time ``now``."""
    dimensions = {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}
    if alarm.get("Namespace") != "AWS/SageMaker" or alarm.get("MetricName") not in METRICS \
            or dimensions.get("EndpointName") != endpoint:
        return None
    config = dimensions.get("EndpointConfigName")
    buckets = [b for name, series in fleets.items() if config in (None, name) for b in series]
    period, periods = int(alarm["Period"]), int(alarm["EvaluationPeriods"])
    needed = int(alarm.get("DatapointsToAlarm") or periods)
    compare, threshold = COMPARISONS[alarm["ComparisonOperator"]], float(alarm["Threshold"])
    statistic = alarm.get("Statistic", "Sum")
    breaching = []
    for k in range(periods):
        end = now - k * period
        value = _statistic(statistic, [b for b in buckets if end - period < b[0] <= end], alarm["MetricName"])
        if value is not None and compare(value, threshold):
            breaching.append(value)
    if len(breaching) < needed:
        return None
    return (f"alarm {alarm['AlarmName']} went off: {alarm['MetricName']} {statistic} {breaching[0]:g} "
            f"{alarm['ComparisonOperator']} {threshold:g} over {period} s")
