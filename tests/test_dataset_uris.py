"""Every ``InputDataUri`` the project produces names one dataset.

SageMaker reads ``InputDataUri`` as an ``S3Prefix`` input: every object whose key starts with it
("Amazon SageMaker uses all objects with the specified key name prefix",
API_ProcessingS3Input). A URI without its trailing "/" takes the datasets beside it, and an
archive's key takes any longer key in the same folder. The local store matches keys the same way
(``tests/test_local_executor.py``), so these URIs are checked against it and against moto.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.local.state.store import ArtifactStore
from pipeline.runs import DataSource, RunError, stage_data
from pipeline.settings import Settings
from steps.datasets import load_corpus
from tests.synthetic import make_reviews, make_sentences, write_jsonl, write_sst
from tests.test_aws_backend import aws_env  # noqa: F401  (a fixture, which cloud needs)
from tests.test_aws_cli import BUCKET, cloud  # noqa: F401  (cloud is a fixture)
from tests.test_retrain_data import _keys, _run

pytestmark = pytest.mark.e2e


def test_staged_local_data_is_a_folder_uri(tmp_path):
    settings = Settings(home=tmp_path / "home")
    data = [DataSource(write_jsonl(tmp_path / "raw", make_reviews(20, seed=1), make_reviews(10, seed=2)))]
    uri = stage_data(settings, data, None)
    assert uri.startswith(settings.s3_uri("data") + "/") and uri.endswith("-all/")
    store = ArtifactStore(settings.home)
    staged = store.keys(uri)
    # A longer name beside it (a sample of 20000 beside one of 2000, say) is not part of it.
    store.put_bytes(uri.rstrip("/") + "0/train.jsonl.gz", b"another dataset")
    assert store.keys(uri) == staged and sorted(k.rsplit("/", 1)[1] for k in staged) == [
        "dataset.json", "test-00000.jsonl.gz", "train-00000.jsonl.gz"]  # shards (steps.shards), any layout given
    assert stage_data(settings, data, None) == uri  # unchanged data is not staged again


def test_an_archive_may_not_share_its_folder_with_another_dataset(cloud, capsys, tmp_path):  # noqa: F811
    """``reviews.csv``'s URI is a prefix of ``reviews.csv.tar.gz``: a run on it would read both."""
    csv, archive = tmp_path / "reviews.csv", tmp_path / "reviews.csv.tar.gz"
    csv.write_text("text,label\ngreat,1\n", encoding="utf-8")
    archive.write_bytes(b"an archive")
    code, uploaded, _ = _run(capsys, "aws", "upload-data", str(csv), "--name", "shared", "--json")
    assert code == 0 and uploaded["input_data_uri"] == f"s3://{BUCKET}/sentiment-mlops/data/shared/reviews.csv"
    before = _keys(cloud)
    code, _, err = _run(capsys, "aws", "upload-data", str(archive), "--name", "shared", "--json")
    assert code == 2 and "already holds sentiment-mlops/data/shared/reviews.csv" in err and "--name" in err
    assert _keys(cloud) == before


def test_a_folder_may_not_be_uploaded_into_another_datasets_folder(cloud, capsys, tmp_path):  # noqa: F811
    single = tmp_path / "one.tar.gz"
    single.write_bytes(b"an archive")
    assert _run(capsys, "aws", "upload-data", str(single), "--name", "imdb", "--json")[0] == 0
    folder = write_jsonl(tmp_path / "imdb", make_reviews(4, seed=1), make_reviews(2, seed=2))
    code, _, err = _run(capsys, "aws", "upload-data", str(folder), "--json")
    assert code == 2 and "a folder of its own" in err and len(err.strip().splitlines()) == 1
    assert _keys(cloud) == ["sentiment-mlops/data/imdb/one.tar.gz"]


@pytest.mark.parametrize("name", ["imdb", "imdb-2026-11"])
def test_folder_datasets_with_shared_name_prefixes_stay_apart(cloud, capsys, tmp_path, name):  # noqa: F811
    """``imdb`` and ``imdb-2026-11`` (the README's example) are both uploaded; each URI names one."""
    uris = {}
    for each in ("imdb", "imdb-2026-11"):
        folder = write_jsonl(tmp_path / each, make_reviews(4, seed=1), make_reviews(2, seed=2))
        code, uploaded, _ = _run(capsys, "aws", "upload-data", str(folder), "--json")
        assert code == 0
        uris[each] = uploaded["input_data_uri"]
    prefix = uris[name].split(f"s3://{BUCKET}/", 1)[1]
    assert prefix.endswith(f"/{name}/")
    assert {k.rsplit("/", 2)[1] for k in _keys(cloud) if k.startswith(prefix)} == {name}


def two_datasets(folder) -> tuple:
    reviews = write_jsonl(folder / "reviews", make_reviews(20, seed=1), make_reviews(10, seed=2))
    sentences = write_sst(folder / "sentences", make_sentences(20, seed=3), make_sentences(10, seed=4))
    return reviews, sentences


def _plan(folder: Path, validation_fraction: float):
    """What Preprocess plans from a staged prefix (its shards, on one instance)."""
    from steps.preprocess import PreprocessOptions
    from steps.sharded import make_plan
    from steps.shards import declarations, read_shards

    reports = [shard.report() for shard in read_shards(folder, unlabeled=False)]
    return make_plan(reports, declarations(folder), PreprocessOptions(validation_fraction=validation_fraction))


