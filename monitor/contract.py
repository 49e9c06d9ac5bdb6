"""The names SageMaker's bring-your-own-container monitoring contract gives a job's outputs: plain
values, no imports, so whoever reads a report (the registry page) does not load the job's torch."""
from __future__ import annotations

from pathlib import Path

STATISTICS_FILE = "statistics.json"
VIOLATIONS_FILE = "constraint_violations.json"
MESSAGE_PATH = Path("/opt/ml/output/message")  # why a job could not run, for DescribeProcessingJob's FailureReason
METRICS_FOLDER = Path("/opt/ml/output/metrics/cloudwatch")  # the CloudWatch metric lines, when publishing is Enabled
