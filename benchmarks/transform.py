"""A local Batch Transform job over IMDb's test reviews, against the model server's own ceiling:
throughput, accuracy and memory, each next to a baseline measured in the same run.

    .venv/bin/python benchmarks/transform.py --home .mlops --data IMDB                # the 25,000 test reviews
    .venv/bin/python benchmarks/transform.py --home .mlops --data IMDB --limit 2000   # a quick run

Why: a transform is the way to score many reviews at once, so it should run close to what the
model server's workers can score when nothing but the model is in the way, and its memory should
not grow with the data (the runner streams records; the server holds a request at a time per
worker).

How, on a home with a registered version (``--version``, default the newest) and IMDb's
test reviews (``--data``, any layout ``run --data`` takes; the first ``--limit`` if given):

1. The ceiling. The model server's workers are fresh processes with ``SAGEMAKER_MODEL_SERVER_WORKERS``
   as the server reads it (this environment, then the model's container environment; default
   one per core) and the cores shared out as torch threads (``ServerSettings``). So as many
   processes here, each with those threads, load the version's unpacked artifact with its own
   handlers and score their share of the very request bodies the job sends (the texts as JSON
   Lines, packed up to ``--max-payload-mb``): ``input_fn``, ``predict_fn``, ``output_fn`` per
   request, as a worker does for a request larger than its batch size. After a warm-up request
   each, they start together; reviews per second over the slowest one's time. No HTTP, no runner.
2. One request. The version's model server is started alone (its start-up timed), sent one
   review (``POST /invocations``, ``application/json``), and the peak RSS (``VmHWM``) of its
   processes (the supervisor and its workers) read; then it is stopped.
3. The transform. The reviews are staged decompressed in the home's store and transformed by
   ``LocalTransforms.create_transform_job`` (InputFilter ``$.text``, JoinSource Input,
   OutputFilter ``$['label','SageMakerOutput']``, AssembleWith Line, Accept JSON Lines). Reviews
   per second twice: over the job's whole wall time (the server's start-up and stop included),
   and from the first progress report (the server answers and has told its execution
   parameters) to the last record written (start-up and stop excluded). The accuracy is computed
   from the ``.out`` file (``label`` against ``SageMakerOutput.label``), and its labels are
   compared with the ceiling's, review by review.
4. Memory during the transform. ``create_transform_job`` runs the job to the end in the calling
   thread, starting and stopping a server of its own, so a background thread (with its own
   SQLite connection) polls the job's row for the ``server_pid`` it records once its server
   answers, and reads every 0.1 s the ``VmHWM`` of that process and of its children
   (``/proc/<pid>/task/<tid>/children``) until the job is over, and the CPU time each used
   meanwhile (how the requests were shared among the workers). That measures the job's own
   server; starting one here and pointing the job at it is not something the job can be asked
   to do. This process's own peak (the runner's) is reset (``/proc/self/clear_refs``) before
   the job and read after it.

Memory is in MB of 2**20 bytes; a server's figure is the sum of its processes' peaks (an upper
bound on their peak together). Staged input and outputs are removed at the end unless ``--keep``.
Linux only (``/proc``).
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import urllib3  # noqa: E402

from pipeline.local.processes import stop_process_group  # noqa: E402
from pipeline.local.services.hosting import LocalHosting  # noqa: E402
from pipeline.local.services.transform import records  # noqa: E402
from pipeline.local.services.transform.jobs import LocalTransforms  # noqa: E402
from pipeline.local.services.transform.runner import Progress  # noqa: E402
from pipeline.local.state.db import open_state  # noqa: E402
from pipeline.local.state.registry import ModelRegistry  # noqa: E402
from pipeline.local.state.store import ArtifactStore  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.transforms import TransformOptions, default_output, ensure_model, job_name, transform_request  # noqa: E402
from serve.server.settings import ServerSettings  # noqa: E402
from steps.sources import load_reviews  # noqa: E402

log = logging.getLogger("benchmarks.transform")

JSONLINES = "application/jsonlines"
MEGABYTE = 1024 * 1024
SAMPLE_S = 0.1
STOP_TIMEOUT_S = 40.0
READY_TIMEOUT_S = 600.0
RATIO_TARGET = 0.80
MEMORY_TARGET = 1.5
UNEVEN = 0.5  # a worker with under half the CPU time of the busiest did not take its share


# --- the data ----------------------------------------------------------------------------------
def read_lines(data: Path, limit: int | None) -> list[bytes]:
    """The first ``limit`` test reviews (all without it) of the dataset at ``data``, read by the
    preprocessing step's own readers (any layout it accepts: the official archive, its folder,
    JSON Lines), as ``{"text", "label"}`` lines."""
    test = load_reviews(data, unlabeled=False).test
    count = len(test) if limit is None else min(limit, len(test))
    if not count:
        raise SystemExit(f"no test reviews in {data}")
    return [json.dumps({"text": test.texts[i], "label": test.labels[i]}).encode() for i in range(count)]


def stage(store: ArtifactStore, uri: str, lines: list[bytes]) -> None:
    """The records as one decompressed JSON Lines object in the home's store."""
    with store.writer(uri) as out:
        for line in lines:
            out.write(line + b"\n")


