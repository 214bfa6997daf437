"""Chapter 04's report: figures from toy measurements have labelled axes and the hardware."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt

from precisionlab.study.experiments import accumulation as ga
from precisionlab.study.reports import accumulation as report

matplotlib.use("Agg")


def test_figures_have_labelled_axes_and_the_hardware():
    dist = ga.distances([0], ["32-true"], [1, 2], batch_size=8, hidden=[8], steps=1)
    errors, parts = ga.gradient_errors([0], ["16-mixed"], [1, 2], grad_batch=8, hidden=[8])
    for fig in (report.plot_distances(dist, ["32-true"], [1, 2], 1, "test CPU"),
                report.plot_errors(errors, parts, [1, 2], 8, "test CPU")):
        assert any(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
        assert any("test CPU" in t.get_text() for t in fig.texts)
        plt.close(fig)
    assert len(report.error_table(errors, parts, ["16-mixed"])) == 1 + 3 + 1


def test_ratio_table_and_facts_read_ga3_the_other_way():
    import math

    import pandas as pd

    errors = pd.DataFrame([{"seed": s, "precision": "16-mixed", "k": k, "rel_error": e}
                           for s, (a, b) in enumerate([(0.010, 0.0099), (0.012, 0.0118),
                                                       (0.011, 0.0109)])
                           for k, e in ((1, a), (4, b))])
    parts = pd.DataFrame([{"seed": s, "accumulator": "fp16", "k": k, "rel_error": e,
                           "flushed_parts": 0.0}
                          for s in range(3) for k, e in ((1, 1e-4), (4, 2e-4 + 1e-5 * s))])
    r = report.error_ratios(errors, parts).set_index("setting")
    assert r.fell["16-mixed"] == 3 and r.fell["fp16"] == 0  # every seed's error fell / grew
    assert math.isclose(r.ratio["16-mixed"], math.exp(
        sum(math.log(b / a) for a, b in [(0.010, 0.0099), (0.012, 0.0118), (0.011, 0.0109)]) / 3))
    assert r.low["fp16"] < r.ratio["fp16"] < r.high["fp16"]
    table = report.ratio_table(errors, parts)
    assert list(table.index) == [("whole computation", "16-mixed"), ("accumulator alone", "fp16")]
    assert table.iloc[1, 1] == "0 of 3"
