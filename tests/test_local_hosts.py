"""A job on more than one instance, locally (pipeline/local/engine/hosts.py and jobs.py): each host's
folder and resourceconfig.json, ShardedByS3Key dealing, outputs of every host under one prefix,
a host failing or Ctrl-C stopping them all, and real training under torchrun on two gloo ranks."""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from pipeline.bundles import TRAINING_BUNDLE_NAME, TRAINING_PACKAGES, source_bundle
from pipeline.definition.contracts import TORCH_DISTRIBUTED
from pipeline.local.engine import jobs
from pipeline.local.engine.hosts import HostsError, deal
from pipeline.local.processes import process_alive
from pipeline.local.state.store import ArtifactStore
from pipeline.settings import Settings
from tests.conftest import TINY

# A processing script that reports what its host saw: its resourceconfig.json and its data files.
REPORT = """
import json, os, pathlib, sys
config = json.loads(pathlib.Path('/opt/ml/config/resourceconfig.json').read_text())
data = sorted(p.name for p in pathlib.Path('/opt/ml/processing/input/data').iterdir())
name = sys.argv[1].replace('HOST', config['current_host'])
pathlib.Path('/opt/ml/processing/output', name).write_text(json.dumps({'config': config, 'data': data}))
print('done on', config['current_host'])
"""


def _store_with_parts(tmp_path: Path, parts: int) -> ArtifactStore:
    store = ArtifactStore(tmp_path / "store")
    for index in range(parts):
        store.put_bytes(f"s3://b/data/part-{index:05d}.jsonl", b'{"text": "x", "label": 1}\n')
    return store


def _processing(script: str, *args: str, count: int = 2, distribution: str = "ShardedByS3Key") -> dict:
    return {"AppSpecification": {"ContainerEntrypoint": [sys.executable, "-c", script, *args]},
            "ProcessingResources": {"ClusterConfig": {"InstanceCount": count, "InstanceType": "ml.m5.xlarge",
                                                      "VolumeSizeInGB": 30}},
            "ProcessingInputs": [{"InputName": "data", "S3Input": {
                "S3Uri": "s3://b/data", "LocalPath": "/opt/ml/processing/input/data", "S3DataType": "S3Prefix",
                "S3InputMode": "File", "S3DataDistributionType": distribution}}],
            "ProcessingOutputConfig": {"Outputs": [{"OutputName": "out", "S3Output": {
                "S3Uri": "s3://b/out", "LocalPath": "/opt/ml/processing/output", "S3UploadMode": "EndOfJob"}}]}}


def test_sharded_objects_are_dealt_round_robin_and_a_host_without_any_is_refused():
    keys = [f"p{i}" for i in range(5)]
    assert deal(keys, ["algo-1", "algo-2"], source="s3://b/d", count_name="N") == {
        "algo-1": ["p0", "p2", "p4"], "algo-2": ["p1", "p3"]}
    with pytest.raises(HostsError, match=r"N is 4, but s3://b/d holds 3 object\(s\).*lower N to 3"):
        deal(keys[:3], ["algo-1", "algo-2", "algo-3", "algo-4"], source="s3://b/d", count_name="N")


