"""Chapter 11's figures and tables on synthetic tables (Agg backend)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402
from plotdata import mean_interval

from precisionlab.study.reports import transformers as P  # noqa: E402


def test_perturbation_figure_axes():
    rows = [{"model": m, "seed": 0, "j": j, "position": p, "before_j": p < j,
             "delta": 0.0 if (m == "gpt2" and p < j) else 0.5}
            for m in ("gpt2", "minilm") for j in (1, 2) for p in range(4)]
    fig = P.perturbation_figure(pd.DataFrame(rows), "test machine")
    axes = [a for a in fig.axes if a.get_title()]
    assert len(axes) == 2
    assert axes[0].get_xlabel() == "position p (tokens)"
    assert "token j" in axes[0].get_ylabel()
    assert any("Measured on: test machine" in t.get_text() for t in fig.texts)
    plt.close(fig)


def amp_table():
    return pd.DataFrame([{"model": m, "seed": s, "precision": p, "loss_rel_diff": 1e-5,
                          "grad_cosine": 0.999, "grad_rel_error": 0.01 * (s + 1),
                          "flushed": 0.001 if p == "fp16" else 0.0}
                         for m in ("gpt2", "bert") for s in range(3)
                         for p in ("fp32", "bf16", "fp16", "fp16-scaled")])


def test_gradient_figure_axes():
    fig = P.gradient_figure(amp_table(), "test machine")
    left, right = fig.axes[:2]
    assert "relative L2" in left.get_ylabel() and "(%)" in right.get_ylabel()
    assert [t.get_text() for t in left.get_xticklabels()] == ["bf16", "fp16", "fp16-scaled"]
    assert len(left.patches) == 6
    plt.close(fig)


def test_summaries():
    s = P.autocast_summary(amp_table())
    assert len(s) == 8 and "(n=3)" in s.loc[0, "grad_rel_error"]
    a = pd.DataFrame([{"dtype": "float16", "logit_scale": 1.0, "seed": 0, "max_logit": 3.0,
                       "diff_noncausal": 1e-3, "diff_causal": 1.0, "eps": 1e-3,
                       "formula_finite": True, "sdpa_finite": True}])
    out = P.attention_summary(a)
    assert out.iloc[0]["vs_sdpa_eps_max"] == 1.0


def test_perturbation_rows_are_the_changed_positions():
    rows = [{"model": "gpt2", "seed": 0, "j": j, "position": p, "before_j": p < j, "delta": 1.0}
            for j in (3, 7) for p in range(8)]
    fig = P.perturbation_figure(pd.DataFrame(rows), "test machine")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["3", "7"]
    plt.close(fig)


# -- the data drawn --------------------------------------------------------------------------------

def test_perturbation_figure_draws_the_log_mean_delta_over_seeds():
    # delta(model, seed, j, p) = (seed + 1) * 10^-(j + p), exactly 0 before j in gpt2
    rows = [{"model": m, "seed": s, "j": j, "position": p, "before_j": p < j,
             "delta": 0.0 if (m == "gpt2" and p < j) else (s + 1) * 10.0 ** -(j + p)}
            for m in ("gpt2", "minilm") for s in (0, 1) for j in (1, 2) for p in range(3)]
    fig = P.perturbation_figure(pd.DataFrame(rows), "test machine")
    axes = [a for a in fig.axes if a.get_title()]
    for ax, model in zip(axes, ("gpt2", "minilm"), strict=True):
        (image,) = ax.get_images()
        drawn = np.ma.filled(np.ma.asarray(image.get_array(), dtype=float), np.nan)
        # mean over the two seeds of (s + 1) * 10^-(j + p): 1.5 * 10^-(j + p), log10 of it
        want = np.array([[np.log10(1.5 * 10.0 ** -(j + p)) for p in range(3)] for j in (1, 2)])
        if model == "gpt2":
            want[[0, 1, 1], [0, 0, 1]] = np.nan  # p < j: exactly zero, drawn white (NaN)
        np.testing.assert_allclose(drawn, want, rtol=1e-12)
        np.testing.assert_allclose(image.get_extent(), [-0.5, 2.5, -0.5, 1.5])
        assert image.get_clim() == (-8, 1)
    plt.close(fig)


def test_gradient_figure_bars_are_the_mean_and_interval_per_model_and_precision():
    values = {("gpt2", "bf16"): [0.01, 0.02, 0.04], ("gpt2", "fp16"): [0.1, 0.1, 0.1],
              ("gpt2", "fp16-scaled"): [0.002, 0.003, 0.007],
              ("bert", "bf16"): [0.03, 0.05, 0.06], ("bert", "fp16"): [0.2, 0.3, 0.1],
              ("bert", "fp16-scaled"): [0.004, 0.004, 0.01]}
    flushed = {"bf16": [0.0, 0.0, 0.0], "fp16": [0.001, 0.003, 0.002],
               "fp16-scaled": [0.0001, 0.0, 0.0002]}
    rows = [{"model": m, "seed": s, "precision": p, "loss_rel_diff": 0.0, "grad_cosine": 1.0,
             "grad_rel_error": values[m, p][s] if p != "fp32" else 0.0,
             "flushed": (flushed[p][s] * (2 if m == "bert" else 1)) if p != "fp32" else 0.0}
            for m in ("gpt2", "bert") for s in range(3)
            for p in ("fp16-scaled", "fp32", "fp16", "bf16")]  # out of order; fp32 left out
    fig = P.gradient_figure(pd.DataFrame(rows), "test machine")
    left, right = fig.axes[:2]
    order = ("bf16", "fp16", "fp16-scaled")
    for ax, scale, got in ((left, 1.0, lambda m, p: values[m, p]),
                           (right, 100.0, lambda m, p: [f * (2 if m == "bert" else 1)
                                                        for f in flushed[p]])):
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        assert [b.get_label() for b in bars] == ["gpt2", "bert"]
        for i, (bar, model) in enumerate(zip(bars, ("gpt2", "bert"), strict=True)):
            stats = [mean_interval(got(model, p)) for p in order]
            mean = np.array([s[0] for s in stats])
            centres = [r.get_x() + r.get_width() / 2 for r in bar.patches]
            np.testing.assert_allclose(centres, np.arange(3) + (-0.2 if i == 0 else 0.2))
            np.testing.assert_allclose([r.get_width() for r in bar.patches], 0.4)
            np.testing.assert_allclose([r.get_height() for r in bar.patches], scale * mean)
            segments = bar.errorbar.lines[2][0].get_segments()
            np.testing.assert_allclose([s[0][1] for s in segments],
                                       [scale * s[1] for s in stats], atol=1e-12)
            np.testing.assert_allclose([s[1][1] for s in segments],
                                       [scale * s[2] for s in stats], atol=1e-12)
    plt.close(fig)
