"""Data-parallel training under torchrun: which rank this process is, and the few collective
steps the training loop needs.

torchrun (``python -m torch.distributed.run``, which the PyTorch training toolkit starts when
``sagemaker_torch_distributed_enabled`` is set, and the local runtime the same way) gives each
process ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and ``LOCAL_WORLD_SIZE``. Without them, or with
a world of one, training takes the plain single-process path and nothing here talks to another
process.

The split of work keeps a distributed run the same computation as one process: every rank
builds the same global batches (seeded), takes every ``size``-th row of each, and
``DistributedDataParallel`` averages the gradients, so a step sees the same global batch as on
one process. That slicing is this project's distributed sampler: it keeps the length buckets
that make each batch cheap, which ``DistributedSampler`` (a shuffled index list per rank) would
break.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

# How long a collective waits for the other ranks: the longest stretch between two collectives is
# rank 0 alone fitting the NBSVM bag (before its broadcast) or validating and checkpointing an
# epoch, which on millions of reviews takes many minutes.
COLLECTIVE_TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class World:
    """This process's place among the ranks."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @classmethod
    def from_env(cls) -> World:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)),
                   int(env.get("LOCAL_WORLD_SIZE", 1)))

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that logs the metrics and writes the model, the curves and the checkpoints."""
        return self.rank == 0

    def device(self, use_gpu: bool) -> torch.device:
        """This rank's device: its own GPU (by local rank) when GPUs are used, else the CPU."""
        if use_gpu and torch.cuda.is_available():
            return torch.device("cuda", self.local_rank) if self.distributed else torch.device("cuda")
        return torch.device("cpu")

    def start(self, device: torch.device) -> None:
        """Join the other ranks (nccl on GPUs, gloo on CPUs)."""
        if not self.distributed:
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # On GPUs, NCCL carries the gradients and gloo the few CPU tensors the loop shares (NCCL
        # takes CUDA tensors only): the bag's weights before they move, the losses, the scores.
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
        log.info("rank %d of %d (local rank %d) joined, on %s", self.rank, self.size, self.local_rank, device)

    def stop(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def share(self, rows: np.ndarray) -> np.ndarray:
        """This rank's rows of one global batch."""
        return rows[self.rank :: self.size] if self.distributed else rows

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's values in ``tensor`` on every rank (in place)."""
        if self.distributed:
            dist.broadcast(tensor, src=0)
        return tensor

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the ranks."""
        if not self.distributed:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(total)
        return total.tolist()

    def from_main(self, *values: float) -> list[float]:
        """Rank 0's values, on every rank (what rank 0 alone computed, such as the validation scores)."""
        if not self.distributed:
            return list(values)
        shared = torch.tensor(values, dtype=torch.float64)
        dist.broadcast(shared, src=0)
        return shared.tolist()

    def threads(self, cpus: int) -> int:
        """Threads for this rank: the host's cores shared among the ranks on it."""
        return max(cpus // self.local_size, 1)


class RecurrentBranch(nn.Module):
    """The network's trained branch as a module of its own, for ``DistributedDataParallel`` to
    wrap: the loop trains ``recurrent_logit``, not ``forward`` (the fitted bag trains not at all),
    and DDP syncs gradients only for what runs through its wrapper's ``forward``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network: Any = network

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.network.recurrent_logit(ids, lengths)


def trainer(network: nn.Module, world: World, device: torch.device) -> nn.Module:
    """What the loop calls for the recurrent logit: the branch itself on one process, wrapped
    in DDP on many (which also starts every rank from rank 0's weights)."""
    branch = RecurrentBranch(network)
    if not world.distributed:
        return branch
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(branch, device_ids=ids)
