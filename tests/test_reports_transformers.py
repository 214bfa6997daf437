"""Chapter 11's figures and tables on synthetic tables (Agg backend)."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

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