def request_bodies(lines: list[bytes], max_payload_bytes: int) -> list[bytes]:
    """The bodies the job sends: each record through InputFilter ``$.text`` and packed as
    MultiRecord packs them, by the job's own functions."""
    processing = records.DataProcessing.parse({"InputFilter": "$.text"})
    prepared = records.prepare(lines, processing, "json", "the test reviews", max_payload_bytes)
    return [records.request_body(batch) for batch in records.batches(prepared, True, max_payload_bytes)]


# --- 1. the ceiling: the artifact's handlers in as many processes as the server has workers -----------
def _ceiling_worker(index: int, model_dir: str, threads: int, bodies: list[bytes], barrier: Any,
                    results: Any) -> None:
    """One worker's share: load as a model-server worker does, warm up on one request, wait for
    the others, then score every body; puts (index, seconds, answers, VmHWM in kB) on ``results``."""
    try:
        import torch

        from serve.artifact_code import load_artifact_handlers

        torch.set_num_threads(threads)
        handlers = load_artifact_handlers(Path(model_dir))
        model = handlers.model_fn(model_dir)

        def score(body: bytes) -> str:
            return handlers.output_fn(handlers.predict_fn(handlers.input_fn(body, JSONLINES), model), JSONLINES)[0]

        score(bodies[0])
        barrier.wait()
        started = time.perf_counter()
        answers = [score(body) for body in bodies]
        results.put((index, time.perf_counter() - started, answers, status_kb("self", "VmHWM") or 0))
    except BaseException as error:
        barrier.abort()
        results.put((index, None, f"{type(error).__name__}: {error}", 0))
        raise


@dataclass
class Ceiling:
    seconds: float  # the slowest worker's, from the moment they all start
    positive: list[bool]  # each review's label, positive or not, in the reviews' order
    peaks_kb: list[int]  # each worker's VmHWM


