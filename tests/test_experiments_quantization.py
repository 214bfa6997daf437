"""The quantization experiments return tidy tables, paired with fp32 by seed (tiny sizes)."""

from __future__ import annotations

import pandas as pd
import pytest

from precisionlab.quant.qat import QATTrainer
from precisionlab.study.experiments import quantization as xq

SEEDS = [0, 1]


@pytest.fixture(scope="module")
def trained():
    return xq.train_fp32("mlp", SEEDS, steps=5, batch_size=32, lr=3e-3, samples=400,
                         hidden=[16])


def test_train_fp32_one_split_per_seed(trained):
    models, fp32 = trained
    assert list(fp32.seed) == SEEDS and set(fp32.model) == {"mlp"}
    (_, a), (_, b) = models["mlp", 0], models["mlp", 1]
    assert not (a.x_train[:5] == b.x_train[:5]).all()  # each seed draws its own data
    assert (fp32.weights == 40 * 16 + 16 * 10).all()


def test_ptq_sweep_is_tidy(trained):
    models, fp32 = trained
    t = xq.ptq_sweep(models, fp32, bits=[8, 4], calibrator="minmax", n_calib=32, group_size=8)
    assert len(t) == len(SEEDS) * 2 * 3 * 2 * 2
    assert {"fp32_accuracy", "drop_pp", "loss_increase", "zero_fraction"} <= set(t.columns)
    assert t.drop_pp.notna().all()
    z = xq.zero_table(t)
    assert len(z) == len(SEEDS) * 2 and z.zero_fraction.between(0, 1).all()


def test_calibrator_sweep_sizes(trained):
    models, fp32 = trained
    t = xq.calibrator_sweep(models, fp32, ["minmax", "p99.9"], act_bits=[8, 3],
                            n_calib={"mlp": 32}, sizes={"mlp": [16]})
    assert set(t.calib_examples) == {16, 32}
    assert set(t[~t.default_size].act_bits) == {3}  # extra sizes only at the lowest width
    assert t.clipped.between(0, 1).all()


def test_low_rank_sweep_records_stored_formats(trained):
    models, fp32 = trained
    t = xq.low_rank_sweep(models, fp32, [8, 4])
    assert (t.factor_dtypes == "torch.float32").all() and (t.weight_dtype == "torch.float32").all()
    assert (t.factor_bits == 32).all() and len(t) == 4
    assert (t[t.budget_bits == 4].weight_bytes <= t[t.budget_bits == 8].weight_bytes.max()).all()


def test_dtype_uses():
    trace = pd.DataFrame({"op": ["mm", "nll"], "in_dtypes": ["bfloat16,bfloat16", "float32,int64"],
                          "out_dtype": ["bfloat16", "float32"]})
    uses = xq.dtype_uses(trace)["ops using it"]
    assert uses.to_dict() == {"bfloat16": 1, "float32": 1, "int64": 1}


def test_qat_runs_pair_with_ptq_and_control(trained):
    models, fp32 = trained
    ptq = xq.ptq_widths(models, fp32, [8, 2], n_calibration=32)
    assert len(ptq) == len(SEEDS) * 2 * 2

    def finetuner(seed):
        return QATTrainer(lr=1e-3, steps=4, batch_size=32, eval_every=2, seed=seed + 1000,
                          progress=False)

    runs = [("fp32 control", "none", 32, None), ("QAT", "weight+activation", 2, 0.0)]
    curves, equal = xq.qat_runs(models, fp32, ptq, runs, finetuner, n_calibration=32)
    assert all(equal) and len(equal) == len(SEEDS) * 3
    qat = curves[curves.method == "QAT"]
    start = qat[qat.step == 0]
    assert (start.test_accuracy == start.ptq_accuracy).all()  # QAT starts as the PTQ model
    assert qat.control_accuracy.notna().all() and set(curves.step) == {0, 2, 4}


PTQ_PARAMS = dict(seeds=[0], models=["mlp"], mlp_samples=1000, mlp_hidden=[8], mlp_steps=1,
                  mlp_batch=8, tf_context=8, tf_d_model=8, tf_layers=1, tf_steps=1, tf_batch=4,
                  tf_test=4, lr=1e-3, bits=[8, 4], group_size=8, sweep_calibrator="mse",
                  calibrators=["minmax"], low_act_bits=3, mlp_calib=16, tf_calib=4,
                  calib_sizes=[8], calib_size_models=["mlp"], lowrank_bits=[8], threads=1)
QAT_PARAMS = dict(seeds=[0], n_samples=1000, hidden=[8], base_steps=1, base_lr=1e-3,
                  batch_size=8, bits=[8, 4], qat_bits=[8], weight_only_qat_bits=[],
                  checkpoints=[1, 2], finetune_lr=1e-3, act_observer="mse", n_calibration=8,
                  act_momentum=0.0, moving_bits=[], moving_momentum=0.01, threads=1)


@pytest.mark.parametrize(("check", "params", "bad", "message"), [
    (xq.check_ptq_parameters, PTQ_PARAMS, {"bits": [4, 2]}, "bits: must include 8"),
    (xq.check_ptq_parameters, PTQ_PARAMS, {"lowrank_bits": [6]}, "lowrank_bits: each must be"),
    (xq.check_ptq_parameters, PTQ_PARAMS, {"calib_sizes": [5000]}, "calib_sizes: 5000 exceeds"),
    (xq.check_qat_parameters, QAT_PARAMS, {"qat_bits": [3]}, "qat_bits: every width"),
    (xq.check_qat_parameters, QAT_PARAMS, {"checkpoints": [2, 1]}, "checkpoints: list them"),
    (xq.check_qat_parameters, QAT_PARAMS, {"act_momentum": 2}, "act_momentum: must be"),
])
def test_parameter_checks_name_the_parameter(check, params, bad, message):
    check(params)  # the defaults pass
    with pytest.raises(ValueError, match=message):
        check(params | bad)

