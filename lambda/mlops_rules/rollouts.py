"""Deployment guardrails: how an endpoint update shifts traffic to the new version and when it is
rolled back, as SageMaker's ``UpdateEndpoint`` ``DeploymentConfig`` says it.

The deploy function builds the ``DeploymentConfig`` from its settings (``RolloutPolicy``), and
the local hosting reads the same request and follows it (``traffic_steps``); both refuse what
SageMaker refuses (``deployment_problems``), so a setting that would fail on AWS fails here first.

SageMaker's rules, from the API reference (TrafficRoutingConfig, BlueGreenUpdatePolicy,
AutoRollbackConfig, CapacitySize) and the deployment guardrails guide:

- ALL_AT_ONCE moves all traffic at once; CANARY first moves ``CanarySize`` (at most half of the
  variant's instances), then the rest; LINEAR moves ``LinearStepSize`` (10 to 50 % of the
  instances) a step. After each step SageMaker waits ``WaitIntervalInSeconds`` (0 to 3,600),
  the baking period, watching the alarms; the last step's wait is the final baking period.
- ``TerminationWaitInSeconds`` (0 to 3,600) keeps the old fleet after that, and
  ``MaximumExecutionTimeoutInSeconds`` (600 to 14,400) bounds the whole deployment and must
  exceed its waits.
- ``AutoRollbackConfiguration`` names 1 to 10 CloudWatch alarms; any one in ALARM during the
  deployment sends all traffic back to the old fleet.

A canary or step is whole instances: a ``CAPACITY_PERCENT`` is rounded up to at least one (our
reading; the guide does not say), and its share of traffic is its share of the instances. So a
canary needs two instances at least, and 10 % of traffic needs ten.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TRAFFIC_MODES = ("ALL_AT_ONCE", "CANARY", "LINEAR")
MAX_WAIT_S = 3600
EXECUTION_TIMEOUT_RANGE_S = (600, 14400)
MAX_ALARMS = 10
CAPACITY_TYPES = ("INSTANCE_COUNT", "CAPACITY_PERCENT")
# The two alarms the stack makes for a rollout, and what they watch (AWS/SageMaker metrics).
NAMESPACE = "AWS/SageMaker"
ERRORS_METRIC = "Invocation5XXErrors"  # the variant: old and new fleet together
LATENCY_METRIC = "ModelLatency"  # microseconds; the new fleet, by its EndpointConfigName
NEW_FLEET_DIMENSION = "EndpointConfigName"
# The deploy function's settings for a rollout (the stack's parameters pass them).
ENV_NAMES = ("DEPLOYMENT_MODE", "TRAFFIC_STEP_PERCENT", "BAKE_SECONDS", "TERMINATION_WAIT_SECONDS",
             "MAX_DEPLOYMENT_SECONDS", "ROLLBACK_ALARMS", "NEW_FLEET_ALARM")


def errors_alarm_name(endpoint: str) -> str:
    return f"{endpoint}-invocation-5xx-errors"


def latency_alarm_name(endpoint: str) -> str:
    return f"{endpoint}-new-fleet-model-latency"


@dataclass(frozen=True)
class RolloutPolicy:
    """How approved versions reach the endpoint: the traffic mode, the canary or step size (a
    percentage of the instances), the baking period after each step, how long the old fleet is
    kept after, the deployment's time limit, and the alarms that roll it back. ``new_fleet_alarm``
    is the alarm the deploy function points at each new endpoint config before the update."""

    mode: str = "ALL_AT_ONCE"
    step_percent: int = 10
    bake_s: int = 0
    termination_wait_s: int = 0
    max_execution_s: int = 3600
    alarms: tuple[str, ...] = ()
    new_fleet_alarm: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RolloutPolicy:
        """The policy the settings name (``ENV_NAMES``; absent ones keep the defaults: all at
        once, no baking, no alarms, which is a plain blue/green update). ValueError names a bad one."""
        def number(name: str, default: int) -> int:
            text = (environ.get(name) or "").strip()
            if not text:
                return default
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{name} {text!r} is not a whole number") from None

        mode = (environ.get("DEPLOYMENT_MODE") or "ALL_AT_ONCE").strip().upper()
        if mode not in TRAFFIC_MODES:
            raise ValueError(f"DEPLOYMENT_MODE {mode!r} is not one of {', '.join(TRAFFIC_MODES)}")
        alarms = tuple(a.strip() for a in (environ.get("ROLLBACK_ALARMS") or "").split(",") if a.strip())
        default = cls()
        return cls(mode, number("TRAFFIC_STEP_PERCENT", default.step_percent), number("BAKE_SECONDS", default.bake_s),
                   number("TERMINATION_WAIT_SECONDS", default.termination_wait_s),
                   number("MAX_DEPLOYMENT_SECONDS", default.max_execution_s), alarms,
                   (environ.get("NEW_FLEET_ALARM") or "").strip())

    @property
    def guarded(self) -> bool:
        """Whether an update needs a DeploymentConfig at all (else: SageMaker's plain blue/green)."""
        return self.mode != "ALL_AT_ONCE" or bool(self.bake_s or self.termination_wait_s or self.alarms)

    def deployment_config(self) -> dict[str, Any] | None:
        """UpdateEndpoint's ``DeploymentConfig`` for this policy, or None when it needs none."""
        if not self.guarded:
            return None
        routing: dict[str, Any] = {"Type": self.mode, "WaitIntervalInSeconds": self.bake_s}
        size = {"Type": "CAPACITY_PERCENT", "Value": self.step_percent}
        if self.mode == "CANARY":
            routing["CanarySize"] = size
        elif self.mode == "LINEAR":
            routing["LinearStepSize"] = size
        config: dict[str, Any] = {"BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing, "TerminationWaitInSeconds": self.termination_wait_s,
            "MaximumExecutionTimeoutInSeconds": self.max_execution_s}}
        if self.alarms:
            config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": name} for name in self.alarms]}
        return config

    def problems(self, instance_count: int) -> list[str]:
        config = self.deployment_config()
        problems = deployment_problems(config, instance_count) if config else []
        if self.new_fleet_alarm and self.new_fleet_alarm not in self.alarms:
            problems.append(f"NEW_FLEET_ALARM {self.new_fleet_alarm!r} is not one of ROLLBACK_ALARMS")
        return problems


