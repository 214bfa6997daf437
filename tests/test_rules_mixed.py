"""Chapter 02's rules reach every verdict they can return, on small hand-made tables."""

from __future__ import annotations

import pandas as pd
import pytest

from precisionlab.study.rules import mixed as R

SEEDS = (0, 1, 2)
JITTER = (-0.001, 0.0, 0.001)  # per-seed noise, small against every margin


def casts(pairs: list[str]) -> pd.DataFrame:
    ints = {"int64", "int32", "bool"}
    return pd.DataFrame({"pair": pairs, "to_integer": [p.split("->")[1] in ints and
                                                       p.split("->")[0] not in ints
                                                       for p in pairs]})


@pytest.mark.parametrize("claim", ["MP-1", "MP-2"])
def test_mp1_mp2(claim):
    assert R.mp1_mp2(claim, casts(["fp32->bf16", "bf16->fp32", "bool->fp32"])).verdict == "refuted"
    assert R.mp1_mp2(claim, casts(["fp32->int32", "int32->fp32"])).verdict == "supported"


def tensors(act: str, act_grad: str, stored: str = "fp32") -> pd.Series:
    return pd.Series({"input": "fp32", "activation": act, "activation gradient": act_grad,
                      "weight gradient (.grad)": stored, "weight (master copy)": stored,
                      "optimizer state exp_avg": stored})


def test_mp3():
    assert R.mp3(tensors("bf16", "bf16")).verdict == "nuanced"
    assert R.mp3(tensors("bf16", "fp32")).verdict == "supported"
    assert R.mp3(tensors("fp32", "fp32")).verdict == "refuted"
    assert R.mp3(tensors("bf16", "bf16", stored="bf16")).verdict == "refuted"


def updates(amp_ratio: float, norm_ratio: float = 1.0, err: dict | None = None) -> pd.DataFrame:
    err = err or {"32-true": 1e-7, "bf16-mixed": 1e-2, "16-mixed": 1e-3}
    u = {"32-true": 6e-8, "bf16-mixed": 4e-3, "16-mixed": 5e-4}
    rows = []
    for seed, j in zip(SEEDS, JITTER, strict=True):
        for step, precision, ratio in [("32-true, lr", "32-true", 1.0),
                                       ("bf16-mixed, lr", "bf16-mixed", amp_ratio + j),
                                       ("16-mixed, lr", "16-mixed", amp_ratio + j),
                                       ("32-true, lr/2", "32-true", 0.5)]:
            full = step.endswith(", lr")
            rows.append({"seed": seed, "step": step, "precision": precision, "step_ratio": ratio,
                         "grad_rel_err_vs_fp64": err[precision] * (1 + j) if full else None,
                         "grad_norm_ratio_vs_fp64": (norm_ratio + j if precision != "32-true"
                                                     else 1.0) if full else None,
                         "unit_roundoff": u[precision]})
    return pd.DataFrame(rows)


def test_mp4():
    assert R.mp4(updates(1.0)).verdict == "refuted"
    assert R.mp4(updates(0.5)).verdict == "supported"
    assert R.mp4(updates(0.75)).verdict == "nuanced"


def test_mp5():
    assert R.mp5(updates(1.0, norm_ratio=1.0)).verdict == "refuted"
    assert R.mp5(updates(1.0, norm_ratio=0.5)).verdict == "supported"
    assert R.mp5(updates(1.0, norm_ratio=0.8)).verdict == "nuanced"


def test_mp9():
    assert R.mp9(updates(1.0)).verdict == "refuted"
    lower = {"32-true": 1e-2, "bf16-mixed": 1e-4, "16-mixed": 1e-4}
    assert R.mp9(updates(1.0, err=lower)).verdict == "supported"
    mixed = {"32-true": 1e-3, "bf16-mixed": 1e-2, "16-mixed": 1e-4}
    assert R.mp9(updates(1.0, err=mixed)).verdict == "nuanced"