def ceiling(model_dir: Path, settings: ServerSettings, bodies: list[bytes]) -> Ceiling:
    """Score ``bodies`` in as many processes as the server has workers: worker ``i`` scores
    bodies ``i``, ``i + workers``, ..."""
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as the server's workers are
    count = min(settings.workers, len(bodies))
    barrier, results = context.Barrier(count + 1), context.Queue()
    workers = [context.Process(target=_ceiling_worker, daemon=True,
                               args=(i, str(model_dir), settings.threads_per_worker(), bodies[i::count], barrier,
                                     results)) for i in range(count)]
    for worker in workers:
        worker.start()
    try:
        barrier.wait(READY_TIMEOUT_S)
    except threading.BrokenBarrierError:
        raise SystemExit(f"a ceiling worker failed: {results.get(timeout=30)[2]}") from None
    finished = {index: (seconds, answers, peak) for index, seconds, answers, peak in (results.get() for _ in workers)}
    for worker in workers:
        worker.join()
    failed = [answers for seconds, answers, _ in finished.values() if seconds is None]
    if failed:
        raise SystemExit(f"a ceiling worker failed: {failed[0]}")
    answers = [finished[i % count][1][i // count] for i in range(len(bodies))]
    return Ceiling(max(seconds for seconds, _, _ in finished.values()),
                   [json.loads(line)["label"] == "positive" for answer in answers for line in answer.split("\n")],
                   [finished[i][2] for i in range(count)])


# --- memory, from /proc ---------------------------------------------------------------------------
def status_kb(pid: int | str, field: str) -> int | None:
    """``field`` (VmHWM, VmRSS) of ``/proc/<pid>/status`` in kB; None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the model server's supervisor and its workers)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending.extend(int(child) for child in children.read_text().split())
            except OSError:
                continue
    return found


def tree_peaks(pid: int, peaks: dict[int, int]) -> dict[int, int]:
    """``peaks`` (pid → the largest VmHWM seen, kB) updated with the processes under ``pid`` now."""
    for member in process_tree(pid):
        high = status_kb(member, "VmHWM")
        if high is not None:
            peaks[member] = max(high, peaks.get(member, 0))
    return peaks


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time ``pid`` has used; None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def megabytes(kb: int) -> float:
    return kb / 1024


def reset_own_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux 4.0+); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class ServerMemory(threading.Thread):
    """Samples the memory of a transform job's model server while the job runs (see the module's
    docstring: the job starts its own server and records its pid)."""

    def __init__(self, home: Path, job: str) -> None:
        super().__init__(name="server-memory", daemon=True)
        self.home, self.job = home, job
        self.peaks: dict[int, int] = {}
        self.cpu_first: dict[int, float] = {}  # each process's CPU time when first seen (its server answering)
        self.cpu_last: dict[int, float] = {}
        self.own_rss_kb = 0
        self.done = threading.Event()

    def run(self) -> None:
        conn = open_state(self.home)  # a connection of this thread's own, as SQLite wants
        try:
            pid = None
            while not self.done.is_set():
                if pid is None:
                    row = conn.execute("SELECT server_pid FROM transform_jobs WHERE name = ?", (self.job,)).fetchone()
                    pid = row["server_pid"] if row is not None else None
                if pid is not None:
                    self._sample(pid)
                self.own_rss_kb = max(self.own_rss_kb, status_kb("self", "VmRSS") or 0)
                self.done.wait(SAMPLE_S)
        finally:
            conn.close()

    def _sample(self, pid: int) -> None:
        tree_peaks(pid, self.peaks)
        for member in process_tree(pid):
            used = cpu_seconds(member)
            if used is not None:
                self.cpu_first.setdefault(member, used)
                self.cpu_last[member] = used

    def cpu_used(self) -> list[float]:
        """Each process's CPU seconds between the server's first and last samples: how the
        work was shared out among the workers."""
        return [self.cpu_last[pid] - self.cpu_first[pid] for pid in self.cpu_first]


# --- 2. one request ---------------------------------------------------------------------------------
def one_request(hosting: LocalHosting, model: str, review: str, folder: Path) -> tuple[float, dict[int, int]]:
    """Start the model's server alone, send it one review, read its processes' peaks, stop it:
    the seconds it took to start, and pid → VmHWM (kB)."""
    started = time.perf_counter()
    pid, url = hosting.start_model_server(model, folder / "one-request.log")
    startup = time.perf_counter() - started
    try:
        response = urllib3.request("POST", url + "/invocations", body=json.dumps({"review": review}),
                                   headers={"Content-Type": "application/json"}, timeout=60.0, retries=False)
        if response.status != 200:
            raise SystemExit(f"the model server answered {response.status}: {response.data[:300]!r}")
        return startup, tree_peaks(pid, {})
    finally:
        stop_process_group(pid, STOP_TIMEOUT_S)


# --- 3. the transform ----------------------------------------------------------------------------------
@dataclass
class JobClock:
    """When the job first reported progress (its server answering) and finished its last record."""

    first: float | None = None
    last: float | None = None

    def __call__(self, progress: Progress) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        if progress.objects and progress.objects_done == progress.objects:
            self.last = now


@dataclass
class JobResult:
    status: str
    reason: str | None
    wall_s: float  # CreateTransformJob's call, start to end
    startup_s: float  # from the call to the first progress report: the server started and asked
    records_s: float  # from there to the last record written
    stop_s: float  # from there to the call's return: the server stopped


def run_job(home: Path, request: dict[str, Any], sampler: ServerMemory) -> JobResult:
    """Run the transform to its end, with the sampler running beside it."""
    clock, conn = JobClock(), open_state(home)
    try:
        transforms = LocalTransforms(home, conn, LocalHosting(home, conn), on_progress=clock)
        sampler.start()
        started = time.perf_counter()
        try:
            transforms.create_transform_job(**request)
        finally:
            ended = time.perf_counter()
            sampler.done.set()
            sampler.join()
        job = transforms.describe_transform_job(TransformJobName=request["TransformJobName"])
    finally:
        conn.close()
    first, last = clock.first or started, clock.last or ended
    return JobResult(job["TransformJobStatus"], job.get("FailureReason"), ended - started, first - started,
                     last - first, ended - last)


def score_output(path: Path) -> tuple[int, list[bool]]:
    """Correct answers in the ``.out`` file, and each record's label (positive or not) in order."""
    correct, positive = 0, []
    with open(path, encoding="utf-8") as out:
        for line in out:
            record = json.loads(line)
            answer = record["SageMakerOutput"]["label"] == "positive"
            positive.append(answer)
            correct += answer == bool(record["label"])
    return correct, positive


# --- the run -------------------------------------------------------------------------------------
@dataclass
class Bench:
    """What the run is about: the home, the version's Model, its server's settings, the reviews."""

    settings: Settings
    conn: Any
    version: int
    model: str
    server: ServerSettings
    lines: list[bytes]
    texts: list[str]
    labels: list[bool]

    @property
    def hosting(self) -> LocalHosting:
        return LocalHosting(self.settings.home, self.conn)

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.settings.home)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".mlops"), help="a local home with a registered version")
    parser.add_argument("--version", type=int, help="the version to score with (default: the newest)")
    parser.add_argument("--data", type=Path, required=True,
                        help="IMDb in any layout run --data takes (the official archive, say)")
    parser.add_argument("--limit", type=int, help="only the first LIMIT test reviews (a quick run)")
    parser.add_argument("--max-payload-mb", type=int, default=1,
                        help="MaxPayloadInMB (default 1: the handlers refuse more than 1,000 reviews a request)")
    parser.add_argument("--keep", action="store_true", help="keep the staged input and the job's output")
    return parser.parse_args()


