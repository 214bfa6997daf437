import matplotlib

matplotlib.use("Agg")

import math

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402

from precisionlab.study import plotting  # noqa: E402
from precisionlab.study.reports import inference as report  # noqa: E402


def causal():
    rows = []
    for w in range(3):
        for p, d in [("32-true", 0.0), ("bf16-true", 0.01)]:
            rows.append({"window": w, "precision": p, "nll": 2.0 + w * 0.1 + d,
                         "nll_ref": 2.0 + w * 0.1, "kl": d / 10, "delta_p": -d,
                         "perplexity": 7.0 + w, "tokens": 63 + 100 * w, "finite": True})
    return pd.DataFrame(rows)


def encoder():
    return pd.DataFrame([{"sentence": i, "precision": p, "cosine": c, "nn_agree": i != 0 or
                          p == "32-true"} for i in range(4) for p, c in
                         [("32-true", 1.0), ("bf16-true", 0.9999)]])


def test_tables():
    t = report.causal_table(causal()).set_index("precision")
    assert "(n=3)" in t["nll change (nats)"]["bf16-true"]
    assert t["predicted tokens"]["32-true"] == 63 + 163 + 263
    # perplexity of every token, not a mean of the windows' perplexities
    c = causal()[lambda d: d.precision == "32-true"]
    nll = (c.nll * c.tokens).sum() / c.tokens.sum()
    assert t["perplexity"]["32-true"].startswith(f"{math.exp(nll):+.2g}")
    e = report.encoder_table(encoder()).set_index("precision")
    assert e["nearest neighbour unchanged"]["bf16-true"] == "3/4"
    f = report.fidelity(causal(), encoder())
    assert set(f.model) == {"smollm2", "minilm"} and len(f) == 4


def speed():
    return pd.DataFrame([{"model": m, "precision": p, "median_s": s, "iqr_over_median": 0.1,
                          "speedup": 1 / s, "speedup_low": 0.9 / s, "speedup_high": 1.1 / s,
                          "rounds": 7}
                         for m in ("smollm2", "minilm") for p, s in [("32-true", 1.0),
                                                                     ("bf16-mixed", 2.0)]])


