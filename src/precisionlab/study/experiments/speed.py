"""Chapter 8's measurements: matrix-product throughput per format, memory bandwidth, the kernels
that ran, training-step time per precision across model sizes, counted step memory, the memory
of accumulated steps, and the Trainer's own overhead. Each returns tidy DataFrames.

    models = speed.StepModels.make(seed=0, mlp_batch=256, tf_d_model=128, tf_context=64,
                                   tf_batch=32, mlp_widths=[256, 1024], tf_depths=[1, 2])
    times, skipped = speed.step_times(models, [0, 1, 2], ["32-true", "bf16-mixed"])
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from precisionlab import bench, memory, provenance
from precisionlab import validate as v
from precisionlab.amp import Trainer, plain_loop, set_matmul16
from precisionlab.data import Split
from precisionlab.study import tasks
from precisionlab.study.designs import bytes_over_32
from precisionlab.study.store import stored

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
PURE_PRECISIONS = ("bf16-true", "16-true")  # MP-17: weights, gradients and optimizer in 16 bits
MIB = 2**20


# The names of chapter 8's parameters cell, in its order.
PARAMETERS = ("seeds", "threads", "device", "formats", "sizes", "fp16_max_n", "max_call_s",
              "matvec_n", "scaling_n", "copy_mib", "repeats", "warmup", "precisions",
              "pure_precisions", "mlp_widths", "mlp_batch", "tf_depths", "tf_d_model",
              "tf_context", "tf_batch",
              "time_steps", "step_repeats", "max_step_s", "accum_depth", "accum_ks",
              "bench_width", "bench_batch", "bench_steps", "cpu_steps")


# The parameters `check_parameters` normalizes, which the chapter then uses in that form.
NORMALIZED = ("sizes", "precisions", "pure_precisions", "mlp_widths", "tf_depths", "accum_ks")


def normalized(p: dict) -> tuple:
    """The normalized parameters of `check_parameters`' result, in `NORMALIZED` order, to
    unpack in the chapter."""
    return tuple(p[k] for k in NORMALIZED)


def use_device(device: str, threads: int) -> tuple[str, str, bool]:
    """Resolve `device` (auto -> cuda or cpu), give torch `threads` CPU threads, and return the
    device, the hardware line that signs figures and verdicts, and whether it is CUDA."""
    device = provenance.resolve_device(device)
    torch.set_num_threads(threads)
    return device, provenance.hardware_line(device, threads), device == "cuda"


def check_parameters(p: dict) -> dict:
    """Chapter 8's parameters (a dict of the parameters cell's names), checked before any compute
    with one clear error naming the parameter; returns them normalized (sorted lists, 32-true
    first)."""
    p = dict(p)
    v.integers("seeds", p["seeds"], 0, 2**32 - 1)
    v.integer("threads", p["threads"], 1, 256)
    v.subset_of("formats", p["formats"], list(bench.MATMUL_DTYPES))
    if "fp32" not in p["formats"]:
        raise v.ParameterError(f"formats: must include 'fp32', the baseline; got {p['formats']!r}")
    p["sizes"] = sorted(v.integers("sizes", p["sizes"], 16, 32768))
    v.integer("fp16_max_n", p["fp16_max_n"], 0, 32768)
    v.positive("max_call_s", p["max_call_s"])
    v.integer("matvec_n", p["matvec_n"], 16, 65536)
    v.integer("scaling_n", p["scaling_n"], 16, 32768)
    v.integer("copy_mib", p["copy_mib"], 1, 65536)
    v.integer("repeats", p["repeats"], 5, 1000)  # bench.interleaved needs >= 5 for a median
    v.integer("warmup", p["warmup"], 0, 100)
    v.subset_of("precisions", p["precisions"], list(PRECISIONS))
    if "32-true" not in p["precisions"] or len(p["precisions"]) < 2:
        raise v.ParameterError("precisions: must include '32-true' (the baseline) and a mixed "
                               f"precision; got {p['precisions']!r}")
    p["precisions"] = ["32-true"] + [x for x in p["precisions"] if x != "32-true"]
    p["pure_precisions"] = [x for x in PURE_PRECISIONS
                            if x in v.subset_of("pure_precisions", p["pure_precisions"],
                                                list(PURE_PRECISIONS))]
    digits_train = len(tasks.load("digits", 0).y_train)
    p["mlp_widths"] = sorted(v.integers("mlp_widths", p["mlp_widths"], 1, 65536))
    v.integer("mlp_batch", p["mlp_batch"], 1, digits_train)
    p["tf_depths"] = sorted(v.integers("tf_depths", p["tf_depths"], 1, 64))
    v.integer("tf_d_model", p["tf_d_model"], 4, 8192)
    if p["tf_d_model"] % 4:
        raise v.ParameterError("tf_d_model: must be a multiple of the 4 attention heads; "
                               f"got {p['tf_d_model']}")
    v.integer("tf_context", p["tf_context"], 1, 4096)
    v.integer("tf_batch", p["tf_batch"], 1, 100_000)
    v.integer("time_steps", p["time_steps"], 1, 1000)
    v.integer("step_repeats", p["step_repeats"], 5, 1000)
    v.positive("max_step_s", p["max_step_s"])
    v.integer("accum_depth", p["accum_depth"], 1, 64)
    p["accum_ks"] = sorted(v.integers("accum_ks", p["accum_ks"], 1, p["tf_batch"]))
    if 1 not in p["accum_ks"] or any(p["tf_batch"] % k for k in p["accum_ks"]):
        raise v.ParameterError(f"accum_ks: must include 1 and divide tf_batch = {p['tf_batch']}; "
                               f"got {p['accum_ks']!r}")
    v.integer("bench_width", p["bench_width"], 1, 65536)
    v.integer("bench_batch", p["bench_batch"], 1, digits_train)
    v.integer("bench_steps", p["bench_steps"], 1, 10_000)
    v.integer("cpu_steps", p["cpu_steps"], 1, 10_000)
    return p


# --------------------------------------------------------------------------------------------
# Matrix products, bandwidth, kernels
# --------------------------------------------------------------------------------------------

# The tables `matmul_grid` returns, by the name a chapter saves each under.
MATMUL_TABLES = {"matmul_times": "square_times", "matvec_times": "matvec_times",
                 "copy_bandwidth": "copy", "matmul_skipped": "skipped",
                 "matmul_throughput": "square"}


def throughput(times: pd.DataFrame) -> pd.DataFrame:
    """Median GOP/s with quartiles per format and shape, with intensity and attained GB/s."""
    if times.empty:
        return times
    g = times.groupby(["fmt", "rows", "inner", "cols"], sort=False)
    out = g.gops.agg(median="median", q25=lambda s: s.quantile(0.25),
                     q75=lambda s: s.quantile(0.75))
    out["intensity"] = g.intensity.first()
    out["gb_per_s"] = (g.bytes.first() / g.seconds.median()) / 1e9
    return out.reset_index()


@stored
def matmul_grid(sizes: Sequence[int], formats: Sequence[str], fp16_max_n: int, max_call_s: float,
                matvec_n: int, copy_mib: int, repeats: int = 7, warmup: int = 1,
                device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Square products of each size and format, one matrix-vector product and a large copy,
    timed. Returns tables: square_times, matvec_times, copy (bandwidth), skipped (what the
    too-slow guard left out, and why), square and matvec (`throughput` summaries)."""
    caps = {"fp16": fp16_max_n} if "fp16" in formats else {}
    sq, sq_skip = bench.matmul_throughput([(n, n, n) for n in sizes], list(formats),
                                          repeats=repeats, warmup=warmup, device=device,
                                          max_call_seconds=max_call_s, max_rows=caps)
    mv, mv_skip = bench.matmul_throughput([(matvec_n, matvec_n, 1)], list(formats),
                                          repeats=repeats, warmup=warmup, device=device,
                                          max_call_seconds=max_call_s)
    copy_t = bench.copy_bandwidth(copy_mib * MIB, repeats=repeats, warmup=warmup, device=device)
    return {"square_times": sq, "matvec_times": mv, "copy": copy_t,
            "skipped": pd.concat([sq_skip, mv_skip], ignore_index=True),
            "square": throughput(sq), "matvec": throughput(mv)}


