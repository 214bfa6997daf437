"""The quantization rules (Q-1, MP-10, Q-4, Q-3) reach every verdict on small synthetic tables."""

from __future__ import annotations

import pandas as pd
import pytest

from precisionlab.study.rules import quantization as rq

SEEDS = [0, 1, 2]
FP32 = {0: 0.80, 1: 0.82, 2: 0.81}
JITTER = {0: 0.0, 1: 0.001, 2: -0.001}  # seed-to-seed noise of a paired difference


def bits_rows(drop: dict[int, float], models=("mlp",), recipe8: float | None = None
              ) -> pd.DataFrame:
    """Every config of a PTQ sweep, losing `drop[bits]` accuracy (per-tensor loses 10x more
    below 8 bits, so the best scheme is found); `recipe8` overrides standard int8's loss."""
    rows = []
    for m in models:
        for b, d in drop.items():
            for mode in ("weight-only", "weight+activation"):
                for g in ("per_tensor", "per_channel"):
                    for w in ("symmetric", "asymmetric"):
                        loss = d * (10 if g == "per_tensor" and b < 8 else 1)
                        if (recipe8 is not None and b == 8 and mode == "weight+activation"
                                and g == "per_channel" and w == "symmetric"):
                            loss = recipe8
                        for s in SEEDS:
                            acc = FP32[s] - loss + JITTER[s]
                            rows.append({"model": m, "seed": s, "bits": b, "mode": mode,
                                         "granularity": g, "weights": w, "test_accuracy": acc,
                                         "fp32_accuracy": FP32[s], "zero_fraction": 0.01,
                                         "weight_bytes": 1000 * b // 8})
    return pd.DataFrame(rows)


def test_q1_verdicts():
    assert rq.q1(bits_rows({8: 0.0, 4: 0.001})).verdict == "supported"
    assert rq.q1(bits_rows({8: 0.0, 4: 0.05})).verdict == "nuanced"
    assert rq.q1(bits_rows({8: 0.0, 4: 0.0}, recipe8=0.05)).verdict == "refuted"
    f = rq.q1(bits_rows({8: 0.0, 2: 0.3}, models=("mlp", "transformer")))
    assert f.verdict == "nuanced" and "mlp at 2 bits (lower beyond noise)" in f.reason


def test_q1_calibrator_variant_can_break_support():
    cal = pd.DataFrame([{"model": "mlp", "seed": s, "calibrator": "minmax", "act_bits": 8,
                         "default_size": True, "test_accuracy": FP32[s] - 0.05 + JITTER[s],
                         "fp32_accuracy": FP32[s]} for s in SEEDS])
    f = rq.q1(bits_rows({8: 0.0, 4: 0.001}), cal)
    assert f.verdict == "nuanced" and "not: mlp activations minmax (lower beyond noise)" in f.reason


def test_q1_one_seed_is_never_supported():
    t = bits_rows({8: 0.0, 4: 0.0})
    f = rq.q1(t[t.seed == 0])
    assert f.verdict == "nuanced" and "n=1" in f.reason


def trace(int8_ops: int) -> pd.DataFrame:
    rows = [{"op": "aten.mm", "in_dtypes": "bfloat16,bfloat16", "out_dtype": "bfloat16"},
            {"op": "aten.nll_loss", "in_dtypes": "float32,int64", "out_dtype": "float32"},
            {"op": "aten.where", "in_dtypes": "bool,float32", "out_dtype": "float32"}]
    rows += [{"op": "aten._int_mm", "in_dtypes": "int8,int8", "out_dtype": "int32"}] * int8_ops
    return pd.DataFrame(rows)


def zeros(z8: float) -> pd.DataFrame:
    return pd.DataFrame([{"model": "mlp", "seed": s, "bits": b, "zero_fraction": z}
                         for s in SEEDS for b, z in ((8, z8), (2, 0.8))])


def test_mp10_verdicts():
    assert rq.mp10(trace(0), zeros(0.01)).verdict == "refuted"
    assert rq.mp10(trace(2), zeros(0.6)).verdict == "supported"
    assert rq.mp10(trace(2), zeros(0.01)).verdict == "nuanced"
    assert rq.mp10(trace(0), zeros(0.3)).verdict == "nuanced"
    assert len(rq.integer_ops(trace(2))) == 2


def low_rank(loss_vs_int: float, factor_dtype: str = "torch.float32") -> pd.DataFrame:
    return pd.DataFrame([{"model": "mlp", "seed": s, "budget_bits": 8,
                          "test_accuracy": FP32[s] - loss_vs_int + JITTER[s],
                          "weight_bytes": 990, "weight_dtype": "torch.float32",
                          "factor_dtypes": factor_dtype,
                          "factor_bits": 16 if "16" in factor_dtype else 32} for s in SEEDS])


def test_q4_verdicts():
    ints = bits_rows({8: 0.0})
    assert rq.q4(low_rank(0.3), ints).verdict == "refuted"
    assert rq.q4(low_rank(0.0, "torch.bfloat16"), ints).verdict == "supported"
    assert rq.q4(low_rank(0.0), ints).verdict == "nuanced"  # float32 factors, same accuracy
    assert rq.q4(low_rank(0.3, "torch.bfloat16"), ints).verdict == "nuanced"
    assert "x0.99" in rq.q4(low_rank(0.3), ints).reason


def ptq_rows(drop: dict[int, float], jitter: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, "scheme": "weight+activation", "bits": b,
                          "test_accuracy": FP32[s] - d + jitter * JITTER[s],
                          "fp32_accuracy": FP32[s]} for b, d in drop.items() for s in SEEDS])


def test_q3_verdicts():
    assert rq.q3(ptq_rows({8: 0.05, 4: 0.2})).verdict == "supported"
    assert rq.q3(ptq_rows({8: 0.0, 4: 0.2})).verdict == "nuanced"
    assert rq.q3(ptq_rows({8: 0.0, 4: 0.0})).verdict == "refuted"
    # a loss the seeds cannot tell from noise is neither a trade nor equivalence
    assert rq.q3(ptq_rows({8: 0.0, 4: 0.01}, jitter=20)).verdict == "nuanced"


def test_q3_reason_reports_qat_intervals():
    curves = pd.DataFrame([{"method": "QAT", "scheme": "weight+activation", "bits": 4, "step": st,
                            "seed": s, "test_accuracy": FP32[s] - 0.05 + JITTER[s],
                            "ptq_accuracy": FP32[s] - 0.2, "control_accuracy": FP32[s] + 0.01}
                           for s in SEEDS for st in (0, 300)])
    f = rq.q3(ptq_rows({8: 0.0, 4: 0.2}), curves)
    assert "after 300 QAT steps" in f.reason and "+15" in f.reason


def test_q3_needs_int8():
    with pytest.raises(ValueError, match="8 bits"):
        rq.q3(ptq_rows({4: 0.2}))


def test_quantized_integer_ops_skip_indices_labels_and_masks():
    trace = pd.DataFrame({
        "op": ["aten.mm", "aten.embedding", "aten.nll_loss", "aten.eq", "aten._to_copy",
               "aten.quantize"],
        "in_dtypes": ["bf16,bf16", "fp32,int64", "fp32,int64", "int64,int64", "fp32", "fp32"],
        "out_dtype": ["bf16", "fp32", "fp32", "bool", "uint8", "qint8"],
    })
    found = rq.integer_ops(trace)
    assert list(found.op) == ["aten._to_copy", "aten.quantize"]
    assert rq.integer_ops(trace, index_dtypes=("int64", "bool", "uint8")).op.tolist() \
        == ["aten.quantize"]