def test_speed_table_and_figure():
    t = report.speed_table(speed(), report.fidelity(causal(), encoder()))
    assert list(t["speed-up over 32-true"][:2]) == ["1.00x", "0.50x"]
    assert list(t["95 % interval"][:2]) == ["[0.90, 1.10]", "[0.45, 0.55]"]
    fig = report.plot_speed(speed(), "test machine")
    axes = fig.axes
    assert len(axes) == 2 and "speed-up over 32-true (x" in axes[0].get_xlabel()
    assert axes[0].get_ylabel() == "precision"
    assert any("test machine" in t.get_text() for t in fig.texts)  # the hardware line
    bars = [c for c in axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1
    segments = bars[0].lines[2][0].get_segments()  # one horizontal error bar per precision
    assert [tuple(s[:, 0]) for s in segments] == [pytest.approx((0.9, 1.1)),
                                                  pytest.approx((0.45, 0.55))]
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert labels == ["32-true", "bf16-mixed"]
    plt.close(fig)


def test_speed_figure_draws_a_bar_without_an_interval_for_one_round():
    one = speed().assign(speedup_low=float("nan"), speedup_high=float("nan"), rounds=1)
    fig = report.plot_speed(one, "test machine")
    assert len(fig.axes) == 2
    for ax in fig.axes[:2]:
        assert [p.get_width() for p in ax.patches] == pytest.approx([1.0, 0.5])
        (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        segments = np.array(bars.lines[2][0].get_segments(), dtype=float)
        np.testing.assert_allclose(segments, [[[1.0, 0], [1.0, 0]], [[0.5, 1], [0.5, 1]]])
    plt.close(fig)


def test_speed_figure_draws_each_models_speedups_intervals_and_colours():
    precisions = ["32-true", "bf16-mixed", "bf16-true", report.INT8]
    speedup = {("smollm2", p): s for p, s in zip(precisions, (1.0, 1.7, 2.2, 0.6), strict=True)}
    speedup |= {("minilm", p): s for p, s in zip(precisions, (1.0, 1.3, 1.9, 3.1), strict=True)}
    t = pd.DataFrame([{"model": m, "precision": p, "speedup": s, "speedup_low": s - 0.1 * i,
                       "speedup_high": s + 0.05 * i, "rounds": 5}
                      for i, ((m, p), s) in enumerate(speedup.items())])
    fig = report.plot_speed(t, "test machine")
    colour = {"32-true": "#999999", "bf16-mixed": plotting.PALETTE[0],
              "bf16-true": plotting.PALETTE[1], report.INT8: plotting.PALETTE[1]}
    for ax, model in zip(fig.axes[:2], ("smollm2", "minilm"), strict=True):
        part = t[t.model == model].reset_index(drop=True)
        assert ax.get_title() == model
        bars = ax.patches
        assert len(bars) == len(part)
        np.testing.assert_allclose([b.get_y() + b.get_height() / 2 for b in bars], part.index)
        np.testing.assert_allclose([b.get_x() for b in bars], 0.0)
        np.testing.assert_allclose([b.get_width() for b in bars], part.speedup)
        assert [b.get_facecolor() for b in bars] == [to_rgba(colour[p]) for p in part.precision]
        (err,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        segments = np.array(err.lines[2][0].get_segments(), dtype=float)
        np.testing.assert_allclose(segments[:, :, 0],
                                   np.column_stack([part.speedup_low, part.speedup_high]))
        np.testing.assert_allclose(segments[:, :, 1], np.repeat(part.index.to_numpy()[:, None],
                                                                2, axis=1))
        assert [x.get_text() for x in ax.get_yticklabels()] == precisions
        (one,) = [h for h in ax.get_lines() if h.get_transform() is not ax.transData]
        assert list(one.get_xdata()) == [1.0, 1.0]  # the 1x reference line
    plt.close(fig)


def test_outlier_figures_and_facts():
    layers = pd.DataFrame({"layer": [0, 1], "max_abs": [10.0, 30000.0], "channel": [3, 5],
                           "token": [0, 1], "median_channel_max": [1.0, 60.0],
                           "ratio": [10.0, 500.0], "sum_squares_fp32": [1.0, 1.0]})
    other = pd.DataFrame({"layer": [0, 1, 2], "max_abs": [5.0, 7.0, 90000.0],
                          "ratio": [2.0, 3.0, 4000.0]})
    fig = report.plot_outliers({"m": layers, "n": other}, "test machine")
    assert "max |x|" in fig.axes[0].get_ylabel() and "ratio" in fig.axes[1].get_ylabel()
    for ax, value in zip(fig.axes[:2], ("max_abs", "ratio"), strict=True):
        lines = {h.get_label(): h for h in ax.get_lines()}
        for name, t in (("m", layers), ("n", other)):  # one line per model: value per block
            np.testing.assert_allclose(np.asarray(lines[name].get_xdata(), dtype=float), t.layer)
            np.testing.assert_allclose(np.asarray(lines[name].get_ydata(), dtype=float), t[value])
    fp16 = [h for h in fig.axes[0].get_lines() if h.get_label() == "fp16 max (65504)"]
    assert len(fp16) == 1 and list(fp16[0].get_ydata()) == [65504.0, 65504.0]
    plt.close(fig)
    channels = pd.DataFrame({"layer": [0, 0, 1, 1, 1], "channel": [0, 1, 0, 1, 2],
                             "max_abs": [9.0, 8.0, 1.0, 5.0, 300.0]})
    fig = report.plot_channels(channels, 1, "m", "test machine")
    assert "channel" in fig.axes[0].get_xlabel()
    bars = fig.axes[0].patches  # the chosen layer only: one bar per channel, height max |x|
    np.testing.assert_allclose([b.get_x() + b.get_width() / 2 for b in bars], [0, 1, 2])
    np.testing.assert_allclose([b.get_width() for b in bars], 1.0)
    np.testing.assert_allclose([b.get_height() for b in bars], [1.0, 5.0, 300.0])
    plt.close(fig)
    f = report.outlier_facts(layers, "x")
    assert f["x_max"] == "30,000" and f["x_layer"] == "1" and f["x_ratio"] == "500"


def test_int8_text_reads_both_models():
    speed_ = pd.concat([speed(), pd.DataFrame([
        {"model": "smollm2", "precision": report.INT8, "speedup": 1.234},
        {"model": "minilm", "precision": report.INT8, "speedup": 2.5}])], ignore_index=True)
    fid = pd.concat([report.fidelity(causal(), encoder()), pd.DataFrame([
        {"model": "smollm2", "precision": report.INT8, "kl": 0.0123, "cosine": float("nan")},
        {"model": "minilm", "precision": report.INT8, "kl": float("nan"), "cosine": 0.98765}])],
        ignore_index=True)
    assert report.int8_text(speed_, fid) == (
        "1.2x as fast as 32-true on SmolLM2 but moves its next-token distribution by a mean KL of "
        "0.012 nats (one activation scale per tensor meets the outliers shown below), and 2.5x "
        "on MiniLM at a mean cosine of 0.9877: faster, but not the same answers")
    assert report.int8_text(speed(), report.fidelity(causal(), encoder())) == (
        "not timed on this device")


def rms(mean_x2_fp16, finite_fp16, zero_fp16, err_fp16):
    return pd.DataFrame({"format": ["fp32", "bf16", "fp16"],
                         "mean_x2": [90000.4, 90112.0, mean_x2_fp16],
                         "finite": [True, True, finite_fp16],
                         "output_all_zero": [False, False, zero_fp16],
                         "max_abs_error": [0.0, 0.00312, err_fp16]})


def test_rmsnorm_facts_when_fp16_overflows():
    f = report.rmsnorm_facts(rms(float("inf"), False, True, 1.0))
    assert f == {"mean_x2_fp32": "90,000", "mean_x2_fp16": "inf",
                 "fp16_finite": "1/sqrt of it is 0: the normalized vector becomes all zeros "
                                "(largest error 1)",
                 "bf16_err": "0.0031"}
    lost = report.rmsnorm_facts(rms(float("inf"), False, False, 0.4567))
    assert lost["fp16_finite"] == ("1/sqrt of it is 0: the normalized vector is lost "
                                   "(largest error 0.457)")


def test_rmsnorm_facts_when_fp16_stays_finite():
    f = report.rmsnorm_facts(rms(1.5, True, False, 0.0001))
    assert f["fp16_finite"] == "stays finite" and f["mean_x2_fp16"] == "1.5"


def test_autocast_mb():
    acts = pd.DataFrame({"precision": ["32-true", "bf16-mixed", "16-mixed"],
                         "saved_bytes": [9e6, 4.2e6, 5.6e6]})
    assert report.autocast_mb(acts) == "6"
    assert report.autocast_mb(acts[acts.precision == "32-true"]) == "no"
