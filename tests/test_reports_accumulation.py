"""Chapter 04's report: figures from toy measurements have labelled axes and the hardware."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt

from precisionlab.experiments import accumulation as ga
from precisionlab.reports import accumulation as report

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
