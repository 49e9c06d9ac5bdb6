"""Resolve the expressions of a SageMaker Pipelines definition, as the service does.

A step's ``Arguments`` hold plain JSON with expressions inside; before a step runs, every
expression is replaced by its value for this execution:

- ``{"Get": "Parameters.<Name>"}``: the execution's value, else the declared ``DefaultValue``,
  cast by the parameter's ``Type`` (String, Integer, Float, Boolean);
- ``{"Get": "Execution.<Variable>"}``: PipelineName, PipelineArn, PipelineExecutionId,
  PipelineExecutionArn, StartDateTime, CurrentDateTime (and TrainingJobName /
  ProcessingJobName when the executor supplies them for the step being resolved);
- ``{"Get": "Steps.<Step>.<Path>"}``: a property of a step that already ran, read from the
  properties the executor recorded for it (the shape of the Describe*Job response), with
  ``Outputs['train']`` selecting the list member whose ``OutputName`` (or ``ChannelName``…)
  is ``train``, as SageMaker's property model does;
- ``{"Std:Join": {"On": sep, "Values": [...]}}``: values resolved, then stringified;
- ``{"Std:JsonGet": {"PropertyFile": {"Get": "Steps.<Step>.PropertyFiles.<Name>"}, "Path": p}}``
  (or with ``S3Uri`` instead of ``PropertyFile``): a value read from a JSON file a step wrote.

Nothing here reads files or clocks: the context carries callables for that, so that the
semantics are testable without an execution.

Stringification (``Std:Join``): strings as they are; integers in decimal; floats as Python's
shortest round-trip repr (``0.88``, ``1.0``); booleans ``true``/``false``; null ``null``.
This matches SageMaker's JSON-based rendering for the values pipelines use; floats with
exponents (``1e-05``) may be written differently by the service (``1.0E-5``).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlops_rules import parameters as rules
from pipeline.local.aws_identity import ACCOUNT, REGION, execution_arn, pipeline_arn

JsonValue = Any
PropertyFileReader = Callable[[str, str], JsonValue]
S3JsonReader = Callable[[str], JsonValue]


class ExpressionError(ValueError):
    """An expression that cannot be resolved: unknown, malformed, or pointing at nothing."""


# --- parameters ---------------------------------------------------------------------------

def cast_parameter(declaration: Mapping[str, Any], value: Any) -> Any:
    """``value`` as the declared Type (mlops_rules.parameters: the same reading as the SageMaker
    backend's and the retrain function's): ``"400"`` is 400 for an Integer."""
    try:
        return rules.cast_parameter(declaration, value)
    except rules.ParameterError as error:
        raise ExpressionError(str(error)) from None


def parameter_values(definition: Mapping[str, Any], given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every declared parameter's value for one execution: given, else default, cast by Type.
    An undeclared name is refused, as SageMaker refuses it."""
    try:
        return rules.parameter_values(definition, given)
    except rules.ParameterError as error:
        raise ExpressionError(str(error)) from None


# --- execution variables ------------------------------------------------------------------

def format_datetime(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``: the form SageMaker's APIs print."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def execution_variables(pipeline_name: str, execution_id: str, start: datetime, region: str = REGION,
                        account: str = ACCOUNT) -> dict[str, str]:
    """The ``Execution.*`` values of one execution, with the ARNs the state records for it."""
    return {
        "PipelineName": pipeline_name,
        "PipelineArn": pipeline_arn(pipeline_name, region=region, account=account),
        "PipelineExecutionId": execution_id,
        "PipelineExecutionArn": execution_arn(pipeline_name, execution_id, region=region, account=account),
        "StartDateTime": format_datetime(start),
    }


# --- the context --------------------------------------------------------------------------

@dataclass(frozen=True)
class ExecutionContext:
    """What expressions are resolved against: the executor builds one and updates it
    (``with_step_properties``) as steps finish.

    ``now`` gives ``Execution.CurrentDateTime`` (a formatted string); ``read_property_file``
    returns the parsed JSON of (step, property-file name); ``read_s3_json`` the parsed JSON at
    an ``s3://`` URI (``Std:JsonGet`` with ``S3Uri``)."""

    parameters: Mapping[str, Any]
    execution: Mapping[str, Any]
    step_properties: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    read_property_file: PropertyFileReader | None = None
    read_s3_json: S3JsonReader | None = None
    now: Callable[[], str] | None = None

    def with_step_properties(self, step: str, properties: Mapping[str, Any]) -> ExecutionContext:
        """A copy that also knows ``step``'s properties (the context itself never changes)."""
        merged = {**self.step_properties, step: properties}
        return ExecutionContext(self.parameters, self.execution, merged, self.read_property_file,
                                self.read_s3_json, self.now)

    def with_execution(self, **variables: Any) -> ExecutionContext:
        """A copy with more ``Execution.*`` variables (e.g. the step's TrainingJobName)."""
        return ExecutionContext(self.parameters, {**self.execution, **variables}, self.step_properties,
                                self.read_property_file, self.read_s3_json, self.now)