@stored
def kernel_table(formats: Sequence[str], peak: pd.Series, flags: dict[str, bool], clock_mhz: str,
                 scaling_n: int, threads: int, fp16_max_n: int, max_call_s: float,
                 repeats: int = 7, warmup: int = 1,
                 device: str = "cpu") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per format: the kernel PyTorch ran, the widest instruction this CPU has for it, and a
    single-thread product of size `scaling_n` in operations per cycle, with `threads` threads
    beside it. Returns (kernels, thread_scaling timings); on CUDA only kernel names and peaks."""
    rows = []
    if device == "cuda":
        for f in formats:
            if f in peak:
                rows.append({"format": f, "kernel PyTorch ran":
                             bench.kernels_used(lambda: None, device)[0],
                             "peak (GFLOP/s; int8 GOP/s)": peak[f],
                             "peak / fp32 peak": peak[f] / peak["fp32"]})
        return pd.DataFrame(rows), pd.DataFrame()
    flops_of = {f: bench.instruction_for(f, flags) for f in bench.MATMUL_DTYPES}
    clock_ghz = float(clock_mhz) / 1000 if clock_mhz != "?" else math.nan
    cases = {f: bench.matmul_case(f, scaling_n, device=device) for f in formats
             if f in peak and not (f == "fp16" and scaling_n > fp16_max_n)}
    cands: dict[str, Callable[[], object]] = {}
    for f, case in cases.items():
        cands[f"{f}|1"] = bench.at_threads(case.fn, 1)
        if threads > 1:
            cands[f"{f}|{threads}"] = case.fn
    slow = bench.too_slow(cands, max_call_s, device)
    t = bench.interleaved({k: fn for k, fn in cands.items() if k not in slow}, repeats=repeats,
                          warmup=warmup, device=device)
    t[["fmt", "threads"]] = t.candidate.str.split("|", expand=True)
    t["gops"] = t.fmt.map({f: c.ops for f, c in cases.items()}) / t.seconds / 1e9
    med = t.groupby(["fmt", "threads"]).gops.median()
    for f in formats:
        if f not in peak:
            continue
        instr = flops_of[f]
        one = med.get((f, "1"), math.nan)
        many = med.get((f, str(threads)), one)
        per_cycle = one / clock_ghz
        ran = f in cases and f"{f}|1" not in slow
        rows.append({
            "format": f,
            "kernel PyTorch ran": (", ".join(bench.kernels_used(cases[f].fn))
                                   or "ATen native (no MKL/oneDNN)") if ran else "not run",
            "widest instruction here": instr[0] if instr else "none (no dedicated instruction)",
            "ops / instruction": instr[1] if instr else math.nan,
            "x fp32 FMA": (instr[1] / flops_of["fp32"][1] if instr and flops_of["fp32"]
                           else math.nan),
            "GOP/s, 1 thread": one,
            "ops / cycle / thread": per_cycle,
            "instructions / cycle": per_cycle / instr[1] if instr else math.nan,
            f"GOP/s, {threads} threads": many,
            f"{threads} / 1 threads": many / one,
            "peak / fp32 peak": peak[f] / peak["fp32"],
        })
    return pd.DataFrame(rows), t


# --------------------------------------------------------------------------------------------
# Training steps: the models, their step times and their counted memory
# --------------------------------------------------------------------------------------------

@dataclass
class StepModels:
    """The two model families timed: an MLP 64-w-w-10 on digits (sizes: widths w) and a character
    transformer (sizes: blocks), with their data and batch sizes."""

    data: dict[str, Split]
    batch: dict[str, int]
    sizes: list[tuple[str, int]]
    tf_d_model: int
    device: str = "cpu"

    @classmethod
    def make(cls, seed: int, mlp_widths: Sequence[int], mlp_batch: int, tf_depths: Sequence[int],
             tf_d_model: int, tf_context: int, tf_batch: int, device: str = "cpu") -> StepModels:
        chars = tasks.load("chars", seed, context=tf_context, n_train=max(4 * tf_batch, 256),
                           n_test=64)
        data = {"MLP": tasks.load("digits", seed).to(device), "transformer": chars.to(device)}
        sizes = [("MLP", w) for w in mlp_widths] + [("transformer", d) for d in tf_depths]
        return cls(data, {"MLP": mlp_batch, "transformer": tf_batch}, sizes, tf_d_model, device)

    def new(self, family: str, size: int, seed: int) -> nn.Module:
        """A fresh model of `family` and `size`, its weights drawn from `seed`."""
        if family == "MLP":
            return tasks.model_for("digits", self.data["MLP"], seed, hidden=[size, size]).to(
                self.device)
        return tasks.model_for("chars", self.data["transformer"], seed, d_model=self.tf_d_model,
                               n_layers=size).to(self.device)

    def call(self, model: nn.Module, family: str, precision: str, seed: int,
             steps: int) -> Callable[[], object]:
        """One timed call: `steps` optimizer steps of the Trainer on `model` (trained in place)."""
        return lambda: Trainer(precision=precision, steps=steps, batch_size=self.batch[family],
                               seed=seed, eval_every=None, progress=False,
                               device=self.device).fit(model, self.data[family])


def model_info(models: StepModels, seed: int) -> pd.DataFrame:
    """Per model size: parameters and the matmul FLOPs of one 32-true step (counted)."""
    rows = []
    for family, size in models.sizes:
        m = models.new(family, size, seed)
        flops = memory.matmul_flops(models.call(m, family, "32-true", seed, steps=1))
        rows.append({"family": family, "size": size,
                     "params": sum(p.numel() for p in m.parameters()), "matmul_flops": flops})
    return pd.DataFrame(rows)


def step_times(models: StepModels, seeds: Sequence[int], precisions: Sequence[str],
               time_steps: int = 2, repeats: int = 5, warmup: int = 1, max_step_s: float = 0.5,
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trainer steps per precision at each model size, interleaved, per seed. A mixed precision
    whose call takes longer than `max_step_s` per step is dropped at that size and above (the
    32-true baseline is always timed). Returns (times: seed, family, size, precision, repeat,
    seconds, seconds_per_step; skipped: seed, family, size, precision, reason)."""
    times, skipped, dropped = [], [], {}  # dropped: (family, precision) -> first size skipped
    for seed in seeds:
        for family, size in models.sizes:
            m0 = models.new(family, size, seed)
            cands = {p: models.call(copy.deepcopy(m0), family, p, seed, time_steps)
                     for p in precisions if size < dropped.get((family, p), math.inf)}
            slow = bench.too_slow(cands, max_step_s * time_steps, models.device)  # a warm-up too
            for p, why in slow.items():
                if p == "32-true":
                    continue  # the baseline is always timed
                dropped[(family, p)] = size
                reason = f"one call took {why:.3g} s" if isinstance(why, float) else why
                skipped.append({"seed": seed, "family": family, "size": size, "precision": p,
                                "reason": reason})
                del cands[p]
            t = bench.interleaved(cands, repeats=repeats, warmup=warmup, device=models.device)
            times.append(t.assign(seed=seed, family=family, size=size))
    out = pd.concat(times).rename(columns={"candidate": "precision"})
    out["seconds_per_step"] = out.seconds / time_steps
    return out, pd.DataFrame(skipped, columns=["seed", "family", "size", "precision", "reason"])


