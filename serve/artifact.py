"""The model artifact: what ``SM_MODEL_DIR`` holds and ``model.tar.gz`` carries.

Layout (self-contained, so registration needs no repack step)::

    model.pt        state dict, loadable with torch.load(weights_only=True)
    config.json     network, text settings, versions, data hashes, training figures
    vocab.json      the vocabulary
    code/           inference.py, the serve/ modules it imports, requirements.txt and the
                    constraints.txt it pins from (see serve/dependencies.py)
    training_curves.png
                    loss and accuracy per epoch (optional: older artifacts lack it). Nothing
                    serves it; the evaluation step publishes it beside its own plots, so that
                    every plot of a version lies in one folder
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from serve import dependencies
from serve.network import NetworkConfig, SentimentLSTM
from serve.text import TextConfig
from serve.vocab import Vocabulary

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
CODE_DIR = "code"
TRAINING_CURVES_FILE = "training_curves.png"
MODEL_FORMAT = "sentiment-mlops/model"
SERVE_PACKAGE_DIR = Path(__file__).resolve().parent
# What the inference container must install next to its own torch and numpy, at the exact pins
# of serve/constraints.txt, the one source that the jobs' bundles are pinned from too.
CODE_REQUIREMENTS = dependencies.ENDPOINT.installs


class ArtifactError(ValueError):
    """A model directory or archive that cannot be served; the message says what is missing."""


@dataclass
class LoadedModel:
    network: SentimentLSTM
    vocab: Vocabulary
    text: TextConfig
    config: dict
    device: torch.device


def write_artifact(model_dir: Path, network: SentimentLSTM, vocab: Vocabulary, text: TextConfig, metadata: dict) -> None:
    """Write weights, config, vocabulary and serving code into ``model_dir``."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    _atomic_torch_save(state, model_dir / WEIGHTS_FILE)
    config = {**metadata, "format": MODEL_FORMAT, "version": 1, "network": network.config.to_dict(), "text": text.to_dict()}
    (model_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    vocab.save(model_dir / VOCAB_FILE)
    write_serving_code(model_dir / CODE_DIR)


def write_serving_code(code_dir: Path) -> None:
    """Copy the serve package and its entry point so the container needs nothing from this repo."""
    if code_dir.exists():
        shutil.rmtree(code_dir)
    package_dir = code_dir / "serve"
    package_dir.mkdir(parents=True)
    for source in sorted(SERVE_PACKAGE_DIR.glob("*.py")):
        shutil.copy2(source, package_dir / source.name)
    shutil.copy2(SERVE_PACKAGE_DIR / "inference.py", code_dir / "inference.py")
    write_requirements(code_dir)


def write_requirements(code_dir: Path) -> None:
    """``requirements.txt`` and ``constraints.txt``, which the inference container pip-installs
    at every start: exact pins, so a redeployed or rescaled endpoint gets the same packages."""
    constraints = dependencies.read_constraints(SERVE_PACKAGE_DIR / dependencies.CONSTRAINTS_NAME)
    for name, data in dependencies.install_files(CODE_REQUIREMENTS, constraints).items():
        (Path(code_dir) / name).write_bytes(data)


def _atomic_torch_save(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_model(model_dir: Path, device: torch.device | None = None) -> LoadedModel:
    """Rebuild the network from an unpacked artifact; refuses anything but plain tensors."""
    model_dir = Path(model_dir)
    for name in (WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE):
        if not (model_dir / name).is_file():
            raise ArtifactError(f"{model_dir} has no {name}: is it a sentiment-mlops model directory (unpacked model.tar.gz)?")
    try:
        config = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ArtifactError(f"{model_dir / CONFIG_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        raise ArtifactError(f"{model_dir / CONFIG_FILE} is not a {MODEL_FORMAT} config")
    try:
        network_config = NetworkConfig.from_dict(config["network"])
        text = TextConfig.from_dict(config["text"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{model_dir / CONFIG_FILE} has no valid network and text settings: {exc!r}") from exc
    try:
        vocab = Vocabulary.load(model_dir / VOCAB_FILE)
    except ValueError as exc:
        raise ArtifactError(str(exc)) from exc
    if len(vocab) > network_config.vocab_size:
        raise ArtifactError(f"{model_dir / VOCAB_FILE} has {len(vocab):,} ids but the network embeds only {network_config.vocab_size:,}")
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    network = SentimentLSTM(network_config)
    try:
        state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise ArtifactError(f"cannot load weights from {model_dir / WEIGHTS_FILE}: {exc}") from exc
    network.to(device).eval()
    return LoadedModel(network, vocab, text, config, device)


def pack_model_dir(model_dir: Path, archive: Path) -> None:
    """Make ``model.tar.gz`` with the artifact's files at the archive root, as SageMaker does."""
    archive = Path(archive)
    tmp = archive.with_name(archive.name + ".partial")
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(Path(model_dir).iterdir()):
            tar.add(path, arcname=path.name, filter=_drop_bytecode)
    os.replace(tmp, archive)


def _drop_bytecode(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if "__pycache__" in info.name or info.name.endswith(".pyc") else info


def unpack_model_archive(archive: Path, destination: Path) -> Path:
    """Extract ``model.tar.gz`` safely (no absolute paths, links or ``..``) into ``destination``."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(destination, filter="data")  # refuses absolute paths, "..", links outside, devices
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArtifactError(f"cannot unpack {archive}: {exc}. Pass a model.tar.gz made by the training step.") from exc
    return Path(destination)


def resolve_model_dir(path: Path, scratch: Path | None = None) -> Path:
    """Accept an unpacked model dir or a ``model.tar.gz``; archives are unpacked into ``scratch``."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.is_file():
        scratch = Path(scratch or tempfile.mkdtemp(prefix="sentiment-model-"))
        return unpack_model_archive(path, scratch)
    raise ArtifactError(f"model not found at {path}: pass a model.tar.gz or the directory it unpacks to")
