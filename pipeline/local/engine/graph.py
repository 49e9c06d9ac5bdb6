"""Which steps of a definition run, and in what order, as SageMaker Pipelines schedules them.

A step depends on the steps named in its ``DependsOn`` and on every step whose properties or
property files its expressions read (``Get: Steps.X…``, ``Std:JsonGet`` of
``Steps.X.PropertyFiles.…``). Steps in a ConditionStep's ``IfSteps`` / ``ElseSteps`` are
*branch* steps: they also depend on the condition step, and run only when its outcome chose
their branch. A step that depends on a step that will never run (an unchosen branch, or a
step skipped for that reason) is skipped too: it can never have its inputs.

The executor drives a ``Plan``: it asks ``ready_steps(done, outcomes)``, runs them, records
each finished step in ``done`` and each condition's outcome in ``outcomes``, and asks again
until ``remaining`` is empty (or a step fails: stopping is the executor's decision).
Ties are broken by definition order (the order steps appear in the JSON, branch steps right
after their condition), so that every local run schedules the same way.
"""
from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.local.engine.expressions import ExpressionError, referenced_steps


class GraphError(ValueError):
    """A definition whose steps cannot be scheduled: duplicates, unknown references, cycles."""


_BRANCHES = (("IfSteps", True), ("ElseSteps", False))


@dataclass(frozen=True)
class StepNode:
    """One step: its definition, what it waits for, and the branch it belongs to, if any."""

    name: str
    type: str
    definition: Mapping[str, Any]
    dependencies: tuple[str, ...]
    position: int
    condition: str | None = None  # the ConditionStep whose branch holds this step
    branch: bool | None = None    # True: IfSteps, False: ElseSteps

    def arguments(self) -> Mapping[str, Any]:
        """The step's ``Arguments``, without a condition's nested branch steps (their own
        arguments are resolved when they run, not when the condition does)."""
        return _own_arguments(self.definition)


def _own_arguments(step: Mapping[str, Any]) -> dict[str, Any]:
    arguments = dict(step.get("Arguments") or {})
    if step.get("Type") == "Condition":
        for key, _ in _BRANCHES:
            arguments.pop(key, None)
    return arguments


def _flatten(steps: list, condition: str | None = None, branch: bool | None = None,
             out: list | None = None) -> list[tuple[Mapping[str, Any], str | None, bool | None]]:
    """Every step, in definition order, each with the condition branch it sits in."""
    out = [] if out is None else out
    for step in steps or []:
        if not isinstance(step, Mapping) or not isinstance(step.get("Name"), str):
            raise GraphError(f"malformed step (no Name): {step!r}")
        out.append((step, condition, branch))
        if step.get("Type") == "Condition":
            for key, outcome in _BRANCHES:
                _flatten((step.get("Arguments") or {}).get(key) or [], step["Name"], outcome, out)
    return out


def _dependencies(step: Mapping[str, Any], condition: str | None, arguments: Mapping[str, Any]) -> tuple[str, ...]:
    depends_on = step.get("DependsOn") or []
    if not isinstance(depends_on, list) or not all(isinstance(name, str) for name in depends_on):
        raise GraphError(f"step {step['Name']}: DependsOn must be a list of step names: {depends_on!r}")
    try:
        referenced = referenced_steps(arguments)
    except ExpressionError as error:
        raise GraphError(f"step {step['Name']}: {error}") from None
    names = ([condition] if condition else []) + list(depends_on) + referenced
    return tuple(dict.fromkeys(names))


def _node(position: int, step: Mapping[str, Any], condition: str | None, branch: bool | None) -> StepNode:
    dependencies = _dependencies(step, condition, _own_arguments(step))
    return StepNode(step["Name"], str(step.get("Type")), step, dependencies, position, condition, branch)


def _check_references(nodes: Mapping[str, StepNode]) -> None:
    for node in nodes.values():
        for dependency in node.dependencies:
            if dependency == node.name:
                raise GraphError(f"step {node.name} depends on itself")
            if dependency not in nodes:
                raise GraphError(f"step {node.name} refers to unknown step {dependency!r}; "
                                 f"steps: {list(nodes)}")