def prepare(args: argparse.Namespace) -> Bench:
    """The version (the newest by default), its Model for transforms (made as `transform` makes it), the
    settings its server will read, and the reviews."""
    settings = Settings(home=args.home)
    conn = open_state(settings.home)
    registry, hosting = ModelRegistry(conn), LocalHosting(settings.home, conn)
    packages = registry.list_packages(settings.model_package_group)
    if not packages:
        raise SystemExit(f"{settings.home} has no registered version in {settings.model_package_group}")
    version = args.version or packages[0].version
    model = ensure_model(hosting, settings, version, registry.get(settings.model_package_group, version).arn)
    # What the server reads: this environment with the model's container environment on top.
    server = ServerSettings.from_env({**os.environ, **hosting._container_environment(model)})
    lines = read_lines(args.data, args.limit)
    records = [json.loads(line) for line in lines]
    return Bench(settings, conn, version, model, server, lines, [r["text"] for r in records],
                 [bool(r["label"]) for r in records])


def measure_ceiling(bench: Bench, max_payload_mb: int) -> tuple[float, Ceiling]:
    bodies = request_bodies(bench.lines, max_payload_mb * MEGABYTE)
    server = bench.server
    print(f"{len(bench.texts)} IMDb test reviews, version {bench.version} ({bench.model}); {server.workers} workers x "
          f"{server.threads_per_worker()} torch thread(s); {len(bodies)} requests of up to {max_payload_mb} MB "
          f"(mean {len(bench.texts) / len(bodies):.0f} reviews)", flush=True)
    log.info("the ceiling: %d processes score %d requests in-process", server.workers, len(bodies))
    found = ceiling(bench.hosting._model_dir(bench.model), server, bodies)  # the folder the job's server serves
    rate = len(bench.texts) / found.seconds
    print(f"in-process ceiling, the artifact's handlers in {len(found.peaks_kb)} processes: {rate:,.0f} reviews/s "
          f"({found.seconds:.2f} s); accuracy {accuracy(found.positive, bench.labels):.4f}; the processes peak at "
          f"{_mb_list(found.peaks_kb)}", flush=True)
    return rate, found


def measure_one_request(bench: Bench, folder: Path) -> tuple[float, int]:
    log.info("one request: starting the model server alone")
    startup_s, peaks = one_request(bench.hosting, bench.model, bench.texts[0], folder)
    print(f"model server alone: started in {startup_s:.1f} s; after one single-review request its processes peak at "
          f"{_mb_list(list(peaks.values()))}", flush=True)
    return startup_s, sum(peaks.values())


@dataclass
class Baselines:
    """What the transform is held against, measured earlier in the same run."""

    ceiling_rate: float  # reviews/s
    ceiling: Ceiling
    startup_alone_s: float
    one_request_kb: int


