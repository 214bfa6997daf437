"""The quantization report: summaries, figures and the Q-3 widths from toy measurements."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from precisionlab.study.experiments import quantization as xq
from precisionlab.study.reports import quantization as report

matplotlib.use("Agg")


def test_costly_widths_follow_the_q3_rule():
    rows = [{"seed": s, "scheme": "weight+activation", "bits": b, "fp32_accuracy": 0.8,
             "test_accuracy": 0.8 - d + 0.001 * s} for s in range(3) for b, d in ((8, 0), (4, 0.2))]
    assert report.costly_widths(pd.DataFrame(rows)) == [4]


def test_bits_figure_and_summary_from_a_toy_sweep():
    trained, fp32 = xq.train_fp32("mlp", [0, 1], steps=2, batch_size=32, lr=3e-3, samples=400,
                                  hidden=[8])
    bits = xq.ptq_sweep(trained, fp32, bits=[8, 4], calibrator="minmax", n_calib=32,
                        group_size=8)
    assert len(report.bits_summary(bits)) > 0
    fig = report.plot_bits(bits, fp32, "test CPU")
    assert any(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    assert any("test CPU" in t.get_text() for t in fig.texts)
    plt.close(fig)
