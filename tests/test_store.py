"""The measurement store: calls kept when a chapter is published, replayed when only its rules,
reports or prose changed, and never consulted without the runner's environment."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from precisionlab.study import store
from precisionlab.study.store import READ_ENV, WRITE_ENV, call_digest, stored

CALLS: list[tuple] = []


@stored
def measure(n: int, scale: float = 1.0) -> pd.DataFrame:
    CALLS.append((n, scale))
    return pd.DataFrame({"i": range(n), "x": np.arange(n) * scale})


@stored
def make_model(width: int) -> torch.nn.Module:
    CALLS.append(("model", width))
    return torch.nn.Linear(width, 1)


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    CALLS.clear()
    store._ACTIVE.clear()
    monkeypatch.delenv(READ_ENV, raising=False)
    monkeypatch.delenv(WRITE_ENV, raising=False)
    yield
    store._ACTIVE.clear()


def test_without_the_runner_every_call_runs(tmp_path):
    measure(3)
    measure(3)
    assert CALLS == [(3, 1.0), (3, 1.0)]
    assert not list(tmp_path.iterdir())


def test_a_published_run_keeps_its_calls_and_a_replay_returns_them_unrun(tmp_path, monkeypatch):
    kept = tmp_path / "published"
    monkeypatch.setenv(WRITE_ENV, str(kept))
    first, again, other = measure(3), measure(3), measure(4, scale=2.0)
    assert CALLS == [(3, 1.0), (3, 1.0), (4, 2.0)]
    index = json.loads((kept / store.INDEX).read_text())
    assert sorted(e["how"] for e in index.values()) == ["computed"] * 3
    assert len(index) == 3  # the second identical call has a file of its own

    CALLS.clear()
    store._ACTIVE.clear()
    monkeypatch.setenv(READ_ENV, str(kept))
    monkeypatch.setenv(WRITE_ENV, str(tmp_path / "republished"))
    pd.testing.assert_frame_equal(measure(3), first)
    pd.testing.assert_frame_equal(measure(3), again)
    pd.testing.assert_frame_equal(measure(4, scale=2.0), other)
    assert CALLS == []  # nothing measured
    measure(5)  # a call the published run never made is measured
    assert CALLS == [(5, 1.0)]
    assert store.replayed(tmp_path / "republished") == {"replayed": 3, "computed": 1}
    assert sorted((tmp_path / "republished").glob("*.pkl"))[0].read_bytes() in {
        p.read_bytes() for p in kept.glob("*.pkl")}


def test_calls_that_cannot_be_named_or_kept_just_run(tmp_path, monkeypatch):
    monkeypatch.setenv(WRITE_ENV, str(tmp_path))
    model = make_model(2)  # kept? a module pickles, so it is; a lambda argument cannot be named
    assert isinstance(model, torch.nn.Linear)

    @stored
    def apply(fn, x):
        CALLS.append("apply")
        return fn(x)

    assert apply(lambda v: v + 1, 1) == 2
    assert apply(lambda v: v + 1, 1) == 2
    assert CALLS.count("apply") == 2
    assert all("apply" not in e["function"]
               for e in json.loads((tmp_path / store.INDEX).read_text()).values())


def test_the_digest_names_arguments_by_content_and_type():
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    assert call_digest("f", (frame,), {}) == call_digest("f", (frame.copy(),), {})
    assert call_digest("f", (frame,), {}) != call_digest("f", (frame * 2,), {})
    assert len({call_digest("f", (v,), {}) for v in (1, 1.0, True, "1")}) == 4
    assert call_digest("f", (), {"a": 1, "b": 2}) == call_digest("f", (), {"b": 2, "a": 1})
    assert call_digest("f", ([1, 2],), {}) != call_digest("f", ((1, 2),), {})
    t = torch.arange(4.0)
    assert call_digest("f", (t,), {}) == call_digest("f", (t.clone(),), {})
    assert call_digest("f", (t,), {}) != call_digest("f", (t.half(),), {})
    assert call_digest("f", (np.ones(3),), {}) != call_digest("f", (np.ones(4),), {})
    with pytest.raises(store.Undigestible):
        call_digest("f", (object(),), {})
