"""Run a Processing or Training step's resolved request as a local subprocess.

The arguments are the CreateProcessingJob / CreateTrainingJob request shapes found in the
definition JSON (after ``resolve``). Each job gets a directory that mirrors ``/opt/ml``: every
``/opt/ml/...`` path in the request is re-rooted there, inputs are staged from the artifact
store into it, and declared outputs are uploaded from it afterwards. So the job scripts see the
same layout and the same arguments as in the SageMaker containers, only under another root.

Processing runs the definition's own entry point (``runproc.sh``, from the store, as uploaded for
AWS): it unpacks the code bundle and runs the script, so what is tested locally is what runs in
the container. The one difference is the dependency install: the runner calls ``python -m pip
install -r requirements.txt``, and locally ``python`` on ``PATH`` is a shim that skips ``pip
install`` (the project's environment already holds those requirements; installing into it from
a job would change it under the user) and runs everything else with ``sys.executable``.

Training follows the SageMaker training toolkit's script mode: the ``sagemaker_submit_directory``
tarball is unpacked into ``code/``, ``sagemaker_program`` is run with ``sys.executable`` and the
user hyperparameters as ``--name value``, with the ``SM_*`` variables set; the model directory
is then packed into ``model.tar.gz`` under ``S3OutputPath/<job name>/output/``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.local.aws_identity import sagemaker_arn
from pipeline.local.processes import HeldInterrupts, stop_process_group
from pipeline.local.state.store import ArtifactStore
from serve.artifact import pack_model_dir
from steps.job_failure import OUTPUT_DIR_ENV, PROCESSING_REASON_FILE, TRAINING_REASON_FILE

OPT_ML = "/opt/ml"
_OPT_ML_PATH = re.compile(r"(?<![\w./-])/opt/ml(?=/|$|[^\w.-])")
SHIM_DIR = ".local-runtime/bin"
PIP_SHIM = """#!/bin/bash
# Local runtime stand-in for the container's python (see pipeline/local/engine/jobs.py): the project's
# environment already has the bundle's requirements, so "pip install" is skipped.
if [[ "${{1:-}}" == "-m" && "${{2:-}}" == "pip" && "${{3:-}}" == "install" ]]; then
    echo "local runtime: skipping pip install $*" >&2
    exit 0
