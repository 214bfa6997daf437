"""Chapter 08's report: formatting helpers and a figure from a tiny synthetic table."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402
from plotdata import xy

from precisionlab.study.reports import speed as report  # noqa: E402


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
    plt.close(fig)
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


# -- the data drawn, from small synthetic tables ---------------------------------------------------

MiB = 2**20


def errorbars(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_matmul_figure_draws_the_median_with_its_interquartile_bar():
    runs = {("fp32", 64): [10.0, 12.0, 11.0, 15.0, 9.0], ("fp32", 128): [20.0, 22.0, 25.0, 21.0],
            ("bf16", 64): [3.0, 4.0, 8.0], ("bf16", 128): [30.0, 31.0, 29.0, 40.0, 35.0]}
    square = pd.DataFrame([{"fmt": f, "rows": n, "median": np.median(v),
                            "q25": np.quantile(v, 0.25), "q75": np.quantile(v, 0.75)}
                           for (f, n), v in runs.items()])
    fig = report.fig_matmul(square, ["fp32", "bf16", "fp16"], [64, 128], "test CPU")
    ax = fig.axes[0]
    bars = errorbars(ax)
    assert [b.get_label() for b in bars] == ["fp32 (GFLOP/s)", "bf16 (GFLOP/s)"]  # fp16: none
    for bar, f in zip(bars, ("fp32", "bf16"), strict=True):
        v = [runs[f, n] for n in (64, 128)]
        np.testing.assert_allclose(xy(bar.lines[0]), [[64, np.median(v[0])],
                                                      [128, np.median(v[1])]])
        np.testing.assert_allclose(bar.lines[2][0].get_segments(),
                                   [[[n, np.quantile(x, 0.25)], [n, np.quantile(x, 0.75)]]
                                    for n, x in zip((64, 128), v, strict=True)])
    plt.close(fig)


def test_roofline_draws_the_memory_roof_each_peak_and_the_measured_points():
    square = pd.DataFrame([{"fmt": f, "rows": n, "intensity": n / k, "median": g}
                           for f, k, pts in (("fp32", 6, ((64, 50.0), (256, 90.0))),
                                             ("bf16", 3, ((64, 40.0), (256, 160.0))))
                           for n, g in pts])
    mv = pd.DataFrame([{"fmt": "fp32", "intensity": 0.5, "median": 4.0},
                       {"fmt": "bf16", "intensity": 1.0, "median": 7.5}])
    peak = square.groupby("fmt")["median"].max()  # fp32 90, bf16 160 GFLOP/s
    bandwidth = 10.0  # GB/s: fp32's ridge at 9, bf16's at 16 FLOP/byte
    fig = report.fig_roofline(square, mv, peak, bandwidth, ["fp32", "bf16", "fp16"], 512,
                              "test CPU")
    ax = fig.axes[0]
    memory, *roofs = ax.get_lines()
    m = xy(memory)
    np.testing.assert_allclose(m[:, 1], bandwidth * m[:, 0])  # y = bandwidth x I
    assert m[:, 1].max() <= 160.0 and m[0, 0] == pytest.approx(10**-1.5)
    assert len(roofs) == 2
    for roof, p in zip(roofs, (90.0, 160.0), strict=True):  # fp32, bf16 (fp16: no peak)
        r = xy(roof)
        np.testing.assert_allclose(r[:, 1], p)  # flat at the measured peak
        assert r[0, 0] >= p / bandwidth and r[0, 0] < 1.1 * p / bandwidth  # from the ridge on
        assert r[-1, 0] == pytest.approx(3 * 256 / 3)  # to 3x the largest intensity
    dots = [c for c in ax.collections if c.get_offsets().size]
    want = [square[square.fmt == "fp32"][["intensity", "median"]], [[0.5, 4.0]],
            square[square.fmt == "bf16"][["intensity", "median"]], [[1.0, 7.5]]]
    assert len(dots) == 4
    for dot, w in zip(dots, want, strict=True):
        np.testing.assert_allclose(dot.get_offsets(), np.asarray(w, dtype=float))
    plt.close(fig)


def test_step_figure_draws_the_median_speedup_over_seeds_and_its_range():
    per_seed = {("MLP", 64, "bf16-mixed"): [1.2, 1.5, 1.1],
                ("MLP", 256, "bf16-mixed"): [2.0, 2.4, 2.2],
                ("MLP", 64, "16-mixed"): [0.5, 0.4, 0.45],
                ("MLP", 256, "16-mixed"): [0.7, 0.9, 0.8],
                ("transformer", 1, "bf16-mixed"): [1.0, 0.9, 1.3],
                ("transformer", 2, "bf16-mixed"): [1.6, 1.4, 1.7]}
    speed = pd.DataFrame([{"family": fam, "size": z, "precision": p, "speedup": np.median(v),
                           "lo": min(v), "hi": max(v)} for (fam, z, p), v in per_seed.items()])
    fig = report.fig_step(speed, ["bf16-mixed", "16-mixed"], [64, 256], [1, 2], 32, 64, 8, 16,
                          1.5, "test CPU")
    for ax, family, sizes in zip(fig.axes[:2], ("MLP", "transformer"), ([64, 256], [1, 2]),
                                 strict=True):
        bars = errorbars(ax)
        precs = [p for p in ("bf16-mixed", "16-mixed") if (family, sizes[0], p) in per_seed]
        assert [b.get_label() for b in bars] == precs  # transformer: no 16-mixed timed
        for bar, p in zip(bars, precs, strict=True):
            v = [per_seed[family, z, p] for z in sizes]
            np.testing.assert_allclose(xy(bar.lines[0]),
                                       np.column_stack([sizes, np.median(v, axis=1)]))
            np.testing.assert_allclose(bar.lines[2][0].get_segments(),
                                       [[[z, min(x)], [z, max(x)]]
                                        for z, x in zip(sizes, v, strict=True)])
        flat = {line.get_label(): np.asarray(line.get_ydata(), dtype=float)
                for line in ax.get_lines() if not line.get_label().startswith("_")}
        np.testing.assert_allclose(flat["32-true (baseline)"], 1.0)
        np.testing.assert_allclose(flat["1.5x: the verdict rule's bar"], 1.5)
    plt.close(fig)


def test_memory_figure_stacks_each_kind_as_a_fraction_of_32_true_total():
    parts = ("weight_bytes", "grad_bytes", "optimizer_state_bytes", "activation_bytes")
    kinds = {"32-true": (4, 4, 8, 24), "bf16-mixed": (4, 4, 8, 14), "16-mixed": (4, 4, 8, 12)}

    def counted(p: str, z: int) -> list[float]:  # MiB; activations grow as z^2, the rest as z
        return [b * z * (z / 16 if c == "activation_bytes" else 1)
                for c, b in zip(parts, kinds[p], strict=True)]

    mem = pd.DataFrame([{"family": fam, "size": z, "precision": p,
                         **{c: b * MiB for c, b in zip(parts, counted(p, z), strict=True)},
                         "total_bytes": (sum(counted(p, z)) + 2 * z) * MiB}  # + uncounted
                        for fam, sizes in (("MLP", (16, 32)), ("transformer", (1,)))
                        for z in sizes for p in kinds
                        if not (fam == "transformer" and p == "16-mixed")])
    precisions = list(kinds)
    fig = report.fig_memory(mem, precisions, [16, 32], [1], "test CPU")
    for ax, family, sizes in zip(fig.axes[:2], ("MLP", "transformer"), ([16, 32], [1]),
                                 strict=True):
        want = []  # (x, bottom, height) of every stacked piece, in drawing order
        for i, z in enumerate(sizes):
            ref = sum(counted("32-true", z)) + 2 * z  # 32-true's total at this size
            for j, p in enumerate(precisions):
                if family == "transformer" and p == "16-mixed":
                    continue  # not counted: no bar, its slot left empty
                bottom = 0.0
                for b in counted(p, z):
                    want.append((i * 4 + j, bottom, b / ref))
                    bottom += b / ref
        got = [(r.get_x() + r.get_width() / 2, r.get_y(), r.get_height()) for r in ax.patches]
        np.testing.assert_allclose(got, want)
        (one,) = ax.get_lines()
        np.testing.assert_allclose(np.asarray(one.get_ydata(), dtype=float), 1.0)
    plt.close(fig)


def test_accumulation_figure_draws_saved_activations_per_k_and_the_references():
    act = {"32-true": [64.0, 40.0, 28.0], "bf16-mixed": [40.0, 25.0, 18.0]}
    acc = pd.DataFrame([{"precision": p, "k": k, "activation_bytes": a[i] * MiB,
                         "static_bytes": 12 * MiB, "cuda_peak_bytes": (a[i] + 30) * MiB}
                        for p, a in act.items() for i, k in enumerate((1, 2, 4))])
    for on_cuda in (False, True):
        fig = report.fig_accum(acc, [1, 2, 4], 16, on_cuda, "test CPU")
        lines = {line.get_label(): xy(line) for line in fig.axes[0].get_lines()}
        for p, a in act.items():
            np.testing.assert_allclose(lines[f"{p}: saved activations"],
                                       np.column_stack([[1, 2, 4], a]))
            assert (f"{p}: CUDA max allocated" in lines) == on_cuda
            if on_cuda:
                np.testing.assert_allclose(lines[f"{p}: CUDA max allocated"][:, 1],
                                           np.add(a, 30))
        np.testing.assert_allclose(lines["1/k of 32-true at k = 1"],
                                   [[1, 64.0], [2, 32.0], [4, 16.0]])
        np.testing.assert_allclose(lines["weights + grads + Adam state (fp32)"][:, 1], 12.0)
        plt.close(fig)


def test_mp17_figure_bars_are_the_median_ratio_over_sizes_with_its_range():
    bytes_ = {  # (static, activation, total) per size and precision
        ("32-true", 8): (100, 50, 150), ("32-true", 16): (200, 120, 320),
        ("32-true", 32): (400, 300, 700),
        ("bf16-mixed", 8): (100, 40, 140), ("bf16-mixed", 16): (200, 60, 260),
        ("bf16-mixed", 32): (400, 240, 640),
        ("bf16-true", 8): (50, 25, 75), ("bf16-true", 16): (100, 30, 130),
        ("bf16-true", 32): (200, 150, 350)}
    mem = pd.DataFrame([{"family": "MLP", "size": z, "precision": p, "static_bytes": st,
                         "activation_bytes": act, "total_bytes": tot}
                        for (p, z), (st, act, tot) in bytes_.items()])
    fig = report.fig_mp17(mem, "test CPU")
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.get_label() for b in bars] == ["weights + grads + Adam state",
                                              "saved activations", "whole step"]
    width = 0.8 / 3
    for j, bar in enumerate(bars):
        for i, (rect, p) in enumerate(zip(bar.patches, ("bf16-mixed", "bf16-true"),
                                          strict=True)):
            r = [bytes_[p, z][j] / bytes_["32-true", z][j] for z in (8, 16, 32)]
            assert rect.get_height() == pytest.approx(np.median(r))
            assert rect.get_x() + rect.get_width() / 2 == pytest.approx(i + (j - 1) * width)
            (low, high) = bar.errorbar.lines[2][0].get_segments()[i][:, 1]
            np.testing.assert_allclose([low, high], [min(r), max(r)])
    plt.close(fig)


def test_save_tables_saves_each_table_under_its_name_or_the_mapped_one(monkeypatch):
    saved = []
    monkeypatch.setattr(report.results, "save_table",
                        lambda df, chapter, name: saved.append((chapter, name, df.x.sum())))
    a, b = pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [10]})
    report.save_tables("ch", {"a": a, "b": b})
    report.save_tables("ch", {"key_b": b, "key_a": a}, {"saved_a": "key_a", "saved_b": "key_b"})
    assert saved == [("ch", "a", 3), ("ch", "b", 10), ("ch", "saved_a", 3), ("ch", "saved_b", 10)]


def test_matmul_summary_gives_median_bandwidth_and_each_formats_peak():
    square = pd.DataFrame({"fmt": ["fp32", "fp32", "bf16", "bf16"], "rows": [64, 128] * 2,
                           "median": [10.0, 30.0, 25.0, 5.0]})
    mm = {"square": square, "matvec": pd.DataFrame({"fmt": ["fp32"]}),
          "skipped": pd.DataFrame(columns=["fmt"]),
          "copy": pd.DataFrame({"gb_per_s": [4.0, 1.0, 9.0]})}
    sq, mv, skipped, bandwidth, peak = report.matmul_summary(mm)
    assert sq is square and mv is mm["matvec"] and skipped is mm["skipped"]
    assert bandwidth == 4.0 and isinstance(bandwidth, float)
    assert peak.to_dict() == {"bf16": 25.0, "fp32": 30.0}


def test_mp17_memory_appends_the_pure_rows_renumbered():
    mem = pd.DataFrame({"precision": ["32-true", "bf16-mixed"], "total_bytes": [8, 6]})
    pure = pd.DataFrame({"precision": ["bf16-true"], "total_bytes": [4]}, index=[0])
    out = report.mp17_memory(mem, pure)
    assert list(out.precision) == ["32-true", "bf16-mixed", "bf16-true"]
    assert list(out.index) == [0, 1, 2] and list(out.total_bytes) == [8, 6, 4]


def test_bench_texts_and_overhead_table():
    assert report.bench_texts(1024, 512, 5, 3) == {
        "bench_width_text": "1024", "bench_batch_text": "512", "bench_repeats_text": "5",
        "bench_steps_text": "3"}
    overhead = pd.DataFrame([{"extra": 1, "ratio_to_plain loop": 1.1, "iqr_over_median": 0.02,
                              "ms_per_step": 3.0, "candidate": "Trainer",
                              "precision": "32-true"}])
    shown = report.overhead_table(overhead)
    assert list(shown.columns) == ["precision", "candidate", "ms_per_step", "iqr_over_median",
                                   "ratio_to_plain loop"]
    assert shown.iloc[0].tolist() == ["32-true", "Trainer", 3.0, 0.02, 1.1]