def _find_cycle(nodes: Mapping[str, StepNode], left: Collection[str]) -> list[str]:
    """One dependency cycle among the steps ``left`` unsorted, for the error message."""
    path: list[str] = []
    current = min(left, key=lambda name: nodes[name].position)
    while current not in path:
        path.append(current)
        current = next(d for d in nodes[current].dependencies if d in left)
    return path[path.index(current):] + [current]


def _topological_order(nodes: Mapping[str, StepNode]) -> tuple[str, ...]:
    """Kahn's algorithm; among the steps ready together, the earliest in the definition first."""
    waiting = {name: set(node.dependencies) for name, node in nodes.items()}
    heap = [(node.position, name) for name, node in nodes.items() if not waiting[name]]
    heapq.heapify(heap)
    order: list[str] = []
    while heap:
        _, name = heapq.heappop(heap)
        order.append(name)
        for other, needs in waiting.items():
            if name in needs:
                needs.discard(name)
                if not needs:
                    heapq.heappush(heap, (nodes[other].position, other))
    if len(order) < len(nodes):
        cycle = _find_cycle(nodes, set(nodes) - set(order))
        raise GraphError(f"dependency cycle: {' -> '.join(cycle)}")
    return tuple(order)


@dataclass(frozen=True)
class Plan:
    """The schedule of one definition; immutable, queried with the execution's progress."""

    nodes: Mapping[str, StepNode]
    order: tuple[str, ...]

    def step(self, name: str) -> StepNode:
        if name not in self.nodes:
            raise GraphError(f"unknown step {name!r}")
        return self.nodes[name]

    def _unchosen(self, node: StepNode, skipped: set[str], outcomes: Mapping[str, bool]) -> bool:
        if node.condition is None:
            return False
        return node.condition in skipped or (node.condition in outcomes and outcomes[node.condition] != node.branch)

    def skipped_steps(self, done: Collection[str], outcomes: Mapping[str, bool]) -> tuple[str, ...]:
        """Steps that will never run: in a branch the condition did not choose, or waiting on
        such a step."""
        self._check_outcomes(done, outcomes)
        skipped: set[str] = set()
        for name in self.order:
            node = self.nodes[name]
            if name not in done and (self._unchosen(node, skipped, outcomes)
                                     or any(d in skipped for d in node.dependencies)):
                skipped.add(name)
        return tuple(n for n in self.order if n in skipped)

    def ready_steps(self, done: Collection[str], outcomes: Mapping[str, bool],
                    started: Collection[str] = ()) -> tuple[str, ...]:
        """Steps that may start now: not started, not skipped, every dependency done, and, for
        a branch step, its condition's outcome chose its branch."""
        skipped = set(self.skipped_steps(done, outcomes))
        return tuple(name for name in self.order
                     if name not in done and name not in started and name not in skipped
                     and all(d in done for d in self.nodes[name].dependencies))

    def remaining(self, done: Collection[str], outcomes: Mapping[str, bool]) -> tuple[str, ...]:
        """Steps that have neither run nor been ruled out: empty when the execution is over."""
        skipped = set(self.skipped_steps(done, outcomes))
        return tuple(n for n in self.order if n not in done and n not in skipped)

    def _check_outcomes(self, done: Collection[str], outcomes: Mapping[str, bool]) -> None:
        for name in outcomes:
            if self.step(name).type != "Condition":
                raise GraphError(f"an outcome was given for {name!r}, which is not a Condition step")
        for name in done:
            node = self.step(name)
            if node.type == "Condition" and name not in outcomes:
                raise GraphError(f"condition step {name!r} is done but its outcome was not given")


def build_plan(definition: Mapping[str, Any]) -> Plan:
    """The plan of a definition (the dict of its JSON); raises ``GraphError`` when the steps
    have duplicate names, refer to unknown steps, or form a cycle."""
    if not isinstance(definition, Mapping) or not isinstance(definition.get("Steps"), list):
        raise GraphError("a definition needs a Steps list")
    nodes: dict[str, StepNode] = {}
    for position, (step, condition, branch) in enumerate(_flatten(definition["Steps"])):
        if step["Name"] in nodes:
            raise GraphError(f"duplicate step name {step['Name']!r}")
        nodes[step["Name"]] = _node(position, step, condition, branch)
    _check_references(nodes)
    return Plan(nodes, _topological_order(nodes))