def measure_transform(bench: Bench, max_payload_mb: int, input_prefix: str, output_prefix: str, name: str,
                      baselines: Baselines) -> None:
    stage(bench.store, input_prefix + "test.jsonl", bench.lines)
    request = transform_request(name, bench.model, input_prefix, output_prefix, TransformOptions(
        accept=JSONLINES, assemble_with="Line", max_payload_mb=max_payload_mb, input_filter="$.text",
        join_source="Input", output_filter="$['label','SageMakerOutput']"))
    before_kb = status_kb("self", "VmRSS") or 0
    own_reset = reset_own_peak()
    sampler = ServerMemory(bench.settings.home, name)
    log.info("the transform: job %s", name)
    job = run_job(bench.settings.home, request, sampler)
    own_peak_kb = (status_kb("self", "VmHWM") or 0) if own_reset else sampler.own_rss_kb
    if job.status != "Completed":
        raise SystemExit(f"transform job {name}: {job.status}: {job.reason}")
    correct, positive = score_output(bench.store.path(output_prefix + "test.jsonl.out"))
    report_job(name, len(bench.texts), job, baselines.ceiling_rate, baselines.startup_alone_s)
    during_kb = sum(sampler.peaks.values())
    print(f"  model server during the transform: its processes peak at {_mb_list(list(sampler.peaks.values()))}: "
          f"{during_kb / baselines.one_request_kb:.2f}x one request (target <= {MEMORY_TARGET}x); CPU seconds "
          f"they used while it ran: {' + '.join(f'{used:.1f}' for used in sampler.cpu_used())}")
    workers = sampler.cpu_used()[1:]  # the supervisor is the first process seen
    if len(workers) > 1 and min(workers) < UNEVEN * max(workers):
        print("  the workers' CPU time is uneven: the job's requests (a new connection each) landed on fewer workers "
              "than there are more often than not; the kernel deals connections to the workers' sockets at random")
    print(f"  this process: {megabytes(before_kb):,.0f} MB resident before the job, peak {megabytes(own_peak_kb):,.0f} "
          f"MB during it (+{megabytes(own_peak_kb - before_kb):,.0f} MB)")
    found = baselines.ceiling
    agree = sum(a == b for a, b in zip(positive, found.positive))
    print(f"  accuracy from the .out file: {correct / len(bench.texts):.4f} ({len(positive)} records), in-process "
          f"{accuracy(found.positive, bench.labels):.4f}; the same label for {agree}/{len(bench.texts)} reviews")


def report_job(name: str, count: int, job: JobResult, ceiling_rate: float, startup_alone_s: float) -> None:
    """The job's throughput both ways, each against the ceiling."""
    whole, records = count / job.wall_s, count / job.records_s
    print(f"transform job {name}: Completed in {job.wall_s:.1f} s wall: server start-up {job.startup_s:.1f} s "
          f"(alone: {startup_alone_s:.1f} s), records {job.records_s:.1f} s, server stop {job.stop_s:.1f} s")
    print(f"  start-up and stop included: {whole:,.0f} reviews/s, {whole / ceiling_rate:.2f}x the ceiling")
    print(f"  records only: {records:,.0f} reviews/s, {records / ceiling_rate:.2f}x the ceiling "
          f"(target >= {RATIO_TARGET:.2f})")


def accuracy(positive: list[bool], labels: list[bool]) -> float:
    return sum(p == y for p, y in zip(positive, labels)) / len(labels)


def _mb_list(peaks_kb: list[int]) -> str:
    """``1,074 MB (233 + 428 + 413)``: the sum, then each process's."""
    return f"{megabytes(sum(peaks_kb)):,.0f} MB ({' + '.join(f'{megabytes(kb):.0f}' for kb in peaks_kb)})"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args()
    bench = prepare(args)
    name = f"bench-{job_name(bench.version)}"
    input_prefix = bench.settings.s3_uri("benchmarks", "transform-input", name) + "/"
    output_prefix = default_output(bench.settings, name)
    scratch = Path(tempfile.mkdtemp(prefix="bench-transform-"))
    try:
        ceiling_rate, found = measure_ceiling(bench, args.max_payload_mb)
        startup_s, one_kb = measure_one_request(bench, scratch)
        measure_transform(bench, args.max_payload_mb, input_prefix, output_prefix, name,
                          Baselines(ceiling_rate, found, startup_s, one_kb))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if not args.keep:
            for prefix in (input_prefix, output_prefix):
                shutil.rmtree(bench.store.path(prefix), ignore_errors=True)
        bench.conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
