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
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.definition.contracts import FULLY_REPLICATED, SHARDED_BY_S3_KEY, TORCH_DISTRIBUTED
from pipeline.local.aws_identity import sagemaker_arn
from pipeline.local.engine.hosts import (
    HostCommand,
    HostsError,
    deal,
    host_names,
    resource_config,
    supervisor_command,
    write_spec,
)
from pipeline.local.processes import HeldInterrupts, free_port, stop_process_group
from pipeline.local.state.store import ArtifactStore
from serve.artifact import pack_model_dir
from steps.instances import SINGLE_HOST
from steps.job_failure import OUTPUT_DIR_ENV, PROCESSING_REASON_FILE, TRAINING_REASON_FILE

log = logging.getLogger(__name__)

OPT_ML = "/opt/ml"
LOCAL_MASTER_ADDR = "127.0.0.1"  # every local host is this machine
RANK_JOIN_TIMEOUT_S = int(os.environ.get("SENTIMENT_MLOPS_RANK_JOIN_TIMEOUT", "120"))  # torchrun's static rendezvous waits 600 s
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
        _stop(process)  # what it left running: a multi-host job's other hosts
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
    env = _supervisor_env()
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


@dataclass(frozen=True)
class JobHosts:
    """A job's instances and the folder that mirrors ``/opt/ml`` for each: the job's own folder
    when there is one host (as it always was), ``<job>/algo-i`` when there are more."""

    names: list[str]
    dirs: dict[str, Path]

    @classmethod
    def plan(cls, job_dir: Path, count: int) -> JobHosts:
        names = host_names(count)
        return cls(names, {names[0]: job_dir} if count == 1 else {name: job_dir / name for name in names})

    @property
    def many(self) -> bool:
        return len(self.names) > 1


def _instance_count(value: Any, name: str) -> int:
    try:
        count = int(value if value is not None else 1)
    except (TypeError, ValueError):
        raise HostsError(f"{name} must be a whole number, not {value!r}") from None
    if count < 1:
        raise HostsError(f"{name} must be 1 or more, not {count}")
    return count


def _shares(uri: str, distribution: str | None, hosts: JobHosts, store: ArtifactStore,
            count_name: str) -> dict[str, list[str] | None]:
    """Which objects each host gets: all of them (``FullyReplicated``, None), or its deal."""
    if (distribution or FULLY_REPLICATED) == SHARDED_BY_S3_KEY and hosts.many:
        return dict(deal(store.keys(uri), hosts.names, source=uri, count_name=count_name))
    return {name: None for name in hosts.names}


def _write_resource_config(folder: Path, host: str, hosts: JobHosts) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "resourceconfig.json").write_text(json.dumps(resource_config(host, hosts.names)), encoding="utf-8")


def _run_hosts(commands: dict[str, tuple[list[str], Path, dict[str, str], Path]], *, job_name: str, job_dir: Path,
               log_path: Path, timeout_s: float | None, watch: JobWatch | None) -> None:
    """One host: its command, as it always ran. More: the hosts' supervisor, which runs them all
    at once, fails fast and names the host that failed (``pipeline.local.engine.hosts``)."""
    if len(commands) == 1:
        command, cwd, env, failure = next(iter(commands.values()))
        _run(command, job_name=job_name, cwd=cwd, env=env, log_path=log_path, timeout_s=timeout_s,
             failure_file=failure, watch=watch)
        return
    base = _supervisor_env()
    hosts = [HostCommand(host, command, str(cwd), {k: v for k, v in env.items() if base.get(k) != v}, str(failure))
             for host, (command, cwd, env, failure) in commands.items()]
    failure_file = job_dir / "hosts-failure"
    failure_file.unlink(missing_ok=True)
    spec = write_spec(job_dir / "hosts.json", hosts, failure_file)
    _run(supervisor_command(spec), job_name=job_name, cwd=job_dir, env=base, log_path=log_path, timeout_s=timeout_s,
         failure_file=failure_file, watch=watch)


