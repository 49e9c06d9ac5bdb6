"""Preprocess over shards on 1, 2 and 4 local instances (steps/sharded.py, steps/exchange.py): the real
script, run by the local runtime's hosts with ShardedByS3Key; the same vocabulary, arrays and stats
whatever the number of instances, and a bad shard named by the instance that read it."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.local.engine import jobs
from pipeline.local.state.store import ArtifactStore
from pipeline.settings import REPO_ROOT
from steps.shards import write_shards
from tests.synthetic import make_reviews

SPLITS = ("train", "validation", "test")


def _stage(store: ArtifactStore, folder: Path, rows: int = 150) -> None:
    """Synthetic reviews as shards of ``rows`` records, two datasets (one with a dataset.json), in the store."""
    write_shards(folder / "imdb", "train", make_reviews(700, seed=1), rows)
    write_shards(folder / "imdb", "test", make_reviews(300, seed=2), rows)
    write_shards(folder / "imdb", "unsup", [{"text": r["text"]} for r in make_reviews(400, seed=3)], rows)
    write_shards(folder / "mine", "train", make_reviews(320, seed=4), rows)
    write_shards(folder / "mine", "validation", make_reviews(60, seed=5), rows)
    write_shards(folder / "mine", "test", make_reviews(90, seed=6), rows)
    (folder / "mine" / "dataset.json").write_text(json.dumps({"kind": "sentences"}))
    store.upload_dir(folder, "s3://b/data")


def _request(count: int, output: str, *extra: str) -> dict:
    script = str(REPO_ROOT / "steps" / "preprocess.py")
    arguments = ["--input-dir", "/opt/ml/processing/input/data", "--output-dir", "/opt/ml/processing/output",
                 "--vocab-size", "300", "--max-len", "40", "--embedding-dim", "8", "--workers", "1",
                 "--resource-config", "/opt/ml/config/resourceconfig.json", *extra]
    return {"AppSpecification": {"ContainerEntrypoint": [sys.executable, script], "ContainerArguments": arguments},
            "ProcessingResources": {"ClusterConfig": {"InstanceCount": count, "InstanceType": "ml.m5.xlarge",
                                                      "VolumeSizeInGB": 30}},
            "ProcessingInputs": [{"InputName": "data", "S3Input": {
                "S3Uri": "s3://b/data/", "LocalPath": "/opt/ml/processing/input/data", "S3DataType": "S3Prefix",
                "S3InputMode": "File", "S3DataDistributionType": "ShardedByS3Key"}}],
            "ProcessingOutputConfig": {"Outputs": [{"OutputName": split, "S3Output": {
                "S3Uri": f"{output}/{split}", "LocalPath": f"/opt/ml/processing/output/{split}",
                "S3UploadMode": "EndOfJob"}} for split in SPLITS]}}


def _outputs(store: ArtifactStore, output: str) -> dict:
    found: dict[str, Any] = {}
    for split in SPLITS:
        with np.load(io.BytesIO(store.read_bytes(f"{output}/{split}/data.npz")), allow_pickle=False) as arrays:
            found[split] = {name: arrays[name] for name in arrays.files}
    found["vocab"] = store.read_json(f"{output}/train/vocab.json")
    found["stats"] = store.read_json(f"{output}/train/stats.json")
    found["reviews"] = store.read_bytes(f"{output}/test/reviews.jsonl")
    found["embeddings"] = np.load(io.BytesIO(store.read_bytes(f"{output}/train/embeddings.npy")), allow_pickle=False)
    return found


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory) -> dict[int, dict]:
    root = tmp_path_factory.mktemp("sharded")
    store = ArtifactStore(root / "store")
    _stage(store, root / "staged")
    results = {}
    for count in (1, 2, 4):
        output = f"s3://b/out{count}"
        jobs.run_processing_job(_request(count, output), job_name=f"p{count}", job_dir=root / f"job{count}", store=store,
                                log_path=root / f"p{count}.log")
        results[count] = _outputs(store, output) | {"log": (root / f"p{count}.log").read_text()}
    return results


def test_the_outputs_do_not_depend_on_the_number_of_instances(preprocessed):
    one = preprocessed[1]
    assert one["stats"]["splits"]["train"]["reviews"] == 630 + 320  # imdb carved 10 %; mine has its own validation
    assert one["stats"]["splits"]["validation"]["reviews"] == 70 + 60
    assert [d["name"] for d in one["stats"]["datasets"]] == ["imdb", "mine"]
    assert [d["kind"] for d in one["stats"]["datasets"]] == ["reviews", "sentences"]  # mine's dataset.json, wherever it went
    for count in (2, 4):
        other = preprocessed[count]
        assert other["vocab"] == one["vocab"]
        for split in SPLITS:
            for name, array in one[split].items():
                assert np.array_equal(other[split][name], array), (count, split, name)
        assert other["reviews"] == one["reviews"]
        stats = {k: v for k, v in other["stats"].items() if k not in ("instances", "seconds")}
        assert stats == {k: v for k, v in one["stats"].items() if k not in ("instances", "seconds")}
        assert other["stats"]["instances"] == count
        assert np.array_equal(other["embeddings"], one["embeddings"])  # whole-number counts: any order sums the same
        assert f"[algo-{count}]" in other["log"] and f"counted over {count} instance(s)" in other["log"]


def test_the_split_and_sample_follow_the_seed_not_the_shards_an_instance_got(preprocessed):
    """The vocabulary is counted over the training rows of every instance: each host's log shows the
    same vocabulary line, and the training labels are balanced as the stratified split keeps them."""
    labels = preprocessed[4]["train"]["labels"]
    assert abs(int(labels.sum()) - len(labels) / 2) <= 1
    lines = {line.split(" INFO ")[0].split("]")[0]: line.split("preprocess: ")[1]
             for line in preprocessed[4]["log"].splitlines() if "preprocess: vocabulary:" in line}
    assert len(lines) == 4 and len(set(lines.values())) == 1  # every host built the one vocabulary


def test_a_bad_shard_fails_the_job_with_its_name_and_line(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    _stage(store, tmp_path / "staged")
    store.put_bytes("s3://b/data/imdb/train-00009.jsonl", b'{"text": "fine", "label": 1}\n{"text": broken\n')
    with pytest.raises(jobs.JobFailed, match=r"host algo-\d exited with code 2: imdb/train-00009.jsonl line 2 is not JSON"):
        jobs.run_processing_job(_request(2, "s3://b/out"), job_name="p", job_dir=tmp_path / "job", store=store,
                                log_path=tmp_path / "p.log")
    assert not store.exists("s3://b/out")
