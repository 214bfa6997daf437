"""Chapter 08's report: formatting helpers and a figure from a tiny synthetic table."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from precisionlab.study.reports import speed as report

matplotlib.use("Agg")


def test_formatting_helpers():
    assert report.x_of(1.5) == "1.50x"
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


def _mp17_tables():
    mem = pd.DataFrame([{"family": "MLP", "size": z, "precision": p, "static_bytes": st * z,
                         "activation_bytes": act * z, "total_bytes": (st + act) * z}
                        for z in (8, 16) for p, st, act in (("32-true", 16, 4),
                                                            ("bf16-mixed", 16, 3),
                                                            ("bf16-true", 8, 2))])
    ds = pd.DataFrame([{"precision": p, "examples": n, "dataset_bytes": 4000, "total_bytes": 20}
                       for p in ("32-true", "bf16-mixed", "bf16-true") for n in (50, 100)])
    return mem, ds


def test_mp17_figure_facts_and_texts():
    mem, ds = _mp17_tables()
    r = report.mp17_ratios(mem)
    assert len(r) == 4 and r[r.precision == "bf16-true"].static_bytes.eq(0.5).all()
    fig = report.fig_mp17(mem, "test CPU")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "counted bytes / 32-true bytes (ratio)" and ax.get_xlabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["bf16-mixed", "bf16-true"]
    assert any("test CPU" in t.get_text() for t in fig.texts)
    assert report.mp17_facts(mem, ds) == [
        "bf16-mixed: weights + grads + Adam state = 1x 32-true's",
        "bf16-true: weights + grads + Adam state = 0.5x 32-true's",
        "step bytes identical on 50 and 100 training examples, every precision: True",
        "dataset bytes / 32-true's: 32-true 1, bf16-mixed 1, bf16-true 1"]
    texts = report.mp17_texts(mem, ds)
    assert texts["mp17_mixed_act"] == "0.75x" and texts["mp17_pure_total"] == "0.5x"
    assert texts["mp17_dataset_same"] == "identical"


def test_mp21_table_and_texts():
    runs = pd.DataFrame([{"precision": "bf16-mixed", "ran": True, "finite": True, "error": "",
                          "final_loss": 2.3},
                         {"precision": "16-mixed", "ran": False, "finite": False,
                          "error": "RuntimeError: x", "final_loss": float("nan")}])
    speed = pd.DataFrame({"family": "MLP", "size": [8, 16], "precision": "bf16-mixed",
                          "speedup": [0.5, 0.8]})
    support = {"capability": "AVX2", "native": {"bf16": False, "fp16": False},
               "words": "AVX2 kernels"}
    t = report.mp21_table(runs, speed, support).set_index("precision")
    assert t.loc["bf16-mixed", "step speed / 32-true (MP-7)"] == "0.5-0.8x"
    assert t.loc["16-mixed", "final loss"] == "RuntimeError: x"
    assert t.loc["16-mixed", "native 16-bit kernels here"] == "fp16: no"
    texts = report.mp21_texts(runs, speed, support, 20)
    assert texts["mp21_ran"] == "bf16-mixed" and texts["mp21_speed"] == "0.5-0.8x"


def test_matmul_peaks_and_the_checked_memory_lines():
    square = pd.DataFrame({"fmt": ["fp32", "fp32", "bf16"], "n": [128, 256, 128],
                           "median": [21.0, 26.0, 1.5]})
    assert report.matmul_peaks(square).to_dict() == {"bf16": 1.5, "fp32": 26.0}
    mem = pd.DataFrame({"family": ["MLP"] * 3 + ["transformer"] * 2,
                        "size": [256] * 3 + [1] * 2,
                        "precision": ["32-true", "bf16-mixed", "16-mixed", "32-true", "bf16-mixed"],
                        "static_bytes": [100, 100, 100, 50, 50]})
    precisions = ["32-true", "bf16-mixed", "16-mixed"]
    assert report.memory_check_lines(mem, 2, precisions) == [
        "step memory measured for 5 of 6 (model size, precision) pairs",
        "weights + grads + Adam state (fp32) identical for 32-true, bf16-mixed, 16-mixed at "
        "every size: True"]
    mem.loc[4, "static_bytes"] = 60
    assert report.memory_check_lines(mem, 2, precisions)[1].endswith("every size: False")