def _supervisor_env() -> dict[str, str]:
    """The caller's environment without ``PYTHONPATH``: a job's code comes from its bundle (each
    host's from its own folder), not from the caller's path."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def _cpu_share(hosts: JobHosts) -> int:
    """Each local host's share of this machine's cores (an instance has cores of its own)."""
    return max((os.cpu_count() or 1) // len(hosts.names), 1)


def _gpu_shares(gpus: int, hosts: JobHosts) -> dict[str, tuple[int, str | None]]:
    """Each host's GPUs as (count, ``CUDA_VISIBLE_DEVICES``): all of them for one host; for more,
    an equal slice each, as each instance has its own. Fewer GPUs than hosts: the hosts train on
    CPUs (two ranks on one GPU is what NCCL refuses), and the log says so."""
    if not gpus or not hosts.many:
        return {host: (gpus, None) for host in hosts.names}
    if gpus < len(hosts.names):
        log.warning("%d GPU(s) for %d local hosts: the hosts train on CPUs, one GPU each needs as many GPUs as hosts",
                    gpus, len(hosts.names))
        return {host: (0, "") for host in hosts.names}
    each = gpus // len(hosts.names)
    return {host: (each, ",".join(str(rank * each + i) for i in range(each))) for rank, host in enumerate(hosts.names)}


def _stage_processing_inputs(arguments: Mapping[str, Any], hosts: JobHosts, store: ArtifactStore) -> None:
    count_name = "ProcessingResources.ClusterConfig.InstanceCount"
    for item in arguments.get("ProcessingInputs") or []:
        source = item.get("S3Input")
        if not source:
            raise ValueError(f"processing input {item.get('InputName')!r}: only S3Input is supported locally")
        shares = _shares(source["S3Uri"], source.get("S3DataDistributionType"), hosts, store, count_name)
        for host, keys in shares.items():
            store.download(source["S3Uri"], _mirror(source["LocalPath"], hosts.dirs[host]), keys=keys)


def _processing_outputs(arguments: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [o for o in (arguments.get("ProcessingOutputConfig") or {}).get("Outputs") or [] if o.get("S3Output")]


def _files_by_host(folders: Mapping[str, Path], what: str, advice: str, job_name: str, log_path: Path) -> list[tuple[Path, str]]:
    """Every file of the hosts' copies of one folder, as (path, relative name); refuses a name
    two hosts wrote, before anything is uploaded: one would silently replace the other."""
    owner: dict[str, str] = {}
    files = []
    for host, folder in folders.items():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = path.relative_to(folder).as_posix()
            if relative in owner:
                raise JobFailed(job_name, None, log_path, f"failed: hosts {owner[relative]} and {host} both wrote "
                                f"{what}/{relative}; {advice}")
            owner[relative] = host
            files.append((path, relative))
    return files


def _upload_processing_outputs(arguments: Mapping[str, Any], hosts: JobHosts, store: ArtifactStore, job_name: str,
                               log_path: Path) -> None:
    advice = ("SageMaker uploads every instance's output folder to the same S3Uri, so name each host's files "
              "after it (resourceconfig.json's current_host)")
    planned = []
    for output in _processing_outputs(arguments):
        local, uri = output["S3Output"]["LocalPath"], output["S3Output"]["S3Uri"].rstrip("/")
        folders = {host: _mirror(local, hosts.dirs[host]) for host in hosts.names}
        planned += [(path, f"{uri}/{relative}")
                    for path, relative in _files_by_host(folders, output.get("OutputName", local), advice, job_name, log_path)]
    for path, uri in planned:
        store.upload_file(path, uri)


def run_processing_job(arguments: Mapping[str, Any], *, job_name: str, job_dir: Path, store: ArtifactStore,
                       log_path: Path, watch: JobWatch | None = None) -> dict[str, Any]:
    """Run one resolved CreateProcessingJob request on its instances; returns its
    DescribeProcessingJob-shaped properties (what ``Steps.X.ProcessingOutputConfig.Outputs['name']...`` reads)."""
    job_dir = Path(job_dir)
    cluster = (arguments.get("ProcessingResources") or {}).get("ClusterConfig") or {}
    hosts = JobHosts.plan(job_dir, _instance_count(cluster.get("InstanceCount"), "ProcessingResources.ClusterConfig.InstanceCount"))
    _stage_processing_inputs(arguments, hosts, store)
    app = arguments.get("AppSpecification") or {}
    if not (app.get("ContainerEntrypoint") or app.get("ContainerArguments")):
        raise ValueError(f"processing job {job_name}: AppSpecification has no ContainerEntrypoint")
    commands = {}
    # Every local host is this machine: where the first one listens for the others, which on
    # SageMaker they find by its name (steps.exchange), and each host's share of the cores.
    # Processing on SageMaker sets none of these variables; the scripts do without them there.
    meeting = {"MASTER_ADDR": LOCAL_MASTER_ADDR, "MASTER_PORT": str(free_port(LOCAL_MASTER_ADDR)),
               "SM_NUM_CPUS": str(_cpu_share(hosts))} if hosts.many else {}
    for host, host_dir in hosts.dirs.items():
        for output in _processing_outputs(arguments):
            _mirror(output["S3Output"]["LocalPath"], host_dir).mkdir(parents=True, exist_ok=True)
        _write_resource_config(host_dir / "config", host, hosts)
        command = rewrite_opt_ml(list(app.get("ContainerEntrypoint") or []) + list(app.get("ContainerArguments") or []), host_dir)
        env = _base_env(arguments, host_dir)
        env.update(SM_CODE_INPUT=str(host_dir / "processing/input/code"), SM_CODE_DIR=str(host_dir / "code"),
                   PATH=f"{_write_shim(host_dir)}{os.pathsep}{env.get('PATH', '')}")
        env[OUTPUT_DIR_ENV] = str(host_dir / "output")  # /opt/ml/output, where the scripts leave their ExitMessage
        env.update(meeting)
        (host_dir / "output").mkdir(parents=True, exist_ok=True)
        commands[host] = ([str(c) for c in command], host_dir, env, host_dir / "output" / PROCESSING_REASON_FILE)
    _run_hosts(commands, job_name=job_name, job_dir=job_dir, log_path=log_path, timeout_s=_timeout(arguments), watch=watch)
    _upload_processing_outputs(arguments, hosts, store, job_name, log_path)
    return {"ProcessingJobName": job_name, "ProcessingJobArn": sagemaker_arn("processing-job", job_name),
            "ProcessingJobStatus": "Completed", "AppSpecification": dict(app),
            "ProcessingInputs": list(arguments.get("ProcessingInputs") or []),
            "ProcessingResources": {"ClusterConfig": {**cluster, "InstanceCount": len(hosts.names)}},
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


def _stage_channels(arguments: Mapping[str, Any], hosts: JobHosts, store: ArtifactStore) -> dict[str, dict[str, Path]]:
    """Each host's channels: ``{host: {channel: folder}}``."""
    channels: dict[str, dict[str, Path]] = {host: {} for host in hosts.names}
    for channel in arguments.get("InputDataConfig") or []:
        name = channel["ChannelName"]
        source = (channel.get("DataSource") or {}).get("S3DataSource")
        if not source:
            raise ValueError(f"training channel {name!r}: only S3DataSource is supported locally")
        shares = _shares(source["S3Uri"], source.get("S3DataDistributionType"), hosts, store, "ResourceConfig.InstanceCount")
        for host, keys in shares.items():
            channels[host][name] = store.download(source["S3Uri"], hosts.dirs[host] / "input" / "data" / name, keys=keys)
    return channels