def test_mp9_weighs_the_pure_fp16_reading():
    # more error than fp32, but pure fp16 loses far more updates (or diverges): both readings
    losing = pd.DataFrame([{"optimizer": o, "precision": p, "seed": s, "diverged": False,
                            "stalled": (0.16 if p == "16-true" else 0.0) + 0.001 * s}
                           for o in ("sgd", "adam") for p in ("16-true", "16-mixed")
                           for s in SEEDS])
    found = R.mp9(updates(1.0), losing)
    assert found.verdict == "nuanced" and found.reason.startswith("it reduces precision loss "
                                                                  "only against pure 16-bit")
    diverging = losing.assign(diverged=losing.precision.eq("16-true") & losing.optimizer.eq(
        "adam"))
    assert "pure fp16 diverged in 3/3 runs" in R.mp9(updates(1.0), diverging).reason
    # pure fp16 loses no more than AMP: nothing speaks for the claim
    level = losing.assign(stalled=0.01 + 0.001 * losing.seed)
    assert R.mp9(updates(1.0), level).verdict == "refuted"


def final(diffs: dict[str, float], tasks=("digits", "mnist1d"), noise=JITTER) -> pd.DataFrame:
    rows = []
    for task in tasks:
        for seed, j in zip(SEEDS, noise, strict=True):
            rows.append({"task": task, "seed": seed, "precision": "32-true", "test_metric": 0.9})
            for p, d in diffs.items():
                rows.append({"task": task, "seed": seed, "precision": p,
                             "test_metric": 0.9 + d + j})
    return pd.DataFrame(rows)


def test_mp6():
    hw = "test machine"
    assert R.mp6(final({"16-mixed": 0.0, "bf16-mixed": 0.0}), hw).verdict == "supported"
    assert R.mp6(final({"16-mixed": 0.0, "bf16-mixed": -0.05}), hw).verdict == "refuted"
    noisy = final({"16-mixed": 0.0, "bf16-mixed": 0.0}, noise=(-0.03, 0.0, 0.03))
    found = R.mp6(noisy, hw)
    assert found.verdict == "nuanced"
    assert found.reason.startswith("4 of 4 comparisons could not rule out a 1 pp loss")
    assert found.reason.endswith("never better beyond noise") and "detectable" in found.reason
    # trained on this machine's 16-bit kernels: the word can differ on another CPU
    assert found.hardware == hw


def test_mp6_needs_power_and_converged_runs():
    hw = "test machine"
    same = final({"16-mixed": 0.0, "bf16-mixed": 0.0}, noise=(0.0, 0.0, 0.0))
    # identical accuracies: zero-width intervals say nothing without the metric's resolution
    assert R.mp6(same, hw).verdict == "nuanced" and "underpowered" in R.mp6(same, hw).reason
    assert R.mp6(same.assign(test_examples=2000), hw).verdict == "supported"
    assert R.mp6(same.assign(test_examples=100), hw).verdict == "nuanced"  # 1 example = 1 pp
    # 32-true still gaining 5 pp over the last quarter: the accuracies are not those reached
    history = pd.DataFrame([{"task": t, "precision": "32-true", "seed": s, "step": step,
                             "test_metric": 0.7 + 0.2 * step / 100}
                            for t in ("digits", "mnist1d") for s in SEEDS
                            for step in range(10, 101, 10)])
    found = R.mp6(same.assign(test_examples=2000), hw, runs=history)
    assert found.verdict == "nuanced" and "not converged" in found.reason
    flat = history.assign(test_metric=0.9)
    assert R.mp6(same.assign(test_examples=2000), hw, runs=flat).verdict == "supported"


def pairs(diffs: dict[str, float], noise=JITTER) -> pd.DataFrame:
    rows = []
    for seed, j in zip(SEEDS, noise, strict=True):
        rows.append({"variant": "32-true", "seed": seed, "test_metric": 1.0})
        for v, d in diffs.items():
            rows.append({"variant": v, "seed": seed, "test_metric": 1.0 + d + j})
    return pd.DataFrame(rows)


