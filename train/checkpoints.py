"""Per-epoch checkpoints so that a managed-spot job that is interrupted resumes where it stopped.

SageMaker syncs ``/opt/ml/checkpoints`` to S3 and restores it into a restarted job.  A
checkpoint written by a job with other hyperparameters or other data is ignored, not resumed,
and so is one marked finished: the checkpoint folder is shared by the executions that train
the same profile (see ``pipeline.definition.train_step.checkpoint_uri``), and a new job must train anew,
not pick up where a completed one ended.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainingState:
    epoch: int = 0
    best_epoch: int = 0
    best_accuracy: float = -1.0
    best_state: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    @property
    def epochs_without_improvement(self) -> int:
        return self.epoch - self.best_epoch

    def record(self, metrics: dict, network: nn.Module) -> None:
        """Note an epoch's figures; keep a copy of the weights when validation accuracy improved."""
        self.epoch = metrics["epoch"]
        self.history.append(metrics)
        if metrics["val_accuracy"] > self.best_accuracy:
            self.best_epoch, self.best_accuracy = self.epoch, metrics["val_accuracy"]
            self.best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}


class CheckpointStore:
    def __init__(self, directory: Path, signature: dict) -> None:
        self.path = Path(directory) / CHECKPOINT_FILE
        self.signature = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()

    def save(self, state: TrainingState, network: nn.Module, optimizer, schedule, *, finished: bool = False) -> None:
        """Write atomically: an interruption mid-write leaves the previous checkpoint intact.
        ``finished`` marks the job's last write, after which the checkpoint is not resumed."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            payload = {
                "signature": self.signature,
                "finished": finished,
                "epoch": state.epoch,
                "best_epoch": state.best_epoch,
                "best_accuracy": state.best_accuracy,
                "best_state": state.best_state,
                "history": state.history,
                "model": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
            }
            partial = self.path.with_name(self.path.name + ".partial")
            torch.save(payload, partial)
            os.replace(partial, self.path)
        except OSError as exc:  # a read-only checkpoint dir must not kill an otherwise good job
            log.warning("could not write checkpoint %s: %s", self.path, exc)

    def resume(self, network: nn.Module, optimizer, schedule) -> TrainingState:
        """Load the last checkpoint into the objects given; a fresh state when there is none to use."""
        if not self.path.is_file():
            return TrainingState()
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: start over rather than fail the job
            log.warning("ignoring unreadable checkpoint %s: %s", self.path, exc)
            return TrainingState()
        if payload.get("signature") != self.signature:
            log.warning("ignoring checkpoint %s: it was written with other hyperparameters or data", self.path)
            return TrainingState()
        if payload.get("finished"):
            log.info("not resuming %s: the job that wrote it finished; training from the start", self.path)
            return TrainingState()
        network.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        schedule.load_state_dict(payload["schedule"])
        log.info("resuming after epoch %d from %s", payload["epoch"], self.path)
        return TrainingState(payload["epoch"], payload["best_epoch"], payload["best_accuracy"],
                             copy.deepcopy(payload["best_state"]), list(payload["history"]))
