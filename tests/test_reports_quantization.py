"""The quantization report: summaries, figures and the Q-3 widths from toy measurements."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

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


# --- what the figures draw, from small synthetic tables ----------------------------------------

SEEDS = (0, 1, 2)
WA, WO = "weight+activation", "weight-only"


def _t95(values) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval, computed here (not by the module)."""
    x = np.asarray(values, dtype=float)
    half = sps.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return x.mean(), x.mean() - half, x.mean() + half


def _errorbar(container) -> np.ndarray:
    """Rows (x, y, bar low, bar high) of one vertical errorbar, sorted by x."""
    line, _, (bars, *_) = container.lines
    x, y = (np.asarray(v, dtype=float) for v in line.get_data())
    seg = np.array(bars.get_segments(), dtype=float)
    np.testing.assert_allclose(seg[:, 0, 0], x)  # the bars stand on the markers
    rows = np.column_stack([x, y, seg[:, 0, 1], seg[:, 1, 1]])
    return rows[np.argsort(rows[:, 0])]


def _expected(points: list[tuple[float, list[float]]], scale: float = 100.0) -> np.ndarray:
    """Rows (x, mean, low, high) of `points` (x, values over seeds), sorted by x."""
    rows = np.array([[x, *(scale * v for v in _t95(vals))] for x, vals in points])
    return rows[np.argsort(rows[:, 0])]


def _joins(ax) -> np.ndarray:
    """Rows (x0, y0, x1, y1) of the two-point lines drawn in data coordinates (the lines
    joining measured neighbours; not the axhlines nor the markers), sorted."""
    rows = [[float(v) for v in (x[0], y[0], x[1], y[1])] for line in ax.get_lines()
            for x, y in [line.get_data()]
            if line.get_transform() is ax.transData and len(line.get_xdata()) == 2
            and line.get_linestyle() != "None"]
    return np.array(sorted(rows), dtype=float).reshape(-1, 4)


def _hline(ax, label: str) -> float:
    (line,) = [h for h in ax.get_lines() if h.get_label() == label]
    assert line.get_ydata()[0] == line.get_ydata()[1]
    return float(line.get_ydata()[0])


def test_plot_bits_draws_mean_and_interval_per_width_and_joins_only_neighbours():
    # per tensor measured at 8, 4 and 2 bits; per channel at 8 and 2 only (no line across 4)
    acc = {("per_tensor", "symmetric"): {8: 0.80, 4: 0.70, 2: 0.30},
           ("per_channel", "symmetric"): {8: 0.81, 2: 0.50}}
    shift = {WO: 0.0, WA: 0.05}
    rows = [{"model": "mlp", "mode": mode, "granularity": g, "weights": w, "bits": b,
             "seed": s, "test_accuracy": a - shift[mode] + 0.01 * s * s}
            for mode in (WO, WA) for (g, w), by_bits in acc.items()
            for b, a in by_bits.items() for s in SEEDS]
    bits = pd.DataFrame(rows)
    fp32 = pd.DataFrame({"model": "mlp", "seed": SEEDS, "test_accuracy": [0.82, 0.84, 0.83]})
    fig = report.plot_bits(bits, fp32, "test CPU")
    xs = {8: 0, 4: 1, 2: 2}
    for ax, mode in zip(fig.axes[:2], (WO, WA), strict=True):
        span = ax.patches[0]
        np.testing.assert_allclose([span.get_y(), span.get_y() + span.get_height()], [82, 84])
        assert _hline(ax, "fp32, mean") == pytest.approx(83.0)
        assert len(ax.containers) == 2
        joins = []
        for k, by_bits in enumerate(acc.values()):
            pos = {b: xs[b] + (k - 2.5) * 0.06 for b in by_bits}
            vals = {b: [a - shift[mode] + 0.01 * s * s for s in SEEDS]
                    for b, a in by_bits.items()}
            np.testing.assert_allclose(_errorbar(ax.containers[k]),
                                       _expected([(pos[b], vals[b]) for b in by_bits]))
            ordered = sorted(by_bits, key=pos.get)
            joins += [[pos[a], 100 * np.mean(vals[a]), pos[b], 100 * np.mean(vals[b])]
                      for a, b in zip(ordered[:-1], ordered[1:], strict=True)
                      if xs[b] - xs[a] == 1]
        assert len(joins) == 2  # per tensor 8-4 and 4-2; per channel skips the missing 4
        np.testing.assert_allclose(_joins(ax), np.array(sorted(joins)))
    plt.close(fig)


def _cal_table() -> pd.DataFrame:
    base = {"minmax": 1.0, "mse": 0.2, "p99.9": 0.5}
    rows = [{"model": "mlp", "act_bits": b, "calibrator": c, "calib_examples": n, "seed": s,
             "default_size": n == 256,
             "drop_pp": base[c] * (8 / b) + (0.3 if n == 64 else 0.0) + 0.1 * s * s}
            for b in (8, 4) for n in (256, 64) for c in base for s in SEEDS]
    return pd.DataFrame(rows)


