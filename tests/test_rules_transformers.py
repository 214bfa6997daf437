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
        bf_loss=None):
    rows = []
    for model in ("gpt2", "bert"):
        for s in seeds:
            jitter = 1e-6 * s
            for precision, fl in (("fp32", 0.0), ("bf16", 0.0), ("fp16", flush16 + jitter),
                                  ("fp16-scaled", flush_scaled)):
                lv = 0.0 if precision == "fp32" else loss + jitter
                if precision == "bf16" and bf_loss is not None:
                    lv = bf_loss + jitter
                rows.append({"model": model, "seed": s, "precision": precision,
                             "loss_rel_diff": lv, "grad_cosine": cos - jitter,
                             "flushed": fl})
    return pd.DataFrame(rows)


def test_mp27_every_verdict():
    assert R.mp27(amp()).verdict == "nuanced"
    assert R.mp27(amp(flush16=0.0)).verdict == "supported"
    assert R.mp27(amp(loss=0.5)).verdict == "refuted"
    assert R.mp27(amp(cos=0.5)).verdict == "refuted"
    assert R.mp27(amp(bf_loss=0.5, flush16=0.0)).verdict == "nuanced"
    assert R.mp27(amp(seeds=(0,))).verdict == "not testable here"


@pytest.mark.parametrize("name", ["ATTN_EPS", "LEAK_TOL", "EFFECT_MIN", "LOSS_MARGIN",
                                  "COSINE_MIN", "FLUSH_NEGLIGIBLE"])
def test_thresholds_positive(name):
    assert getattr(R, name) > 0
