"""The training job: an LSTM sentiment classifier, trained on the preprocessing step's arrays.

Honours the SageMaker training contract (``SM_CHANNEL_TRAIN``, ``SM_CHANNEL_VALIDATION``,
``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR``, ``SM_NUM_GPUS``, ``SM_HPS``, hyperparameters as
``--name value``, checkpoints in ``/opt/ml/checkpoints``) and runs the same by hand::

    python train/train.py --train DIR --validation DIR --model-dir DIR --output-data-dir DIR [--profile cpu|gpu]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make the sibling packages (serve/, steps/) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serve.artifact import TRAINING_CURVES_FILE, write_artifact
from serve.network import NetworkConfig, SentimentLSTM
from serve.text import REVIEWS, SENTENCES, TextConfig
from serve.vocab import Vocabulary
from steps.arrays import SplitFormatError, load_embeddings, load_split_arrays, load_split_datasets
from steps.instances import host_cpus
from steps.job_failure import TRAINING_REASON_FILE, report_failures
from train.calibration import fit_calibration, log_loss, split_logits
from train.checkpoints import CheckpointStore
from train.crops import Crops
from train.distributed import World, trainer
from train.epoch_log import EPOCH_LINE
from train.nbsvm import fit_nbsvm
from train.plots import plot_training_curves
from train.profiles import PROFILES, Hyperparameters

log = logging.getLogger("train")

SplitArrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # ids, lengths, labels

METRICS_FILE = "metrics.json"
CURVES_FILE = TRAINING_CURVES_FILE  # in SM_OUTPUT_DATA_DIR, and in the model dir (the artifact carries it)


class TrainingError(ValueError):
    """Bad inputs to the training job; the message says how to fix them."""


class Batches:
    """Length-bucketed batches: similar lengths share a batch, so little compute goes to padding.

    Each epoch's order comes from ``seed + epoch`` alone, which is what lets a resumed job
    replay exactly the batches an uninterrupted one would have seen.
    """

    POOL = 50  # batches per sorting pool: big enough to bucket well, small enough to stay random

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, rows: np.ndarray | None = None) -> None:
        """``rows``: the rows an epoch visits, a row as often as it appears (all rows once by default)."""
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.rows = np.arange(len(lengths)) if rows is None else rows

    def epoch(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed + epoch)
        order = rng.permutation(self.rows)
        pool_size = self.batch_size * self.POOL
        batches: list[np.ndarray] = []
        for start in range(0, len(order), pool_size):
            pool = order[start : start + pool_size]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches.extend(pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        rng.shuffle(batches)
        return batches


def _to_tensors(ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray, rows: np.ndarray, device: torch.device,
                crops: tuple[Crops, np.random.Generator] | None = None):
    row_lengths = lengths[rows]
    row_ids = ids[rows, : int(row_lengths.max())]
    if crops is not None:
        row_ids, row_lengths = crops[0].apply(row_ids, row_lengths, crops[1])
        row_ids = row_ids[:, : int(row_lengths.max())]
    batch_ids = torch.from_numpy(row_ids.astype(np.int64)).to(device, non_blocking=True)
    return batch_ids, torch.from_numpy(row_lengths.astype(np.int64)), torch.from_numpy(labels[rows].astype(np.float32)).to(device)


def evaluate(network: SentimentLSTM, data: tuple, device: torch.device, batch_size: int, autocast: dict,
             calibrate: bool) -> tuple[float, float]:
    """Mean loss and accuracy over a split of the model as it would ship from this epoch.

    With a bag and calibration, that is the two branches weighed by their fit on this split
    (as ``_calibrate`` will do for the best epoch): the LSTM and the fixed bag at weight 1 would
    rank epochs by a mix that is never deployed.
    """
    if network.ngrams is not None and calibrate:
        _, logits, labels = fit_calibration(network, data, device, batch_size, autocast)
    else:
        logits, labels = split_logits(network, data, device, batch_size, autocast)
    return log_loss(logits, labels), float(np.mean((logits > 0) == (labels > 0.5)))


def _seed_everything(seed: int, device: torch.device) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)


def _autocast_settings(device: torch.device) -> dict[str, Any]:
    """bf16 autocast where the GPU and this build's cuDNN run LSTMs in bf16; full precision elsewhere.

    cuDNN gained bf16 RNNs only in 9.13, so older builds are probed with a tiny LSTM first rather
    than trusted to fail cleanly mid-epoch.
    """
    if device.type != "cuda" or not torch.cuda.is_bf16_supported():
        return {"device_type": device.type, "enabled": False}
    torch.backends.cuda.matmul.allow_tf32 = True
    settings: dict[str, Any] = {"device_type": "cuda", "dtype": torch.bfloat16, "enabled": True}
    try:
        probe = nn.LSTM(8, 8, batch_first=True).to(device)
        with torch.autocast(**settings):
            output, _ = probe(torch.randn(2, 3, 8, device=device))
        output.float().sum().backward()
    except RuntimeError as exc:
        log.warning("bf16 LSTMs are not supported by this PyTorch/cuDNN build (%s): training in full precision", exc)
        return {"device_type": "cuda", "enabled": False}
    return settings


def train(args: argparse.Namespace, hp: Hyperparameters) -> dict:
    started = time.perf_counter()
    train_dir, val_dir = Path(args.train), Path(args.validation)
    try:
        train_data = load_split_arrays(train_dir)
        val_data = load_split_arrays(val_dir)
    except SplitFormatError as exc:
        raise TrainingError(str(exc)) from exc
    vocab, text, prep_stats = _read_preprocessing_outputs(train_dir)
    world = World.from_env()
    device = world.device(args.num_gpus != 0)
    if device.type == "cpu":
        torch.set_num_threads(hp.num_threads or world.threads(host_cpus()))
    world.start(device)
    try:
        return _train(args, hp, world, device, (train_data, val_data, vocab, text, prep_stats), started)
    finally:
        world.stop()


def _train(args: argparse.Namespace, hp: Hyperparameters, world: World, device: torch.device,
           inputs: tuple[SplitArrays, SplitArrays, Vocabulary, TextConfig, dict], started: float) -> dict:
    """The loop and the artifact; on many ranks, every rank trains its share of each batch and
    rank 0 alone validates, checkpoints and writes (``train.distributed``)."""
    train_data, val_data, vocab, text, prep_stats = inputs
    train_dir = Path(args.train)
    _seed_everything(hp.seed, device)
    autocast = _autocast_settings(device)

    config = NetworkConfig(len(vocab), hp.embedding_dim, hp.hidden_dim, hp.num_layers, hp.bidirectional, hp.dropout,
                           ngram_buckets=hp.ngram_buckets, ngram_order=hp.ngram_order, ngram_binary=True)
    network = SentimentLSTM(config)
    if hp.pretrained_embeddings:
        _initialise_embeddings(network, train_dir)
    if network.ngrams is not None:
        _fit_bag(network, train_data, hp, world)
    network.to(device)
    model = trainer(network, world, device)
    # Over what trains: the fitted bag does not.
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=hp.learning_rate,
                                  weight_decay=hp.weight_decay)
    batches = Batches(train_data[1], hp.batch_size, hp.seed, epoch_rows(train_dir, len(train_data[2]), prep_stats, hp))
    crops = Crops(hp.crop_probability, hp.crop_min_tokens, hp.crop_max_tokens, hp.seed)
    steps_per_epoch = len(batches.epoch(0))
    # OneCycleLR divides by the length of each phase: tiny datasets need at least a step in each.
    total_steps = max(steps_per_epoch * hp.epochs, 3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.learning_rate, total_steps=total_steps,
                                                   pct_start=max(0.1, 2 / total_steps), anneal_strategy="linear")
    store = CheckpointStore(Path(args.checkpoint_dir), signature={"hyperparameters": hp.to_dict(), "data": prep_stats.get("data_sha256")})
    state = store.resume(network, optimizer, schedule)
    log.info("training on %s%s: %d train / %d validation reviews, %d parameters, starting at epoch %d",
             device, f", rank {world.rank} of {world.size}" if world.distributed else "", len(train_data[2]),
             len(val_data[2]), sum(p.numel() for p in network.parameters()), state.epoch + 1)

    for epoch in range(state.epoch + 1, hp.epochs + 1):
        network.train()
        torch.manual_seed(hp.seed + epoch + 100_003 * world.rank)  # dropout masks replay the same after a resume
        epoch_started, loss_sum, tokens = time.perf_counter(), 0.0, 0
        # Every rank needs rows of every batch (a rank without one would leave the others waiting).
        plan = [batch for batch in batches.epoch(epoch) if len(batch) >= world.size]
        cropping = (crops, crops.generator(epoch)) if crops.probability else None  # no copy of each batch for nothing
        for global_rows in tqdm(plan, desc=f"epoch {epoch}/{hp.epochs}", unit="batch", mininterval=5.0,
                                disable=None if world.main else True, leave=False):
            rows = world.share(global_rows)
            batch_ids, batch_lengths, batch_labels = _to_tensors(*train_data, rows, device, cropping)
            with torch.autocast(**autocast):
                loss = nn.functional.binary_cross_entropy_with_logits(model(batch_ids, batch_lengths).float(), batch_labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(network.parameters(), hp.grad_clip)
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(rows)
            tokens += int(batch_lengths.sum())
        total_loss, total_tokens = world.sum(loss_sum, tokens)
        scores = evaluate(network, val_data, device, hp.batch_size, autocast, hp.calibrate) if world.main else (0.0, 0.0)
        val_loss, val_accuracy = world.from_main(*scores)
        seconds = time.perf_counter() - epoch_started
        record = {"epoch": epoch, "train_loss": total_loss / len(batches.rows), "val_loss": val_loss,
                  "val_accuracy": val_accuracy, "epoch_seconds": seconds, "tokens_per_second": total_tokens / seconds}
        if world.main:
            log.info(EPOCH_LINE.format(**record))
        state.record(record, network)
        if world.main:
            store.save(state, network, optimizer, schedule)
        if state.epochs_without_improvement >= hp.patience:
            log.info("early stop: validation accuracy has not improved for %d epochs (best %.4f at epoch %d)",
                     hp.patience, state.best_accuracy, state.best_epoch)
            break
    if not world.main:
        return {"best_epoch": state.best_epoch, "best_val_accuracy": state.best_accuracy, "rank": world.rank}
    store.save(state, network, optimizer, schedule, finished=True)

    network.load_state_dict(state.best_state)
    calibration = _calibrate(network, val_data, device, hp, autocast) if hp.calibrate else None
    summary = {
        "best_epoch": state.best_epoch,
        "best_val_accuracy": state.best_accuracy,
        "epochs_run": len(state.history),
        "seconds": round(time.perf_counter() - started, 2),
        "device": str(device),
        "profile": args.profile,
        "hyperparameters": hp.to_dict(),
        "history": state.history,
        "calibration": calibration,
    }
    metadata = {
        "training": {k: v for k, v in summary.items() if k != "history"},
        # "version": the pipeline's InputDataVersion, so that an approver sees which data it learned from.
        "data": {"sha256": prep_stats.get("data_sha256"), "version": prep_stats.get("data_version"),
                 "vocabulary": prep_stats.get("vocabulary")},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
    }
    write_artifact(Path(args.model_dir), network.cpu(), vocab, text, metadata)
    output_dir = Path(args.output_data_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / METRICS_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    plot_training_curves(state.history, output_dir / CURVES_FILE)
    # In model.tar.gz too, so that the evaluation step can put it beside its own plots.
    shutil.copyfile(output_dir / CURVES_FILE, Path(args.model_dir) / TRAINING_CURVES_FILE)
    log.info("best epoch %d: val_accuracy=%.4f; model written to %s", state.best_epoch, state.best_accuracy, args.model_dir)
    return summary


def epoch_rows(train_dir: Path, rows: int, prep_stats: dict, hp: Hyperparameters) -> np.ndarray:
    """The training rows one epoch visits: every row once, and each row of a "sentences" dataset
    ``sentence_repeats`` times. Sentences are few and short beside whole reviews (SST-2's 6,920
    sentences hold under 3 % of IMDb's training tokens), so repeating them gives the LSTM more
    updates on what web users type without thinning the reviews it also has to get right."""
    try:
        datasets = load_split_datasets(train_dir, rows)
    except SplitFormatError as exc:
        raise TrainingError(str(exc)) from exc
    kinds = [d.get("kind", REVIEWS) for d in prep_stats.get("datasets") or [{}]]
    if int(datasets.max(initial=0)) >= len(kinds):
        raise TrainingError(f"{train_dir} names dataset {int(datasets.max())}, but its stats.json lists {len(kinds)}")
    sentences = np.flatnonzero(np.asarray(kinds)[datasets] == SENTENCES)
    every = np.arange(rows)
    if hp.sentence_repeats <= 1 or not len(sentences):
        return every
    return np.concatenate([every, *[sentences] * (hp.sentence_repeats - 1)])


def _fit_bag(network: SentimentLSTM, train_data: tuple, hp: Hyperparameters, world: World) -> None:
    """Set the bag to the NBSVM fitted on the training split and freeze it: the LSTM trains on its
    own loss, and the calibration weighs the two (``train.nbsvm``). On many ranks rank 0 fits it
    once and the others receive its weights."""
    started = time.perf_counter()
    assert network.ngrams is not None
    config = network.config
    if world.main:
        weights = fit_nbsvm(train_data, config.ngram_buckets, config.vocab_size, config.ngram_order, hp.ngram_c)
        with torch.no_grad():
            network.ngrams.weights.weight[:, 0] = weights
    world.broadcast_(network.ngrams.weights.weight.data)
    network.ngrams.requires_grad_(False)
    log.info("the bag's NBSVM took %.1f s%s", time.perf_counter() - started, "" if world.main else " (fitted by rank 0)")


def _calibrate(network: SentimentLSTM, data: tuple, device: torch.device, hp: Hyperparameters,
               autocast: dict) -> dict[str, float]:
    """Fit the temperature (and, with a bag, the bag's weight) on the validation split and set it
    on the network, so the artifact's probabilities mean what they say (``train.calibration``)."""
    fitted, _, _ = fit_calibration(network, data, device, hp.batch_size, autocast)
    network.config = replace(network.config, temperature=fitted.temperature, bag_weight=fitted.bag_weight)
    log.info("calibration: temperature %.3f, bag weight %.3f (validation log loss %.4f before, %.4f after)",
             fitted.temperature, fitted.bag_weight, fitted.loss_before, fitted.loss_after)
    return fitted.to_dict()


def _initialise_embeddings(network: SentimentLSTM, train_dir: Path) -> None:
    """Copy the leading columns of the pretrained vectors in; wider networks keep random extra columns."""
    try:
        vectors = load_embeddings(train_dir, network.config.vocab_size)
    except SplitFormatError as exc:
        raise TrainingError(str(exc)) from exc
    if vectors is None:
        log.info("no pretrained embeddings in %s: starting from random ones", train_dir)
        return
    columns = min(vectors.shape[1], network.config.embedding_dim)
    with torch.no_grad():
        network.embedding.weight[:, :columns] = torch.from_numpy(vectors[:, :columns])
        network.embedding.weight[network.embedding.padding_idx].zero_()
    log.info("embeddings start from %d pretrained dimensions of %d", columns, network.config.embedding_dim)


def _read_preprocessing_outputs(train_dir: Path) -> tuple[Vocabulary, TextConfig, dict]:
    stats_path = train_dir / "stats.json"
    if not stats_path.is_file():
        raise TrainingError(f"{train_dir} has no stats.json: the train channel must be the preprocessing step's train/ output")
    stats = json.loads(stats_path.read_text(encoding="utf-8"))
    return Vocabulary.load(train_dir / "vocab.json"), TextConfig.from_dict(stats["options"]["text"]), stats


def _bool(value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _without_sagemaker_args(argv: list[str]) -> list[str]:
    """Drop ``--sagemaker_*`` framework settings (and their values): they configure the container, not us."""
    kept, skip_value = [], False
    for arg in argv:
        if skip_value:
            skip_value = False
            if not arg.startswith("--"):
                continue
        if arg.startswith("--sagemaker_"):
            skip_value = "=" not in arg
            continue
        kept.append(arg)
    return kept


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Hyperparameters]:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--train", default=env.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"))
    parser.add_argument("--validation", default=env.get("SM_CHANNEL_VALIDATION", "/opt/ml/input/data/validation"))
    parser.add_argument("--model-dir", default=env.get("SM_MODEL_DIR", "/opt/ml/model"))
    parser.add_argument("--output-data-dir", default=env.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"))
    parser.add_argument("--checkpoint-dir", default=env.get("SM_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
    parser.add_argument("--num-gpus", type=int, default=int(env.get("SM_NUM_GPUS", "-1")), help="0 forces the CPU")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None, help="hyperparameter profile (default: gpu if a GPU is present)")
    types = {"bidirectional": _bool, "pretrained_embeddings": _bool, "calibrate": _bool}
    defaults = Hyperparameters()
    kinds: dict[str, Callable[[str], Any]] = {}
    for name in Hyperparameters.names():
        kind = kinds[name] = types.get(name, type(getattr(defaults, name)))
        # SageMaker passes hyperparameters as --name value with the names as written: accept both spellings.
        parser.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest=name, type=kind, default=None)
    args, unknown = parser.parse_known_args(_without_sagemaker_args(sys.argv[1:] if argv is None else argv))
    if unknown:
        parser.error(f"unknown arguments {unknown}; hyperparameters are {', '.join(Hyperparameters.names())}")
    hps_env = json.loads(env.get("SM_HPS", "{}") or "{}")
    profile = args.profile or hps_env.get("profile") or ("gpu" if args.num_gpus != 0 and torch.cuda.is_available() else "cpu")
    args.profile = profile
    overrides = {name: kinds[name](hps_env[name]) for name in Hyperparameters.names() if name in hps_env}
    overrides.update({name: getattr(args, name) for name in Hyperparameters.names() if getattr(args, name) is not None})
    return args, PROFILES[profile].with_overrides(overrides)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args, hp = parse_args(argv)

    def work() -> int:
        train(args, hp)
        return 0

    return report_failures(work, (TrainingError, ValueError), TRAINING_REASON_FILE, log)


if __name__ == "__main__":
    sys.exit(main())
