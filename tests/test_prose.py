"""glue_all hands every text to myst-nb's glue as a string, shown nowhere."""

from __future__ import annotations

import myst_nb

from precisionlab.study.prose import glue_all


def test_glue_all_glues_each_text_as_a_string_without_display(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda *a, **k: calls.append((a, k)))
    glue_all({"n_runs": 3, "verdict": "refuted"})
    assert calls == [(("n_runs", "3"), {"display": False}),
                     (("verdict", "refuted"), {"display": False})]
