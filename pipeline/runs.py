"""Running the pipeline locally, as use cases the command line, the registry page and scripts
share: resolve and stage the data, compute its version, decide whether a run would only repeat
one (the unchanged-since rule of mlops_rules), execute or retry the definition, and summarize an
execution. ``pipeline.commands.run`` parses arguments and prints; the work is here.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_rules.executions import ExecutionRecord
from pipeline.download import DownloadError, download, download_known
from pipeline.errors import CommandError, UserError
from pipeline.settings import KNOWN_DATASETS, Settings

if TYPE_CHECKING:
    from pipeline.local.state.executions import Execution

log = logging.getLogger(__name__)

# What staging writes (steps.shards); part of the staged URI, so that data staged in an earlier
# shape is staged again rather than read in the shape it had.
STAGED_LAYOUT = "shards-v1"
STAGED_MARKER_SUFFIX = ".staged"

LOCAL_PROFILE = "cpu"  # the definition's default is the GPU profile SageMaker runs
SKIPPED = "skipped"  # the status of a `run --skip-unchanged` that found nothing new to train on


class RunError(UserError, RuntimeError):
    """A run that cannot start; one line that says what to do."""


def local_defaults(profile: str) -> dict[str, str]:
    """The cpu profile on this machine, and that profile's own epochs unless Epochs is given:
    the definition's Epochs default belongs to the gpu profile."""
    from train.profiles import PROFILES

    defaults = {"TrainingProfile": profile}
    if profile in PROFILES:
        defaults["Epochs"] = str(PROFILES[profile].epochs)
    return defaults


def _fingerprint(path: Path) -> str:
    """Names, sizes and modification times: enough to reuse an upload of unchanged data."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path.parent)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class DataSource:
    """One ``--data`` argument: a dataset's folder or file, and the name it was given (``NAME=PATH``)."""

    path: Path
    name: str | None = None


def _sharded_copy(data: Path, count: int | None, scratch: Path) -> Path:
    """The dataset as JSON Lines shards (``steps.shards``), read with the preprocessing step's own
    readers, so that Preprocess can share it among instances; ``count``: a stratified ``count``
    texts per split only. ``dataset.json`` keeps the dataset's name and kind."""
    from steps.shards import shard_dataset
    from steps.sources import DataError

    try:
        return shard_dataset(data, scratch, sample=count or 0)
    except DataError as exc:
        raise RunError(str(exc).splitlines()[0]) from exc


def _checked(source: DataSource) -> str:
    """The dataset's name (as given, or its reader's), once its path is known to hold a dataset."""
    from steps.datasets import check_name, describe_dataset
    from steps.sources import DataError

    try:
        name, _ = describe_dataset(source.path)
        return check_name(source.name, f"--data {source.name}={source.path}") if source.name else name
    except DataError as exc:  # one line, as the CLI's errors are: the accepted layouts joined onto it
        raise RunError(f"--data {source.path}: " + " ".join(line.strip() for line in str(exc).splitlines())) from exc


def stage_data(settings: Settings, sources: Sequence[DataSource], sample: int | None) -> str:
    """Put the datasets into the local store; returns the ``InputDataUri`` the pipeline reads.

    One unnamed dataset lands at the URI itself, as it always has; several (or a named one) land
    in a folder each, named by the dataset (``steps.datasets``), as ``aws upload-data`` lays them
    out in S3. The URI is a folder and ends with "/": Preprocess reads it as a key prefix, and
    without the slash ``…-2000`` would also take a staged ``…-20000``'s files. A path with no
    dataset in an accepted layout, or two datasets of one name, is refused here, before an
    execution is recorded.
    """
    from pipeline.local.state.store import ArtifactStore
    from steps.shards import SHARD_ROWS

    if not sources:
        raise RunError("no dataset to stage: pass --data PATH, or leave it out to download IMDb and SST-2")
    names = [_checked(source) for source in sources]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RunError(f"two --data datasets are named {repeated[0]!r}: name each with --data NAME=PATH")
    store = ArtifactStore(settings.home)
    with tempfile.TemporaryDirectory(prefix="sentiment-staging-") as scratch:
        staged = []
        one_at_root = len(sources) == 1 and sources[0].name is None
        fingerprints = [(name, _fingerprint(source.path)) for name, source in zip(names, sources)]
        fingerprint = hashlib.sha256("".join(f"{n}\0{f}\n" for n, f in fingerprints).encode()
                                     + (b"" if one_at_root else b"\0named") + STAGED_LAYOUT.encode()).hexdigest()[:16]
        uri = settings.s3_uri("data", f"{fingerprint}-{sample or 'all'}") + "/"
        # Written last, beside the prefix rather than in it (Preprocess reads every object in it):
        # a staging that broke off has none, and is staged again rather than read half.
        staged_marker = uri.rstrip("/") + STAGED_MARKER_SUFFIX
        if not store.has_object(staged_marker):
            for name, source in zip(names, sources):
                log.info("staging %s as shards of %s texts", source.path, f"{SHARD_ROWS:,}")
                staged.append((name, _sharded_copy(source.path, sample, Path(scratch) / name)))
            for name, path in staged:
                store.upload_dir(path, uri if one_at_root else f"{uri}{name}/")
            store.put_bytes(staged_marker, json.dumps({"datasets": names, "layout": STAGED_LAYOUT}).encode())
    return uri