def _unpack_code(submit_directory: str, code_dir: Path, store: ArtifactStore) -> None:
    """The ``sagemaker_submit_directory`` tarball into ``code_dir`` (safe extraction)."""
    code_dir.mkdir(parents=True, exist_ok=True)
    archive = code_dir.parent / "sourcedir.tar.gz"
    archive.write_bytes(store.read_bytes(submit_directory))
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(code_dir, filter="data")


def _training_env(arguments: Mapping[str, Any], job_dir: Path, channels: Mapping[str, Path],
                  hyperparameters: Mapping[str, str], checkpoint_dir: Path, num_gpus: int,
                  host: str = SINGLE_HOST, hosts: JobHosts | None = None) -> dict[str, str]:
    names = hosts.names if hosts else [host]
    env = _base_env(arguments, job_dir)
    env.update({f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()})
    env.update({f"SM_HP_{name.upper()}": value for name, value in hyperparameters.items()})
    cpus = _cpu_share(hosts) if hosts else os.cpu_count() or 1
    env.update(SM_CHANNELS=json.dumps(sorted(channels)), SM_MODEL_DIR=str(job_dir / "model"),
               SM_OUTPUT_DATA_DIR=str(job_dir / "output" / "data"), SM_OUTPUT_DIR=str(job_dir / "output"),
               SM_INPUT_DIR=str(job_dir / "input"), SM_CHECKPOINT_DIR=str(checkpoint_dir),
               SM_NUM_GPUS=str(num_gpus), SM_NUM_CPUS=str(cpus),
               SM_HPS=json.dumps({k: _decode(v) for k, v in hyperparameters.items()}),
               SM_CURRENT_HOST=host, SM_HOSTS=json.dumps(names), PYTHONPATH=str(job_dir / "code"))
    if len(names) > 1:  # what the training toolkit sets on every host, with or without a distribution
        env.update(MASTER_ADDR=LOCAL_MASTER_ADDR, SM_MASTER_ADDR=names[0])
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


