"""A chapter's measurements, stored: what lets a rule or a figure change without re-training.

An experiment function decorated with `@stored` returns its tables as usual. When the runner
publishes a chapter it points `PRECISIONLAB_STORE_WRITE` at the chapter's results folder, and
each call's result is kept there (`data/<chapter>/store/`), named by the function and a digest
of its arguments. When only the chapter's rules, reports or prose changed since (its compute
key, `staleness`, is unchanged), the runner also sets `PRECISIONLAB_STORE_READ` to the published
store: each call then returns the stored result instead of measuring again, so the rules
re-judge and the figures are redrawn from the very numbers that were published, in seconds.

With neither variable set (nbval, `make portability`, a reader's own session, a sweep) the
decorator calls straight through: verification never trusts the store. A call whose arguments
cannot be digested (a model, a callable) also runs as usual.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

READ_ENV = "PRECISIONLAB_STORE_READ"  # a published store to replay from
WRITE_ENV = "PRECISIONLAB_STORE_WRITE"  # where this run keeps its calls' results
INDEX = "index.json"  # per store: each call's file, function and how it was obtained

F = TypeVar("F", bound=Callable[..., Any])


class Undigestible(TypeError):
    """An argument the store cannot name by content: the call runs as usual, unstored."""


def _digest_into(h: Any, value: Any) -> None:
    """Feed `value` to hash `h` by content, with its type, so 1, 1.0 and True differ."""
    import numpy as np

    if value is None or isinstance(value, bool | int | float | str | bytes):
        h.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, list | tuple):
        h.update(f"{type(value).__name__}[{len(value)}](".encode())
        for item in value:
            _digest_into(h, item)
        h.update(b")")
    elif isinstance(value, dict):
        h.update(f"dict[{len(value)}](".encode())
        for key in sorted(value, key=repr):
            _digest_into(h, key)
            _digest_into(h, value[key])
        h.update(b")")
    elif isinstance(value, np.ndarray):
        h.update(f"ndarray:{value.dtype}:{value.shape};".encode() + value.tobytes())
    elif type(value).__module__.startswith("pandas"):
        import pandas as pd

        if not isinstance(value, pd.DataFrame | pd.Series):
            raise Undigestible(f"cannot digest a {type(value).__name__}")
        frame = value.to_frame() if isinstance(value, pd.Series) else value
        h.update(f"frame:{list(map(str, frame.columns))}:{list(map(str, frame.dtypes))};"
                 .encode())
        h.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    elif type(value).__module__ == "torch" and type(value).__name__ == "Tensor":
        data = value.detach().cpu().contiguous()
        h.update(f"tensor:{data.dtype}:{tuple(data.shape)};".encode())
        h.update(data.view(-1).view(__import__("torch").uint8).numpy().tobytes()
                 if data.numel() else b"")
    else:
        raise Undigestible(f"cannot digest a {type(value).__name__}")


def call_digest(name: str, args: tuple, kwargs: dict[str, Any]) -> str:
    """sha256 of a call: the function's dotted name, its positional and keyword arguments."""
    h = hashlib.sha256(name.encode() + b"\0")
    _digest_into(h, list(args))
    _digest_into(h, dict(kwargs))
    return h.hexdigest()


class Store:
    """One chapter run's calls: replayed from `read` (if given), kept in `write`."""

    def __init__(self, read: Path | None, write: Path | None) -> None:
        self.read, self.write = read, write
        self.seen: dict[str, int] = {}  # call digest -> times called so far in this run
        self.index: dict[str, dict[str, Any]] = {}

    def file(self, name: str, digest: str) -> str:
        """The file of the n-th identical call (timing runs may repeat one on purpose)."""
        n = self.seen.get(digest, 0)
        self.seen[digest] = n + 1
        return f"{name.rsplit('.', 1)[-1]}-{digest[:16]}-{n}.pkl"

    def call(self, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
        name = f"{fn.__module__}.{fn.__qualname__}"
        try:
            digest = call_digest(name, args, kwargs)
        except Undigestible:
            return fn(*args, **kwargs)
        file = self.file(name, digest)
        blob = None
        if self.read is not None and (self.read / file).is_file():
            blob, how = (self.read / file).read_bytes(), "replayed"
        if blob is None:
            value = fn(*args, **kwargs)
            try:
                blob, how = pickle.dumps(value, protocol=4), "computed"
            except (pickle.PicklingError, TypeError, AttributeError):
                return value  # not a table: nothing to keep
        else:
            value = pickle.loads(blob)
        if self.write is not None:
            self.write.mkdir(parents=True, exist_ok=True)
            (self.write / file).write_bytes(blob)
            self.index[file] = {"function": name, "how": how}
            (self.write / INDEX).write_text(json.dumps(self.index, indent=1, sort_keys=True))
        return value


_ACTIVE: dict[tuple[str, str], Store] = {}


def active() -> Store | None:
    """The store of this process's run, from the environment; None when there is none."""
    read, write = os.environ.get(READ_ENV, ""), os.environ.get(WRITE_ENV, "")
    if not read and not write:
        return None
    key = (read, write)
    if key not in _ACTIVE:
        _ACTIVE[key] = Store(Path(read) if read else None, Path(write) if write else None)
    return _ACTIVE[key]


def stored(fn: F) -> F:
    """Keep (or replay) this function's results in the chapter's store; see the module."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        store = active()
        return fn(*args, **kwargs) if store is None else store.call(fn, args, kwargs)

    return wrapper  # type: ignore[return-value]


def replayed(folder: Path) -> dict[str, int]:
    """How the calls of a published store were obtained: {"computed": n, "replayed": m}."""
    try:
        index = json.loads((folder / INDEX).read_text())
    except (OSError, ValueError):
        return {}
    counts: dict[str, int] = {}
    for entry in index.values():
        counts[entry["how"]] = counts.get(entry["how"], 0) + 1
    return counts
