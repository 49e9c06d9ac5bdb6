"""Guarded rollouts under load: a bad version under a canary is rolled back with only its share of
requests failing, and a good version under linear steps takes all traffic with none failing.

    .venv/bin/python benchmarks/rollout.py --home .mlops --version 1

It copies ``--version``'s artifact from ``--home`` into a scratch home and registers it three
times there: v1 as it is, v2 with inference code that fails every request (the model server
answers 500), v3 as it is. With ``wrk`` (``apt-get install wrk``) sending real test reviews to
the endpoint's stable address at ``--connections`` connections, in one run:

1. v1 is approved and serves;
2. CANARY: ``--canary-percent`` of 10 instances (10 % of the requests), ``--bake`` seconds of
   baking, the stack's two alarms judged over ``--alarm-period`` seconds; v2 is approved. wrk
   runs from the approval until the endpoint is InService again, then 10 s more on its own;
3. LINEAR: steps of ``--linear-percent`` (of 10 instances), ``--step-bake`` seconds each; v3 is
   approved, with wrk running from the approval until the rollout ends.

Targets (issue 21): phase 2, at most 12 % of the requests during the rollout fail, none after the
rollback; phase 3, none fail.
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.scratch import fleet_counts, remove_scratch_home  # noqa: E402
from benchmarks.serving import _test_reviews, _wrk_script, require_wrk  # noqa: E402
from pipeline.commands.registry import registry_store, set_status  # noqa: E402
from pipeline.local.services.hosting import LocalHosting  # noqa: E402
from pipeline.local.state.db import open_state  # noqa: E402
from pipeline.local.state.registry import ModelRegistry  # noqa: E402
from pipeline.local.state.store import ArtifactStore  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from serve.artifact import pack_model_dir, unpack_model_archive  # noqa: E402

BROKEN = "\n\ndef predict_fn(reviews, model):\n    raise RuntimeError('benchmarks/rollout.py: a broken version')\n"
INSTANCES = 10


def _scratch_home(settings: Settings, version: int) -> Path:
    """A new home with the version's artifact registered as v1 and v3, and a broken copy as v2."""
    package = ModelRegistry(open_state(settings.home)).get(settings.model_package_group, version)
    archive = ArtifactStore(settings.home).path(package.artifact_uri)
    home = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    broken_dir = home / "broken"
    unpack_model_archive(archive, broken_dir)
    with open(broken_dir / "code" / "inference.py", "a", encoding="utf-8") as code:
        code.write(BROKEN)
    pack_model_dir(broken_dir, home / "broken.tar.gz")
    store, registry = ArtifactStore(home), ModelRegistry(open_state(home))
    for number, source in ((1, archive), (2, home / "broken.tar.gz"), (3, archive)):
        uri = f"s3://bucket/models/v{number}/model.tar.gz"
        store.upload_file(source, uri)
        registry.register(settings.model_package_group, uri, "0" * 64, {}, registered_by="benchmarks/rollout.py",
                          inference_specification=package.inference_specification | {"Containers": [
                              {**package.inference_specification["Containers"][0], "ModelDataUrl": uri}]})
    return home


class Wrk:
    """wrk at the endpoint's address until stopped (SIGINT makes it print its summary)."""

    def __init__(self, url: str, connections: int, script: Path) -> None:
        self.process = subprocess.Popen(["wrk", "-t1", f"-c{connections}", "-d3600s", "--timeout", "10s", "-s",
                                         str(script), url], stdout=subprocess.PIPE, text=True)

    def stop(self) -> dict[str, int]:
        self.process.send_signal(signal.SIGINT)
        out, _ = self.process.communicate(timeout=30)
        requests = int(out.split(" requests in", 1)[0].split()[-1])
        non_2xx = int(out.split("Non-2xx or 3xx responses:", 1)[1].split()[0]) if "Non-2xx" in out else 0
        errors = sum(int(n) for n in out.split("Socket errors:", 1)[1].split("\n", 1)[0].replace(",", " ").split()
                     if n.isdigit()) if "Socket errors" in out else 0
        return {"requests": requests, "failed": non_2xx + errors}


def _approve(settings: Settings, version: int) -> dict:
    result = set_status(registry_store(settings, "local"), version, "approve", "benchmarks/rollout.py")
    if result["deployment_error"]:
        raise SystemExit(f"deployment failed: {result['deployment_error']}")
    return result


