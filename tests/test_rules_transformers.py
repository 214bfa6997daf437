"""Chapter 11's rules on small synthetic tables: every verdict each rule can return."""

import pandas as pd
import pytest

from precisionlab.study.rules import transformers as R


def attn(noncausal=1e-7, causal=1.0, formula_finite=True, sdpa_finite=True, eps=1.2e-7):
    return pd.DataFrame([{"dtype": "float32", "diff_noncausal": noncausal, "diff_causal": causal,
                          "formula_finite": formula_finite, "sdpa_finite": sdpa_finite,
                          "eps": eps}])


def test_llm1_every_verdict():
    assert R.llm1(attn(formula_finite=False, sdpa_finite=False)).verdict == "not testable here"
    assert R.llm1(attn(noncausal=1e-3)).verdict == "refuted"
    assert R.llm1(attn(causal=1e-7)).verdict == "supported"
    assert R.llm1(attn()).verdict == "nuanced"
    both = pd.concat([attn(causal=1e-7), attn(formula_finite=False)])
    assert R.llm1(both).verdict == "nuanced"


def pert(gpt=0.0, bert=(0.5, 0.5)):
    rows = []
    for model, deltas in (("gpt2", [gpt] * len(bert)), ("minilm", list(bert))):
        for j, d in enumerate(deltas, start=1):
            rows.append({"model": model, "seed": 0, "j": j, "position": 0, "before_j": True,
                         "delta": d})
            rows.append({"model": model, "seed": 0, "j": j, "position": j, "before_j": False,
                         "delta": 1.0})
    return pd.DataFrame(rows)


def test_llm2_every_verdict():
    assert R.llm2(pert()).verdict == "supported"
    assert R.llm2(pert(gpt=0.1)).verdict == "refuted"
    assert R.llm2(pert(bert=(0.0, 0.0))).verdict == "refuted"
    assert R.llm2(pert(bert=(0.0, 0.5))).verdict == "nuanced"
    t = pert()
    assert R.llm2(t[~t["before_j"]]).verdict == "not testable here"


def test_llm3_every_verdict():
    assert R.llm3(pert()).verdict == "refuted"
    assert R.llm3(pert(bert=(0.0, 0.0))).verdict == "supported"
    assert R.llm3(pert(bert=(0.0, 0.5))).verdict == "nuanced"
    t = pert()
    assert R.llm3(t[t["model"] == "gpt2"]).verdict == "not testable here"


def facts(flags):
    return pd.DataFrame([{"fact": f"f{i}", "article assumes": "yes", "observed": "x",
                          "contradicts": f} for i, f in enumerate(flags)])


def test_llm4_every_verdict():
    assert R.llm4(pd.DataFrame(columns=["fact", "observed", "contradicts"])).verdict == \
        "not testable here"
    assert R.llm4(facts([False, False])).verdict == "supported"
    assert R.llm4(facts([True, True, False])).verdict == "refuted"
    assert R.llm4(facts([True, False, False])).verdict == "nuanced"


def amp(loss=1e-5, cos=0.9999, flush16=3e-3, flush_scaled=0.0, seeds=(0, 1, 2),
        bf_loss=None, fp_loss=None):
    """autocast_table rows for gpt2 and bert: relative loss differences, cosines (a jitter per
    seed), flushed shares of unscaled and scaled fp16."""
    rows = []
    for model in ("gpt2", "bert"):
        for s in seeds:
            jitter = 1e-6 * s
            for precision, fl in (("fp32", 0.0), ("bf16", 0.0), ("fp16", flush16 + jitter),
                                  ("fp16-scaled", flush_scaled)):
                lv = 0.0 if precision == "fp32" else loss + jitter
                if precision == "bf16" and bf_loss is not None:
                    lv = bf_loss + jitter
                if precision == "fp16-scaled" and fp_loss is not None:
                    lv = fp_loss + jitter
                rows.append({"model": model, "seed": s, "precision": precision,
                             "loss_rel_diff": lv, "grad_cosine": cos - jitter,
                             "grad_rel_error": 0.005, "flushed": fl, "entries": 6_846_080})
    return pd.DataFrame(rows)


def trained(bf16=(0.001, -0.001, 0.0), fp16=(0.0, 0.001, -0.001), models=("gpt2", "bert")):
    """Training runs: final held-out loss of 32-true 3.0 + seed noise, each mixed run that plus
    its per-seed difference (NaN: diverged)."""
    rows = []
    for model in models:
        for s in range(3):
            base = 3.0 + 0.05 * s
            rows += [{"model": model, "seed": s, "precision": "32-true", "loss": base},
                     {"model": model, "seed": s, "precision": "bf16-mixed", "loss": base + bf16[s]},
                     {"model": model, "seed": s, "precision": "16-mixed", "loss": base + fp16[s]}]
    return pd.DataFrame(rows)


def test_mp27_one_pass_alone_is_nuanced_and_says_what_it_cannot_show():
    f = R.mp27(amp())
    assert f.verdict == "nuanced"
    assert "the evidence is a single pass of small random-weight models" in f.reason
    assert "not that they train to fp32's quality" in f.reason
    assert "6.8M parameters" in f.reason
    # Even with nothing flushed (no scaler needed), one pass cannot show training.
    assert R.mp27(amp(flush16=0.0)).verdict == "nuanced"


def test_mp27_a_loss_scaler_is_not_a_redesign():
    # Unscaled fp16 flushes gradients, so fp16 needs a scaler: reported, but training that
    # matches fp32 (16-mixed has its scaler in the loop) still supports the claim.
    f = R.mp27(amp(flush16=3e-3), trained())
    assert f.verdict == "supported"
    assert "fp16 needs the loss scaler (in the loop, not the model)" in f.reason
    assert "bf16-mixed +0 [" in f.reason and "equivalent" in f.reason


def test_mp27_refuted_when_neither_type_matches_or_training_breaks():
    assert R.mp27(amp(loss=0.5)).verdict == "refuted"
    f = R.mp27(amp(cos=0.5))
    assert f.verdict == "refuted" and f.reason.startswith("mixed precision fails on gpt2, bert")
    nan = (float("nan"),) * 3
    f = R.mp27(amp(), trained(bf16=(0.3, 0.31, 0.32), fp16=nan))
    assert f.verdict == "refuted"
    assert "16-mixed loss non-finite in 3 of 3 seeds" in f.reason


def test_mp27_nuanced_when_one_type_only_or_training_is_undecided():
    f = R.mp27(amp(bf_loss=0.5, flush16=0.0), trained())
    assert f.verdict == "nuanced"
    assert f.reason.startswith("only one 16-bit type matches fp32 on gpt2, bert")
    f = R.mp27(amp(), trained(bf16=(0.2, -0.2, 0.01)))
    assert f.verdict == "nuanced" and "training is not shown to match fp32 on gpt2, bert" \
        in f.reason
    f = R.mp27(amp(), trained(models=("gpt2",)))  # bert never trained
    assert f.verdict == "nuanced" and "bert: not trained" in f.reason
    assert R.mp27(amp(fp_loss=0.5), trained()).verdict == "nuanced"


def test_mp27_not_testable_with_one_seed():
    assert R.mp27(amp(seeds=(0,))).verdict == "not testable here"


@pytest.mark.parametrize("name", ["ATTN_EPS", "LEAK_TOL", "EFFECT_MIN", "LOSS_MARGIN",
                                  "COSINE_MIN", "FLUSH_NEGLIGIBLE", "TRAIN_MARGIN"])
def test_thresholds_positive(name):
    assert getattr(R, name) > 0
