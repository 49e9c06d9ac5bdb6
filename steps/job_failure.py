"""The one-line reason a job script leaves for SageMaker when it refuses its input.

A job script that refuses its input (a CSV without a review column, a corrupt archive, a model
folder that is not an artifact) logs the whole message and exits with status 2. SageMaker shows
more than an exit code only when the container also writes the reason to a file under
``/opt/ml/output``, and which file it reads depends on the kind of job:

- training: ``failure``; DescribeTrainingJob's ``FailureReason`` is its first 1,024 characters
  (https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-output.html).
  The training toolkit writes a generic one of its own only when the script left none.
- processing: ``message``; DescribeProcessingJob's ``ExitMessage`` is its first KB, which must be
  UTF-8 or the job fails with a ClientError
  (https://docs.aws.amazon.com/sagemaker/latest/dg/byoc-metadata.html).

The folder is ``SM_OUTPUT_DIR`` where it is set (the training toolkit sets it to
``/opt/ml/output``; the local runtime sets it, for both kinds of job, to its stand-in for that
folder), else ``/opt/ml/output`` inside a container. Run by hand, away from any ``/opt/ml``,
nothing is written: the log says it all.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

OPT_ML = Path("/opt/ml")
OUTPUT_DIR_ENV = "SM_OUTPUT_DIR"
TRAINING_REASON_FILE = "failure"  # -> DescribeTrainingJob FailureReason
PROCESSING_REASON_FILE = "message"  # -> DescribeProcessingJob ExitMessage
MAX_BYTES = 1024  # what SageMaker keeps of either file
EXIT_STATUS = 2  # the scripts' status for input they refuse


def output_dir() -> Path | None:
    """Where SageMaker looks for the file, or None when the script runs outside a job."""
    configured = os.environ.get(OUTPUT_DIR_ENV)
    if configured:
        return Path(configured)
    return OPT_ML / "output" if OPT_ML.is_dir() else None


def one_line(reason: object, limit: int = MAX_BYTES) -> str:
    """The first non-blank line of ``reason``, cut to ``limit`` bytes of UTF-8 (never inside a
    character; characters UTF-8 cannot carry, such as undecodable bytes kept as surrogates, are
    written as escapes)."""
    line = next((part.strip() for part in str(reason).splitlines() if part.strip()), "")
    return line.encode("utf-8", errors="backslashreplace")[:limit].decode("utf-8", errors="ignore")


def write_reason(reason: object, file_name: str, directory: Path | None = None) -> Path | None:
    """Write ``one_line(reason)`` to ``file_name`` in ``directory`` (default: ``output_dir()``),
    atomically: a reader sees the whole line or no file. Returns the file, or None when there is
    no job to tell."""
    folder = directory if directory is not None else output_dir()
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / file_name
    descriptor, scratch = tempfile.mkstemp(prefix=f".{file_name}.", dir=folder)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(one_line(reason))
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return target


def report_failures(work: Callable[[], int], expected: tuple[type[BaseException], ...], reason_file: str,
                    logger: logging.Logger) -> int:
    """Run a script's ``work`` and return its exit status; an ``expected`` error (input the
    script refuses, with a message that says why) is logged in full, its first line written to
    ``reason_file`` for SageMaker, and ends the script with status 2. Other errors go on up."""
    try:
        return work()
    except expected as error:
        logger.error("%s", error)
        try:
            write_reason(error, reason_file)
        except OSError as exc:  # the reason stays in the log; the job fails all the same
            logger.warning("cannot write the failure reason under %s: %s", output_dir(), exc)
        return EXIT_STATUS
