"""``python -m pipeline.local.services.transform``: one transform job in a process of its own,
as the local runtime's pipeline executor runs a Transform step (a job, like Processing and
Training: its own log, stopped with its process group, found again by its pid).

It runs the CreateTransformJob request in ``--request`` (JSON) under ``--home``, writes the
job's DescribeTransformJob answer to ``--result`` (times as ISO text), and exits 0 if the job
Completed; otherwise it writes the job's FailureReason to ``--failure`` and exits 1.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from botocore.exceptions import ClientError

from pipeline.local.services.transform.jobs import LocalTransforms, summary_times
from pipeline.local.state.db import open_state


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (the executor stopping the job) ends the job as Ctrl-C does: recorded, its server stopped."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("--home", "--request", "--result", "--failure"):
        parser.add_argument(name, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    request = json.loads(Path(args.request).read_text(encoding="utf-8"))
    conn = open_state(args.home)
    try:
        transforms = LocalTransforms(args.home, conn)
        try:
            transforms.create_transform_job(**request)
        except ClientError as error:
            Path(args.failure).write_text(error.response["Error"]["Message"], encoding="utf-8")
            return 1
        described = transforms.describe_transform_job(TransformJobName=request["TransformJobName"])
    finally:
        conn.close()
    Path(args.result).write_text(json.dumps(summary_times(described)), encoding="utf-8")
    if described["TransformJobStatus"] != "Completed":
        Path(args.failure).write_text(described.get("FailureReason") or described["TransformJobStatus"],
                                      encoding="utf-8")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
