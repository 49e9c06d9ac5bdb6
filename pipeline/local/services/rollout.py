"""A guarded rollout on this machine: what SageMaker does between an UpdateEndpoint that carries
a ``DeploymentConfig`` and the endpoint's return to InService.

``LocalHosting.update_endpoint`` starts the new model server beside the old one, records it as
the endpoint's candidate with no traffic, and starts this process
(``python -m pipeline.local.services.rollout --home H --endpoint NAME``). It then:

1. gives the candidate each step's share of the requests (the router deals them,
   ``pipeline/local/services/runtime.py``) and waits the step's baking period, judging the
   rollback alarms against the router's per-fleet metrics every quarter second
   (``pipeline/local/services/cloudwatch.py``);
2. after the last step and the termination wait (alarms still judged: the old server is still
   there to go back to), makes the candidate the endpoint's server and stops the old one;
3. on an alarm, a candidate that exits, the deployment's time limit
   (``MaximumExecutionTimeoutInSeconds``) or a stop signal, rolls back: the endpoint is
   RollingBack, all traffic returns to the old server, the candidate stops, and the endpoint is
   InService on its old config with the reason as its ``FailureReason``.

If this process is killed outright, the next DescribeEndpoint finds it gone and rolls back.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.local.processes import process_runs
from pipeline.local.services.cloudwatch import LocalCloudWatch, alarm_state
from pipeline.local.services.hosting import LocalHosting
from pipeline.local.services.runtime import read_fleet_metrics, runtime_url
from pipeline.local.state.db import connect, parse_iso, state_path, utc_now
from serve.server.run import write_whole

log = logging.getLogger(__name__)

POLL_S = 0.25
# A rollout that cannot read the metrics this long is rolled back: an alarm that cannot be judged protects nothing.
BLIND_S = 5.0


class Stopped(Exception):
    """A stop signal: the rollout is rolled back, as an interrupted deployment is."""


def _fleets(runtime: str | None, endpoint: str) -> dict[str, list] | None:
    """The router's per-fleet metrics for the endpoint; None if it cannot be asked now."""
    if runtime is None:
        return None
    try:
        return read_fleet_metrics(runtime, endpoint)
    except (OSError, ValueError) as error:
        log.warning("endpoint %s: the runtime's metrics could not be read: %s", endpoint, error)
        return None


class Rollout:
    """One endpoint's rollout, from its record in the state database to its end."""

    def __init__(self, home: Path, endpoint: str) -> None:
        self.home, self.endpoint = home, endpoint
        self.conn = connect(state_path(home))
        self.hosting = LocalHosting(home, self.conn)
        row = self.conn.execute("SELECT * FROM endpoints WHERE name = ?", (endpoint,)).fetchone()
        if row is None or not row["rollout"]:
            raise RuntimeError(f"endpoint {endpoint} has no rollout under way")
        self.hosting.update_rollout(endpoint, driver_pid=os.getpid())  # its starter records it too, if it lives
        self.plan: dict[str, Any] = json.loads(row["rollout"])
        self.candidate_pid, self.candidate = row["candidate_pid"], row["candidate_config"]
        self.alarms = LocalCloudWatch(self.conn).alarms(self.plan["alarms"])
        self.unreadable = 0  # polls in a row that found no metrics to judge
        started = parse_iso(self.plan["started"]).timestamp()
        self.deadline = started + self.plan["max_execution_s"]

    def run(self) -> None:
        steps = self.plan["steps"]
        try:
            for number, share in enumerate(steps, 1):
                self.hosting.shift_traffic(self.endpoint, share)
                self.hosting.update_rollout(self.endpoint, step=number - 1)
                log.info("endpoint %s: %s takes %.0f %% of the requests (step %d of %d); baking %d s",
                         self.endpoint, self.candidate, 100 * share, number, len(steps), self.plan["wait_s"])
                self._watch(self.plan["wait_s"])
            if self.plan["termination_wait_s"]:
                log.info("endpoint %s: keeping the old server %d s more", self.endpoint, self.plan["termination_wait_s"])
                self._watch(self.plan["termination_wait_s"])
        except (Stopped, _Breach) as reason:
            self.hosting.roll_back(self.endpoint, str(reason))
            return
        except BaseException as error:
            self.hosting.roll_back(self.endpoint, f"the rollout failed: {type(error).__name__}: {error}")
            raise
        steps_text = " → ".join(f"{100 * share:.0f} %" for share in steps)
        self.hosting.finish_rollout(self.endpoint, f"{self.plan['mode']}: {steps_text}, {self.plan['wait_s']} s "
                                                   f"baking each, no alarm")
        log.info("endpoint %s: %s serves all traffic", self.endpoint, self.candidate)

    def _watch(self, seconds: float) -> None:
        """Wait ``seconds``, judging the alarms; _Breach with the reason when one goes off."""
        until = time.time() + seconds
        while True:
            now = time.time()
            if self.alarms:
                fleets = _fleets(runtime_url(self.home), self.endpoint)  # read afresh: the runtime may restart
                if fleets is None:
                    self.unreadable += 1
                    if self.unreadable * POLL_S >= BLIND_S:
                        raise _Breach(f"the alarms could not be judged for {BLIND_S:g} s: the runtime's metrics "
                                      "could not be read")
                    fleets = {}
                else:
                    self.unreadable = 0
                for alarm in self.alarms:
                    reason = alarm_state(alarm, self.endpoint, fleets, now)
                    if reason:
                        raise _Breach(reason)
            if not process_runs(self.candidate_pid, "serve.server"):
                raise _Breach(f"the new model server (pid {self.candidate_pid}) exited")
            if now >= self.deadline:
                raise _Breach(f"the deployment ran past MaximumExecutionTimeoutInSeconds ({self.plan['max_execution_s']} s)")
            if now >= until:
                return
            time.sleep(min(POLL_S, max(0.0, until - now)))


class _Breach(Exception):
    """Why the rollout must go back."""


def _stop_signal(signum: int, frame: Any) -> None:
    raise Stopped(f"the rollout was stopped (signal {signum})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.local.services.rollout", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _stop_signal)
    signal.signal(signal.SIGINT, _stop_signal)
    try:
        rollout = Rollout(args.home, args.endpoint)
    except Exception as error:  # noqa: BLE001 (the starter reads the reason from this log)
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.ready_file:
        write_whole(args.ready_file, f"rollout of {args.endpoint} since {utc_now().isoformat()}")
    rollout.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