# --- paths ----------------------------------------------------------------------------------

_TOKEN = re.compile(r"""\.?(?P<key>[^.\[\]'"]+)|\[(?P<index>-?\d+)\]|\['(?P<sq>[^']*)'\]|\["(?P<dq>[^"]*)"\]""")
PathToken = tuple[str, Any]  # ("key", name) | ("index", int)


def parse_path(path: str) -> list[PathToken]:
    """``a.b['x'][0].c`` as tokens; a JsonPath's leading ``$`` / ``$.`` is accepted."""
    if not isinstance(path, str) or not path:
        raise ExpressionError(f"empty or non-string path: {path!r}")
    text = path[1:] if path.startswith("$") else path
    tokens: list[PathToken] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        glued_key = match is not None and match.group("key") is not None and position and text[position] != "."
        if not match or match.end() == position or glued_key:
            raise ExpressionError(f"malformed path {path!r} at {text[position:]!r}")
        tokens.append(_token(match))
        position = match.end()
    if not tokens:
        raise ExpressionError(f"empty path: {path!r}")
    return tokens


def _token(match: re.Match) -> PathToken:
    if match.group("index") is not None:
        return ("index", int(match.group("index")))
    for group in ("key", "sq", "dq"):
        if match.group(group) is not None:
            return ("key", match.group(group))
    raise AssertionError("unreachable")


# List members that string indexes select: SageMaker's property model maps Outputs['train'] to
# the member whose name field is "train".
_NAME_FIELDS = ("OutputName", "InputName", "ChannelName", "MetricName", "Name", "Key")


def _member_named(items: list, name: str) -> Any:
    for item in items:
        if isinstance(item, Mapping) and any(item.get(f) == name for f in _NAME_FIELDS):
            return item
    raise KeyError(name)


def _step(value: Any, token: PathToken) -> Any:
    kind, key = token
    if kind == "index":
        if not isinstance(value, list):
            raise KeyError(key)
        return value[key]
    if isinstance(value, Mapping):
        return value[key]
    if isinstance(value, list):
        return _member_named(value, key)
    raise KeyError(key)


def read_path(value: Any, path: str, what: str) -> Any:
    """The value at ``path`` inside ``value``; ``what`` names the expression in errors."""
    for token in parse_path(path):
        try:
            value = _step(value, token)
        except (KeyError, IndexError, TypeError):
            raise ExpressionError(f"{what}: nothing at {token[1]!r} of path {path!r}") from None
    return value


# --- stringification ----------------------------------------------------------------------

