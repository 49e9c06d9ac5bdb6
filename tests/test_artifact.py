"""Tests for serve.artifact: writing, loading, packing and unpacking the model artifact."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import torch

import serve
from serve.artifact import (
    CODE_DIR,
    CODE_REQUIREMENTS,
    CONFIG_FILE,
    MODEL_FORMAT,
    VOCAB_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    load_model,
    pack_model_dir,
    resolve_model_dir,
    unpack_model_archive,
    write_artifact,
)
from serve.dependencies import parse_pins
from serve.network import NetworkConfig, SentimentLSTM
from serve.text import TextConfig, TextNormalizer
from serve.vocab import Vocabulary
from tests.synthetic import make_reviews

SERVE_DIR = Path(serve.__file__).resolve().parent
CPU = torch.device("cpu")


class NotATensor:
    """Any class a pickle could smuggle in; weights_only loading must refuse it."""

    def __init__(self) -> None:
        self.payload = "anything"


def _vocab() -> Vocabulary:
    normalizer = TextNormalizer()
    counts = Counter(tok for r in make_reviews(40, seed=0) for tok in normalizer.tokens(r["text"]))
    return Vocabulary.build(counts, max_size=50)


def _network(vocab_size: int = 50, bidirectional: bool = True, num_layers: int = 1) -> SentimentLSTM:
    torch.manual_seed(0)
    return SentimentLSTM(NetworkConfig(vocab_size, 8, 8, num_layers, bidirectional, 0.1)).eval()


def _write(model_dir: Path, **network_kwargs) -> tuple[SentimentLSTM, Vocabulary, TextConfig]:
    vocab = _vocab()
    network = _network(len(vocab), **network_kwargs)
    text = TextConfig(stem=True, remove_stopwords=True, max_len=30, truncate="head")
    write_artifact(model_dir, network, vocab, text, {"metrics": {"accuracy": 0.5}, "data_hash": "abc"})
    return network, vocab, text


@pytest.fixture()
def model_dir(tmp_path) -> Path:
    _write(tmp_path / "model")
    return tmp_path / "model"


# --- write_artifact ----------------------------------------------------------------------------------


def test_write_artifact_layout(model_dir):
    for name in (WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE, "code/inference.py", "code/requirements.txt",
                 "code/constraints.txt"):
        assert (model_dir / name).is_file(), name
    shipped = sorted(p.name for p in (model_dir / CODE_DIR / "serve").glob("*.py"))
    expected = sorted(p.name for p in SERVE_DIR.glob("*.py"))
    assert shipped == expected
    assert {"__init__.py", "handlers.py", "text.py", "vocab.py", "network.py", "artifact.py", "errors.py"} <= set(shipped)
    for name in expected:
        assert (model_dir / CODE_DIR / "serve" / name).read_bytes() == (SERVE_DIR / name).read_bytes(), name
    assert (model_dir / "code/inference.py").read_bytes() == (SERVE_DIR / "inference.py").read_bytes()
    assert not list(model_dir.rglob("*.partial"))
    assert not list(model_dir.rglob("__pycache__"))


def test_requirements_pin_the_text_dependencies_from_the_one_source(model_dir):
    """The inference container pip-installs code/requirements.txt at every start (a new instance,
    a restart, a scale-out): exact pins under code/constraints.txt, a copy of serve/constraints.txt,
    so every instance serving one model version runs the same packages."""
    source = (SERVE_DIR / "constraints.txt").read_bytes()
    assert (model_dir / "code/constraints.txt").read_bytes() == source
    pins = parse_pins(source.decode())
    lines = [line for line in (model_dir / "code/requirements.txt").read_text(encoding="utf-8").splitlines()
             if not line.startswith("#")]
    assert lines == ["-c constraints.txt", *(f"{name}=={pins[name]}" for name in CODE_REQUIREMENTS)]
    assert set(CODE_REQUIREMENTS) == {"nltk", "beautifulsoup4"}  # torch and numpy come with the image


def test_config_json_contents(tmp_path):
    network, vocab, text = _write(tmp_path / "m", bidirectional=False, num_layers=2)
    config = json.loads((tmp_path / "m" / CONFIG_FILE).read_text(encoding="utf-8"))
    assert config["format"] == MODEL_FORMAT
    assert config["version"] == 1
    assert config["network"] == network.config.to_dict()
    assert config["text"] == text.to_dict()
    assert config["metrics"] == {"accuracy": 0.5} and config["data_hash"] == "abc"
    assert Vocabulary.load(tmp_path / "m" / VOCAB_FILE).tokens == vocab.tokens


def test_rewriting_an_artifact_replaces_stale_code(model_dir):
    stale = model_dir / CODE_DIR / "serve" / "stale_module.py"
    stale.write_text("raise SystemExit('stale')\n", encoding="utf-8")
    _write(model_dir)
    assert not stale.exists()


# --- load_model --------------------------------------------------------------------------------------


def test_load_model_round_trips_weights_exactly(tmp_path):
    network, vocab, text = _write(tmp_path / "m", bidirectional=True, num_layers=2)
    loaded = load_model(tmp_path / "m", device=CPU)
    original, restored = network.state_dict(), loaded.network.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    assert loaded.network.config == network.config
    assert loaded.vocab.tokens == vocab.tokens
    assert loaded.text == text
    assert loaded.config["data_hash"] == "abc"
    assert loaded.device == CPU
    assert not loaded.network.training


def test_loaded_model_gives_the_same_logits(tmp_path):
    network, _, _ = _write(tmp_path / "m")
    loaded = load_model(tmp_path / "m", device=CPU).network
    ids = torch.tensor([[2, 3, 4, 5, 0, 0], [6, 7, 8, 9, 10, 11]])
    lengths = torch.tensor([4, 6])
    with torch.no_grad():
        assert torch.equal(network(ids, lengths), loaded(ids, lengths))


def test_model_pt_is_a_plain_state_dict(model_dir):
    state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and state
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert "embedding.weight" in state and "head.weight" in state


def test_pickled_objects_in_model_pt_are_refused(model_dir):
    state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    state["extra"] = NotATensor()
    torch.save(state, model_dir / WEIGHTS_FILE)
    with pytest.raises(ArtifactError, match=WEIGHTS_FILE):
        load_model(model_dir, device=CPU)


def test_a_corrupt_model_pt_is_an_artifact_error(model_dir):
    (model_dir / WEIGHTS_FILE).write_bytes(b"not a torch file")
    with pytest.raises(ArtifactError, match="cannot load weights"):
        load_model(model_dir, device=CPU)


def test_weights_that_do_not_fit_the_config_are_an_artifact_error(model_dir):
    config = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    config["network"]["hidden_dim"] = 16
    (model_dir / CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ArtifactError, match=WEIGHTS_FILE):
        load_model(model_dir, device=CPU)


@pytest.mark.parametrize("missing", [WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE])
def test_a_missing_file_is_named(model_dir, missing):
    (model_dir / missing).unlink()
    with pytest.raises(ArtifactError, match=missing.replace(".", r"\.")):
        load_model(model_dir, device=CPU)


def test_an_empty_directory_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match=WEIGHTS_FILE):
        load_model(tmp_path, device=CPU)


def test_invalid_config_json_is_an_artifact_error(model_dir):
    (model_dir / CONFIG_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ArtifactError, match=CONFIG_FILE):
        load_model(model_dir, device=CPU)


def test_a_config_of_another_format_is_an_artifact_error(model_dir):
    (model_dir / CONFIG_FILE).write_text(json.dumps({"format": "other", "network": {}}), encoding="utf-8")
    with pytest.raises(ArtifactError, match=MODEL_FORMAT):
        load_model(model_dir, device=CPU)


def test_a_config_that_is_not_an_object_is_an_artifact_error(model_dir):
    """A JSON list is valid JSON but no config: the loader must say so, not raise AttributeError."""
    (model_dir / CONFIG_FILE).write_text("[1, 2, 3]", encoding="utf-8")
    with pytest.raises(ArtifactError, match=CONFIG_FILE):
        load_model(model_dir, device=CPU)


def test_a_config_without_network_settings_is_an_artifact_error(model_dir):
    config = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    del config["network"]
    (model_dir / CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ArtifactError, match=CONFIG_FILE):
        load_model(model_dir, device=CPU)


def test_a_corrupt_vocab_json_is_an_artifact_error(model_dir):
    """The evaluation step turns ArtifactError into a clean exit; a bad vocab.json must be one too."""
    (model_dir / VOCAB_FILE).write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
    with pytest.raises(ArtifactError, match=VOCAB_FILE):
        load_model(model_dir, device=CPU)


def test_a_vocab_larger_than_the_embedding_is_an_artifact_error(model_dir):
    """Ids past the embedding table would crash every request that uses them: refuse at load time."""
    vocab = Vocabulary.load(model_dir / VOCAB_FILE)
    Vocabulary(vocab.tokens + [f"extra{i}" for i in range(20)]).save(model_dir / VOCAB_FILE)
    with pytest.raises(ArtifactError, match=VOCAB_FILE):
        load_model(model_dir, device=CPU)


# --- the shipped code --------------------------------------------------------------------------------


@pytest.mark.server
def test_shipped_code_serves_on_its_own(model_dir, tmp_path):
    """Import code/inference.py with code/ first on sys.path, as the container does, and score a review."""
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        code = Path(sys.argv[1]).resolve()
        sys.path.insert(0, str(code))
        import inference
        import serve.handlers
        assert code in Path(serve.handlers.__file__).resolve().parents, serve.handlers.__file__
        model = inference.model_fn(sys.argv[2])
        reviews = inference.input_fn(b'{"review": "A wonderful, moving film"}', "application/json")
        body, kind = inference.output_fn(inference.predict_fn(reviews, model), "application/json")
        print(kind)
        print(body)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script, str(model_dir / CODE_DIR), str(model_dir)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    kind, body = result.stdout.strip().splitlines()[-2:]
    assert kind == "application/json"
    predictions = json.loads(body)["predictions"]
    assert len(predictions) == 1 and 0.0 <= predictions[0]["positive_probability"] <= 1.0


# --- pack / unpack / resolve -------------------------------------------------------------------------


def test_pack_and_unpack_round_trip(model_dir, tmp_path):
    (model_dir / CODE_DIR / "serve" / "__pycache__").mkdir()
    (model_dir / CODE_DIR / "serve" / "__pycache__" / "text.cpython-311.pyc").write_bytes(b"\0" * 8)
    (model_dir / CODE_DIR / "stray.pyc").write_bytes(b"\0" * 8)
    archive = tmp_path / "model.tar.gz"
    pack_model_dir(model_dir, archive)
    assert archive.is_file() and not (tmp_path / "model.tar.gz.partial").exists()

    with tarfile.open(archive, "r:gz") as tar:
        names = tar.getnames()
    assert {WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE, CODE_DIR, "code/inference.py", "code/serve/handlers.py"} <= set(names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names), names
    assert not any(n.startswith(("/", "./", "model/")) or ".." in n.split("/") for n in names), names

    out = unpack_model_archive(archive, tmp_path / "unpacked")
    assert out == tmp_path / "unpacked"
    for path in model_dir.rglob("*"):
        rel = path.relative_to(model_dir)
        if "__pycache__" in rel.parts or path.suffix == ".pyc":
            assert not (out / rel).exists(), rel
        elif path.is_file():
            assert (out / rel).read_bytes() == path.read_bytes(), rel
    original = load_model(model_dir, device=CPU).network.state_dict()
    restored = load_model(out, device=CPU).network.state_dict()
    assert all(torch.equal(original[k], restored[k]) for k in original)


def _evil_archive(path: Path, name: str, data: bytes = b"pwned", kind: bytes = tarfile.REGTYPE, linkname: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


def test_unpack_refuses_path_traversal(tmp_path):
    archive = _evil_archive(tmp_path / "evil.tar.gz", "../evil")
    destination = tmp_path / "inside" / "dest"
    destination.mkdir(parents=True)
    with pytest.raises(ArtifactError, match="cannot unpack"):
        unpack_model_archive(archive, destination)
    assert not (tmp_path / "inside" / "evil").exists()


def test_unpack_refuses_deep_path_traversal(tmp_path):
    archive = _evil_archive(tmp_path / "evil.tar.gz", "code/../../../evil.txt")
    destination = tmp_path / "a" / "b"
    destination.mkdir(parents=True)
    with pytest.raises(ArtifactError):
        unpack_model_archive(archive, destination)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "a" / "evil.txt").exists()


def test_unpack_refuses_links_that_leave_the_destination(tmp_path):
    archive = _evil_archive(tmp_path / "evil.tar.gz", "model.pt", kind=tarfile.SYMTYPE, linkname="/etc/passwd")
    with pytest.raises(ArtifactError):
        unpack_model_archive(archive, tmp_path / "dest")
    assert not (tmp_path / "dest" / "model.pt").is_symlink()


def test_unpack_keeps_absolute_names_inside_the_destination(tmp_path):
    archive = _evil_archive(tmp_path / "abs.tar.gz", str(tmp_path / "outside.txt"))
    dest = tmp_path / "dest"
    try:
        unpack_model_archive(archive, dest)
    except ArtifactError:
        pass  # refusing is as good as stripping
    assert not (tmp_path / "outside.txt").exists()


def test_unpack_of_a_non_archive_is_an_artifact_error(tmp_path):
    bogus = tmp_path / "model.tar.gz"
    bogus.write_bytes(b"this is not a tarball")
    with pytest.raises(ArtifactError, match="cannot unpack"):
        unpack_model_archive(bogus, tmp_path / "dest")


def test_resolve_model_dir_accepts_a_directory(model_dir):
    assert resolve_model_dir(model_dir) == model_dir


def test_resolve_model_dir_unpacks_an_archive(model_dir, tmp_path):
    archive = tmp_path / "model.tar.gz"
    pack_model_dir(model_dir, archive)
    resolved = resolve_model_dir(archive, tmp_path / "scratch")
    assert resolved == tmp_path / "scratch"
    assert (resolved / WEIGHTS_FILE).is_file()
    assert load_model(resolved, device=CPU).vocab.tokens == Vocabulary.load(model_dir / VOCAB_FILE).tokens


def test_resolve_model_dir_without_scratch_uses_a_temporary_folder(model_dir, tmp_path):
    archive = tmp_path / "model.tar.gz"
    pack_model_dir(model_dir, archive)
    resolved = resolve_model_dir(archive)
    try:
        assert resolved.is_dir() and resolved != model_dir
        assert (resolved / CONFIG_FILE).is_file()
    finally:
        import shutil

        shutil.rmtree(resolved, ignore_errors=True)


def test_resolve_model_dir_on_a_missing_path_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="model not found"):
        resolve_model_dir(tmp_path / "does-not-exist")
