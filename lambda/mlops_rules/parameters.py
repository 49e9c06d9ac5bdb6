"""Pipeline parameters as SageMaker types them: one reading of ``"8"``, ``8.0`` or ``"NaN"`` for
the local runtime, the start of an execution on SageMaker and the retrain trigger alike."""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

# The data's two parameters, which the retrain trigger sets and the unchanged-since rule reads.
INPUT_PARAMETER, VERSION_PARAMETER = "InputDataUri", "InputDataVersion"
PARAMETER_TYPES = ("String", "Integer", "Float", "Boolean")
_INTEGER = re.compile(r"^[+-]?\d+$")


class ParameterError(ValueError):
    """A value its parameter's Type or EnumValues refuses, or a name the definition lacks."""


def _as_integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():  # 4.0 from a JSON number is 4
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    raise ValueError("a whole number")


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError("a number") from None
    if not math.isfinite(number):  # SageMaker's conditions cannot compare NaN; a threshold of inf passes nothing
        raise ValueError("a finite number")
    return number


def _as_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("true or false")


def _as_string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


_CASTS: dict[str, Callable[[Any], Any]] = {
    "String": _as_string, "Integer": _as_integer, "Float": _as_float, "Boolean": _as_boolean}


def cast_parameter(declaration: Mapping[str, Any], value: Any) -> Any:
    """``value`` as its declared Type means it: StartPipelineExecution passes every value as a
    string, a command line too, so ``"400"`` is 400 for an Integer. ParameterError says what
    the parameter needs."""
    name, kind = declaration.get("Name"), declaration.get("Type", "String")
    if kind not in _CASTS:
        raise ParameterError(f"parameter {name}: unknown Type {kind!r}; use one of {', '.join(PARAMETER_TYPES)}")
    try:
        cast = _CASTS[kind](value)
    except ValueError as error:
        raise ParameterError(f"{name} ({kind}) needs {error}, got {value!r}") from None
    allowed = declaration.get("EnumValues")
    if allowed and cast not in allowed and str(cast) not in [str(v) for v in allowed]:
        raise ParameterError(f"{name} ({kind}) needs one of {', '.join(map(str, allowed))}, got {value!r}")
    return cast


def parameter_text(declaration: Mapping[str, Any], value: Any) -> str:
    """The value as the string StartPipelineExecution sends (``8``, ``0.9``, ``true``)."""
    cast = cast_parameter(declaration, value)
    if isinstance(cast, bool):
        return "true" if cast else "false"
    return repr(cast) if isinstance(cast, float) else str(cast)


def declared_parameters(definition: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The definition's parameter declarations by name."""
    return {p["Name"]: p for p in definition.get("Parameters") or [] if isinstance(p, Mapping) and "Name" in p}


def check_names(definition: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The declarations, once every name in ``given`` is declared: SageMaker refuses an unknown
    name, and a typo would otherwise run with the default."""
    declared = declared_parameters(definition)
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ParameterError(f"unknown pipeline parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                             f"valid names are {', '.join(declared)}")
    return declared


def parameter_values(definition: Mapping[str, Any], given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every declared parameter's value for one execution: given, else its default, cast by Type."""
    given = dict(given or {})
    values: dict[str, Any] = {}
    for name, declaration in check_names(definition, given).items():
        if name in given:
            values[name] = cast_parameter(declaration, given[name])
        elif "DefaultValue" in declaration:
            values[name] = cast_parameter(declaration, declaration["DefaultValue"])
        else:
            raise ParameterError(f"parameter {name} has no DefaultValue and no value was given")
    return values


def effective_parameters(definition: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every declared parameter's value as an execution ran it, for comparing two executions:
    given, else the default; cast by Type, or kept as text where it does not cast (an execution
    that ran holds what it ran, even if the rule has since become stricter).

    ListPipelineParametersForExecution's documentation does not say whether defaults are
    listed; comparing effective values holds either way."""
    values: dict[str, Any] = {}
    for name, declaration in declared_parameters(definition).items():
        value = given[name] if name in given else declaration.get("DefaultValue")
        try:
            values[name] = cast_parameter(declaration, value)
        except ParameterError:
            values[name] = str(value)
    return values