fi
exec "{python}" "$@"
"""


@dataclass(frozen=True)
class JobWatch:
    """What the caller is told while a job runs: its pid as soon as it starts (to find the job
    again), and a tick every ``interval_s`` while it runs (the executor renews its claim on
    the execution, so that the time its process ended is known if it is killed)."""

    started: Callable[[int], None]
    running: Callable[[], None] = lambda: None
    interval_s: float = 10.0


class JobFailed(RuntimeError):
    """A job whose process exited non-zero (or ran past its limit): the exit code and the log."""

    def __init__(self, job_name: str, exit_code: int | None, log_path: Path, reason: str = "") -> None:
        self.job_name, self.exit_code, self.log_path = job_name, exit_code, Path(log_path)
        detail = reason or f"exited with code {exit_code}"
        super().__init__(f"job {job_name} {detail}; see the log at {self.log_path}")


def rewrite_opt_ml(value: Any, job_dir: Path) -> Any:
    """``value`` with every ``/opt/ml`` path (in strings, at any depth) moved under ``job_dir``."""
    if isinstance(value, str):
        return _OPT_ML_PATH.sub(lambda _: str(job_dir), value)
    if isinstance(value, list):
        return [rewrite_opt_ml(item, job_dir) for item in value]
    if isinstance(value, Mapping):
        return {key: rewrite_opt_ml(item, job_dir) for key, item in value.items()}
    return value


def _mirror(container_path: str, job_dir: Path) -> Path:
    """The local path of a container path; refuses paths outside ``/opt/ml``, which no job
    writes locally (a job must not reach into the machine's real folders)."""
    if container_path != OPT_ML and not container_path.startswith(OPT_ML + "/"):
        raise ValueError(f"container path {container_path!r} is not under {OPT_ML}")
    relative = container_path[len(OPT_ML):].strip("/")
    if any(part in ("..", ".") for part in relative.split("/")):
        raise ValueError(f"container path {container_path!r} has '.' or '..' segments")
    return job_dir / relative if relative else job_dir


def _run(command: list[str], *, job_name: str, cwd: Path, env: Mapping[str, str], log_path: Path,
         timeout_s: float | None, failure_file: Path | None = None, watch: JobWatch | None = None) -> None:
    """Run ``command`` with its output in ``log_path``; raise ``JobFailed`` on a non-zero exit
    or a timeout. On Ctrl-C the child is stopped too before the interrupt goes on. The job runs
    in its own session (its pid is its process group), which ``watch`` is told."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        with HeldInterrupts() as held:  # a stop that comes while the child starts waits for its pid
            process = subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        try:
            held.deliver()
            if watch is not None:
                watch.started(process.pid)
            code = _wait(process, timeout_s, watch)
        except subprocess.TimeoutExpired:
            _stop(process)
            raise JobFailed(job_name, None, log_path, f"ran past MaxRuntimeInSeconds ({timeout_s:g} s)") from None
        except BaseException:
            _stop(process)
            raise
    if code != 0:
        raise JobFailed(job_name, code, log_path, _failure_reason(failure_file, code))


def _wait(process: subprocess.Popen, timeout_s: float | None, watch: JobWatch | None) -> int:
    """``process.wait(timeout_s)``, telling ``watch`` every ``interval_s`` that the job still runs."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        slices = [t for t in (left, watch.interval_s if watch else None) if t is not None]
        try:
            return process.wait(timeout=min(slices) if slices else None)
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                raise
            assert watch is not None  # only a watch's slice ends a wait early
            watch.running()


def _stop(process: subprocess.Popen) -> None:
    """Stop the job's whole process group (its own session), politely first, and return only
    once every process of it is gone: a stopped job leaves nothing working in its folder."""
    stop_process_group(process.pid)
    process.poll()  # the leader is reaped already; this records it on the Popen object


def _failure_reason(failure_file: Path | None, code: int) -> str:
    """The reason the job wrote where SageMaker reads it, if it did: ``/opt/ml/output/failure``
    for a training job (its FailureReason), ``/opt/ml/output/message`` for a processing job
    (its ExitMessage)."""
    if failure_file is not None and failure_file.is_file():
        text = failure_file.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            return f"exited with code {code}: {text[:500]}"
    return f"exited with code {code}"


def _timeout(arguments: Mapping[str, Any]) -> float | None:
    seconds = (arguments.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
    return float(seconds) if seconds else None


def _base_env(arguments: Mapping[str, Any], job_dir: Path) -> dict[str, str]:
    """The caller's environment plus the request's ``Environment`` (paths re-rooted)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the job's code comes from its bundle, not from the caller's path
    for key, value in (arguments.get("Environment") or {}).items():
        env[str(key)] = str(rewrite_opt_ml(value, job_dir))
    return env


# --- processing ------------------------------------------------------------------------------

def _write_shim(job_dir: Path) -> Path:
    shim_dir = job_dir / SHIM_DIR
    shim_dir.mkdir(parents=True, exist_ok=True)
    shim = shim_dir / "python"
    shim.write_text(PIP_SHIM.format(python=sys.executable), encoding="utf-8")
    shim.chmod(0o755)
    return shim_dir


def _stage_processing_inputs(arguments: Mapping[str, Any], job_dir: Path, store: ArtifactStore) -> None:
    for item in arguments.get("ProcessingInputs") or []:
        source = item.get("S3Input")
        if not source:
            raise ValueError(f"processing input {item.get('InputName')!r}: only S3Input is supported locally")
        store.download(source["S3Uri"], _mirror(source["LocalPath"], job_dir))


def _processing_outputs(arguments: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [o for o in (arguments.get("ProcessingOutputConfig") or {}).get("Outputs") or [] if o.get("S3Output")]


def run_processing_job(arguments: Mapping[str, Any], *, job_name: str, job_dir: Path, store: ArtifactStore,
                       log_path: Path, watch: JobWatch | None = None) -> dict[str, Any]:
    """Run one resolved CreateProcessingJob request; returns its DescribeProcessingJob-shaped
    properties (what ``Steps.X.ProcessingOutputConfig.Outputs['name']...`` reads)."""
    job_dir = Path(job_dir)
    _stage_processing_inputs(arguments, job_dir, store)
    for output in _processing_outputs(arguments):
        _mirror(output["S3Output"]["LocalPath"], job_dir).mkdir(parents=True, exist_ok=True)
    app = arguments.get("AppSpecification") or {}
    command = rewrite_opt_ml(list(app.get("ContainerEntrypoint") or []) + list(app.get("ContainerArguments") or []), job_dir)
    if not command:
        raise ValueError(f"processing job {job_name}: AppSpecification has no ContainerEntrypoint")
    env = _base_env(arguments, job_dir)
    env.update(SM_CODE_INPUT=str(job_dir / "processing/input/code"), SM_CODE_DIR=str(job_dir / "code"),
               PATH=f"{_write_shim(job_dir)}{os.pathsep}{env.get('PATH', '')}")
    env[OUTPUT_DIR_ENV] = str(job_dir / "output")  # /opt/ml/output, where the scripts leave their ExitMessage
    (job_dir / "output").mkdir(parents=True, exist_ok=True)
    _run([str(c) for c in command], job_name=job_name, cwd=job_dir, env=env, log_path=log_path,
         timeout_s=_timeout(arguments), failure_file=job_dir / "output" / PROCESSING_REASON_FILE, watch=watch)
    for output in _processing_outputs(arguments):
        store.upload_dir(_mirror(output["S3Output"]["LocalPath"], job_dir), output["S3Output"]["S3Uri"])
    return {"ProcessingJobName": job_name, "ProcessingJobArn": sagemaker_arn("processing-job", job_name),
            "ProcessingJobStatus": "Completed", "AppSpecification": dict(app),
            "ProcessingInputs": list(arguments.get("ProcessingInputs") or []),
            "ProcessingOutputConfig": dict(arguments.get("ProcessingOutputConfig") or {"Outputs": []})}


# --- training --------------------------------------------------------------------------------

def gpu_count() -> int:
    """GPUs the job may use: 0 unless torch sees one (SM_NUM_GPUS)."""
    try:
        import torch
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # no torch, or a broken driver: train on the CPU
        return 0


def _decode(value: str) -> Any:
    """A hyperparameter as the training toolkit puts it into SM_HPS: JSON if it parses."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _user_hyperparameters(hyperparameters: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in hyperparameters.items() if not str(k).startswith("sagemaker_")}


def _stage_channels(arguments: Mapping[str, Any], job_dir: Path, store: ArtifactStore) -> dict[str, Path]:
    channels = {}
    for channel in arguments.get("InputDataConfig") or []:
        name = channel["ChannelName"]
        source = (channel.get("DataSource") or {}).get("S3DataSource")
        if not source:
            raise ValueError(f"training channel {name!r}: only S3DataSource is supported locally")
        channels[name] = store.download(source["S3Uri"], job_dir / "input" / "data" / name)
    return channels


def _unpack_code(submit_directory: str, code_dir: Path, store: ArtifactStore) -> None:
    """The ``sagemaker_submit_directory`` tarball into ``code_dir`` (safe extraction)."""
    code_dir.mkdir(parents=True, exist_ok=True)
    archive = code_dir.parent / "sourcedir.tar.gz"
    archive.write_bytes(store.read_bytes(submit_directory))
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(code_dir, filter="data")


def _training_env(arguments: Mapping[str, Any], job_dir: Path, channels: Mapping[str, Path],
                  hyperparameters: Mapping[str, str], checkpoint_dir: Path, num_gpus: int) -> dict[str, str]:
    env = _base_env(arguments, job_dir)
    env.update({f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()})
    env.update({f"SM_HP_{name.upper()}": value for name, value in hyperparameters.items()})
    env.update(SM_CHANNELS=json.dumps(sorted(channels)), SM_MODEL_DIR=str(job_dir / "model"),
               SM_OUTPUT_DATA_DIR=str(job_dir / "output" / "data"), SM_OUTPUT_DIR=str(job_dir / "output"),
               SM_INPUT_DIR=str(job_dir / "input"), SM_CHECKPOINT_DIR=str(checkpoint_dir),
               SM_NUM_GPUS=str(num_gpus), SM_NUM_CPUS=str(os.cpu_count() or 1),
               SM_HPS=json.dumps({k: _decode(v) for k, v in hyperparameters.items()}),
               SM_CURRENT_HOST="algo-1", SM_HOSTS='["algo-1"]', PYTHONPATH=str(job_dir / "code"))
    return env


def parse_metrics(log_text: str, definitions: list[Mapping[str, str]], when: datetime | None = None) -> list[dict[str, Any]]:
    """``FinalMetricDataList``: each metric's last value in the log, by its definition's regex."""
    stamp = (when or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    metrics = []
    for definition in definitions:
        values = [m.group(1) for m in re.finditer(definition["Regex"], log_text)]
        floats = [float(v) for v in values if _is_float(v)]
        if floats:
            metrics.append({"MetricName": definition["Name"], "Value": floats[-1], "Timestamp": stamp})
    return metrics


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _sync_checkpoints(config: Mapping[str, Any], local: Path, store: ArtifactStore, upload: bool) -> None:
    """Checkpoints in from S3 before the job, back out after it (also when it failed, so that a
    re-run resumes, as a spot job does)."""
    uri = config.get("S3Uri")
    if not uri:
        return
    if upload:
        store.upload_dir(local, uri)
    elif store.exists(uri):
        store.download(uri, local)


def _upload_model(job_dir: Path, output_path: str, job_name: str, store: ArtifactStore) -> str:
    """``model.tar.gz`` (and ``output.tar.gz`` when the job wrote output data) under
    ``S3OutputPath/<job name>/output/``; returns the model artifact URI."""
    prefix = f"{output_path.rstrip('/')}/{job_name}/output"
    archive = job_dir / "output" / "model.tar.gz"
    pack_model_dir(job_dir / "model", archive)
    store.upload_file(archive, f"{prefix}/model.tar.gz")
    data_dir = job_dir / "output" / "data"
    if data_dir.is_dir() and any(data_dir.iterdir()):
        pack_model_dir(data_dir, job_dir / "output" / "output.tar.gz")
        store.upload_file(job_dir / "output" / "output.tar.gz", f"{prefix}/output.tar.gz")
    return f"{prefix}/model.tar.gz"


def run_training_job(arguments: Mapping[str, Any], *, job_name: str, job_dir: Path, store: ArtifactStore,
                     log_path: Path, num_gpus: int | None = None, watch: JobWatch | None = None) -> dict[str, Any]:
    """Run one resolved CreateTrainingJob request in script mode; returns DescribeTrainingJob-
    shaped properties (``ModelArtifacts.S3ModelArtifacts``, ``FinalMetricDataList``, ...)."""
    job_dir = Path(job_dir)
    all_hps = {str(k): str(v) for k, v in (arguments.get("HyperParameters") or {}).items()}
    program, submit = all_hps.get("sagemaker_program"), all_hps.get("sagemaker_submit_directory")
    if not program or not submit:
        raise ValueError(f"training job {job_name}: only script mode (sagemaker_program and "
                         "sagemaker_submit_directory hyperparameters) runs locally")
    channels = _stage_channels(arguments, job_dir, store)
    _unpack_code(submit, job_dir / "code", store)
    for folder in ("model", "output/data"):
        (job_dir / folder).mkdir(parents=True, exist_ok=True)
    checkpoint_config = arguments.get("CheckpointConfig") or {}
    checkpoint_dir = _mirror(checkpoint_config.get("LocalPath") or f"{OPT_ML}/checkpoints", job_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    _sync_checkpoints(checkpoint_config, checkpoint_dir, store, upload=False)
    user_hps = _user_hyperparameters(all_hps)
    env = _training_env(arguments, job_dir, channels, user_hps, checkpoint_dir,
                        gpu_count() if num_gpus is None else num_gpus)
    command = [sys.executable, program] + [token for name, value in user_hps.items() for token in (f"--{name}", value)]
    try:
        _run(command, job_name=job_name, cwd=job_dir / "code", env=env, log_path=log_path,
             timeout_s=_timeout(arguments), failure_file=job_dir / "output" / TRAINING_REASON_FILE, watch=watch)
    finally:
        _sync_checkpoints(checkpoint_config, checkpoint_dir, store, upload=True)
    model_uri = _upload_model(job_dir, (arguments.get("OutputDataConfig") or {})["S3OutputPath"], job_name, store)
    definitions = (arguments.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []
    return {"TrainingJobName": job_name, "TrainingJobArn": sagemaker_arn("training-job", job_name),
            "TrainingJobStatus": "Completed", "ModelArtifacts": {"S3ModelArtifacts": model_uri},
            "HyperParameters": all_hps, "OutputDataConfig": dict(arguments.get("OutputDataConfig") or {}),
            "CheckpointConfig": dict(checkpoint_config),
            "FinalMetricDataList": parse_metrics(log_path.read_text(encoding="utf-8", errors="replace"), definitions)}


# --- transform -------------------------------------------------------------------------------

TRANSFORM_MODULE = "pipeline.local.services.transform"


def run_transform_job(arguments: Mapping[str, Any], *, job_name: str, job_dir: Path, home: Path, log_path: Path,
                      watch: JobWatch | None = None) -> dict[str, Any]:
    """Run one resolved CreateTransformJob request as a job of its own (``python -m
    pipeline.local.services.transform``: the local runtime's transform service, run by name so
    that the engine does not import the services); returns its DescribeTransformJob answer."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    request, result, failure = job_dir / "request.json", job_dir / "result.json", job_dir / "failure"
    request.write_text(json.dumps({**arguments, "TransformJobName": job_name}), encoding="utf-8")
    for stale in (result, failure):  # a retried attempt's files are not this attempt's
        stale.unlink(missing_ok=True)
    command = [sys.executable, "-m", TRANSFORM_MODULE, "--home", str(home), "--request", str(request),
               "--result", str(result), "--failure", str(failure)]
    _run(command, job_name=job_name, cwd=job_dir, env=dict(os.environ), log_path=log_path, timeout_s=None,
         failure_file=failure, watch=watch)
    return json.loads(result.read_text(encoding="utf-8"))