def _merge_hosts(hosts: JobHosts, job_dir: Path, job_name: str, log_path: Path) -> None:
    """Every host's ``/opt/ml/model`` and ``/opt/ml/output/data`` merged into the job folder's own,
    as SageMaker packs all hosts' into one archive; a name two hosts wrote is refused (which copy
    SageMaker keeps is not documented)."""
    advice = "SageMaker merges every host's folder into one archive: write the model and the curves on one rank (rank 0)"
    for folder in ("model", "output/data"):
        target = job_dir / folder
        files = _files_by_host({host: hosts.dirs[host] / folder for host in hosts.names}, folder, advice, job_name, log_path)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for path, relative in files:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / relative)


def _processes_per_host(hyperparameters: Mapping[str, str], num_gpus: int) -> int:
    """The training toolkit's rule: ``sagemaker_mpi_num_of_processes_per_host`` if set, else
    one per GPU, else 1."""
    configured = hyperparameters.get("sagemaker_mpi_num_of_processes_per_host")
    return int(_decode(configured)) if configured else max(num_gpus, 1)


def training_commands(hyperparameters: Mapping[str, str], program: str, hosts: JobHosts, num_gpus: int,
                      master_port: int | None = None) -> dict[str, list[str]]:
    """Each host's command, as the PyTorch training toolkit builds it: with
    ``sagemaker_torch_distributed_enabled`` and more than one process in all, torchrun on every
    host (``--nnodes N --nproc_per_node P``, and with N > 1 the first host's address, a port and
    the host's rank); else the script itself on every host. One process in all runs the script
    plainly (on SageMaker, torchrun then starts that one process; the script sees a world of one
    either way). Locally the master is this machine at a free port (SageMaker's 7777 would make
    two local jobs collide), and a rank that has not joined after ``RANK_JOIN_TIMEOUT_S`` ends
    the job instead of leaving it waiting."""
    user = _user_hyperparameters(hyperparameters)
    script = [program] + [token for name, value in user.items() for token in (f"--{name}", value)]
    per_host = _processes_per_host(hyperparameters, num_gpus)
    distributed = str(_decode(hyperparameters.get(TORCH_DISTRIBUTED, "false"))).lower() == "true"
    if not distributed or len(hosts.names) * per_host == 1:
        return {host: [sys.executable, *script] for host in hosts.names}
    port = master_port or free_port(LOCAL_MASTER_ADDR)
    commands = {}
    for rank, host in enumerate(hosts.names):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(len(hosts.names)),
                    "--nproc_per_node", str(per_host), "--master_addr", LOCAL_MASTER_ADDR, "--master_port", str(port),
                    "--node_rank", str(rank), "--rdzv-conf", f"timeout={RANK_JOIN_TIMEOUT_S}"]
        commands[host] = launcher + script
    return commands


def _check_torchrun_entry(code_dir: Path, program: str) -> None:
    """The toolkit's torchrun launcher runs a Python script only: it refuses a code folder with a
    ``setup.py`` (a package) and a program that is not a ``.py`` file, so the local runtime does too."""
    if program.endswith(".sh") or not program.endswith(".py"):
        raise ValueError(f"{TORCH_DISTRIBUTED} runs a Python script, not {program!r} "
                         "(the training toolkit: \"Unsupported entry point type for torch_distributed\")")
    if (code_dir / "setup.py").exists():
        raise ValueError(f"{TORCH_DISTRIBUTED} with a code bundle holding setup.py: the training toolkit refuses it "
                         "(\"Python packages are not supported for torch_distributed\"); drop setup.py from the bundle")