def _rollout(settings: Settings, version: int, url: str, connections: int, script: Path) -> tuple[dict, dict, float]:
    """Approve ``version`` under load; wrk's figures from the approval to the rollout's end, the
    endpoint as it ends, and the seconds it took."""
    hosting = LocalHosting(settings.home, open_state(settings.home))
    load = Wrk(url, connections, script)
    time.sleep(1.0)  # the connections are open and busy before the approval
    started = time.perf_counter()
    _approve(settings, version)
    ended = hosting.wait_for_rollout(settings.endpoint_name)
    seconds = time.perf_counter() - started
    return load.stop(), ended, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".mlops"))
    parser.add_argument("--version", type=int, default=1, help="the registered version whose artifact is used")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--canary-percent", type=int, default=10)
    parser.add_argument("--bake", type=int, default=30)
    parser.add_argument("--linear-percent", type=int, default=20)
    parser.add_argument("--step-bake", type=int, default=3)
    parser.add_argument("--alarm-period", type=int, default=10)
    args = parser.parse_args()
    require_wrk()
    source = Settings(home=args.home)
    reviews, _ = _test_reviews(source, args.version, 500)
    home = _scratch_home(source, args.version)
    base = replace(Settings(), home=home, endpoint_instance_count=INSTANCES, alarm_period_s=args.alarm_period)
    script = _wrk_script([r["text"] for r in reviews], home)
    try:
        _approve(base, 1)
        hosting = LocalHosting(home, open_state(home))
        first = hosting.describe_endpoint(base.endpoint_name)
        url = first["Url"] + "/invocations"
        print(f"{len(reviews)} real test reviews; wrk at {args.connections} connections to {url}")

        canary = replace(base, rollout_env=MappingProxyType({
            "DEPLOYMENT_MODE": "CANARY", "TRAFFIC_STEP_PERCENT": str(args.canary_percent),
            "BAKE_SECONDS": str(args.bake), "MAX_DEPLOYMENT_SECONDS": "600"}))
        during, ended, seconds = _rollout(canary, 2, url, args.connections, script)
        rolled_back = ended["EndpointConfigName"] == first["EndpointConfigName"]
        after = Wrk(url, args.connections, script)
        time.sleep(10)
        later = after.stop()
        served, failed_5xx = fleet_counts(home, base.endpoint_name)[next(
            row["endpoint_config"] for row in hosting.endpoint_history(base.endpoint_name) if row["event"] == "RolledBack")]
        print(f"CANARY {args.canary_percent} % of {INSTANCES} instances, {args.bake} s bake, broken v2: "
              f"{'rolled back' if rolled_back else 'NOT rolled back'} after {seconds:.1f} s "
              f"({ended.get('FailureReason', '')})")
        print(f"  during the rollout: {during['requests']} requests, {during['failed']} failed "
              f"({during['failed'] / max(1, during['requests']):.2%}; target ≤ 12 %); the canary got {served} "
              f"({failed_5xx} answered 5xx)")
        print(f"  10 s after the rollback: {later['requests']} requests, {later['failed']} failed (target 0)")

        linear = replace(base, rollout_env=MappingProxyType({
            "DEPLOYMENT_MODE": "LINEAR", "TRAFFIC_STEP_PERCENT": str(args.linear_percent),
            "BAKE_SECONDS": str(args.step_bake), "MAX_DEPLOYMENT_SECONDS": "600"}))
        during, ended, seconds = _rollout(linear, 3, url, args.connections, script)
        took = ended["EndpointConfigName"].startswith(f"{base.endpoint_name}-v3-")
        print(f"LINEAR steps of {args.linear_percent} % of {INSTANCES} instances, {args.step_bake} s each, good v3: "
              f"{'completed' if took else 'NOT completed: ' + ended.get('FailureReason', '')} in {seconds:.1f} s")
        print(f"  during the rollout: {during['requests']} requests, {during['failed']} failed (target 0)")
        for row in hosting.endpoint_history(base.endpoint_name):
            print(f"  history: {row['time']} {row['event']:<11} v{row['version']}  {row['detail'] or ''}")
    finally:
        remove_scratch_home(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