@pytest.mark.parametrize("distribution, expected", [
    ("ShardedByS3Key", {"algo-1": ["part-00000.jsonl", "part-00002.jsonl", "part-00004.jsonl"],
                        "algo-2": ["part-00001.jsonl", "part-00003.jsonl"]}),
    ("FullyReplicated", {host: [f"part-{i:05d}.jsonl" for i in range(5)] for host in ("algo-1", "algo-2")}),
])
def test_each_host_gets_its_share_its_config_and_its_own_output_names(tmp_path, distribution, expected):
    store = _store_with_parts(tmp_path, 5)
    log = tmp_path / "job.log"
    result = jobs.run_processing_job(_processing(REPORT, "HOST.json", distribution=distribution), job_name="p",
                                     job_dir=tmp_path / "job", store=store, log_path=log)
    for host in ("algo-1", "algo-2"):
        seen = json.loads(store.read_bytes(f"s3://b/out/{host}.json"))
        assert seen["config"]["current_host"] == host and seen["config"]["hosts"] == ["algo-1", "algo-2"]
        assert seen["data"] == expected[host]
        assert f"[{host}] done on {host}" in log.read_text()
    assert result["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 2


def test_two_hosts_writing_one_name_fail_the_job_before_anything_is_uploaded(tmp_path):
    store = _store_with_parts(tmp_path, 2)
    with pytest.raises(jobs.JobFailed, match="hosts algo-1 and algo-2 both wrote out/result.json; SageMaker uploads"):
        jobs.run_processing_job(_processing(REPORT, "result.json"), job_name="p", job_dir=tmp_path / "job",
                                store=store, log_path=tmp_path / "job.log")
    assert not store.exists("s3://b/out")


def test_more_hosts_than_objects_is_refused_with_the_counts(tmp_path):
    store = _store_with_parts(tmp_path, 1)
    with pytest.raises(HostsError, match="InstanceCount is 2, but s3://b/data holds 1 object"):
        jobs.run_processing_job(_processing(REPORT, "HOST.json"), job_name="p", job_dir=tmp_path / "job",
                                store=store, log_path=tmp_path / "job.log")


# algo-2 refuses its shard at once; algo-1 records its pid and would run for a minute.
FAILING = """
import json, os, pathlib, sys, time
config = json.loads(pathlib.Path('/opt/ml/config/resourceconfig.json').read_text())
pathlib.Path(sys.argv[1], config['current_host']).write_text(str(os.getpid()))
if config['current_host'] == 'algo-2' and sys.argv[2] == 'fail':
    while not pathlib.Path(sys.argv[1], 'algo-1').exists():
        time.sleep(0.05)
    pathlib.Path(os.environ['SM_OUTPUT_DIR'], 'message').write_text('part-00001.jsonl line 7 is not JSON')
    sys.exit(3)
time.sleep(60)
"""


def _pids(folder: Path) -> list[int]:
    return [int((folder / host).read_text()) for host in ("algo-1", "algo-2") if (folder / host).is_file()]


def test_a_failing_host_fails_the_job_with_its_reason_and_stops_the_others(tmp_path):
    store, pids = _store_with_parts(tmp_path, 2), tmp_path / "pids"
    pids.mkdir()
    started = time.monotonic()
    with pytest.raises(jobs.JobFailed, match="host algo-2 exited with code 3: part-00001.jsonl line 7 is not JSON"):
        jobs.run_processing_job(_processing(FAILING, str(pids), "fail"), job_name="p", job_dir=tmp_path / "job",
                                store=store, log_path=tmp_path / "job.log")
    assert time.monotonic() - started < 30
    assert len(_pids(pids)) == 2 and not any(process_alive(pid) for pid in _pids(pids))
    assert not store.exists("s3://b/out")


def test_ctrl_c_stops_every_host(tmp_path):
    store, pids = _store_with_parts(tmp_path, 2), tmp_path / "pids"
    pids.mkdir()

    def interrupt_once_both_run() -> None:
        deadline = time.monotonic() + 30
        while len(_pids(pids)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_both_run, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        jobs.run_processing_job(_processing(FAILING, str(pids), "wait"), job_name="p", job_dir=tmp_path / "job",
                                store=store, log_path=tmp_path / "job.log")
    assert len(_pids(pids)) == 2 and not any(process_alive(pid) for pid in _pids(pids))


# --- training ------------------------------------------------------------------------------------------------

def _hosts(count: int) -> jobs.JobHosts:
    return jobs.JobHosts.plan(Path("/job"), count)


def test_the_launcher_is_the_toolkits_torchrun_command_and_one_process_is_the_plain_script():
    hps = {TORCH_DISTRIBUTED: "true", "sagemaker_program": "train/train.py", "epochs": "2"}
    assert jobs.training_commands(hps, "train/train.py", _hosts(1), num_gpus=0) == {
        "algo-1": [sys.executable, "train/train.py", "--epochs", "2"]}
    two = jobs.training_commands(hps, "train/train.py", _hosts(2), num_gpus=0, master_port=7777)
    assert two["algo-2"] == [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                             "--master_addr", "127.0.0.1", "--master_port", "7777", "--node_rank", "1",
                             "--rdzv-conf", f"timeout={jobs.RANK_JOIN_TIMEOUT_S}", "train/train.py", "--epochs", "2"]
    four_gpus = jobs.training_commands(hps, "train/train.py", _hosts(1), num_gpus=4, master_port=7777)["algo-1"]
    assert four_gpus[3:7] == ["--nnodes", "1", "--nproc_per_node", "4"]
    plain = jobs.training_commands({**hps, TORCH_DISTRIBUTED: "false"}, "train/train.py", _hosts(2), num_gpus=0)
    assert plain["algo-2"] == [sys.executable, "train/train.py", "--epochs", "2"]  # every host trains alone, as on AWS


def _training_request(store: ArtifactStore, prepared: Path, count: int, distributed: bool) -> dict:
    bundle = source_bundle(TRAINING_PACKAGES, Settings(), name=TRAINING_BUNDLE_NAME)
    store.put_bytes("s3://b/code/sourcedir.tar.gz", bundle.data)
    for split in ("train", "validation"):
        store.upload_dir(prepared / split, f"s3://b/prepared/{split}")
    options = dict(zip(TINY[::2], TINY[1::2], strict=True))
    # No dropout and no crops: then the only difference between one process and two ranks is the
    # order of float additions, and the runs must agree to the last digits the log shows.
    hps = {k.lstrip("-"): v for k, v in options.items()} | {"profile": "cpu", "dropout": "0", "crop_probability": "0"}
    return {"HyperParameters": {**hps, "sagemaker_program": "train/train.py",
                                "sagemaker_submit_directory": "s3://b/code/sourcedir.tar.gz",
                                TORCH_DISTRIBUTED: "true" if distributed else "false"},
            "ResourceConfig": {"InstanceCount": count, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30},
            "InputDataConfig": [{"ChannelName": split, "DataSource": {"S3DataSource": {
                "S3Uri": f"s3://b/prepared/{split}", "S3DataType": "S3Prefix",
                "S3DataDistributionType": "FullyReplicated"}}} for split in ("train", "validation")],
            "OutputDataConfig": {"S3OutputPath": "s3://b/models"},
            "CheckpointConfig": {"S3Uri": f"s3://b/checkpoints/{count}/", "LocalPath": "/opt/ml/checkpoints"},
            "AlgorithmSpecification": {"MetricDefinitions": [{"Name": "val", "Regex": r"val_accuracy=([0-9.]+)"}]}}


def _model_files(store: ArtifactStore, uri: str, tmp_path: Path) -> dict:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(store.read_bytes(uri))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        metadata = json.load(tar.extractfile("config.json"))  # type: ignore[arg-type]
    return {"names": names, "config": metadata}


@pytest.mark.slow
def test_training_on_two_hosts_under_torchrun_matches_one_process(prepared, tmp_path):
    """Two gloo ranks, each its share of every global batch, against one process on the same
    data and hyperparameters: one model, written by rank 0, about as good; the metrics logged once."""
    store = ArtifactStore(tmp_path / "store")
    results = {}
    for count in (1, 2):
        log = tmp_path / f"train-{count}.log"
        described = jobs.run_training_job(_training_request(store, prepared, count, distributed=True),
                                          job_name=f"t{count}", job_dir=tmp_path / f"job{count}", store=store,
                                          log_path=log, num_gpus=0)
        text = log.read_text()
        results[count] = {"described": described, "log": text,
                          "model": _model_files(store, described["ModelArtifacts"]["S3ModelArtifacts"], tmp_path)}
    two = results[2]
    assert "torch.distributed.run" in two["log"] and "rank 1 of 2" in two["log"] and "fitted by rank 0" in two["log"]
    losses = {count: re.findall(r"epoch=\d+ train_loss=([0-9.]+)", r["log"]) for count, r in results.items()}
    assert losses[1] and losses[2] == losses[1]  # the same steps on the same global batches; logged once, by rank 0
    assert sorted(two["model"]["names"]) == sorted(results[1]["model"]["names"])
    accuracy = {count: r["model"]["config"]["training"]["best_val_accuracy"] for count, r in results.items()}
    assert accuracy[2] == accuracy[1]
    assert two["described"]["ResourceConfig"]["InstanceCount"] == 2
    assert store.keys("s3://b/checkpoints/2/")  # rank 0's checkpoints, synced out

def test_torchrun_refuses_a_code_bundle_that_is_a_package(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "setup.py").write_text("")
    with pytest.raises(ValueError, match="Python packages are not supported for torch_distributed"):
        jobs._check_torchrun_entry(code, "train/train.py")
    with pytest.raises(ValueError, match="Unsupported entry point type"):
        jobs._check_torchrun_entry(tmp_path, "train.sh")


def test_a_step_says_how_many_hosts_its_job_ran_on_and_the_summary_shows_more_than_one(capsys):
    from pipeline.commands.run import print_execution
    from pipeline.local.state.executions import Step

    def step(properties: dict) -> Step:
        return Step("e", "s", "Training", "Succeeded", None, None, 1.0, None, None, properties, None, None, 1)

    assert step({"ResourceConfig": {"InstanceCount": 2}}).hosts == 2
    assert step({"ProcessingResources": {"ClusterConfig": {"InstanceCount": 1}}}).hosts == 1
    assert step({}).hosts is None  # a Condition step runs no job
    print_execution({"execution_id": "e", "status": "Succeeded", "accuracy": None, "model_package_version": None,
                     "failure_reason": None, "steps": {
                         "Preprocess": {"status": "Succeeded", "seconds": 3.0, "hosts": 1},
                         "Train": {"status": "Succeeded", "seconds": 9.0, "hosts": 2}}})
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith("3.0s") and lines[2].endswith("(on 2 hosts)")
