"""Chapter 07's report: figures from small synthetic tables draw the tables' numbers, with
labelled axes and the hardware."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from precisionlab.study.reports import size as report

matplotlib.use("Agg")


def _labelled_and_signed(fig) -> None:
    assert any(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    assert any("test CPU" in t.get_text() for t in fig.texts)
    plt.close(fig)


def test_stored_figure_and_table():
    fmts = ["fp32", "bf16", "int8"]
    summary = pd.DataFrame({"file_bytes": [4000.0, 2000.0, 1000.0], "bytes_vs_fp32": [1, 0.5, 0.25],
                            "change_pp": [0.0, 0.1, -0.5], "change_low_pp": [0.0, -0.1, -0.9],
                            "change_high_pp": [0.0, 0.3, -0.1]}, index=fmts)
    acc = pd.DataFrame({"mean": [0.9, 0.9, 0.89], "low": [0.88, 0.88, 0.87],
                        "high": [0.92, 0.92, 0.91], "nan_runs": [0, 0, 1]}, index=fmts)
    assert report.stored_table(summary, acc).change_pp["int8"] == "-0.50 [-0.90, -0.10]"
    fig = report.plot_stored(summary, acc, [8], "test CPU")
    assert any(s.startswith("int8 (1") and "NaN runs" in s
               for s in fig.axes[0].get_legend_handles_labels()[1])
    # one point per format: x the file size in kB, y the mean accuracy in %, bars low to high
    bars = fig.axes[0].containers
    assert len(bars) == len(fmts)
    for c, name in zip(bars, fmts, strict=True):
        line, _, (vertical, *_) = c.lines
        np.testing.assert_allclose(np.asarray(line.get_data(), dtype=float).ravel(),
                                   [summary.file_bytes[name] / 1000, 100 * acc["mean"][name]])
        np.testing.assert_allclose(np.array(vertical.get_segments()[0], dtype=float),
                                   [[summary.file_bytes[name] / 1000, 100 * acc.low[name]],
                                    [summary.file_bytes[name] / 1000, 100 * acc.high[name]]])
    _labelled_and_signed(fig)


def test_stored_figure_draws_no_interval_where_it_is_unknown():
    fmts = ["fp32", "int4"]
    summary = pd.DataFrame({"file_bytes": [600.0, 4000.0]}, index=fmts[::-1])  # read by name
    acc = pd.DataFrame({"mean": [0.9, 0.5], "low": [0.88, np.nan], "high": [0.92, np.nan],
                        "nan_runs": [0, 0]}, index=fmts)
    fig = report.plot_stored(summary, acc, [8], "test CPU")
    line, _, (vertical, *_) = fig.axes[0].containers[1].lines
    np.testing.assert_allclose(np.asarray(line.get_data(), dtype=float).ravel(), [0.6, 50.0])
    np.testing.assert_allclose(np.array(vertical.get_segments()[0], dtype=float),
                               [[0.6, 50.0], [0.6, 50.0]])  # a zero-length bar, not a NaN
    _labelled_and_signed(fig)


def test_latency_figure():
    def speedup(c: str, b: int, w: int) -> float:
        return 1.0 if c == "fp32" else 0.5 + b / 100 + w / 1000

    latency = pd.DataFrame([{"batch": b, "width": w, "candidate": c,
                             "speedup_vs_fp32": speedup(c, b, w)}
                            for b in (1, 64) for w in (64, 128, 256) for c in ("fp32", "bf16")])
    fig = report.plot_latency(latency, [64, 128, 256], [1, 64], "test CPU")
    for ax, b in zip(fig.axes[:2], (1, 64), strict=True):
        assert ax.get_title() == f"batch {b}"
        lines = {h.get_label(): h for h in ax.get_lines()}
        for c in ("fp32", "bf16"):  # one line per candidate: speed-up against width
            np.testing.assert_allclose(np.asarray(lines[c].get_xdata(), dtype=float),
                                       [64, 128, 256])
            np.testing.assert_allclose(np.asarray(lines[c].get_ydata(), dtype=float),
                                       [speedup(c, b, w) for w in (64, 128, 256)])
        (guide,) = [h for h in ax.get_lines() if h.get_label().startswith("_")]
        np.testing.assert_allclose(guide.get_ydata(), [2, 2])  # the 2x guide
    _labelled_and_signed(fig)


def test_counts_table_and_texts():
    counts = pd.DataFrame({"format": ["fp32", "bf16", "int4", "int8 (torch.ao kernels)"],
                           "parameters": [100, 100, 100, 100], "parameters_api": [100, 100, 4, 0],
                           "stored_elements": [100, 100, 56, 102],
                           "stored_bytes": [400, 200, 80, 112],
                           "stored_dtypes": ["float32", "bfloat16", "float32, uint8",
                                             "float32, int64, qint8"]})
    text = report.counts_table(counts)
    assert "model.parameters()" in text and "0.2000" in text and "float32, int64, qint8" in text
    texts = report.counts_texts(counts)
    assert texts["q5_params"] == "100" and texts["q5_same"] == "every one of them"
    assert texts["q5_int4_elements"] == "56" and texts["q5_api_ao"] == "0"
    assert texts["q5_bytes"] == "bf16 0.500, int4 0.200, int8 (torch.ao kernels) 0.280"