def stringify(value: Any) -> str:
    """How a resolved value is written into a string (``Std:Join``, String parameters)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    raise ExpressionError(f"cannot write a {type(value).__name__} into a string: {value!r}")


# --- resolution ---------------------------------------------------------------------------

_FUNCTIONS = ("Get", "Std:Join", "Std:JsonGet")


def is_expression(value: Any) -> bool:
    """A dict is an expression when it has a ``Get`` key or a ``Std:`` function key."""
    return isinstance(value, Mapping) and any(k == "Get" or str(k).startswith("Std:") for k in value)


def resolve(value: Any, context: ExecutionContext) -> Any:
    """``value`` with every expression inside it (at any depth) replaced by its value."""
    if is_expression(value):
        return evaluate(value, context)
    if isinstance(value, Mapping):
        return {key: resolve(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, context) for item in value]
    return value


def evaluate(expression: Mapping[str, Any], context: ExecutionContext) -> Any:
    """The value of one expression dict."""
    if len(expression) != 1:
        raise ExpressionError(f"malformed expression (one key expected): {expression!r}")
    (function, argument), = expression.items()
    if function == "Get":
        return _get(argument, context)
    if function == "Std:Join":
        return _join(argument, context)
    if function == "Std:JsonGet":
        return _json_get(argument, context)
    raise ExpressionError(f"unknown function {function!r} in {expression!r}; known: {list(_FUNCTIONS)}")


def _get(reference: Any, context: ExecutionContext) -> Any:
    if not isinstance(reference, str) or "." not in reference:
        raise ExpressionError(f"malformed Get: {reference!r}")
    root, rest = reference.split(".", 1)
    if root == "Parameters":
        return _lookup(context.parameters, rest, f"Get {reference}: no such parameter")
    if root == "Execution":
        return _execution_variable(rest, context, reference)
    if root == "Steps":
        return step_property(reference, context)
    raise ExpressionError(f"Get {reference}: unknown root {root!r} (Parameters, Execution, Steps)")


def _lookup(values: Mapping[str, Any], name: str, message: str) -> Any:
    if name not in values:
        raise ExpressionError(f"{message} (known: {sorted(values)})")
    return values[name]


def _execution_variable(name: str, context: ExecutionContext, reference: str) -> Any:
    if name == "CurrentDateTime" and "CurrentDateTime" not in context.execution:
        if context.now is None:
            raise ExpressionError(f"Get {reference}: the context has no clock")
        return context.now()
    return _lookup(context.execution, name, f"Get {reference}: no such execution variable")


def split_step_reference(reference: str) -> tuple[str, str]:
    """``Steps.Train.ModelArtifacts.S3ModelArtifacts`` as ("Train", "ModelArtifacts.S3ModelArtifacts")."""
    match = re.fullmatch(r"Steps\.([A-Za-z0-9_-]+)\.(.+)", reference or "")
    if not match:
        raise ExpressionError(f"malformed step reference: {reference!r}")
    return match.group(1), match.group(2)


def step_property(reference: str, context: ExecutionContext) -> Any:
    """The value of ``Steps.<Step>.<Path>`` from the properties recorded for that step."""
    step, path = split_step_reference(reference)
    if path.startswith("PropertyFiles."):
        raise ExpressionError(f"Get {reference}: a property file is read with Std:JsonGet, not Get")
    if step not in context.step_properties:
        raise ExpressionError(f"Get {reference}: step {step!r} has no properties (has it run?)")
    return read_path(context.step_properties[step], path, f"Get {reference}")


def _join(argument: Any, context: ExecutionContext) -> str:
    if not isinstance(argument, Mapping) or not isinstance(argument.get("Values"), list):
        raise ExpressionError(f"malformed Std:Join (needs On and a Values list): {argument!r}")
    separator = argument.get("On", "")
    if not isinstance(separator, str):
        raise ExpressionError(f"Std:Join: On must be a string: {separator!r}")
    return separator.join(stringify(resolve(value, context)) for value in argument["Values"])


def property_file_reference(argument: Mapping[str, Any]) -> tuple[str, str]:
    """(step, property-file name) of a ``Std:JsonGet``'s ``PropertyFile``."""
    source = argument.get("PropertyFile")
    reference = source.get("Get") if isinstance(source, Mapping) and len(source) == 1 else None
    match = re.fullmatch(r"Steps\.([A-Za-z0-9_-]+)\.PropertyFiles\.([A-Za-z0-9_-]+)", reference or "")
    if not match:
        raise ExpressionError(f"Std:JsonGet: malformed PropertyFile {source!r}")
    return match.group(1), match.group(2)


def _json_get(argument: Any, context: ExecutionContext) -> Any:
    if not isinstance(argument, Mapping) or "Path" not in argument:
        raise ExpressionError(f"malformed Std:JsonGet (needs Path): {argument!r}")
    document, source = _json_document(argument, context)
    return read_path(document, argument["Path"], f"Std:JsonGet {source}")


def _json_document(argument: Mapping[str, Any], context: ExecutionContext) -> tuple[Any, str]:
    if "PropertyFile" in argument:
        step, name = property_file_reference(argument)
        if context.read_property_file is None:
            raise ExpressionError(f"Std:JsonGet {step}.{name}: the context cannot read property files")
        return context.read_property_file(step, name), f"{step}.PropertyFiles.{name}"
    if "S3Uri" in argument:
        uri = resolve(argument["S3Uri"], context)
        if context.read_s3_json is None or not isinstance(uri, str):
            raise ExpressionError(f"Std:JsonGet {uri!r}: the context cannot read JSON from S3 URIs")
        return context.read_s3_json(uri), uri
    raise ExpressionError(f"Std:JsonGet needs a PropertyFile or an S3Uri: {argument!r}")


def iter_expressions(value: Any) -> Iterator[Mapping[str, Any]]:
    """Every expression inside ``value``, outermost first, nested ones too (``Std:Join``'s
    values): the graph uses it to find the steps a step reads from."""
    if is_expression(value):
        yield value
        for argument in value.values():
            yield from iter_expressions(argument)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from iter_expressions(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_expressions(item)


def referenced_steps(value: Any) -> list[str]:
    """The steps whose properties or property files ``value``'s expressions read, in order."""
    names: list[str] = []
    for expression in iter_expressions(value):
        reference = expression.get("Get")
        if isinstance(reference, str) and reference.startswith("Steps."):
            step = split_step_reference(reference)[0]
            if step not in names:
                names.append(step)
    return names
