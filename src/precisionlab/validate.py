"""Checks for chapter parameters: one clear error naming the parameter and what is allowed.

Chapters call these in the cell after their `parameters` cell, so a bad rerun fails in a
second, before any compute.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any


class ParameterError(ValueError):
    """A chapter parameter outside what the chapter accepts."""


def one_of(name: str, value: object, allowed: Iterable[object]) -> object:
    """`value` must be one of `allowed`."""
    allowed = list(allowed)
    if value not in allowed:
        raise ParameterError(f"{name}: must be one of {_names(allowed)}; got {value!r}")
    return value


def subset_of(name: str, values: object, allowed: Iterable[object]) -> list:
    """`values` must be a non-empty list of distinct members of `allowed`."""
    allowed = list(allowed)
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ParameterError(f"{name}: must be a non-empty list drawn from {_names(allowed)}; "
                             f"got {values!r}")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ParameterError(f"{name}: unknown {_names(bad)}; allowed: {_names(allowed)}")
    if len(set(values)) != len(values):
        raise ParameterError(f"{name}: has repeated entries: {values!r}")
    return list(values)


def integer(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """`value` must be an int within [low, high] (either bound optional)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(f"{name}: must be an integer{_range(low, high)}; got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ParameterError(f"{name}: must be an integer{_range(low, high)}; got {value!r}")
    return value


def integers(name: str, values: object, low: int | None = None, high: int | None = None,
             distinct: bool = True) -> list:
    """`values` must be a non-empty list of ints within [low, high], distinct unless told."""
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ParameterError(f"{name}: must be a non-empty list of integers{_range(low, high)}; "
                             f"got {values!r}")
    for v in values:
        integer(name, v, low, high)
    if distinct and len(set(values)) != len(values):
        raise ParameterError(f"{name}: has repeated entries: {values!r}")
    return list(values)


def positive(name: str, value: object) -> float:
    """`value` must be a real number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ParameterError(f"{name}: must be a number > 0; got {value!r}")
    return float(value)


def _names(values: list) -> str:
    return ", ".join(repr(v) for v in values)


def _range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def parse_params(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    """`-p NAME VALUE` pairs, VALUE read as YAML like Papermill does (`[fp16, bf16]`, `3`)."""
    import yaml

    params = {}
    for name, value in pairs:
        try:
            params[name] = _numbers(yaml.safe_load(value))
        except yaml.YAMLError:
            raise ParameterError(f"{name}: {value!r} is not a YAML value (write lists as "
                                 "[a, b], strings plainly)") from None
    return params


# YAML 1.1 (PyYAML) reads `1e-4` as a string: it wants `1.0e-4`. A reader types `-p lr 1e-4`.
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _numbers(value: Any) -> Any:
    """`value` with strings in exponent notation (`1e-4`, `2E+3`) read as floats, in lists too."""
    if isinstance(value, str) and _FLOAT.match(value):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value