def staged_data_version(uri: str) -> str:
    """The ``InputDataVersion`` of data that ``stage_data`` put in the store: the last segment of
    its content-addressed URI (the files' fingerprint and the sample size). It is the local
    counterpart of the S3 listing digest that the retrain Lambda and ``aws start`` send, so
    that a local execution records, and its model's config.json shows, which data it read."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


def store_data_version(settings: Settings, uri: str) -> str:
    """The ``InputDataVersion`` of data a run names by an explicit ``InputDataUri``: the retrain
    function's ``listing_digest`` (mlops_rules: one rule for both) over the local store's listing under ``uri``,
    with each object's MD5 standing for its ETag (what S3 gives an object uploaded in one part,
    so the same files here and in S3 get the same version; a multipart upload's ETag differs).

    Unlike staged data, whose URI is content-addressed, an explicit URI keeps its name when its
    data is replaced; without this version the replacement would look unchanged to
    ``--skip-unchanged``. The content is hashed, not just listed: local files have no ETag.
    """
    from mlops_rules.data_versions import listing_digest
    from pipeline.local.state.store import ArtifactStore, StoreError, split_uri

    store = ArtifactStore(settings.home)
    try:
        bucket, prefix = split_uri(uri)
        objects = [(key, *_md5_and_size(store.path(f"s3://{bucket}/{key}"))) for key in store.keys(uri)]
    except StoreError as exc:
        raise RunError(f"--param InputDataUri={uri}: {exc}") from exc
    version = listing_digest(prefix, objects)
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


def unchanged_since(settings: Settings, definition: str, values: dict[str, Any]) -> Execution | None:
    """The newest Succeeded execution, started within the steps' cache lifetime, that ran this
    very definition with the same parameter values and the same data (``InputDataVersion``);
    else None. The retrain Lambda's rule, so a cron line and a schedule tick agree.

    Starting would take every cached step from that execution and register its model once more
    (caching keys on arguments, as SageMaker's does). Any such execution counts, not only the
    newest on the data: a run with other parameters in between, or a change of code undone,
    leaves its cache entries in place.
    """
    from mlops_rules.caching import CACHE_LIFETIME
    from mlops_rules.data_versions import repeats
    from pipeline.local.state.db import iso, open_state, sha256_text, utc_now
    from pipeline.local.state.executions import ExecutionStore

    parsed, digest = json.loads(definition), sha256_text(definition)
    cutoff = iso(utc_now() - CACHE_LIFETIME)
    with contextlib.closing(open_state(settings.home)) as conn:
        executions = ExecutionStore(conn).list_executions(settings.pipeline_name)
    for execution in executions:
        if execution.start_time < cutoff:
            break  # newest first: the rest are older still
        if (execution.status == "Succeeded" and execution.definition_sha256 == digest
                and repeats(parsed, values, parsed, execution.parameters)):
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


def run_local(settings: Settings, data: Sequence[DataSource], params: dict[str, str], sample: int | None,
              use_cache: bool = True, skip_unchanged: bool = False) -> dict[str, Any]:
    """Stage the data (or read it at the ``InputDataUri`` given) and execute the pipeline; with
    ``skip_unchanged``, start nothing (status ``skipped``) when the run would repeat a Succeeded
    execution (``unchanged_since``): what a scheduled run (a cron line) wants, so that it
    registers no duplicate."""
    from pipeline.bundles import build_bundles
    from pipeline.definition import quiet_definition_json  # the SDK loads only when a definition is built
    from pipeline.local.engine.executor import run_pipeline
    from pipeline.local.engine.expressions import ExpressionError, parameter_values

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
    summary = _with_shadow(settings, summarize(settings, execution.execution_id))
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    return summary


def retry_local(settings: Settings, execution_id: str, use_cache: bool = True) -> dict[str, Any]:
    """Run a Failed or Stopped execution again from its failed step (same id, definition, parameters)."""
    from pipeline.local.engine.executor import retry_execution

    started = time.perf_counter()
    execution = retry_execution(execution_id, settings, use_cache=use_cache)
    summary = _with_shadow(settings, summarize(settings, execution.execution_id))
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    return summary


def _with_shadow(settings: Settings, summary: dict[str, Any]) -> dict[str, Any]:
    """The summary, with what became of a newly registered version's shadow when shadows are on
    (``announce_registration``). A shadow that cannot start fails no run: the reason is kept."""
    from pipeline.local.services.events import announce_registration

    version = summary.get("model_package_version")
    if version is None or not settings.shadow_percent:
        return summary
    try:
        result = announce_registration(settings, version)
    except Exception as error:  # noqa: BLE001 (the run itself succeeded; the endpoint says what went wrong)
        log.warning("version %s could not start as the shadow: %s", version, error)
        result = {"status": "failed", "reason": str(error)}
    return {**summary, "shadow": result}


def summarize(settings: Settings, execution_id: str) -> dict[str, Any]:
    """What a person or a script wants to know about an execution, from the state database."""
    from pipeline.definition import REGISTER, report_accuracy, report_accuracy_by_dataset
    from pipeline.local.state.db import open_state
    from pipeline.local.state.executions import ExecutionStore
    from pipeline.local.state.registry import ModelRegistry

    with contextlib.closing(open_state(settings.home)) as conn:
        execution, steps = ExecutionStore(conn).describe(execution_id)
        registered = any(s.step_name == REGISTER and s.status == "Succeeded" for s in steps)
        versions = [p.version for p in ModelRegistry(conn).list_packages(settings.model_package_group)
                    if p.execution_id == execution.execution_id] if registered else []
    report = _evaluation_report(settings, steps)
    return {
        "execution_id": execution.execution_id,
        "status": execution.status,
        "failure_reason": execution.failure_reason,
        "steps": {s.step_name: {"status": s.status, "seconds": s.seconds, "log": s.log_path, "attempts": s.attempts,
                                "cached_from": s.cache_source_execution_id, "hosts": s.hosts} for s in steps},
        "accuracy": report_accuracy(report),
        "accuracy_by_dataset": report_accuracy_by_dataset(report),
        "threshold": execution.parameters.get("AccuracyThreshold"),
        "sentence_threshold": execution.parameters.get("SentenceAccuracyThreshold"),
        "model_package_version": versions[0] if versions else None,
        "rerun": _rerun(execution, steps),
        "parameters": execution.parameters,
        "started": execution.start_time,
    }


def _rerun(execution: Any, steps: list) -> str | None:
    """The command that runs a Failed or Stopped execution again from where it stopped; None
    for one still running, one that succeeded, or one a gate failed (a retry would fail it again)."""
    if execution.status not in ("Failed", "Stopped") or any(s.step_type == "Fail" and s.status == "Failed"
                                                              for s in steps):
        return None
    return f"sentiment-mlops executions retry {execution.execution_id}"


def _evaluation_report(settings: Settings, steps: list) -> dict | None:
    """The report the gate saw: the Evaluate step's evaluation.json, read from the store."""
    from pipeline.definition import EVALUATE, EVALUATION_OUTPUT
    from pipeline.local.state.store import ArtifactStore

    evaluate = next((s for s in steps if s.step_name == EVALUATE and s.status == "Succeeded"), None)
    if evaluate is None:
        return None
    outputs = evaluate.properties["ProcessingOutputConfig"]["Outputs"]
    uri = next(o["S3Output"]["S3Uri"] for o in outputs if o["OutputName"] == EVALUATION_OUTPUT)
    return ArtifactStore(settings.home).read_json(f"{uri.rstrip('/')}/evaluation.json")


@dataclass(frozen=True)
class LocalExecutions:
    """The local runtime's executions in this home (of every pipeline name it ran), as
    ``pipeline.execution_history.ExecutionHistory``; reading them settles any whose runner was killed."""

    settings: Settings

    def recent(self, limit: int | None = None) -> list[ExecutionRecord]:
        from pipeline.local.state.db import open_state
        from pipeline.local.state.executions import ExecutionStore

        with contextlib.closing(open_state(self.settings.home)) as conn:
            return [e.record() for e in ExecutionStore(conn).list_executions(None, limit)]


def resolve_data(data: list[str] | None, settings: Settings) -> list[DataSource]:
    """The ``--data`` arguments as datasets. None given: every known dataset, downloaded once and
    cached (IMDb's reviews and SST-2's sentences), so the default model learns both; IMDb alone
    when only SST-2 cannot be had (offline, with the archive cached), with a warning that says so."""
    if data:
        return [_resolve_one(value, settings) for value in data]
    sources = []
    for name in KNOWN_DATASETS:
        try:
            sources.append(DataSource(download_known(name, settings)))
        except DownloadError as exc:
            if name == KNOWN_DATASETS[0]:
                raise
            log.warning("training without %s, which cannot be had: %s", name, exc)
    return sources


def _resolve_one(value: str, settings: Settings) -> DataSource:
    """``PATH``, ``URL`` or ``NAME=PATH``: a value that is no path and whose part before the first
    "=" holds no "/" (nor "://") names its dataset, by the rule a folder name follows."""
    from steps.datasets import check_name
    from steps.sources import DataError

    name, data = None, value
    before, equals, after = value.partition("=")
    if equals and "/" not in before and not Path(value).expanduser().exists():
        try:
            name, data = check_name(before, f"--data {value}"), after
        except DataError as exc:
            raise CommandError(str(exc)) from exc
    if data.startswith(("http://", "https://")):
        return DataSource(download(data, None, settings.cache_dir), name)
    path = Path(data).expanduser()
    if not path.exists():
        raise CommandError(f"--data {value}: no such file or folder; pass the folder holding the reviews, or omit --data "
                           "to download them")
    return DataSource(path, name)
