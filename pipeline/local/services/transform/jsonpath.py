"""The JSONPath that a Batch Transform's ``DataProcessing`` takes, as SageMaker documents it
("Supported JSONPath Operators", batch-transform-data-processing), and nothing more: a filter
that works here works there, and one SageMaker refuses is refused here.

- ``$``: the whole record;
- ``.name``: a child by name (``$.features``, ``$.a.b``);
- ``*``: every child (``$.*``, ``$[*]``): the value itself;
- ``['a','b']``: children by name; one name gives the value, several an object of those keys
  (``$['id','SageMakerOutput']``);
- ``[1]``, ``[1,3,5]``, ``[-1]``: elements by index, negative from the end; several give an array;
- ``[2:5]``, ``[:5]``, ``[2:]``: a slice (end excluded), and unions of indexes and slices
  (``$[0,5:]``) give an array.

Further nesting inside brackets (``$.a['b.c']``), filters (``?()``), recursive descent (``..``)
and scripts are not SageMaker's and are refused. An expression is at most 63 characters, the
API's limit. Pure functions: no I/O.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_EXPRESSION_CHARS = 63


class JsonPathError(ValueError):
    """An expression SageMaker would refuse, or a record it cannot be applied to."""


@dataclass(frozen=True)
class _Names:
    names: tuple[str, ...]


@dataclass(frozen=True)
class _Indexes:
    parts: tuple[int | slice, ...]  # ints and slices, in the order given


@dataclass(frozen=True)
class _Everything:
    pass


_Selector = _Names | _Indexes | _Everything

_NAME = re.compile(r"\.([A-Za-z_$][\w$-]*)")
_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")
_INTEGER = re.compile(r"-?\d+")


def _parse_bracket(inside: str, expression: str) -> _Selector:
    """``['a','b']``, ``[1,-1]``, ``[2:5]``, ``[0,5:]`` or ``[*]``, without the brackets."""
    inside = inside.strip()
    if inside == "*":
        return _Everything()
    items = [item.strip() for item in inside.split(",")]
    if all(item.startswith("'") for item in items):
        names = []
        for item in items:
            match = _QUOTED.fullmatch(item)
            if match is None or "." in match.group(1) or "[" in match.group(1):
                raise JsonPathError(f"{expression!r}: a bracketed name must be one quoted name with no nesting, as in "
                                    "$['id','SageMakerOutput']")
            names.append(match.group(1).replace("\\'", "'"))
        return _Names(tuple(names))
    parts: list[int | slice] = []
    for item in items:
        if ":" in item:
            start, _, end = item.partition(":")
            if ":" in end or not all(_INTEGER.fullmatch(b.strip()) for b in (start, end) if b.strip()):
                raise JsonPathError(f"{expression!r}: a slice is [start:end] with whole numbers, either may be left out")
            parts.append(slice(int(start) if start.strip() else None, int(end) if end.strip() else None))
        elif _INTEGER.fullmatch(item):
            parts.append(int(item))
        else:
            raise JsonPathError(f"{expression!r}: {item!r} is neither a quoted name, an index nor a slice")
    return _Indexes(tuple(parts))


@dataclass(frozen=True)
class JsonPath:
    """A parsed expression; ``apply`` selects from one record."""

    expression: str
    selectors: tuple[_Selector, ...]

    @property
    def is_identity(self) -> bool:
        """``$`` (or only wildcards): the record as it is, so nothing need be parsed."""
        return all(isinstance(s, _Everything) for s in self.selectors)

    def apply(self, record: Any) -> Any:
        value = record
        for selector in self.selectors:
            value = _select(value, selector, self.expression)
        return value


def compile_path(expression: str) -> JsonPath:
    """Parse ``expression``; JsonPathError with the reason if SageMaker would not take it."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise JsonPathError(f"{expression[:20]!r}... has {len(expression)} characters; SageMaker takes at most "
                            f"{MAX_EXPRESSION_CHARS}")
    text = expression.strip()
    if not text.startswith("$"):
        raise JsonPathError(f"{expression!r} does not start with $, the record")
    selectors: list[_Selector] = []
    at = 1
    while at < len(text):
        if text.startswith("..", at):
            raise JsonPathError(f"{expression!r}: recursive descent (..) is not among SageMaker's JSONPath operators")
        if text.startswith(".*", at):
            selectors.append(_Everything())
            at += 2
            continue
        name = _NAME.match(text, at)
        if name is not None:
            selectors.append(_Names((name.group(1),)))
            at = name.end()
            continue
        if text.startswith("[", at) or text.startswith(".[", at):
            at += 1 if text[at] == "[" else 2
            end = _bracket_end(text, at, expression)
            inside = text[at:end]
            if inside.startswith("?") or inside.startswith("("):
                raise JsonPathError(f"{expression!r}: filters and scripts are not among SageMaker's JSONPath operators")
            selectors.append(_parse_bracket(inside, expression))
            at = end + 1
            continue
        raise JsonPathError(f"{expression!r}: cannot read it from {text[at:]!r}; use $, .name, ['name', ...], "
                            "[index, ...] or [start:end]")
    return JsonPath(expression, tuple(selectors))


def _bracket_end(text: str, at: int, expression: str) -> int:
    """Where the bracket opened before ``at`` closes, skipping quoted names."""
    quoted = False
    for position in range(at, len(text)):
        char = text[position]
        if char == "'" and text[position - 1] != "\\":
            quoted = not quoted
        elif char == "]" and not quoted:
            return position
    raise JsonPathError(f"{expression!r}: a bracket is not closed")


def _select(value: Any, selector: _Selector, expression: str) -> Any:
    if isinstance(selector, _Everything):
        return value
    if isinstance(selector, _Names):
        if not isinstance(value, dict):
            raise JsonPathError(f"{expression!r} names {list(selector.names)} of a {_kind(value)}, not of an object")
        missing = [name for name in selector.names if name not in value]
        if missing:
            raise JsonPathError(f"{expression!r}: the record has no {', '.join(repr(m) for m in missing)}")
        if len(selector.names) == 1:
            return value[selector.names[0]]
        return {name: value[name] for name in selector.names}
    if not isinstance(value, list):
        raise JsonPathError(f"{expression!r} takes elements of a {_kind(value)}, not of an array")
    return _take(value, selector.parts, expression)


def _take(values: Sequence[Any], parts: tuple[int | slice, ...], expression: str) -> Any:
    if len(parts) == 1 and isinstance(parts[0], int):
        return values[_index(parts[0], len(values), expression)]
    taken: list[Any] = []
    for part in parts:
        if isinstance(part, slice):
            taken.extend(values[part])
        else:
            taken.append(values[_index(part, len(values), expression)])
    return taken


def _index(index: int, size: int, expression: str) -> int:
    if not -size <= index < size:
        raise JsonPathError(f"{expression!r}: index {index} is outside the record's {size} elements")
    return index


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value),
                                                                                                   "number")
