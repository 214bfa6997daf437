"""Tidy results files of a chapter run, written atomically under `data/`.

The book runner points `PRECISIONLAB_RESULTS_DIR` at a staging folder and moves its contents
into `data/` only when the whole chapter succeeded, so a failed run never leaves half its
results beside the previous chapter. Run by hand (Jupyter), results go straight to `data/`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from precisionlab.provenance import find_root

if TYPE_CHECKING:
    import pandas as pd

RESULTS_ENV = "PRECISIONLAB_RESULTS_DIR"


def results_root() -> Path:
    """Folder that receives results: the runner's staging folder, or the project's `data/`."""
    staged = os.environ.get(RESULTS_ENV)
    return Path(staged) if staged else find_root() / "data"


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj: object) -> Path:
    """Atomic, stable JSON (sorted keys, two-space indent, trailing newline)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _result_path(chapter: str, name: str, suffix: str) -> Path:
    """`<results>/<chapter>/<name><suffix>`, with `name` checked: no path may leave the folder."""
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"name: use letters, digits, '_' or '-' only; got {name!r}")
    return results_root() / chapter / f"{name}{suffix}"


def save_table(df: pd.DataFrame, chapter: str, name: str) -> Path:
    """Save one tidy table as `<results>/<chapter>/<name>.csv`; the runner adds the chapter's
    `provenance.json` beside it when the run succeeds."""
    return atomic_write_text(_result_path(chapter, name, ".csv"),
                             df.to_csv(index=False, lineterminator="\n"))


def save_text(text: str, chapter: str, name: str, suffix: str = ".md") -> Path:
    """Save text as `<results>/<chapter>/<name><suffix>` (one final newline): e.g. MyST that
    another page `include`s, since myst-nb pastes a glued figure or text elsewhere but not
    Markdown with its links."""
    return atomic_write_text(_result_path(chapter, name, suffix), text.rstrip("\n") + "\n")