def _datasets(folder: Path, validation_fraction: float) -> list[tuple[str, str, str]]:
    return [(d.name, d.kind, d.validation_from) for d in _plan(folder, validation_fraction).datasets]


def test_several_local_datasets_are_staged_in_a_folder_each_named_by_their_layout(tmp_path):
    settings = Settings(home=tmp_path / "home")
    reviews, sentences = two_datasets(tmp_path)
    uri = stage_data(settings, [DataSource(reviews), DataSource(sentences)], None)
    store = ArtifactStore(settings.home)
    assert sorted(k.split(uri.split("/", 3)[3], 1)[1] for k in store.keys(uri)) == [
        "imdb/dataset.json", "imdb/test-00000.jsonl.gz", "imdb/train-00000.jsonl.gz",
        "sst2/dataset.json", "sst2/test-00000.jsonl.gz", "sst2/train-00000.jsonl.gz"]
    assert _datasets(store.path(uri), 0.25) == [("imdb", "reviews", "carved from its training split"),
                                                ("sst2", "sentences", "carved from its training split")]
    # A name given on the command line wins, and a sample keeps each dataset's name and kind.
    uri = stage_data(settings, [DataSource(reviews, "movies"), DataSource(sentences)], 6)
    assert _datasets(store.path(uri), 0.25) == [
        ("movies", "reviews", "carved from its training split"), ("sst2", "sentences", "carved from its training split")]
    with_dev = write_sst(tmp_path / "with-dev", make_sentences(20, seed=3), make_sentences(10, seed=4),
                         dev=make_sentences(10, seed=5))
    plan = _plan(store.path(stage_data(settings, [DataSource(with_dev)], 6)), 0.25)
    assert (plan.datasets[0].validation_from, plan.sizes["validation"]) == ("its own validation split", 6)  # the sampled dev file


def test_two_local_datasets_of_one_name_are_refused_before_anything_is_staged(tmp_path):
    settings = Settings(home=tmp_path / "home")
    reviews, _ = two_datasets(tmp_path)
    other = write_jsonl(tmp_path / "more", make_reviews(20, seed=5), make_reviews(10, seed=6))
    with pytest.raises(RunError, match="two --data datasets are named 'imdb': name each with --data NAME=PATH"):
        stage_data(settings, [DataSource(reviews), DataSource(other)], None)
    with pytest.raises(RunError, match="dataset name 'Big Reviews' must be"):
        stage_data(settings, [DataSource(reviews, "Big Reviews")], None)
    assert not (settings.home / "s3").exists()


def test_a_folder_of_datasets_round_trips_through_s3(cloud, capsys, tmp_path):  # noqa: F811
    """``aws upload-data`` of a folder holding a folder per dataset: its marker starts one run of the
    upserted pipeline on the whole prefix, and the keys SageMaker's File-mode input would copy under
    Preprocess's input folder are read back as the same two datasets."""
    import boto3

    from tests.test_aws_backend import REGION
    from tests.test_retrain_data import _deliver_all, retrain

    assert _run(capsys, "aws", "upsert", "--json")[0] == 0
    mixed = tmp_path / "mixed"
    reviews, sentences = two_datasets(tmp_path)
    mixed.mkdir()
    reviews.rename(mixed / "imdb")
    sentences.rename(mixed / "sst2")
    code, uploaded, _ = _run(capsys, "aws", "upload-data", str(mixed), "--json")
    assert code == 0 and uploaded["input_data_uri"] == f"s3://{BUCKET}/sentiment-mlops/data/mixed/"
    keys = [key for key in _keys(cloud) if "/data/" in key]
    assert [k.split("/data/mixed/", 1)[1] for k in keys] == [
        "_SUCCESS", "imdb/test.jsonl.gz", "imdb/train.jsonl.gz", "sst2/stsa.binary.test", "sst2/stsa.binary.train"]
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    (started,) = [r for r in _deliver_all(cloud, sagemaker) if r["status"] != "ignored"]
    assert started["status"] == "started" and started["parameters"] == {
        "InputDataUri": uploaded["input_data_uri"], "InputDataVersion": retrain.data_version(cloud, uploaded["input_data_uri"])}
    landed = tmp_path / "landed"
    prefix = "sentiment-mlops/data/mixed/"
    keys = [key for key in _keys(cloud) if key.startswith(prefix)]
    for key in keys:
        target = landed / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(cloud.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    corpus = load_corpus(landed, 0.25)  # the _SUCCESS marker beside the folders is no dataset
    assert [(d.name, d.kind) for d in corpus.datasets] == [("imdb", "reviews"), ("sst2", "sentences")]
    assert len(corpus.test) == 20


def test_without_sst2_to_be_had_the_default_run_trains_on_imdb_alone_and_says_so(tmp_path, monkeypatch, caplog):
    from pipeline import runs as run_command
    from pipeline.download import DownloadError

    cached = tmp_path / "aclImdb_v1.tar.gz"

    def download_known(name, settings):
        if name == "sst2":
            raise DownloadError("cannot download stsa.binary.train (no network)")
        return cached

    monkeypatch.setattr(run_command, "download_known", download_known)
    assert run_command.resolve_data(None, Settings(home=tmp_path)) == [DataSource(cached)]
    assert "training without sst2" in caplog.text and "no network" in caplog.text