def capacity_instances(size: Mapping[str, Any], instance_count: int) -> int:
    """How many instances a CapacitySize is (a percentage rounded up, at least one)."""
    if size.get("Type") == "INSTANCE_COUNT":
        return int(size["Value"])
    return max(1, math.ceil(instance_count * int(size["Value"]) / 100))


def deployment_problems(config: Mapping[str, Any], instance_count: int) -> list[str]:
    """What SageMaker would refuse in an UpdateEndpoint ``DeploymentConfig`` for a variant of
    ``instance_count`` instances (a blue/green policy; rolling updates are not used here)."""
    policy = config.get("BlueGreenUpdatePolicy")
    if not isinstance(policy, Mapping):
        return ["DeploymentConfig needs a BlueGreenUpdatePolicy"]
    routing = policy.get("TrafficRoutingConfiguration") or {}
    mode, wait = str(routing.get("Type")), routing.get("WaitIntervalInSeconds")
    problems = []
    if mode not in TRAFFIC_MODES:
        problems.append(f"TrafficRoutingConfiguration.Type {mode!r} is not one of {', '.join(TRAFFIC_MODES)}")
    if not isinstance(wait, int) or not 0 <= wait <= MAX_WAIT_S:
        problems.append(f"WaitIntervalInSeconds {wait!r} is not between 0 and {MAX_WAIT_S}")
        wait = 0
    termination = policy.get("TerminationWaitInSeconds", 0)
    if not isinstance(termination, int) or not 0 <= termination <= MAX_WAIT_S:
        problems.append(f"TerminationWaitInSeconds {termination!r} is not between 0 and {MAX_WAIT_S}")
        termination = 0
    size_key = {"CANARY": "CanarySize", "LINEAR": "LinearStepSize"}.get(mode)
    size = routing.get(size_key) if size_key else None
    steps = 1
    if size_key:
        problem = _size_problem(size_key, size, instance_count, mode)
        if problem:
            problems.append(problem)
        else:
            steps = len(traffic_steps(config, instance_count))
    low, high = EXECUTION_TIMEOUT_RANGE_S
    timeout = policy.get("MaximumExecutionTimeoutInSeconds", low)
    if not isinstance(timeout, int) or not low <= timeout <= high:
        problems.append(f"MaximumExecutionTimeoutInSeconds {timeout!r} is not between {low} and {high}")
    elif timeout <= steps * wait + termination:
        problems.append(f"MaximumExecutionTimeoutInSeconds {timeout} must exceed the deployment's waits "
                        f"({steps} step(s) of {wait} s, then {termination} s before the old fleet goes)")
    alarms = (config.get("AutoRollbackConfiguration") or {}).get("Alarms")
    if alarms is not None and not (isinstance(alarms, list) and 1 <= len(alarms) <= MAX_ALARMS and all(
            isinstance(a, Mapping) and isinstance(a.get("AlarmName"), str) and a["AlarmName"] for a in alarms)):
        problems.append(f"AutoRollbackConfiguration.Alarms must name 1 to {MAX_ALARMS} alarms")
    return problems


def _size_problem(key: str, size: Any, instance_count: int, mode: str) -> str | None:
    if not isinstance(size, Mapping) or size.get("Type") not in CAPACITY_TYPES or not isinstance(size.get("Value"), int) \
            or size["Value"] < 1:
        return f"{mode} needs {key} with Type {' or '.join(CAPACITY_TYPES)} and a Value of at least 1"
    instances = capacity_instances(size, instance_count)
    if 2 * instances > instance_count:
        return (f"{key} {size['Value']} ({size['Type']}) is {instances} of {instance_count} instance(s): it must be at "
                f"most half of the variant's instances, so {mode} needs at least 2 instances")
    if mode == "LINEAR" and 10 * instances < instance_count:
        return f"{key} is {instances} of {instance_count} instances: a linear step must be 10 to 50 % of them"
    return None


def traffic_steps(config: Mapping[str, Any], instance_count: int) -> list[float]:
    """The new fleet's share of the traffic after each step, ending at 1.0 (the config checked first)."""
    routing = config["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    if routing["Type"] == "ALL_AT_ONCE":
        return [1.0]
    if routing["Type"] == "CANARY":
        return [capacity_instances(routing["CanarySize"], instance_count) / instance_count, 1.0]
    step = capacity_instances(routing["LinearStepSize"], instance_count)
    return [min(n, instance_count) / instance_count for n in range(step, instance_count + step, step)]