def test_plot_calibrators_draws_mean_drop_per_calibrator_and_per_calibration_size():
    cal = _cal_table()
    calibrators = ["minmax", "mse", "p99.9"]
    fig = report.plot_calibrators(cal, calibrators, 4, ["mlp"], "test CPU")
    left, right = fig.axes[:2]

    def drops(**where) -> list[float]:
        mask = np.logical_and.reduce([cal[k] == v for k, v in where.items()])
        return list(cal[mask].sort_values("seed").drop_pp)

    # left: the default calibration set, int8 then int4 activations, offset by 0.15
    assert len(left.containers) == 2
    for k, (b, offset) in enumerate(((8, -0.075), (4, 0.075))):
        want = _expected([(i + offset, drops(act_bits=b, calibrator=c, calib_examples=256))
                          for i, c in enumerate(calibrators)], scale=1)
        np.testing.assert_allclose(_errorbar(left.containers[k]), want)
    # right: int4 activations against the calibration set's size (64 at 0, 256 at 1)
    assert len(right.containers) == len(calibrators)
    joins = []
    for k, c in enumerate(calibrators):
        pts = [(i, drops(act_bits=4, calibrator=c, calib_examples=n))
               for i, n in enumerate((64, 256))]
        np.testing.assert_allclose(_errorbar(right.containers[k]), _expected(pts, scale=1))
        joins.append([0, np.mean(pts[0][1]), 1, np.mean(pts[1][1])])
    np.testing.assert_allclose(_joins(right), np.array(sorted(joins)))
    plt.close(fig)


def test_plot_low_rank_draws_accuracy_against_weight_bytes():
    bytes_ = {8: 1100.0, 4: 600.0}
    acc = {8: 0.80, 4: 0.70}
    ints = [{"model": "mlp", "mode": WO, "granularity": g, "weights": "symmetric", "bits": b,
             "seed": s, "test_accuracy": acc[b] - d + 0.01 * s, "weight_bytes": bytes_[b]}
            for g, d in (("per_channel", 0.0), ("per_tensor", 0.3))  # only per channel drawn
            for b in (8, 4) for s in SEEDS]
    lr = pd.DataFrame([{"model": "mlp", "budget_bits": b, "seed": s,
                        "test_accuracy": acc[b] - 0.1 - 0.02 * s, "weight_bytes": bytes_[b] - 100}
                       for b in (8, 4) for s in SEEDS])
    fp32 = pd.DataFrame({"model": "mlp", "seed": SEEDS, "test_accuracy": [0.82, 0.85, 0.83],
                         "weights": 1000})
    fig = report.plot_low_rank(lr, pd.DataFrame(ints), fp32, "test CPU")
    ax = fig.axes[0]
    bars = {c.get_label(): c for c in ax.containers}
    np.testing.assert_allclose(_errorbar(bars["fp32"]),
                               _expected([(4000 / 1024, [0.82, 0.85, 0.83])]))
    int_vals = {b: [acc[b] + 0.01 * s for s in SEEDS] for b in (8, 4)}
    lr_vals = {b: [acc[b] - 0.1 - 0.02 * s for s in SEEDS] for b in (8, 4)}
    np.testing.assert_allclose(
        _errorbar(bars["int$b$ weights, per channel"]),
        _expected([(bytes_[b] / 1024, int_vals[b]) for b in (8, 4)]))
    np.testing.assert_allclose(
        _errorbar(bars["low rank, float32 factors"]),
        _expected([((bytes_[b] - 100) / 1024, lr_vals[b]) for b in (8, 4)]))
    notes = {t.get_text(): t.xy for t in ax.texts}
    assert set(notes) == {"int8", "int4", "at int8 bytes", "at int4 bytes"}
    for b in (8, 4):
        np.testing.assert_allclose(notes[f"int{b}"],
                                   [bytes_[b] / 1024, 100 * np.mean(int_vals[b])])
        np.testing.assert_allclose(notes[f"at int{b} bytes"],
                                   [(bytes_[b] - 100) / 1024, 100 * np.mean(lr_vals[b])])
    np.testing.assert_allclose(ax.get_xlim(), [500 / 1024 / 1.6, 4000 / 1024 * 1.3])
    plt.close(fig)


