"""Chapters 7 and 8's experiments at toy sizes: tidy tables with the right rows and exact bytes."""

import pandas as pd
import pytest
import torch

from precisionlab.study.experiments import size
from precisionlab.study.experiments import speed as exp
from precisionlab.study.reports import speed as rep
from precisionlab.validate import ParameterError


def test_stored_formats_one_row_per_seed_and_format():
    stored = size.stored_formats([0, 1], hidden=[128], steps=2, samples=200)
    assert len(stored) == 12 and set(stored.seed) == {0, 1}
    b = stored[stored.seed == 0].set_index("format").file_bytes
    assert b["int8"] < b["bf16"] < b["fp32"] and b["int4"] < b["int8"]
    assert b["bf16"] == b["fp16"]
    # bytes depend on shapes only, never on the seed's data or weights
    assert stored.groupby("format").file_bytes.nunique().eq(1).all()


def test_accuracy_changes_are_paired_by_seed():
    stored = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "format": ["fp32", "int8"] * 3,
                           "file_bytes": [100, 26] * 3,
                           "accuracy": [0.5, 0.49, 0.7, 0.69, 0.9, 0.89]})
    ch = size.accuracy_changes(stored).set_index("format")
    assert ch.change_pp["int8"] == pytest.approx(-1.0)
    assert ch.beyond_noise["int8"]  # the same -1 pp on every seed: beyond noise
    assert ch.bytes_vs_fp32["int8"] == pytest.approx(0.26) and ch.n["fp32"] == 3


def test_latency_grid_tidy():
    latency, sizes = size.latency_grid([16, 32], depth=1, batches=[1, 4], repeats=5, warmup=1,
                                       compare_torchao=False)
    assert set(latency.columns) >= {"width", "batch", "candidate", "speedup_vs_fp32"}
    assert len(latency) == 2 * 2 * latency.candidate.nunique()
    assert (latency[latency.candidate == "fp32"].speedup_vs_fp32 == 1).all()
    assert set(sizes.format) >= {"fp32", "bf16", "int8 (ours)"}


PARAMS = dict(
    seeds=[0], threads=2, formats=["fp32", "int8"], sizes=[32, 16], fp16_max_n=16,
    max_call_s=1.0, matvec_n=64, scaling_n=16, copy_mib=1, repeats=5, warmup=0,
    precisions=["bf16-mixed", "32-true"], pure_precisions=["16-true", "bf16-true"],
    mlp_widths=[16, 8], mlp_batch=32, tf_depths=[1],
    tf_d_model=8, tf_context=8, tf_batch=4, time_steps=1, step_repeats=5, max_step_s=5.0,
    accum_depth=1, accum_ks=[2, 1], bench_width=8, bench_batch=32, bench_steps=1, cpu_steps=2)


def test_check_parameters_normalizes_and_names_the_bad_one():
    p = exp.check_parameters(PARAMS)
    assert p["sizes"] == [16, 32] and p["precisions"] == ["32-true", "bf16-mixed"]
    assert p["accum_ks"] == [1, 2] and p["pure_precisions"] == ["bf16-true", "16-true"]
    with pytest.raises(ParameterError, match="pure_precisions"):
        exp.check_parameters({**PARAMS, "pure_precisions": ["16-mixed"]})
    with pytest.raises(ParameterError, match="cpu_steps"):
        exp.check_parameters({**PARAMS, "cpu_steps": 0})
    with pytest.raises(ParameterError, match="tf_d_model"):
        exp.check_parameters({**PARAMS, "tf_d_model": 6})
    with pytest.raises(ParameterError, match="accum_ks"):
        exp.check_parameters({**PARAMS, "accum_ks": [1, 3]})
    with pytest.raises(ParameterError, match="formats"):
        exp.check_parameters({**PARAMS, "formats": ["int8"]})


def test_matmul_grid_tables():
    mm = exp.matmul_grid([64, 128], ["fp32", "int8"], 16, 5.0, 1024, 1, repeats=5, warmup=0)
    assert set(mm["square"].fmt) == {"fp32", "int8"} and len(mm["square"]) == 4
    assert len(mm["matvec"]) == 2 and mm["copy"].gb_per_s.gt(0).all()


@pytest.fixture(scope="module")
def models():
    return exp.StepModels.make(0, [8, 16], 32, [1], 8, 8, 4)


def test_step_times_and_speedups(models):
    info = exp.model_info(models, 0)
    assert list(info["size"]) == [8, 16, 1] and info.matmul_flops.gt(0).all()
    times, skipped = exp.step_times(models, [0, 1], ["32-true", "bf16-mixed"], time_steps=1,
                                    repeats=5, warmup=0, max_step_s=5.0)
    assert skipped.empty and set(times.seed) == {0, 1}
    per_seed, speed = exp.speedups(times, info)
    assert len(per_seed) == 2 * 3 * 2 and len(speed) == 3 * 2
    assert (speed[speed.precision == "32-true"].speedup == 1).all()


@pytest.fixture(scope="module")
def mem(models):
    return exp.step_memory(models, ["32-true", "bf16-mixed"], 0)


def test_step_memory_counts_exact_bytes(mem):
    assert len(mem) == 6
    assert mem.groupby(["family", "size"]).static_bytes.nunique().eq(1).all()
    cmp = exp.memory_vs_32(mem)
    assert set(cmp.precision) == {"bf16-mixed"} and len(cmp) == 3 and cmp.act.gt(0).all()


