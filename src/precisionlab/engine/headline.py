"""Headline numbers of a chapter run: the few numbers a parameter sweep tabulates, one row per run.

Each chapter declares them in `notebooks/chapters.yml` (`headline`, parsed into
`registry.Headline`); `numbers` reads them from the results CSVs the run wrote under
`data/<chapter>/` (`precisionlab.study.results.save_table`).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from precisionlab.engine.registry import Headline


class HeadlineError(ValueError):
    """A headline declaration that does not fit the results file it reads."""


def numbers(headline: Sequence[Headline], folder: Path) -> dict[str, float]:
    """Headline name -> the mean of its value column over its rows (NaN ignored; all NaN gives
    NaN), in order of first appearance; an entry whose file is missing gives no numbers (the
    run's parameters skipped that part)."""
    out: dict[str, float] = {}
    for entry in headline:
        path = folder / entry.file
        if not path.is_file():
            continue
        for name, value in _entry(entry, path).items():
            if name in out:
                raise HeadlineError(f"{path}: headline {entry.name!r} gives the name {name!r} that "
                                    "an earlier headline entry gave too; make the names distinct")
            out[name] = value
    return out


def _key(value: object) -> object:
    """What a `where` value or a cell is compared as: a number as a float (so YAML 0, CSV 0.0
    and the string '1e4', which PyYAML reads for 1e4, meet their equals), anything else as text."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _entry(entry: Headline, path: Path) -> dict[str, float]:
    """The numbers of one headline entry, read from `path`."""
    table = pd.read_csv(path)
    placeholders = [f for _, f, _, _ in string.Formatter().parse(entry.name) if f is not None]
    for role, columns in (("where", [c for c, _ in entry.where]), ("value", [entry.value]),
                          ("name placeholder", placeholders)):
        for column in columns:
            if column not in table.columns:
                raise HeadlineError(f"{path}: headline {entry.name!r}: {role} column {column!r} "
                                    f"is not in the file; its columns: {', '.join(table.columns)}")
    try:
        values = pd.to_numeric(table[entry.value]).astype(float)
    except (TypeError, ValueError):
        raise HeadlineError(f"{path}: headline {entry.name!r}: value column {entry.value!r} is not "
                            "numeric") from None
    keep = np.ones(len(table), dtype=bool)
    for column, wanted in entry.where:
        want = _key(wanted)
        keep &= np.array([_key(cell) == want for cell in table[column]], dtype=bool)
    rows = table[keep]
    if rows.empty:
        return {}
    try:
        names = [entry.name.format(**row) for row in rows.to_dict("records")]
    except (TypeError, ValueError) as err:
        raise HeadlineError(f"{path}: headline {entry.name!r}: cannot format the name from a row: "
                            f"{err}") from None
    means = pd.Series(values[keep].to_numpy(), index=names).groupby(level=0, sort=False).mean()
    return {str(name): float(mean) for name, mean in means.items()}
