"""``sentiment-mlops run`` and ``executions``: the main job on the local runtime, and its records.

``run`` builds the very definition JSON that ``upsert`` would send to SageMaker, puts the data
and the code bundles into the local artifact store, and executes it step by step.
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.bundles import CodeBundles
    from pipeline.local.executions import Execution

log = logging.getLogger(__name__)

LOCAL_PROFILE = "cpu"  # the definition's default is the GPU profile SageMaker runs
SKIPPED = "skipped"  # the status of a `run --skip-unchanged` that found nothing new to train on


class RunError(RuntimeError):
    """A run that cannot start; one line that says what to do."""


def quiet_definition_json(settings: Settings, bundles: CodeBundles | None = None) -> str:
    """The definition JSON, without the SDK's own log lines and warnings about its choices."""
    from pipeline.definition import definition_json

    for name in ("sagemaker", "sagemaker.config"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return definition_json(settings, bundles)


def local_defaults(profile: str) -> dict[str, str]:
    """The cpu profile on this machine, and that profile's own epochs unless Epochs is given:
    the definition's Epochs default belongs to the gpu profile."""
    from train.profiles import PROFILES

    defaults = {"TrainingProfile": profile}
    if profile in PROFILES:
        defaults["Epochs"] = str(PROFILES[profile].epochs)
    return defaults


def parse_params(pairs: list[str] | None) -> dict[str, str]:
    params = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise RunError(f"--param {pair!r}: write parameters as Name=Value, for example --param Epochs=4")
        params[name] = value
    return params


def _fingerprint(path: Path) -> str:
    """Names, sizes and modification times: enough to reuse an upload of unchanged data."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path.parent)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _sampled_copy(data: Path, count: int, scratch: Path) -> Path:
    """A stratified ``count`` reviews per split as JSON Lines, read with the preprocessing step's own readers."""
    from steps.sources import DataError, load_reviews

    try:
        reviews = load_reviews(data)
    except DataError as exc:
        raise RunError(str(exc).splitlines()[0]) from exc
    reviews.sample(count, seed=42)
    for name, split in (("train", reviews.train), ("test", reviews.test)):
        with open(scratch / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for text, label in zip(split.texts, split.labels):
                handle.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
    if reviews.unlabeled:
        with open(scratch / "unsup.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in reviews.unlabeled)
    return scratch


def stage_data(settings: Settings, data: Path, sample: int | None) -> str:
    """Put the reviews into the local store; returns the ``InputDataUri`` the pipeline reads.

    The URI is a folder and ends with "/": Preprocess reads it as a key prefix, and without the
    slash ``…-2000`` would also take a staged ``…-20000``'s files.
    """
    from pipeline.local.store import ArtifactStore

    store = ArtifactStore(settings.home)
    with tempfile.TemporaryDirectory(prefix="sentiment-sample-") as scratch:
        source = _sampled_copy(data, sample, Path(scratch)) if sample else data
        uri = settings.s3_uri("data", f"{_fingerprint(source)}-{sample or 'all'}") + "/"
        if not store.exists(uri):
            if source.is_dir():
                store.upload_dir(source, uri)
            else:
                store.upload_file(source, f"{uri}{source.name}")
    return uri


def staged_data_version(uri: str) -> str:
    """The ``InputDataVersion`` of data that ``stage_data`` put in the store: the last segment of
    its content-addressed URI (the files' fingerprint and the sample size). It is the local
    counterpart of the S3 listing digest that the retrain Lambda and ``aws start`` send, so
    that a local execution records, and its model's config.json shows, which data it read."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


def store_data_version(settings: Settings, uri: str) -> str:
    """The ``InputDataVersion`` of data a run names by an explicit ``InputDataUri``: the retrain
    Lambda's ``listing_digest`` (one rule for both) over the local store's listing under ``uri``,
    with each object's MD5 standing for its ETag (what S3 gives an object uploaded in one part,
    so the same files here and in S3 get the same version; a multipart upload's ETag differs).

    Unlike staged data, whose URI is content-addressed, an explicit URI keeps its name when its
    data is replaced; without this version the replacement would look unchanged to
    ``--skip-unchanged``. The content is hashed, not just listed: local files have no ETag.
    """
    from pipeline.local.lambdas import load_lambda
    from pipeline.local.store import ArtifactStore, StoreError, split_uri

    store = ArtifactStore(settings.home)
    try:
        bucket, prefix = split_uri(uri)
        objects = [(key, *_md5_and_size(store.path(f"s3://{bucket}/{key}"))) for key in store.keys(uri)]
    except StoreError as exc:
        raise RunError(f"--param InputDataUri={uri}: {exc}") from exc
    version = load_lambda("retrain").listing_digest(prefix, objects)
    if version is None:
        raise RunError(f"--param InputDataUri={uri}: no object in the local store ({store.root}) starts with it; "
                       "put the data there first, or pass --data instead")
    return version


def _md5_and_size(path: Path) -> tuple[str, int]:
    """A file's MD5 hex digest (read in chunks: datasets can be large) and its size."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest(), path.stat().st_size


def _same_data_and_parameters(values: dict[str, Any]) -> dict[str, Any]:
    """Parameter values as ``unchanged_since`` compares them: data with a version is named by it
    alone (the same objects are the same data whatever URI named them, as the retrain Lambda
    decides too); data given an empty version by hand is still named by its URI."""
    if values.get("InputDataVersion"):
        return {name: value for name, value in values.items() if name != "InputDataUri"}
    return dict(values)


def unchanged_since(settings: Settings, definition: str, values: dict[str, Any]) -> Execution | None:
    """The newest Succeeded execution, started within the steps' cache lifetime, that ran this
    very definition with the same parameter values and the same data (``InputDataVersion``);
    else None. The retrain Lambda's rule, so a cron line and a schedule tick agree.

    Starting would take every cached step from that execution and register its model once more
    (caching keys on arguments, as SageMaker's does). Any such execution counts, not only the
    newest on the data: a run with other parameters in between, or a change of code undone,
    leaves its cache entries in place.
    """
    from pipeline.definition import CACHE_EXPIRE_AFTER
    from pipeline.local.db import iso, open_state, utc_now
    from pipeline.local.executions import ExecutionStore, parse_expire_after, sha256_text
    from pipeline.local.expressions import parameter_values

    wanted = json.loads(json.dumps(parameter_values(json.loads(definition), values)))  # as the store keeps them
    cutoff = iso(utc_now() - parse_expire_after(CACHE_EXPIRE_AFTER))
    for execution in ExecutionStore(open_state(settings.home)).list_executions(settings.pipeline_name):
        if execution.start_time < cutoff:
            break  # newest first: the rest are older still
        if (execution.status == "Succeeded" and execution.definition_sha256 == sha256_text(definition)
                and _same_data_and_parameters(execution.parameters) == _same_data_and_parameters(wanted)):
            return execution
    return None


def _skipped(settings: Settings, previous: Execution, values: dict[str, Any]) -> dict[str, Any]:
    """The answer of a run that starts nothing: why, and which execution it would repeat."""
    version = summarize(settings, previous.execution_id)["model_package_version"]
    registered = f"; it registered model version {version}" if version is not None else ""
    reason = (f"no new data since execution {previous.execution_id}: {values['InputDataUri']} is version "
              f"{values.get('InputDataVersion') or '(none given)'}, which that execution trained on with the "
              f"same pipeline and parameters{registered}")
    log.info("skipped: %s", reason)
    return {"status": SKIPPED, "reason": reason, "execution_id": None,
            "unchanged_since": {"execution_id": previous.execution_id, "model_package_version": version},
            "parameters": previous.parameters}


def run_local(settings: Settings, data: Path, params: dict[str, str], sample: int | None,
              use_cache: bool = True, skip_unchanged: bool = False) -> dict[str, Any]:
    """Stage the data (or read it at the ``InputDataUri`` given) and execute the pipeline; with
    ``skip_unchanged``, start nothing (status ``skipped``) when the run would repeat a Succeeded
    execution (``unchanged_since``): what a scheduled run (a cron line) wants, so that it
    registers no duplicate."""
    from pipeline.bundles import build_bundles
    from pipeline.local.executor import run_pipeline
    from pipeline.local.expressions import ExpressionError, parameter_values

    started = time.perf_counter()
    definition = quiet_definition_json(settings)
    values = {**local_defaults(params.get("TrainingProfile", LOCAL_PROFILE)), **params}
    try:
        parameter_values(json.loads(definition), values)  # refuse unknown names and bad values before any work
    except ExpressionError as exc:
        raise RunError(str(exc)) from exc
    values["InputDataUri"] = params.get("InputDataUri") or stage_data(settings, data, sample)
    if "InputDataVersion" not in params:  # a version given by hand is kept, as `aws start` keeps it
        values["InputDataVersion"] = (store_data_version(settings, values["InputDataUri"]) if params.get("InputDataUri")
                                      else staged_data_version(values["InputDataUri"]))
    if skip_unchanged:
        previous = unchanged_since(settings, definition, values)
        if previous is not None:
            return {**_skipped(settings, previous, values), "total_seconds": round(time.perf_counter() - started, 1)}
    execution = run_pipeline(definition, settings, values, build_bundles(settings), use_cache=use_cache)
    summary = summarize(settings, execution.execution_id)
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    return summary


def retry_local(settings: Settings, execution_id: str, use_cache: bool = True) -> dict[str, Any]:
    """Run a Failed or Stopped execution again from its failed step (same id, definition, parameters)."""
    from pipeline.local.executor import retry_execution

    started = time.perf_counter()
    execution = retry_execution(execution_id, settings, use_cache=use_cache)
    summary = summarize(settings, execution.execution_id)
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    return summary


def summarize(settings: Settings, execution_id: str) -> dict[str, Any]:
    """What a person or a script wants to know about an execution, from the state database."""
    from pipeline.local.db import open_state
    from pipeline.local.executions import ExecutionStore
    from pipeline.local.registry import ModelRegistry

    conn = open_state(settings.home)
    execution, steps = ExecutionStore(conn).describe(execution_id)
    versions = [p.version for p in ModelRegistry(conn).list_packages(settings.model_package_group)
                if p.execution_id == execution.execution_id] if any(s.step_name == "Register" and s.status == "Succeeded"
                                                                    for s in steps) else []
    return {
        "execution_id": execution.execution_id,
        "status": execution.status,
        "failure_reason": execution.failure_reason,
        "steps": {s.step_name: {"status": s.status, "seconds": s.seconds, "log": s.log_path, "attempts": s.attempts,
                                "cached_from": s.cache_source_execution_id} for s in steps},
        "accuracy": _accuracy(settings, steps),
        "threshold": execution.parameters.get("AccuracyThreshold"),
        "model_package_version": versions[0] if versions else None,
        "parameters": execution.parameters,
        "started": execution.start_time,
    }


def _accuracy(settings: Settings, steps: list) -> float | None:
    """The accuracy the gate saw: the Evaluate step's evaluation.json, read from the store."""
    from pipeline.definition import EVALUATE, EVALUATION_OUTPUT, report_accuracy
    from pipeline.local.store import ArtifactStore

    evaluate = next((s for s in steps if s.step_name == EVALUATE and s.status == "Succeeded"), None)
    if evaluate is None:
        return None
    outputs = evaluate.properties["ProcessingOutputConfig"]["Outputs"]
    uri = next(o["S3Output"]["S3Uri"] for o in outputs if o["OutputName"] == EVALUATION_OUTPUT)
    return report_accuracy(ArtifactStore(settings.home).read_json(f"{uri.rstrip('/')}/evaluation.json"))


def list_executions(settings: Settings) -> list[dict[str, Any]]:
    from pipeline.local.db import open_state
    from pipeline.local.executions import ExecutionStore

    return [{"execution_id": e.execution_id, "status": e.status, "started": e.start_time, "ended": e.end_time,
             "failure_reason": e.failure_reason} for e in ExecutionStore(open_state(settings.home)).list_executions()]
