"""The local runtime's SQLite state: schema, executions and steps, the step cache, the model
registry and its approval events, and what two writers at once do to them."""
from __future__ import annotations

import multiprocessing
import re
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.local.engine.cache import parse_expire_after, step_cache_key
from pipeline.local.engine.errors import PolicyError
from pipeline.local.state import registry as registry_module
from pipeline.local.state.db import SCHEMA_VERSION, StateError, connect, schema_version, state_path
from pipeline.local.state.executions import EXECUTION_STATUSES, STEP_STATUSES, ExecutionError, ExecutionStore
from pipeline.local.state.registry import ModelRegistry, RegistryError
from pipeline.parameters import APPROVAL_STATUSES

SHA = "ab" * 32
SPEC = {"Containers": [{"Image": "pytorch-inference:2.5-cpu-py311", "ModelDataUrl": "s3://b/model.tar.gz",
                       "Environment": {"SAGEMAKER_PROGRAM": "inference.py"}}],
        "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]}
METRICS = {"binary_classification_metrics": {"accuracy": {"value": 0.905, "standard_deviation": "NaN"}}}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return state_path(tmp_path / ".mlops")


@pytest.fixture
def conn(path: Path):
    connection = connect(path)
    yield connection
    connection.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(conn, clock) -> ExecutionStore:
    return ExecutionStore(conn, clock=clock)


@pytest.fixture
def registry(conn, clock) -> ModelRegistry:
    ids = iter(f"event-{i}" for i in range(1000))
    return ModelRegistry(conn, clock=clock, event_id=lambda: next(ids))


def register(registry: ModelRegistry, group: str = "sentiment-lstm", **extra) -> registry_module.ModelPackage:
    return registry.register(group, "s3://b/model.tar.gz", SHA, METRICS, inference_specification=SPEC, **extra)


# --- schema -------------------------------------------------------------------------------
def test_schema_is_created_once_and_reopened(path: Path) -> None:
    first = connect(path)
    assert schema_version(first) == SCHEMA_VERSION
    assert first.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert first.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert first.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    ExecutionStore(first).create("p", SHA, {})
    first.close()
    again = connect(path)
    assert schema_version(again) == SCHEMA_VERSION
    assert again.execute("SELECT count(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    assert len(ExecutionStore(again).list_executions()) == 1
    again.close()


def test_a_newer_schema_is_refused(path: Path) -> None:
    conn = connect(path)
    conn.execute("INSERT INTO schema_version VALUES (?, 'later')", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(StateError, match="upgrade sentiment-mlops"):
        connect(path)


@pytest.mark.parametrize("table, column, values", [("model_packages", "approval_status", APPROVAL_STATUSES),
                                                   ("executions", "status", EXECUTION_STATUSES),
                                                   ("steps", "status", STEP_STATUSES)])
def test_the_schemas_checks_allow_the_codes_statuses(path: Path, table: str, column: str, values: tuple) -> None:
    """The migrations keep their SQL as it was applied (schema history), so their CHECK lists
    are literals; this keeps each equal to the constant the code checks against."""
    conn = connect(path)
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()[0]
    conn.close()
    (allowed,) = re.findall(rf"\b{column} IN\s*\(([^)]*)\)", sql)
    assert tuple(re.findall(r"'([^']*)'", allowed)) == values


# --- executions -----------------------------------------------------------------------------
def test_execution_lifecycle(store: ExecutionStore, clock: Clock) -> None:
    created = store.create("sentiment-mlops", SHA, {"Epochs": 2, "AccuracyThreshold": 0.88})
    assert re.fullmatch(r"[a-z0-9]{12}", created.execution_id)
    assert created.arn == f"arn:aws:sagemaker:local:000000000000:pipeline/sentiment-mlops/execution/{created.execution_id}"
    assert (created.status, created.parameters, created.end_time) == ("Executing", {"Epochs": 2, "AccuracyThreshold": 0.88}, None)
    clock.advance(minutes=5)
    done = store.set_status(created.execution_id, "Failed", failure_reason="Step Train failed")
    assert (done.status, done.failure_reason, done.end_time) == ("Failed", "Step Train failed", "2026-11-22T12:05:00.000Z")
    assert store.get(created.arn) == done
    with pytest.raises(ExecutionError, match="already ended as Failed"):
        store.set_status(created.execution_id, "Succeeded")


def test_arns_are_cased_as_sagemaker_cases_them(store: ExecutionStore, registry: ModelRegistry) -> None:
    """A pipeline's name is lower-cased in its ARNs, a model package group's is not; the ARN an
    execution is recorded with is the one its steps see as Execution.PipelineExecutionArn."""
    from pipeline.local.engine.expressions import execution_variables

    run = store.create("My-Pipeline", SHA, {})
    assert run.arn == f"arn:aws:sagemaker:local:000000000000:pipeline/my-pipeline/execution/{run.execution_id}"
    variables = execution_variables("My-Pipeline", run.execution_id, datetime.now(UTC))
    assert variables["PipelineExecutionArn"] == run.arn
    assert register(registry, group="Sentiment-LSTM").arn == "arn:aws:sagemaker:local:000000000000:model-package/Sentiment-LSTM/1"


def test_executions_are_listed_newest_first(store: ExecutionStore, clock: Clock) -> None:
    ids = []
    for name in ("a", "b", "a"):
        ids.append(store.create(name, SHA, {}).execution_id)
        clock.advance(seconds=1)
    assert [e.execution_id for e in store.list_executions()] == ids[::-1]
    assert [e.execution_id for e in store.list_executions("a")] == [ids[2], ids[0]]
    assert [e.execution_id for e in store.list_executions(limit=1)] == [ids[2]]


def test_same_second_executions_keep_creation_order(store: ExecutionStore) -> None:
    ids = [store.create("p", SHA, {}).execution_id for _ in range(3)]
    assert [e.execution_id for e in store.list_executions()] == ids[::-1]


def test_unknown_execution_and_bad_status(store: ExecutionStore) -> None:
    with pytest.raises(ExecutionError, match="no execution 'nope'"):
        store.get("nope")
    run = store.create("p", SHA, {})
    with pytest.raises(ExecutionError, match="not a valid execution status; use one of"):
        store.set_status(run.execution_id, "Done")
    with pytest.raises(ExecutionError, match="has no step 'Train'"):
        store.mark_step(run.execution_id, "Train", "Succeeded")


def test_step_records_and_properties_round_trip(store: ExecutionStore, clock: Clock) -> None:
    run = store.create("p", SHA, {})
    store.start_step(run.execution_id, "Preprocess", "Processing", log_path="logs/Preprocess.log", cache_key="k1")
    clock.advance(seconds=42.5)
    properties = {"ProcessingOutputConfig": {"Outputs": {"train": {"S3Output": {"S3Uri": "s3://b/x/train"}}}},
                  "ProcessingJobStatus": "Completed"}
    done = store.mark_step(run.execution_id, "Preprocess", "Succeeded", properties=properties)
    assert (done.status, done.seconds, done.attempts, done.cache_hit) == ("Succeeded", 42.5, 1, False)
    assert done.properties == properties and done.log_path == "logs/Preprocess.log"
    store.start_step(run.execution_id, "Train", "Training")
    execution, steps = store.describe(run.execution_id)
    assert execution == run and [(s.step_name, s.status) for s in steps] == [("Preprocess", "Succeeded"), ("Train", "Executing")]
    with pytest.raises(ExecutionError, match="cannot start again"):
        store.start_step(run.execution_id, "Preprocess", "Processing")
    with pytest.raises(ExecutionError, match="already ended as Succeeded"):
        store.mark_step(run.execution_id, "Preprocess", "Failed")


def test_a_failed_step_retries_and_counts_attempts(store: ExecutionStore, clock: Clock) -> None:
    run = store.create("p", SHA, {})
    store.start_step(run.execution_id, "Train", "Training", status="Starting")
    store.start_step(run.execution_id, "Train", "Training")  # Starting -> Executing is not a new attempt
    failed = store.mark_step(run.execution_id, "Train", "Failed", failure_reason="CapacityError")
    assert (failed.attempts, failed.failure_reason) == (1, "CapacityError")
    clock.advance(seconds=60)
    retry = store.start_step(run.execution_id, "Train", "Training")
    assert (retry.status, retry.attempts, retry.failure_reason, retry.end_time) == ("Executing", 2, None, None)
    assert retry.start_time == "2026-11-22T12:01:00.000Z"


def test_skipped_steps_are_recorded(store: ExecutionStore) -> None:
    run = store.create("p", SHA, {})
    skipped = store.record_skipped(run.execution_id, "Fail", "Fail")
    assert (skipped.status, skipped.attempts, skipped.start_time) == ("Skipped", 0, None)


# --- the step cache -------------------------------------------------------------------------
def test_cache_key_depends_on_name_and_arguments() -> None:
    key = step_cache_key("Train", {"HyperParameters": {"epochs": "2"}})
    assert key == step_cache_key("Train", {"HyperParameters": {"epochs": "2"}})
    assert len({key, step_cache_key("Evaluate", {"HyperParameters": {"epochs": "2"}}),
                step_cache_key("Train", {"HyperParameters": {"epochs": "3"}})}) == 3


def test_cache_keys_stay_those_the_state_already_holds() -> None:
    """A changed formula would silently make every recorded step miss the cache."""
    assert step_cache_key("Train", {"a": 1}) == "57c2c90175737fe5631035b00df12af2998b27f1a90a78a5826dabfbc08366f9"


def test_cache_lookup_honours_expiry_pipeline_and_status(store: ExecutionStore, clock: Clock) -> None:
    key = step_cache_key("Train", {"a": 1})
    first = store.create("p", SHA, {})
    store.start_step(first.execution_id, "Train", "Training", cache_key=key)
    store.mark_step(first.execution_id, "Train", "Succeeded", properties={"ModelArtifacts": {"S3ModelArtifacts": "s3://m"}})
    failed = store.create("p", SHA, {})
    store.start_step(failed.execution_id, "Train", "Training", cache_key=key)
    store.mark_step(failed.execution_id, "Train", "Failed")
    clock.advance(days=29)
    hit = store.find_cached("p", "Train", key, timedelta(days=30))
    assert hit is not None and hit.execution_id == first.execution_id
    assert store.find_cached("other-pipeline", "Train", key, timedelta(days=30)) is None
    assert store.find_cached("p", "Train", step_cache_key("Train", {"a": 2}), timedelta(days=30)) is None
    clock.advance(days=1, seconds=1)
    assert store.find_cached("p", "Train", key, timedelta(days=30)) is None
    assert store.find_cached("p", "Train", key, timedelta(days=31)) is not None


def test_a_cache_hit_points_at_the_execution_that_ran_the_step(store: ExecutionStore) -> None:
    key = step_cache_key("Train", {"a": 1})
    runs = [store.create("p", SHA, {}) for _ in range(3)]
    store.start_step(runs[0].execution_id, "Train", "Training", cache_key=key)
    store.mark_step(runs[0].execution_id, "Train", "Succeeded", properties={"x": 1})
    cached = store.find_cached("p", "Train", key, timedelta(days=1))
    assert cached is not None
    second = store.record_cache_hit(runs[1].execution_id, cached)
    assert (second.cache_hit, second.cache_source_execution_id, second.properties) == (True, runs[0].execution_id, {"x": 1})
    cached = store.find_cached("p", "Train", key, timedelta(days=1))
    assert cached is not None
    third = store.record_cache_hit(runs[2].execution_id, cached)
    assert third.cache_source_execution_id == runs[0].execution_id


@pytest.mark.parametrize("text, expected", [("P30D", timedelta(days=30)), ("PT1H30M", timedelta(hours=1, minutes=30)),
                                            ("P1W", timedelta(days=7)), ("P1YT5S", timedelta(days=365, seconds=5)),
                                            # the short forms in SageMaker's caching guide
                                            ("30d", timedelta(days=30)), ("T16m", timedelta(minutes=16)),
                                            ("30dT5h", timedelta(days=30, hours=5))])
def test_expire_after_durations(text: str, expected: timedelta) -> None:
    assert parse_expire_after(text) == expected


@pytest.mark.parametrize("text", ["P", "PT", "P1DT", "1 day", "P-1D", "", "T"])
def test_bad_expire_after_is_refused(text: str) -> None:
    with pytest.raises(PolicyError, match="ISO 8601 duration"):
        parse_expire_after(text)


# --- the registry ---------------------------------------------------------------------------
def test_register_list_get(registry: ModelRegistry, store: ExecutionStore, clock: Clock) -> None:
    run = store.create("sentiment-mlops", SHA, {})
    first = register(registry, execution_id=run.execution_id, description="first")
    clock.advance(seconds=1)
    second = register(registry, approval_status="Approved")
    assert (first.version, second.version) == (1, 2)
    assert first.arn == "arn:aws:sagemaker:local:000000000000:model-package/sentiment-lstm/1"
    assert (first.metrics, first.inference_specification, first.artifact_sha256) == (METRICS, SPEC, SHA)
    assert (first.execution_arn, first.approval_status) == (run.arn, "PendingManualApproval")
    assert [p.version for p in registry.list("sentiment-lstm")] == [2, 1]
    assert [p.version for p in registry.list("sentiment-lstm", status="PendingManualApproval")] == [1]
    assert registry.get("sentiment-lstm", 1) == first
    assert registry.latest("sentiment-lstm") == second
    assert register(registry, "other-group").version == 1
    assert registry.groups() == ["other-group", "sentiment-lstm"]


def test_approve_reject_and_history(registry: ModelRegistry, clock: Clock) -> None:
    register(registry)
    clock.advance(minutes=1)
    approved = registry.update_approval("sentiment-lstm", 1, "Approved", approver="alice", comment="0.905 is fine")
    assert approved.changed and approved.package.approval_status == "Approved"
    assert approved.package.approval_description == "0.905 is fine"
    assert approved.package.last_modified_time == "2026-11-22T12:01:00.000Z"
    again = registry.update_approval("sentiment-lstm", 1, "Approved", approver="bob")
    assert (again.changed, again.event, again.package) == (False, None, approved.package)
    clock.advance(minutes=1)
    rejected = registry.update_approval("sentiment-lstm", 1, "Rejected", approver="carol", comment="drift")
    assert rejected.event is not None
    assert rejected.event["detail"]["ModelApprovalStatus"] == "Rejected"
    history = [(h.approver, h.from_status, h.to_status, h.comment) for h in registry.history("sentiment-lstm", 1)]
    assert history == [("pipeline", None, "PendingManualApproval", None),
                       ("alice", "PendingManualApproval", "Approved", "0.905 is fine"),
                       ("carol", "Approved", "Rejected", "drift")]
    assert registry.history("sentiment-lstm", 1)[2].changed_at == "2026-11-22T12:02:00.000Z"


def test_the_event_has_eventbridge_s_shape(registry: ModelRegistry, store: ExecutionStore, clock: Clock) -> None:
    run = store.create("sentiment-mlops", SHA, {})
    register(registry, execution_id=run.execution_id, description="LSTM", metrics_uri="s3://b/eval/evaluation.json")
    clock.advance(hours=1)
    event = registry.update_approval("sentiment-lstm", 1, "Approved", approver="alice").event
    assert event is not None
    arn = "arn:aws:sagemaker:local:000000000000:model-package/sentiment-lstm/1"
    assert {k: v for k, v in event.items() if k != "detail"} == {
        "version": "0", "id": "event-0", "detail-type": "SageMaker Model Package State Change",
        "source": "aws.sagemaker", "account": "000000000000", "time": "2026-11-22T13:00:00Z",
        "region": "local", "resources": [arn]}
    assert event["detail"] == {
        "ModelPackageGroupName": "sentiment-lstm", "ModelPackageVersion": 1, "ModelPackageArn": arn,
        "ModelPackageName": "sentiment-lstm", "ModelPackageDescription": "LSTM",
        "CreationTime": "2026-11-22T12:00:00Z", "LastModifiedTime": "2026-11-22T13:00:00Z",
        "InferenceSpecification": SPEC, "ModelPackageStatus": "Completed",
        "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
        "CertifyForMarketplace": False, "ModelApprovalStatus": "Approved",
        "MetadataProperties": {"GeneratedBy": run.arn},
        "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                         "S3Uri": "s3://b/eval/evaluation.json"}}},
        "CustomerMetadataProperties": {"ArtifactSha256": SHA, "Accuracy": "0.905",
                                       "PipelineExecutionId": run.execution_id},
        "UpdatedModelPackageFields": ["ModelApprovalStatus"]}
    assert registry.event(registry.get("sentiment-lstm", 1))["id"] == "event-1"


@pytest.mark.parametrize("call, message", [
    (lambda r: r.get("sentiment-lstm", 7), "no version 7 in model package group 'sentiment-lstm'; it has versions 1 to 1"),
    (lambda r: r.get("empty", 1), "'empty' has no versions; register a model first"),
    (lambda r: r.update_approval("sentiment-lstm", 9, "Approved"), "no version 9"),
    (lambda r: r.update_approval("sentiment-lstm", 1, "approved"), "not a model approval status; use one of"),
    (lambda r: r.list("sentiment-lstm", status="Deployed"), "not a model approval status"),
    (lambda r: register(r, approval_status="Maybe"), "not a model approval status"),
    (lambda r: register(r, "bad_name!"), "not a valid model package group name"),
    (lambda r: r.register("g", "s3://m", "xyz", {}, inference_specification={}), "not 64 lowercase hex digits"),
    (lambda r: register(r, execution_id="nosuchexecut"), "pass the id of an existing execution"),
])
def test_invalid_requests_say_what_to_do(registry: ModelRegistry, call, message: str) -> None:
    register(registry)
    with pytest.raises(RegistryError, match=re.escape(message)) as error:
        call(registry)
    assert "\n" not in str(error.value)


LINKS = {"EvaluationReport": "s3://b/executions/abcdef123456/Evaluate/evaluation/evaluation.json",
         "TrainingCurves": "s3://b/executions/abcdef123456/Evaluate/evaluation/training_curves.png"}


def test_customer_metadata_is_kept_and_the_event_carries_it_beside_the_registrys_own(
        registry: ModelRegistry, store: ExecutionStore) -> None:
    """As CreateModelPackage keeps CustomerMetadataProperties and the state-change event carries
    them; the keys the local event already carried stay, and win a clash of keys."""
    run = store.create("sentiment-mlops", SHA, {})
    package = register(registry, execution_id=run.execution_id,
                       customer_metadata_properties={**LINKS, "ArtifactSha256": "forged"})
    assert package.customer_metadata_properties == {**LINKS, "ArtifactSha256": "forged"}
    assert registry.get("sentiment-lstm", 1) == package
    event = registry.update_approval("sentiment-lstm", 1, "Approved", approver="alice").event
    assert event is not None
    assert event["detail"]["CustomerMetadataProperties"] == {
        **LINKS, "ArtifactSha256": SHA, "Accuracy": "0.905", "PipelineExecutionId": run.execution_id}
    assert register(registry).customer_metadata_properties == {}  # none given, none kept


@pytest.mark.parametrize("properties, message", [
    ({"Report": "s3://b/" + "k" * 250}, "'Report' has 257 characters: SageMaker takes 1 to 256"),
    ({"k" * 129: "v"}, "has 129 characters: SageMaker takes 1 to 128"),
    ({"Report": "s3://b/~me/evaluation.json"}, "holds '~'"),
    ({"Report": ""}, "has 0 characters"),
    ({f"k{i}": "v" for i in range(51)}, "51 customer metadata properties: a model package holds at most 50"),
])
def test_customer_metadata_sagemaker_would_refuse_is_refused(registry: ModelRegistry, conn: sqlite3.Connection,
                                                             properties: dict, message: str) -> None:
    with pytest.raises(RegistryError, match=re.escape(message)) as error:
        register(registry, customer_metadata_properties=properties)
    assert "\n" not in str(error.value) and str(error.value).startswith("cannot register in 'sentiment-lstm': ")
    assert conn.execute("SELECT count(*) FROM model_packages").fetchone()[0] == 0


def test_packages_registered_before_customer_metadata_existed_read_as_having_none(path: Path) -> None:
    """The column came with a migration of its own: a database at the schema before it keeps its
    packages, which read as registered without properties."""
    from pipeline.local.state import db

    added = next(i for i, statements in enumerate(db.MIGRATIONS) if "customer_metadata_properties" in " ".join(statements))
    path.parent.mkdir(parents=True)
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for version, statements in enumerate(db.MIGRATIONS[:added], start=1):
        for statement in statements:
            old.execute(statement)
        old.execute("INSERT INTO schema_version VALUES (?, 'then')", (version,))
    old.execute("INSERT INTO model_package_groups VALUES ('g', 'arn:g', '2026-01-01T00:00:00.000Z')")
    old.execute("INSERT INTO model_packages (group_name, version, arn, artifact_uri, artifact_sha256, metrics, "
                "inference_specification, approval_status, creation_time, last_modified_time) VALUES "
                "('g', 1, 'arn:g/1', 's3://b/m', ?, '{}', '{}', 'PendingManualApproval', "
                "'2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')", (SHA,))
    old.close()
    upgraded = connect(path)
    assert schema_version(upgraded) == SCHEMA_VERSION == len(db.MIGRATIONS)
    assert ModelRegistry(upgraded).get("g", 1).customer_metadata_properties == {}
    upgraded.close()


def test_failed_registration_leaves_nothing(registry: ModelRegistry, conn: sqlite3.Connection) -> None:
    with pytest.raises(ValueError):  # NaN is not JSON: refused inside the transaction
        registry.register("fresh", "s3://m", SHA, {"accuracy": float("nan")}, inference_specification=SPEC)
    with pytest.raises(TypeError):
        registry.register("fresh", "s3://m", SHA, {"when": datetime.now()}, inference_specification=SPEC)
    for table in ("model_package_groups", "model_packages", "approval_history"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
    assert register(registry, "fresh").version == 1


def test_a_failure_after_the_package_row_rolls_it_back(registry: ModelRegistry, conn: sqlite3.Connection,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    register(registry)

    def broken(*args) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(registry_module, "_insert_history", broken)
    with pytest.raises(sqlite3.OperationalError):
        register(registry)
    assert [p.version for p in registry.list("sentiment-lstm")] == [1]
    monkeypatch.undo()
    assert register(registry).version == 2


# --- two writers at once --------------------------------------------------------------------
def _worker(path: str, group: str, count: int, queue, start) -> None:
    """One process: its own connection, executions and registrations interleaved, all workers
    let go at once so that their writes really collide."""
    conn = connect(path, timeout_s=60)
    store, reg = ExecutionStore(conn), ModelRegistry(conn)
    start.wait()
    results = []
    for _ in range(count):
        run = store.create("p", SHA, {})
        package = reg.register(group, "s3://m", SHA, {}, inference_specification={}, execution_id=run.execution_id)
        results.append((run.execution_id, package.version))
    conn.close()
    queue.put(results)


def _check_concurrent_results(results: list[tuple[str, int]], total: int) -> None:
    ids = [r[0] for r in results]
    assert len(set(ids)) == total
    assert sorted(r[1] for r in results) == list(range(1, total + 1))


def test_processes_get_distinct_ids_and_consecutive_versions(tmp_path: Path) -> None:
    path = str(state_path(tmp_path))  # a fresh file: the processes also race to create the schema
    context = multiprocessing.get_context("spawn")
    queue, start = context.Queue(), context.Barrier(3)
    workers = [context.Process(target=_worker, args=(path, "g", 6, queue, start)) for _ in range(3)]
    for worker in workers:
        worker.start()
    results = [item for _ in workers for item in queue.get(timeout=120)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    _check_concurrent_results(results, 18)
    conn = connect(path)
    assert [h.version for h in ModelRegistry(conn).history("g")] == list(range(1, 19))
    conn.close()


def _open_fresh_files(paths: list[str], start, queue) -> None:
    """Open each new file at the same moment as the other workers; report any failure."""
    errors = []
    for path in paths:
        start.wait()
        try:
            connect(path, timeout_s=60).close()
        except sqlite3.Error as error:
            errors.append(f"{path}: {error}")
    queue.put(errors)


def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL takes a lock SQLite's busy handler does not wait for: two
    `run` commands started together in a new home once failed with "database is locked"."""
    paths = [str(tmp_path / f"home{i}" / "state.db") for i in range(15)]
    context = multiprocessing.get_context("spawn")
    queue, start = context.Queue(), context.Barrier(6)
    workers = [context.Process(target=_open_fresh_files, args=(paths, start, queue)) for _ in range(6)]
    for worker in workers:
        worker.start()
    errors = [error for _ in workers for error in queue.get(timeout=120)]
    for worker in workers:
        worker.join(timeout=60)
    assert errors == []
    for path in paths:
        conn = connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert schema_version(conn) == SCHEMA_VERSION
        conn.close()


def test_threads_with_their_own_connections(tmp_path: Path) -> None:
    path = str(state_path(tmp_path))
    connect(path).close()
    results: list[tuple[str, int]] = []
    lock = threading.Lock()

    class ListQueue:
        def put(self, items) -> None:
            with lock:
                results.extend(items)

    start = threading.Barrier(4)
    threads = [threading.Thread(target=_worker, args=(path, "g", 10, ListQueue(), start)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    _check_concurrent_results(results, 40)


def test_a_held_write_lock_makes_others_wait_not_fail(path: Path) -> None:
    holder = connect(path)
    holder.execute("BEGIN IMMEDIATE")
    waiter = connect(path, timeout_s=0.2)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        ExecutionStore(waiter).create("p", SHA, {})
    holder.execute("ROLLBACK")
    assert ExecutionStore(waiter).create("p", SHA, {}).status == "Executing"
    holder.close()
    waiter.close()


def _approve(path: str, start, changes: list, lock: threading.Lock) -> None:
    conn = connect(path, timeout_s=60)
    start.wait()
    change = ModelRegistry(conn).update_approval("g", 1, "Approved", approver=threading.current_thread().name)
    with lock:
        changes.append(change)
    conn.close()


def test_concurrent_approvals_give_one_event(tmp_path: Path) -> None:
    """The status is read and changed under one write lock, so of many racing approvals one
    changes the package and sends the event; the rest find it approved already."""
    path = str(state_path(tmp_path))
    conn = connect(path)
    ModelRegistry(conn).register("g", "s3://m", SHA, {}, inference_specification={})
    changes: list = []
    lock, start = threading.Lock(), threading.Barrier(6)
    threads = [threading.Thread(target=_approve, args=(path, start, changes, lock)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(changes) == 6 and sum(change.changed for change in changes) == 1
    assert [h.to_status for h in ModelRegistry(conn).history("g", 1)] == ["PendingManualApproval", "Approved"]
    conn.close()