def test_plot_qat_bits_draws_ptq_and_qat_per_width_and_the_fp32_bands():
    def a(method: str, scheme: str, b: int, s: int) -> float:
        return {8: 0.80, 4: 0.60, 2: 0.20}[b] + (0.1 if method == "QAT" else 0.0) \
            - (0.05 if scheme == WA else 0.0) + 0.01 * s * s

    ptq = pd.DataFrame([{"scheme": sc, "bits": b, "seed": s, "test_accuracy": a("PTQ", sc, b, s)}
                        for sc in (WA, WO) for b in (8, 4, 2) for s in SEEDS])
    qat = {WA: (4, 2), WO: (4,)}
    last = pd.DataFrame(
        [{"method": "QAT", "scheme": sc, "bits": b, "seed": s, "test_accuracy": a("QAT", sc, b, s)}
         for sc, widths in qat.items() for b in widths for s in SEEDS]
        + [{"method": "fp32 control", "scheme": "none", "bits": 0, "seed": s,
            "test_accuracy": acc} for s, acc in zip(SEEDS, (0.86, 0.88, 0.87), strict=True)])
    fp32 = pd.DataFrame({"seed": SEEDS, "test_accuracy": [0.84, 0.85, 0.82]})
    fig = report.plot_qat_bits(ptq, last, fp32, 100, "test CPU")
    ax = fig.axes[0]
    spans = sorted((p.get_y(), p.get_y() + p.get_height()) for p in ax.patches)
    np.testing.assert_allclose(spans, [(82, 85), (86, 88)])
    assert _hline(ax, "fp32 model (mean, min-max band)") == pytest.approx(100 * 2.51 / 3)
    assert _hline(ax, "fp32 control, fine-tuned 100 steps") == pytest.approx(87.0)
    assert _hline(ax, "chance (10 classes)") == 10
    xs = {8: 0, 4: 1, 2: 2}
    drawn = [("PTQ", WA, (8, 4, 2)), ("QAT", WA, qat[WA]), ("PTQ", WO, (8, 4, 2)),
             ("QAT", WO, qat[WO])]  # the figure's order
    assert len(ax.containers) == len(drawn)
    joins = []
    for c, (method, sc, widths) in zip(ax.containers, drawn, strict=True):
        shift = -0.06 if method == "PTQ" else 0.06
        pts = [(xs[b] + shift, [a(method, sc, b, s) for s in SEEDS]) for b in widths]
        np.testing.assert_allclose(_errorbar(c), _expected(pts))
        joins += [[p[0], 100 * np.mean(p[1]), q[0], 100 * np.mean(q[1])]
                  for p, q in zip(pts[:-1], pts[1:], strict=True)]
    np.testing.assert_allclose(_joins(ax), np.array(sorted(joins)))
    plt.close(fig)


def test_plot_qat_steps_draws_mean_and_seed_range_per_step():
    steps = (0, 50, 100)
    runs = [("QAT", WA, 8), ("QAT", WA, 4), ("QAT", WO, 4), ("QAT, moving ranges", WA, 4),
            ("fp32 control", "none", 0)]

    def a(method: str, b: int, step: int, s: int) -> float:
        return 0.5 + b / 40 + step / 1000 + 0.02 * s * s + 0.01 * len(method)

    curves = pd.DataFrame([{"method": m, "scheme": sc, "bits": b, "step": k, "seed": s,
                            "test_accuracy": a(m, b, k, s)}
                           for m, sc, b in runs for k in steps for s in SEEDS])
    ptq = pd.DataFrame([{"scheme": sc, "bits": b, "seed": s,
                         "test_accuracy": 0.3 + b / 20 + (0.05 if sc == WO else 0) + 0.01 * s}
                        for sc in (WA, WO) for b in (8, 4) for s in SEEDS])
    fp32 = pd.DataFrame({"seed": SEEDS, "test_accuracy": [0.84, 0.85, 0.83]})
    fig = report.plot_qat_steps(curves, ptq, fp32, [8, 4], [4], 0.9, "test CPU")
    labels = {"QAT": {WA: "QAT, weights and activations", WO: "QAT, weights only"},
              "QAT, moving ranges": {WA: "QAT, weights and activations, moving input ranges "
                                         "(momentum 0.9)"},
              "fp32 control": {"none": "fp32 control (same fine-tuning)"}}
    for ax, b in zip(fig.axes[:2], (8, 4), strict=True):
        mine = [(m, sc) for m, sc, w in runs if w == b or m == "fp32 control"]
        assert len(ax.collections) == len(mine)
        for band, (m, sc) in zip(ax.collections, mine, strict=True):
            vals = np.array([[100 * a(m, b if m != "fp32 control" else 0, k, s) for s in SEEDS]
                             for k in steps])
            (line,) = [h for h in ax.get_lines() if h.get_label() == labels[m][sc]]
            np.testing.assert_allclose(line.get_xdata(), steps)
            np.testing.assert_allclose(line.get_ydata(), vals.mean(axis=1))
            v = band.get_paths()[0].vertices
            lo = [v[v[:, 0] == k, 1].min() for k in steps]
            hi = [v[v[:, 0] == k, 1].max() for k in steps]
            np.testing.assert_allclose(lo, vals.min(axis=1))
            np.testing.assert_allclose(hi, vals.max(axis=1))
        p = ptq[ptq.bits == b]
        assert _hline(ax, "PTQ, weights and activations") == pytest.approx(
            100 * p[p.scheme == WA].test_accuracy.mean())
        wo = [h for h in ax.get_lines() if h.get_label() == "PTQ, weights only"]
        if b == 4:
            assert _hline(ax, "PTQ, weights only") == pytest.approx(
                100 * p[p.scheme == WO].test_accuracy.mean())
        else:  # 8 bits was not in weight_only_bits: no weight-only PTQ line
            assert not wo
        assert _hline(ax, "fp32 model (before fine-tuning)") == pytest.approx(84.0)
    plt.close(fig)