def test_mp8():
    same = {"16-mixed": 0.0, "bf16-mixed": 0.0, "bf16-mixed, g in FP32Island": 0.0}
    lost = {"16-mixed": -0.2, "bf16-mixed": -0.3, "bf16-mixed, g in FP32Island": 0.0}
    ok = final({"16-mixed": 0.0, "bf16-mixed": 0.0})
    assert R.mp8(pairs(same), ok).verdict == "refuted"
    found = R.mp8(pairs(lost), ok)
    assert found.verdict == "nuanced" and "restores it" in found.reason
    # a loss on the realistic tasks too (the claim's examples hold as well) supports it
    also = R.mp8(pairs(lost), final({"16-mixed": -0.05, "bf16-mixed": -0.05}))
    assert also.verdict == "supported" and also.reason.startswith(
        "AMP loses on the precision-sensitive task and on realistic tasks too (4 of 4")
    undecided = R.mp8(pairs(lost, noise=(-0.05, 0.0, 0.05)), ok)
    assert undecided.verdict == "nuanced" and "does not clearly restore it" in undecided.reason
    # ordinary tasks whose comparisons are inconclusive are not "no loss" without saying so
    noisy = final({"16-mixed": 0.0, "bf16-mixed": 0.0}, noise=(-0.03, 0.0, 0.03))
    assert ("show no loss beyond noise (though 4 of their 4 comparisons could not rule one "
            "out)") in R.mp8(pairs(lost), noisy).reason


def probe(lowered: set[str]) -> pd.DataFrame:
    rows = []
    for low in ("bf16", "fp16"):
        for op in ("linear", "matmul", "softmax", "cross_entropy"):
            f32_out = low if op in lowered else "fp32"
            low_out = "fp32" if op == "cross_entropy" else (low if op != "linear" or
                                                            op in lowered else low)
            rows += [{"device": "cpu", "autocast": low, "op": op, "input": "fp32",
                      "output": f32_out},
                     {"device": "cpu", "autocast": low, "op": op, "input": low,
                      "output": low_out}]
    return pd.DataFrame(rows)


def test_mp11():
    found = R.mp11(probe({"linear", "matmul"}))
    assert found.verdict == "supported" and "softmax keep the input's dtype" in found.reason
    assert R.mp11(probe(set())).verdict == "refuted"
    assert R.mp11(probe({"linear", "matmul", "softmax", "cross_entropy"})).verdict == "refuted"


def pure(acc: dict[tuple[str, str], float], diverged: set = frozenset()) -> pd.DataFrame:
    rows = []
    for (opt, precision), a in acc.items():
        for seed, j in zip(SEEDS, JITTER, strict=True):
            rows.append({"optimizer": opt, "precision": precision, "seed": seed,
                         "test_metric": a + j * (precision in R.PURE),
                         "diverged": (opt, precision) in diverged,
                         "stalled": 0.3 if precision.endswith("true") else 0.0})
    return pd.DataFrame(rows)


