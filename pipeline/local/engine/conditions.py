"""Evaluate a ConditionStep's ``Conditions`` as SageMaker Pipelines does.

The JSON shapes are the ones the SDK emits (``sagemaker.core.workflow.conditions``):

- comparisons: ``{"Type": "Equals" | "GreaterThan" | "GreaterThanOrEqualTo" | "LessThan" |
  "LessThanOrEqualTo", "LeftValue": v, "RightValue": v}``;
- ``{"Type": "In", "QueryValue": v, "Values": [v, ...]}``;
- ``{"Type": "Not", "Condition": c}`` (the service refuses the older ``Expression`` key:
  aws/sagemaker-python-sdk#2746, so it is refused here too rather than accepted locally);
- ``{"Type": "Or", "Conditions": [c, ...]}``.

A step's ``Conditions`` list holds when every condition holds. Every condition of a list is
evaluated (no short-circuit), so an unresolvable expression is reported whatever the order.

Comparison choices (the service does not document them; these keep local runs strict):

- numbers compare numerically (``1 == 1.0``); a string that spells a number is compared as
  that number when the other side is a number (``Std:Join`` turns parameters into strings);
- two strings compare as strings for ``Equals`` / ``In``;
- booleans equal booleans, or the strings ``"true"`` / ``"false"`` (any case); a boolean
  never equals a number;
- ordering (``GreaterThan``…) needs two numbers after that coercion: anything else raises
  ``ConditionError`` instead of guessing an order;
- a null on either side raises ``ConditionError``.
"""
from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipeline.local.engine.expressions import ExecutionContext, ExpressionError, resolve


class ConditionError(ExpressionError):
    """A condition that cannot be evaluated: unknown type, missing field, incomparable values."""


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_ORDERINGS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThan": operator.gt, "GreaterThanOrEqualTo": operator.ge,
    "LessThan": operator.lt, "LessThanOrEqualTo": operator.le}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_number(value: Any) -> float | int | None:
    """The number ``value`` is or spells, else None."""
    if _is_number(value):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value)
        return int(number) if number.is_integer() and re.fullmatch(r"[+-]?\d+", value.strip()) else number
    return None


def _as_boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _check_present(left: Any, right: Any, where: str) -> None:
    if left is None or right is None:
        raise ConditionError(f"{where}: cannot compare a null value ({left!r}, {right!r})")
    for value in (left, right):
        if isinstance(value, (Mapping, list)):
            raise ConditionError(f"{where}: cannot compare a {type(value).__name__}: {value!r}")


def values_equal(left: Any, right: Any, where: str = "Equals") -> bool:
    """Equality with the coercions documented above."""
    _check_present(left, right, where)
    if isinstance(left, bool) or isinstance(right, bool):
        a, b = _as_boolean(left), _as_boolean(right)
        return a is not None and b is not None and a == b
    if _is_number(left) or _is_number(right):
        x, y = _as_number(left), _as_number(right)
        return x is not None and y is not None and x == y
    return left == right


def compare(kind: str, left: Any, right: Any) -> bool:
    """``left <kind> right`` for the ordering comparisons, on numbers only."""
    _check_present(left, right, kind)
    a, b = _as_number(left), _as_number(right)
    if a is None or b is None or isinstance(left, bool) or isinstance(right, bool):
        raise ConditionError(f"{kind}: needs two numbers, got {left!r} and {right!r}")
    if any(isinstance(x, float) and math.isnan(x) for x in (a, b)):
        return False
    return _ORDERINGS[kind](a, b)


def _field(condition: Mapping[str, Any], name: str) -> Any:
    if name not in condition:
        raise ConditionError(f"{condition.get('Type')} condition without {name}: {condition!r}")
    return condition[name]


def _comparison(condition: Mapping[str, Any], context: ExecutionContext) -> bool:
    kind = condition["Type"]
    left = resolve(_field(condition, "LeftValue"), context)
    right = resolve(_field(condition, "RightValue"), context)
    return values_equal(left, right) if kind == "Equals" else compare(kind, left, right)


def _in(condition: Mapping[str, Any], context: ExecutionContext) -> bool:
    query = resolve(_field(condition, "QueryValue"), context)
    values = resolve(_field(condition, "Values"), context)
    if not isinstance(values, list):
        raise ConditionError(f"In condition: Values must be a list: {values!r}")
    return any([values_equal(query, value, "In") for value in values])


def _not(condition: Mapping[str, Any], context: ExecutionContext) -> bool:
    if "Expression" in condition and "Condition" not in condition:
        raise ConditionError("Not condition uses 'Expression', which SageMaker refuses: use 'Condition'")
    return not evaluate_condition(_field(condition, "Condition"), context)


def _or(condition: Mapping[str, Any], context: ExecutionContext) -> bool:
    conditions = _field(condition, "Conditions")
    if not isinstance(conditions, list) or not conditions:
        raise ConditionError(f"Or condition needs a non-empty Conditions list: {condition!r}")
    return any([evaluate_condition(c, context) for c in conditions])


def evaluate_condition(condition: Mapping[str, Any], context: ExecutionContext) -> bool:
    """Whether one condition holds."""
    if not isinstance(condition, Mapping) or "Type" not in condition:
        raise ConditionError(f"malformed condition (no Type): {condition!r}")
    kind = condition["Type"]
    if kind == "Equals" or kind in _ORDERINGS:
        return _comparison(condition, context)
    handlers = {"In": _in, "Not": _not, "Or": _or}
    if kind not in handlers:
        raise ConditionError(f"unknown condition type {kind!r}: {condition!r}")
    return handlers[kind](condition, context)


def evaluate_conditions(conditions: Sequence[Mapping[str, Any]], context: ExecutionContext) -> bool:
    """Whether a ConditionStep's ``Conditions`` all hold (its outcome: IfSteps or ElseSteps)."""
    if not isinstance(conditions, list):
        raise ConditionError(f"Conditions must be a list: {conditions!r}")
    return all([evaluate_condition(c, context) for c in conditions])


def condition_step_outcome(step: Mapping[str, Any], context: ExecutionContext) -> bool:
    """The outcome of a ``Type: Condition`` step of the definition."""
    if step.get("Type") != "Condition":
        raise ConditionError(f"step {step.get('Name')!r} is not a Condition step")
    return evaluate_conditions((step.get("Arguments") or {}).get("Conditions", []), context)