def test_accumulation_and_overhead(models):
    acc = exp.accumulation_memory(models, 1, ["32-true"], [1, 2], 0)
    a = acc.set_index("k").activation_bytes
    assert a[2] < a[1]
    over = exp.trainer_overhead(models, ["32-true"], 8, 32, 1, 0, repeats=5, warmup=0)
    assert set(over.candidate) == {"plain loop", "Trainer"} and over.ms_per_step.gt(0).all()


def test_report_builds_tables_texts_and_figures(models, mem):
    info = exp.model_info(models, 0)
    times, _ = exp.step_times(models, [0], ["32-true", "bf16-mixed"], time_steps=1, repeats=5,
                              warmup=0, max_step_s=5.0)
    _, speed = exp.speedups(times, info)
    peak = pd.Series({"fp32": 10.0, "bf16": 5.0})
    assert set(rep.step_texts(speed, peak, ["bf16-mixed"])) >= {"step_by_prec", "train_share"}
    assert "bf16-mixed speed-up" in rep.step_table(speed, info, ["bf16-mixed"]).columns
    texts = rep.memory_texts(mem, exp.memory_vs_32(mem))
    assert texts["mem_family_text"].startswith("MLP: saved activations")
    assert len(rep.memory_table(mem, on_cuda=False)) == len(mem)
    fig = rep.fig_memory(mem, ["32-true", "bf16-mixed"], [8, 16], [1], "test CPU")
    fig2 = rep.fig_step(speed, ["bf16-mixed"], [8, 16], [1], 32, 8, 4, 8, 1.5, "test CPU")
    assert fig.axes and fig2.axes
    assert rep.published_texts(False)["pub_v100"] == "3.27x"


def test_dataset_memory_step_does_not_grow_with_the_dataset(models):
    ds = exp.dataset_memory(models, ["32-true", "bf16-mixed", "bf16-true"], 0)
    n = len(models.data["MLP"].x_train)
    assert sorted(ds.examples.unique()) == [n // 2, n] and len(ds) == 6
    # the step's bytes depend on the batch, not on how many examples the dataset holds
    assert ds.groupby("precision").total_bytes.nunique().eq(1).all()
    # the dataset is kept as loaded in every precision: the bytes of its tensors
    full = ds[ds.examples == n]
    d = models.data["MLP"]
    assert full.dataset_bytes.eq(sum(t.numel() * t.element_size()
                                     for t in (d.x_train, d.y_train, d.x_test, d.y_test))).all()
    bf16 = full.set_index("precision").total_bytes
    assert bf16["bf16-true"] < bf16["32-true"] / 2 + 4096  # all-16-bit: about half


def test_cpu_runs_and_support(models):
    runs = exp.cpu_runs(models, ["bf16-mixed", "16-mixed"], 0, steps=2)
    assert list(runs.precision) == ["bf16-mixed", "16-mixed"]
    assert runs.ran.all() and runs.finite.all() and runs.error.eq("").all()
    support = exp.cpu_support()
    assert support["capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(support["native"]) == {"bf16", "fp16"} and support["capability"] in support["words"]


def test_normalized_unpacks_the_normalized_parameters_in_order():
    p = {"sizes": [1, 2], "precisions": ["32-true"], "pure_precisions": [], "mlp_widths": [8],
         "tf_depths": [1], "accum_ks": [1, 2], "threads": 2}
    assert exp.normalized(p) == ([1, 2], ["32-true"], [], [8], [1], [1, 2])


def test_use_device_resolves_sets_threads_and_names_the_hardware(monkeypatch):
    monkeypatch.setattr(exp.provenance, "hardware_line", lambda d, t: f"{d} with {t} threads")
    before = torch.get_num_threads()
    try:
        assert exp.use_device("cpu", 1) == ("cpu", "cpu with 1 threads", False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_step_study_names_the_tables_and_computes_speedups(monkeypatch):
    info = pd.DataFrame({"family": ["MLP"], "size": [8], "params": [100], "matmul_flops": [2e9]})
    times = pd.DataFrame({"seed": 0, "family": "MLP", "size": 8, "repeat": [0, 0, 1, 1],
                          "precision": ["32-true", "bf16-mixed"] * 2,
                          "seconds": [2.0, 1.0, 2.0, 1.0], "seconds_per_step": [1.0, 0.5] * 2})
    skipped = pd.DataFrame(columns=["seed", "family", "size", "precision", "reason"])
    calls = []
    monkeypatch.setattr(exp, "model_info", lambda models, seed: calls.append(seed) or info)
    monkeypatch.setattr(exp, "step_times",
                        lambda *a: calls.append(a[1:]) or (times, skipped))
    got_info, tables = exp.step_study("models", [3, 4], ["32-true", "bf16-mixed"], 2, 5, 1, 0.5)
    assert calls == [3, ([3, 4], ["32-true", "bf16-mixed"], 2, 5, 1, 0.5)]
    assert got_info is info and list(tables) == list(exp.STEP_TABLES)
    assert tables["step_times"] is times and tables["step_skipped"] is skipped
    speed = tables["step_speedup"].set_index("precision")
    assert speed.speedup["bf16-mixed"] == pytest.approx(2.0)
    assert speed.attained_gflops["32-true"] == pytest.approx(2.0)
