"""Chapter 08's report: formatting helpers and a figure from a tiny synthetic table."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from precisionlab.reports import speed as report

matplotlib.use("Agg")


def test_formatting_helpers():
    assert report.x_of(1.5) == "1.50x"
    assert report.span([1.01, 1.02]) == "1" and report.span([1, 2]) == "1-2"
    assert report.cell(float("nan")) == "-" and report.cell(12.3) == "12"
    assert report.published_texts(False)["pub_v100"] == "3.27x"
    assert report.skipped_lines(pd.DataFrame(columns=["fmt"])) == (
        "Every format was timed at every size.")


def test_matmul_figure_has_labelled_axes_and_the_hardware():
    square = pd.DataFrame([{"fmt": f, "rows": n, "median": m * n, "q25": m * n * 0.9,
                            "q75": m * n * 1.1} for f, m in (("fp32", 2.0), ("bf16", 1.0))
                           for n in (64, 128)])
    fig = report.fig_matmul(square, ["fp32", "bf16"], [64, 128], "test CPU")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("matrix size") and "GFLOP/s" in ax.get_ylabel()
    assert any("test CPU" in t.get_text() for t in fig.texts)
    plt.close(fig)
