"""Tables as the book's readers see them: readable headers, no DataFrame index, sensible digits.

A chapter ends a cell with `show(table)` instead of the bare DataFrame. The numbers stay in the
DataFrame (and in `data/`); only what is printed changes:

    show(runs)                      # 0.97263 -> 0.973, 85002 -> 85,002, True -> yes, NaN -> blank
    show(shares, percent=["flushed"], digits=2)   # 0.00004 -> 0.004%

A meaningful index (a named one, or labels that are not 0, 1, 2, ...) becomes the first
column(s); the integer index pandas adds is dropped. Column-level names (a pivot table's
`columns=`) become the table's caption, so a unit written there is not lost.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["Table", "cell", "header", "show"]


def header(name: object) -> str:
    """A column name as a header: MultiIndex levels joined by spaces, underscores as spaces."""
    parts = name if isinstance(name, tuple) else (name,)
    words = [str(p).replace("_", " ").strip() for p in parts if p is not None and str(p) != ""]
    return " ".join(words)


def _integer(x: float) -> str:
    """Whole numbers as written: thousands separators from 10,000 on (years and 1024 stay bare)."""
    return f"{int(x):,}" if abs(x) >= 10_000 else str(int(x))


def cell(x: object, digits: int = 3, percent: bool = False) -> str:
    """One value as text: yes/no, blank for missing, integers whole, other numbers to `digits`
    significant digits (an exponent only below 0.001), `percent` fractions as percentages."""
    if digits < 1:
        raise ValueError(f"digits: must be at least 1, got {digits}")
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if x is None or (not isinstance(x, str) and pd.api.types.is_scalar(x) and pd.isna(x)):
        return ""
    if isinstance(x, (int, np.integer)) and not percent:
        return _integer(int(x))
    if isinstance(x, (int, float, np.integer, np.floating)):
        v = float(x) * (100 if percent else 1)
        return _number(v, digits) + ("%" if percent else "")
    return str(x)


def _number(v: float, digits: int) -> str:
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v.is_integer() and abs(v) < 1e15:
        return _integer(v)
    if abs(v) >= 1000:
        return _integer(round(v))
    if abs(v) >= 1e-3:
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(v))))
        return f"{v:.{decimals}f}"
    mantissa, exponent = f"{v:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _flat(df: pd.DataFrame) -> tuple[pd.DataFrame, str, int]:
    """The frame without its default integer index, index levels as its first columns; the
    caption made of the column-level names; and how many columns came from the index."""
    names = [n for n in df.columns.names if n is not None]
    caption = " / ".join(str(n) for n in names)
    out = df.copy()
    out.columns = pd.Index([header(c) for c in df.columns])
    unnamed = all(n is None for n in df.index.names)
    if unnamed and pd.api.types.is_integer_dtype(df.index.dtype):
        return out.reset_index(drop=True), caption, 0
    levels = [header(n) if n is not None else "" for n in df.index.names]
    index = pd.DataFrame({f"\0{i}": df.index.get_level_values(i) for i in range(len(levels))})
    out = pd.concat([index, out.reset_index(drop=True)], axis=1)
    out.columns = pd.Index(levels + list(out.columns[len(levels):]))
    return out, caption, len(levels)


@dataclass(frozen=True)
class Table:
    """A DataFrame with how to print it: `frame` keeps the numbers, `text` holds the cells."""

    frame: pd.DataFrame
    text: pd.DataFrame = field(repr=False)
    numeric: tuple[bool, ...] = field(repr=False)
    caption: str = ""

    def _repr_html_(self) -> str:
        align = ['style="text-align: right; white-space: nowrap"' if n else
                 'style="text-align: left"' for n in self.numeric]
        rows = ["<tr>" + "".join(f"<td {a}>{html.escape(v)}</td>" for a, v in zip(align, row,
                                                                                    strict=True))
                + "</tr>" for row in self.text.itertuples(index=False)]
        head = "".join(f"<th {a}>{html.escape(h)}</th>"
                       for a, h in zip(align, self.text.columns, strict=True))
        caption = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        return (f'<table class="dataframe precisionlab-table">{caption}<thead><tr>{head}</tr>'
                f"</thead><tbody>{''.join(rows)}</tbody></table>")

    def __repr__(self) -> str:
        body = self.text.to_string(index=False)
        return f"{self.caption}\n{body}" if self.caption else body

    def to_markdown(self) -> str:
        """The table in Markdown (`markdown_cell` for every cell)."""
        lines = ["| " + " | ".join(markdown_cell(c) for c in self.text.columns) + " |",
                 "|" + "".join("---:|" if n else "---|" for n in self.numeric)]
        lines += ["| " + " | ".join(markdown_cell(v) for v in row) + " |"
                  for row in self.text.itertuples(index=False)]
        return "\n".join(lines)


def markdown_cell(text: object) -> str:
    """Table-safe Markdown: a pipe would end the cell and a newline the row, so they become '/'
    and a space."""
    return str(text).replace("|", "/").replace("\n", " ")


_NUMBER = re.compile(r"[-+\u2212]?(\d[\d,]*\.?\d*|\.\d+)(e[-+]?\d+)?\s*[x%]?|[-+]?inf")


def _numbers(cells: pd.Series) -> bool:
    """Whether a column of text holds only numbers (as a report wrote them: '1.38', '2.5x',
    '60 %'): such columns align right like numeric ones."""
    filled = [c for c in cells if c]
    return bool(filled) and all(_NUMBER.fullmatch(c) for c in filled)


def _sparse(text: pd.DataFrame, levels: int) -> pd.DataFrame:
    """Grouped rows as pandas prints a MultiIndex: an index label is written only where it
    differs from the row above (or a label to its left does)."""
    out = text.copy()
    for r in range(len(text) - 1, 0, -1):
        for j in range(levels):
            if (text.iloc[r, :j + 1] == text.iloc[r - 1, :j + 1]).all():
                out.iloc[r, j] = ""
    return out


def show(df: pd.DataFrame, percent: Iterable[str] = (), digits: int = 3,
         labels: Mapping[str, str] | None = None, caption: str | None = None) -> Table:
    """`df` ready to print: readable headers (`labels` renames columns first), no integer index
    (a meaningful one becomes the first columns, grouped), numbers to `digits` significant
    digits, the `percent` columns as percentages; `caption` above it (default: the names of
    the column levels, as in a pivot table)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df: expected a pandas DataFrame, got {type(df).__name__}")
    labels = dict(labels or {})
    percent = list(percent)
    missing = [c for c in [*labels, *percent] if c not in df.columns]
    if missing:
        raise ValueError(f"percent/labels: no column {missing} in the table; it has "
                         f"{[header(c) if isinstance(c, tuple) else c for c in df.columns]}")
    flat, names, levels = _flat(df.rename(columns=labels))
    shown = {header(labels.get(c, c)) for c in percent}
    columns = [flat.iloc[:, i] for i in range(flat.shape[1])]
    text = pd.DataFrame({i: [cell(x, digits, flat.columns[i] in shown) for x in col]
                         for i, col in enumerate(columns)}, index=range(len(flat)))
    text.columns = flat.columns
    numeric = tuple((bool(pd.api.types.is_numeric_dtype(col))
                     and not pd.api.types.is_bool_dtype(col)) or _numbers(text.iloc[:, i])
                    for i, col in enumerate(columns))
    return Table(frame=df, text=_sparse(text, levels) if levels > 1 else text, numeric=numeric,
                 caption=names if caption is None else caption)
