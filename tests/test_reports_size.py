"""Chapter 07's report: figures from small synthetic tables have labelled axes and the hardware."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
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
    _labelled_and_signed(fig)


def test_latency_figure():
    latency = pd.DataFrame([{"batch": b, "width": w, "candidate": c, "speedup_vs_fp32": s}
                            for b in (1, 64) for w in (64, 128)
                            for c, s in (("fp32", 1.0), ("bf16", 0.8))])
    _labelled_and_signed(report.plot_latency(latency, [64, 128], [1, 64], "test CPU"))


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