def arms(pure_acc: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    base = {(o, p): 0.9 for o in ("sgd", "adam") for p in ("16-mixed", "bf16-mixed")}
    return {**base, **pure_acc}


def test_mp12():
    good = {(o, p): 0.9 for o in ("sgd", "adam") for p in ("16-true", "bf16-true")}
    assert R.mp12(pure(arms(good))).verdict == "supported"
    bad = {k: 0.5 for k in good}
    assert R.mp12(pure(arms(bad))).verdict == "refuted"
    some = {**good, ("adam", "16-true"): 0.1}
    found = R.mp12(pure(arms(some), diverged={("adam", "16-true")}))
    assert found.verdict == "nuanced"
    assert "fp16 Adam diverged in 3/3 runs" in found.reason and "0.0055" in found.reason
    # the practitioner's recipe (an eps fp16 can hold) trains: fp16 Adam is a way to train,
    # and the naive recipe's divergence stays in the reason
    working = {**some, ("adam", "16-true, eps 1e-4"): 0.9}
    found = R.mp12(pure(arms(working), diverged={("adam", "16-true")}).assign(test_examples=2000))
    assert found.verdict == "supported"
    assert "fp16 Adam diverged" in found.reason and "fp16 Adam with eps 0.0001 trains" in \
        found.reason


def test_mp13():
    assert R.mp13("RuntimeError: dtype", True).verdict == "refuted"
    assert R.mp13(None, True).verdict == "supported"
    assert R.mp13("RuntimeError: dtype", False).verdict == "nuanced"


def layer_runs(stalled_fixed: float, acc_fixed: float = 0.9) -> pd.DataFrame:
    rows = []
    for seed, j in zip(SEEDS, JITTER, strict=True):
        rows.append({"layer": "fixed fp16 layer (16-true)", "seed": seed,
                     "test_metric": acc_fixed + j, "stalled": stalled_fixed + j})
        rows.append({"layer": "nn.Linear, 16-mixed", "seed": seed, "test_metric": 0.9,
                     "stalled": 0.0})
    return pd.DataFrame(rows)


def test_mp14():
    broken = {"a": "RuntimeError: shapes", "b": "runs, but computes x W: far"}
    works = {"a": "runs, within 1 of the intended x W^T + b"}
    found = R.mp14(broken, layer_runs(0.3))
    assert found.verdict == "refuted" and "30 % of updates unapplied" in found.reason
    assert R.mp14(works, layer_runs(0.0)).verdict == "supported"
    assert R.mp14(works, layer_runs(0.3)).verdict == "nuanced"
    assert R.mp14(works, layer_runs(0.0, acc_fixed=0.5)).verdict == "nuanced"


def results(back: set[str] = frozenset(), computed_low: bool = True) -> pd.DataFrame:
    """result_dtypes-like rows: linear and matmul compute low (unless not computed_low); the
    ops in `back` return fp32 after computing low; cross_entropy upcasts a low input."""
    rows = []
    for low in ("bf16", "fp16"):
        for op in ("linear", "matmul", "relu", "cross_entropy"):
            lowered = computed_low and op in ("linear", "matmul")
            rows.append({"device": "cpu", "autocast": low, "op": op, "input": "fp32",
                         "computed": low if lowered else "fp32",
                         "output": "fp32" if op in back or not lowered else low})
            rows.append({"device": "cpu", "autocast": low, "op": op, "input": low,
                         "computed": "fp32" if op == "cross_entropy" else low,
                         "output": "fp32" if op == "cross_entropy" else low})
    return pd.DataFrame(rows)


def test_mp15():
    found = R.mp15(results())
    assert found.verdict == "refuted" and "cross_entropy turn bf16 inputs into fp32" in \
        found.reason
    assert R.mp15(results(back={"linear", "matmul"})).verdict == "supported"
    assert R.mp15(results(back={"linear"})).verdict == "nuanced"
    assert R.mp15(results(computed_low=False)).verdict == "not testable here"


def flops(mixed: dict[str, int]) -> pd.DataFrame:
    rows = [{"precision": "32-true", "step_flops": 1000, "casts": 1}]
    rows += [{"precision": p, "step_flops": f, "casts": 16} for p, f in mixed.items()]
    return pd.DataFrame(rows)


def test_mp16():
    found = R.mp16(flops({"16-mixed": 1000, "bf16-mixed": 1000}))
    assert found.verdict == "refuted" and "1,000" in found.reason
    assert R.mp16(flops({"16-mixed": 1200, "bf16-mixed": 1000})).verdict == "refuted"
    assert R.mp16(flops({"16-mixed": 500, "bf16-mixed": 500})).verdict == "supported"
    assert R.mp16(flops({"16-mixed": 500, "bf16-mixed": 1000})).verdict == "nuanced"


def step_tensors(results: dict[str, str]) -> pd.DataFrame:
    """tensor_dtypes-like: kind x precision; `results` gives each AMP policy's step results."""
    kinds = ["activation", "weight gradient (.grad)", "optimizer.step() operands",
             "optimizer.step() results", "weight (master copy)", "optimizer state exp_avg"]
    cols = {}
    for p, res in results.items():
        cols[p] = {k: ("bf16" if k == "activation" else
                       res if k == "optimizer.step() results" else "fp32") for k in kinds}
    return pd.DataFrame(cols)


def update_loss_table(extra: float, noise=JITTER) -> pd.DataFrame:
    rows = []
    for opt in ("sgd", "adam"):
        for p in ("16-mixed", "bf16-mixed"):
            for seed, j in zip(SEEDS, noise, strict=True):
                rows.append({"optimizer": opt, "precision": p, "seed": seed, "stalled": 0.0,
                             "lost_fp16_scheme": extra + j})
    return pd.DataFrame(rows)


def test_mp18():
    fp32 = step_tensors({"16-mixed": "fp32", "bf16-mixed": "fp32"})
    found = R.mp18(fp32, update_loss_table(0.15))
    assert found.verdict == "refuted" and "15 % of updates lost if applied in fp16" in found.reason
    assert R.mp18(fp32, update_loss_table(0.0, noise=(-0.01, 0.0, 0.01))).verdict == "nuanced"
    half = step_tensors({"16-mixed": "fp16", "bf16-mixed": "fp32, bf16"})
    assert R.mp18(half, update_loss_table(0.15)).verdict == "supported"
    some = step_tensors({"16-mixed": "fp16", "bf16-mixed": "fp32"})
    assert R.mp18(some, update_loss_table(0.15)).verdict == "nuanced"


def errors(out: dict[str, float], grad: dict[str, float]) -> pd.DataFrame:
    u = updates(1.0, err=grad)
    full = u.step.str.endswith(", lr")
    u["out_rel_err_vs_fp64"] = [out[p] * (1 + 0.1 * s) if f else None
                                for p, s, f in zip(u.precision, u.seed, full, strict=True)]
    return u


def test_mp20():
    fp32_best = {"32-true": 1e-7, "bf16-mixed": 1e-3, "16-mixed": 1e-4}
    found = R.mp20(errors(fp32_best, fp32_best))
    assert found.verdict == "refuted" and "outputs bf16-mixed 0.0011" in found.reason
    amp_best = {"32-true": 1e-3, "bf16-mixed": 1e-5, "16-mixed": 1e-5}
    assert R.mp20(errors(amp_best, amp_best)).verdict == "supported"
    assert R.mp20(errors(amp_best, fp32_best)).verdict == "nuanced"


def times(pure_ratio: float) -> pd.DataFrame:
    return pd.DataFrame({"precision": ["32-true", "16-mixed", "bf16-mixed", "16-true",
                                       "bf16-true"],
                         "ratio_to_32-true": [1.0, 1.1, 1.1, pure_ratio, pure_ratio]})


def all_precisions(pure_diff: float, noise=JITTER) -> pd.DataFrame:
    return final({"16-mixed": 0.0, "bf16-mixed": 0.0, "16-true": pure_diff,
                  "bf16-true": pure_diff}, noise=noise)


def test_mp26():
    found = R.mp26(all_precisions(-0.05), times(0.5), "test CPU")
    assert found.verdict == "refuted" and found.hardware == "test CPU"
    assert "quality falls (16-true on digits, bf16-true on digits" in found.reason
    assert R.mp26(all_precisions(0.0), times(1.3), "test CPU").verdict == "refuted"
    assert R.mp26(all_precisions(0.05), times(0.5), "test CPU").verdict == "supported"
    assert R.mp26(all_precisions(0.0), times(0.5), "test CPU").verdict == "nuanced"
    assert R.mp26(all_precisions(0.05), times(1.3), "test CPU").verdict == "nuanced"
    # a fall that is a divergence says so
    broken = all_precisions(-0.05).assign(diverged=lambda d: d.precision.eq("16-true"))
    assert "16-true on digits (diverged), bf16-true on digits" in R.mp26(
        broken, times(0.5), "test CPU").reason