def speedups(times: pd.DataFrame, info: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Step speed over 32-true per seed (ratio of medians in that seed's run), and per model size
    and precision: the median over seeds with the slowest and fastest seed (lo, hi), seconds per
    step and the matmul GFLOP/s attained."""
    per_seed = []
    for (seed, family, size), t in times.groupby(["seed", "family", "size"], sort=False):
        r = bench.ratios(t.rename(columns={"precision": "candidate"}), "32-true")
        for p, row in r.iterrows():
            per_seed.append({"seed": seed, "family": family, "size": size, "precision": p,
                             "median_s_per_step": t[t.precision == p].seconds_per_step.median(),
                             "speedup": 1 / row["ratio_to_32-true"]})
    per_seed = pd.DataFrame(per_seed)
    speed = (per_seed.groupby(["family", "size", "precision"], sort=False)
             .agg(speedup=("speedup", "median"), lo=("speedup", "min"), hi=("speedup", "max"),
                  s_per_step=("median_s_per_step", "median")).reset_index()
             .merge(info, on=["family", "size"]))
    speed["attained_gflops"] = speed.matmul_flops / speed.s_per_step / 1e9
    return per_seed, speed


STEP_TABLES = ("step_times", "step_skipped", "step_speedup_per_seed", "step_speedup")


def step_study(models: StepModels, seeds: Sequence[int], precisions: Sequence[str],
               time_steps: int, repeats: int, warmup: int, max_step_s: float,
               ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The step-time section in one call: `model_info` (first seed), `step_times` and
    `speedups`. Returns (info, tables by the names in `STEP_TABLES`)."""
    info = model_info(models, seeds[0])
    times, skipped = step_times(models, seeds, precisions, time_steps, repeats, warmup,
                                max_step_s)
    per_seed, speed = speedups(times, info)
    return info, dict(zip(STEP_TABLES, (times, skipped, per_seed, speed), strict=True))


def step_memory(models: StepModels, precisions: Sequence[str], seed: int) -> pd.DataFrame:
    """Counted bytes of one Trainer step (`memory.step_memory`) per model size and precision.
    Byte counts do not depend on the kernels, so 16-bit matmuls are emulated where this CPU's
    are slow (`set_matmul16('auto')`); the mode is restored after."""
    rows = []
    set_matmul16("auto")
    try:
        for family, size in models.sizes:
            m0 = models.new(family, size, seed)
            for p in precisions:
                rows.append({"family": family, "size": size, "precision": p,
                             **memory.step_memory(m0, models.data[family], p,
                                                  batch_size=models.batch[family],
                                                  device=models.device)})
    finally:
        set_matmul16("native")
    out = pd.DataFrame(rows)
    out["static_bytes"] = out.weight_bytes + out.grad_bytes + out.optimizer_state_bytes
    return out


def memory_vs_32(mem: pd.DataFrame) -> pd.DataFrame:
    """Each mixed precision's saved activations (act) and whole step (tot) over 32-true's."""
    return bytes_over_32(mem, ["activation_bytes", "total_bytes"]).rename(
        columns={"activation_bytes": "act", "total_bytes": "tot"})


def accumulation_memory(models: StepModels, depth: int, precisions: Sequence[str],
                        ks: Sequence[int], seed: int) -> pd.DataFrame:
    """Counted bytes of one optimizer step of the `depth`-block transformer split into k
    micro-batches, per precision and k (GA-2's memory side)."""
    rows = []
    set_matmul16("auto")  # byte counts only
    try:
        m0 = models.new("transformer", depth, seed)
        for p in precisions:
            for k in ks:
                rows.append({"precision": p, "k": k, **memory.step_memory(
                    m0, models.data["transformer"], p, batch_size=models.batch["transformer"],
                    accumulation_steps=k, device=models.device)})
    finally:
        set_matmul16("native")
    out = pd.DataFrame(rows)
    out["static_bytes"] = out.weight_bytes + out.grad_bytes + out.optimizer_state_bytes
    return out


def dataset_memory(models: StepModels, precisions: Sequence[str], seed: int) -> pd.DataFrame:
    """MP-17's dataset side: the counted step of the smallest MLP on all of its training examples
    and on the first half, per precision, beside the bytes of the dataset it trains from (the
    Trainer keeps a dataset as loaded and casts each batch)."""
    full = models.data["MLP"]
    half = dataclasses.replace(full, x_train=full.x_train[:len(full.x_train) // 2],
                               y_train=full.y_train[:len(full.y_train) // 2])
    width = min(size for family, size in models.sizes if family == "MLP")
    rows = []
    set_matmul16("auto")  # byte counts only
    try:
        m0 = models.new("MLP", width, seed)
        for p in precisions:
            for data in (half, full):
                step = memory.step_memory(m0, data, p, batch_size=models.batch["MLP"],
                                          device=models.device)
                rows.append({"precision": p, "examples": len(data.x_train),
                             "dataset_bytes": memory.tensor_bytes(
                                 [data.x_train, data.y_train, data.x_test, data.y_test]),
                             "total_bytes": step["total_bytes"]})
    finally:
        set_matmul16("native")
    return pd.DataFrame(rows)


CPU_RUN_MAX = 256  # cap on cpu_runs' MLP width and batch: a GPU profile's sizes are not for CPUs


def cpu_runs(models: StepModels, precisions: Sequence[str], seed: int,
             steps: int) -> pd.DataFrame:
    """MP-21: train the smallest MLP (width and batch capped at CPU_RUN_MAX) `steps` Adam steps on
    the CPU at each precision with torch's own kernels (none emulated), whatever the chapter's
    device. One row per precision: ran (no error), error, final_loss, finite (every loss
    finite), skipped_steps (of the loss scaler)."""
    data = models.data["MLP"].to("cpu")
    width = min(CPU_RUN_MAX, *(size for family, size in models.sizes if family == "MLP"))
    batch = min(CPU_RUN_MAX, models.batch["MLP"])
    rows = []
    for p in precisions:
        model = tasks.model_for("digits", data, seed, hidden=[width, width])
        try:
            hist = Trainer(precision=p, steps=steps, batch_size=batch, seed=seed,
                           eval_every=None, progress=False, device="cpu").fit(model, data)
        except Exception as exc:  # noqa: BLE001 - that it fails, and how, is the measurement
            rows.append({"precision": p, "ran": False, "error": f"{type(exc).__name__}: {exc}",
                         "final_loss": math.nan, "finite": False, "skipped_steps": 0})
            continue
        rows.append({"precision": p, "ran": True, "error": "",
                     "final_loss": float(hist.loss.iloc[-1]),
                     "finite": bool(hist.loss.map(math.isfinite).all()),
                     "skipped_steps": int(hist.skipped.sum())})
    return pd.DataFrame(rows)


def cpu_support() -> dict[str, object]:
    """This CPU's kernel capability (`torch.backends.cpu.get_cpu_capability`), its 16-bit and
    matrix-unit flags, and whether torch's kernels have native fp16 / bf16 arithmetic here."""
    isa = provenance.cpu_info()["isa"]
    capability = provenance.kernels()["cpu_capability"]
    flags = {f: bool(isa.get(f)) for f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16",
                                            "amx_bf16")}
    native = {d: provenance.has_native_16bit(d, isa, capability) for d in ("bf16", "fp16")}
    have = [f for f, on in flags.items() if on]
    words = (f"{capability} kernels; flags: {', '.join(have) or 'none of ' + ', '.join(flags)}; "
             f"native bf16: {'yes' if native['bf16'] else 'no'}, "
             f"native fp16: {'yes' if native['fp16'] else 'no'}")
    return {"capability": capability, "flags": flags, "native": native, "words": words}


def trainer_overhead(models: StepModels, precisions: Sequence[str], width: int, batch: int,
                     steps: int, seed: int, repeats: int = 5, warmup: int = 1) -> pd.DataFrame:
    """The Trainer against the hand-written `plain_loop` on a 64-width-width-10 MLP, interleaved,
    per precision; both run the same (emulated where slow) kernels, so the ratio is the
    Trainer's bookkeeping alone."""
    data, out = models.data["MLP"], []
    set_matmul16("auto")
    try:
        for p in precisions:
            net = tasks.model_for("digits", data, seed, hidden=[width, width]).to(models.device)
            cands = {
                "plain loop": lambda p=p, net=net: plain_loop(
                    net, data, steps=steps, batch_size=batch, lr=1e-4, seed=seed, precision=p),
                "Trainer": lambda p=p, net=net: Trainer(
                    precision=p, steps=steps, batch_size=batch, lr=1e-4, seed=seed,
                    eval_every=None, progress=False, device=models.device).fit(net, data),
            }
            times = bench.interleaved(cands, repeats=repeats, warmup=max(warmup, 1),
                                      device=models.device)
            out.append(bench.ratios(times, "plain loop").assign(precision=p).reset_index())
    finally:
        set_matmul16("native")
    table = pd.concat(out)
    table["ms_per_step"] = 1000 * table.median_s / steps
    return table


__all__ = ["StepModels", "accumulation_memory", "bytes_over_32", "check_parameters", "cpu_runs",
           "cpu_support", "dataset_memory", "kernel_table", "matmul_grid", "memory_vs_32",
           "model_info", "speedups", "step_memory", "step_times", "throughput", "trainer_overhead"]
