"""The training job's per-epoch log line and the metric definitions that parse it.

Apart from ``train.train`` so that building the pipeline definition (which hands these regexes
to SageMaker) does not import torch: the definition is built by the CLI, the control plane and
the tests, none of which trains.
"""
from __future__ import annotations

EPOCH_METRICS = ("train_loss", "val_loss", "val_accuracy", "epoch_seconds", "tokens_per_second")
EPOCH_LINE = ("epoch={epoch} train_loss={train_loss:.4f} val_loss={val_loss:.4f} val_accuracy={val_accuracy:.4f} "
              "epoch_seconds={epoch_seconds:.1f} tokens_per_second={tokens_per_second:.0f}")
# SageMaker reads each metric from the job's log by the first group of its regex.
METRIC_DEFINITIONS = [{"Name": name, "Regex": f"{name}=([0-9.]+)"} for name in EPOCH_METRICS]
