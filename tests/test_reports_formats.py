"""Chapter 01's report: figures from small measured tables have labelled axes and the hardware."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from precisionlab.study.experiments import formats as X
from precisionlab.study.reports import formats as report

matplotlib.use("Agg")


def _labelled_and_signed(fig) -> None:
    assert any(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    assert any("test CPU" in t.get_text() for t in fig.texts)
    plt.close(fig)


def test_figures_from_small_probes():
    _labelled_and_signed(report.plot_spacing(X.spacing_table(["fp16", "bf16"]), "test CPU"))
    _labelled_and_signed(report.plot_matmul_probe(X.matmul_probe([-8, 0], trials=1), "test CPU"))
    soft = X.softmax_probe([8], trials=2)
    _labelled_and_signed(report.plot_softmax(soft, [8], 11.09, "test CPU"))


def test_histogram_and_underflow_texts_from_a_synthetic_table():
    hist = pd.DataFrame({"log2_bin_left": [-30, -20, -10], "percent": [10.0, 60.0, 30.0]})
    _labelled_and_signed(report.plot_gradient_histogram(hist, ["fp16", "bf16"], "test CPU"))
    cols = pd.MultiIndex.from_product([["flushed", "overflow", "subnormal"], ["mean", "std"]])
    idx = pd.MultiIndex.from_product([["fp16", "bf16"], [0, 8]], names=["format", "log2_scale"])
    pct = pd.DataFrame([[5, 1, 0, 0, 2, 1], [1, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0],
                        [0, 0, 0, 0, 0, 0]], index=idx, columns=cols, dtype=float)
    facts = report.underflow_facts(pct, ["fp16", "bf16"])
    assert facts["best_k"] == "2^8" and facts["fp16_flush"] == "5.00 % (± 1.00)"
    assert list(report.underflow_table(pct).columns) == ["flushed (%)", "overflow (%)",
                                                         "subnormal (%)"]