def _sync_host_checkpoints(config: Mapping[str, Any], hosts: JobHosts, folders: Mapping[str, Path], store: ArtifactStore,
                           upload: bool) -> None:
    """Checkpoints in to every host; back out from every host, the first host last: it holds rank
    0's, which a later host's stale copy (downloaded at the start) must not replace."""
    for host in (list(reversed(hosts.names)) if upload else hosts.names):
        _sync_checkpoints(config, folders[host], store, upload=upload)


def run_training_job(arguments: Mapping[str, Any], *, job_name: str, job_dir: Path, store: ArtifactStore,
                     log_path: Path, num_gpus: int | None = None, watch: JobWatch | None = None) -> dict[str, Any]:
    """Run one resolved CreateTrainingJob request in script mode on its instances; returns
    DescribeTrainingJob-shaped properties (``ModelArtifacts.S3ModelArtifacts``, ``FinalMetricDataList``, ...)."""
    job_dir = Path(job_dir)
    all_hps = {str(k): str(v) for k, v in (arguments.get("HyperParameters") or {}).items()}
    program, submit = all_hps.get("sagemaker_program"), all_hps.get("sagemaker_submit_directory")
    if not program or not submit:
        raise ValueError(f"training job {job_name}: only script mode (sagemaker_program and "
                         "sagemaker_submit_directory hyperparameters) runs locally")
    resources = arguments.get("ResourceConfig") or {}
    hosts = JobHosts.plan(job_dir, _instance_count(resources.get("InstanceCount"), "ResourceConfig.InstanceCount"))
    channels = _stage_channels(arguments, hosts, store)
    checkpoint_config = arguments.get("CheckpointConfig") or {}
    devices = _gpu_shares(gpu_count() if num_gpus is None else num_gpus, hosts)
    launch = training_commands(all_hps, program, hosts, devices[hosts.names[0]][0])
    user_hps = _user_hyperparameters(all_hps)
    commands, checkpoint_dirs = {}, {}
    for host, host_dir in hosts.dirs.items():
        _unpack_code(submit, host_dir / "code", store)
        if launch[host][1:3] == ["-m", "torch.distributed.run"]:
            _check_torchrun_entry(host_dir / "code", program)
        for folder in ("model", "output/data"):
            (host_dir / folder).mkdir(parents=True, exist_ok=True)
        _write_resource_config(host_dir / "input" / "config", host, hosts)
        checkpoint_dirs[host] = _mirror(checkpoint_config.get("LocalPath") or f"{OPT_ML}/checkpoints", host_dir)
        checkpoint_dirs[host].mkdir(parents=True, exist_ok=True)
        gpus, visible = devices[host]
        env = _training_env(arguments, host_dir, channels[host], user_hps, checkpoint_dirs[host], gpus, host, hosts)
        if visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible
        commands[host] = (launch[host], host_dir / "code", env, host_dir / "output" / TRAINING_REASON_FILE)
    _sync_host_checkpoints(checkpoint_config, hosts, checkpoint_dirs, store, upload=False)
    try:
        _run_hosts(commands, job_name=job_name, job_dir=job_dir, log_path=log_path, timeout_s=_timeout(arguments), watch=watch)
    finally:
        _sync_host_checkpoints(checkpoint_config, hosts, checkpoint_dirs, store, upload=True)
    if hosts.many:
        _merge_hosts(hosts, job_dir, job_name, log_path)
    model_uri = _upload_model(job_dir, (arguments.get("OutputDataConfig") or {})["S3OutputPath"], job_name, store)
    definitions = (arguments.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []
    return {"TrainingJobName": job_name, "TrainingJobArn": sagemaker_arn("training-job", job_name),
            "TrainingJobStatus": "Completed", "ModelArtifacts": {"S3ModelArtifacts": model_uri},
            "HyperParameters": all_hps, "OutputDataConfig": dict(arguments.get("OutputDataConfig") or {}),
            "ResourceConfig": {**resources, "InstanceCount": len(hosts.names)},
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
