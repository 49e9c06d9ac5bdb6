"""What the benchmarks that build a scratch home share: reading the local runtime's per-fleet
counts, and removing the home with every server it started."""
from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.local.services.hosting import LocalHosting
from pipeline.local.services.runtime import read_fleet_metrics, runtime_url, stop_runtime
from pipeline.local.state.db import open_state


def fleet_counts(home: Path, endpoint: str) -> dict[str, tuple[int, int]]:
    """Requests and 5xx answers the home's runtime counted per endpoint config of ``endpoint``."""
    runtime = runtime_url(home)
    if runtime is None:
        raise SystemExit(f"the local runtime of {home} is not running: nothing to count")
    return {config: (int(sum(b[1] for b in buckets)), int(sum(b[2] for b in buckets)))
            for config, buckets in read_fleet_metrics(runtime, endpoint).items()}


def remove_scratch_home(home: Path) -> None:
    """Let every rollout end, delete every endpoint (their servers stop), stop the runtime, and
    remove the folder."""
    hosting = LocalHosting(home, open_state(home))
    for endpoint in hosting.list_endpoints():
        hosting.wait_for_rollout(endpoint["EndpointName"])
        hosting.delete_endpoint(endpoint["EndpointName"])
    stop_runtime(home)
    shutil.rmtree(home, ignore_errors=True)
