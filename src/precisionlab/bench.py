"""Timing that survives a shared, noisy machine: warm-up, interleaved repeats, medians, ratios.

Candidates are run in turn (A, B, A, B, ...) so that slow phases of the machine hit all of them
alike, and results are reported as ratios measured in the same run, never as absolute targets.
On a CUDA device the time comes from CUDA events.

Below the timing harness, what the hardware can do and what a step holds: `describe_machine`
(the facts that decide low-precision speed), `matmul_throughput` / `matmul_gflops` (GEMM
throughput per number format, with a guard for formats a CPU runs without dedicated
instructions), `copy_bandwidth` (memory bandwidth), `kernels_used` (which MKL / oneDNN kernel
ran). What a step holds in memory is `precisionlab.memory.step_memory`.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from precisionlab import provenance

# The functions here whose results are timings (or rates from timings): what a checked notebook
# cell may never print (`precisionlab.engine.nbcheck`).
TIMING_FUNCTIONS = ("time_once", "interleaved", "ratios", "too_slow", "matmul_throughput",
                    "matmul_gflops", "copy_bandwidth")


def time_once(fn: Callable[[], object], device: str = "cpu") -> float:
    """Seconds for one call of `fn` (CUDA events on a GPU, perf_counter on the CPU)."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 2,
                device: str = "cpu") -> pd.DataFrame:
    """Time each candidate `repeats` times, interleaved, after `warmup` untimed rounds.

    Returns a tidy table: candidate, repeat, seconds.
    """
    if repeats < 5:
        raise ValueError(f"repeats: use at least 5 for a median; got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup: must be >= 0; got {warmup}")
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    rows = []
    for r in range(repeats):
        order = list(candidates.items())
        if r % 2:  # alternate the order too, so neither always runs first
            order.reverse()
        for name, fn in order:
            rows.append({"candidate": name, "repeat": r, "seconds": time_once(fn, device)})
    return pd.DataFrame(rows)


def ratios(times: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Median seconds per candidate and its ratio to the baseline's median (same run)."""
    med = times.groupby("candidate", sort=False)["seconds"].median()
    spread = times.groupby("candidate", sort=False)["seconds"].agg(
        lambda s: (s.quantile(0.75) - s.quantile(0.25)) / s.median())
    return pd.DataFrame({"median_s": med, "iqr_over_median": spread,
                         f"ratio_to_{baseline}": med / med[baseline]})


# --------------------------------------------------------------------------------------------
# What the hardware can do: the machine, matmul throughput, memory bandwidth, kernels, memory
# --------------------------------------------------------------------------------------------

MATMUL_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}

# Arithmetic operations (a multiply and an add count 2) done by ONE instruction of the widest
# vector form this CPU has, per number format: the ISA's arithmetic, not a measurement.
# 512-bit: VFMADD231PS (16 fp32 lanes, 1 FMA each), VDPBF16PS (16 fp32 lanes, each adding two
# bf16 products), VFMADD231PH (32 fp16 lanes, needs AVX512-FP16), VPDPBUSD (16 int32 lanes, each
# adding four u8 x s8 products, AVX512-VNNI). 256-bit forms do half as many.
OPS_PER_INSTRUCTION: dict[str, dict[str, tuple[str, int]]] = {
    "fp32": {"avx512f": ("VFMADD231PS zmm (FMA)", 32), "fma": ("VFMADD231PS ymm (FMA)", 16)},
    "bf16": {"avx512_bf16": ("VDPBF16PS zmm (AVX512-BF16)", 64)},
    "fp16": {"avx512_fp16": ("VFMADD231PH zmm (AVX512-FP16)", 64)},
    "int8": {"avx512_vnni": ("VPDPBUSD zmm (AVX512-VNNI)", 128),
             "avx_vnni": ("VPDPBUSD ymm (AVX-VNNI)", 64)},
}

# The /proc/cpuinfo flags describe_machine reports, and why each one matters here.
MACHINE_FLAGS: dict[str, str] = {
    "avx2": "256-bit vectors",
    "fma": "fused multiply-add: the fp32 matmul instruction",
    "avx512f": "512-bit vectors: twice the lanes of AVX2",
    "avx512_bf16": "bf16 dot-product instruction (VDPBF16PS): 2x the FLOPs of an fp32 FMA",
    "avx512_fp16": "native fp16 arithmetic; without it fp16 is converted to fp32 or run scalar",
    "amx_tile": "AMX tile registers (matrix units), needed by amx_bf16 / amx_int8",
    "amx_bf16": "AMX bf16 tile matmul: many times the vector units' bf16 rate",
    "amx_int8": "AMX int8 tile matmul",
    "avx512_vnni": "int8 dot-product instruction (VPDPBUSD, 512-bit): 4x an fp32 FMA's ops",
    "avx_vnni": "the same int8 dot product in 256-bit form",
}


def instruction_for(fmt: str, flags: set[str] | dict[str, bool]) -> tuple[str, int] | None:
    """The widest instruction this CPU has for a matmul in `fmt` (fp32, bf16, fp16, int8) and
    its arithmetic operations per instruction; None when it has no such instruction (the format
    is then converted to another, or computed without a dedicated instruction)."""
    if fmt not in OPS_PER_INSTRUCTION:
        raise ValueError(f"fmt: must be one of {', '.join(OPS_PER_INSTRUCTION)}; got {fmt!r}")
    have = {f for f, on in flags.items() if on} if isinstance(flags, dict) else set(flags)
    for flag, found in OPS_PER_INSTRUCTION[fmt].items():  # widest first
        if flag in have:
            return found
    return None


def describe_machine(device: str = "cpu", threads: int | None = None) -> pd.DataFrame:
    """The facts that decide low-precision speed on this machine, as a table.

    Columns: item, value, why (what the item decides). CPU rows come from /proc/cpuinfo
    (model, logical CPUs, cores and siblings per package as the OS sees them, the clock it
    reports, ISA flags); software rows from torch (version, the vector ISA ATen dispatches to,
    the MKL and oneDNN versions it was built with, the quantized engine, the fp32 matmul
    precision setting); on CUDA also the GPU's name, compute capability, memory and TF32 setting.
    """
    info = provenance.cpu_info()
    fields, flags = info["fields"], info["flags"]
    versions = provenance.parse_library_versions(torch.__config__.show())
    rows = [
        ("CPU model", str(info["cpu_model"]), "which core design runs the kernels"),
        ("logical CPUs", str(os.cpu_count()), "what the OS offers; a VM's vCPUs may share cores"),
        ("cores / siblings per package", f"{fields.get('cpu cores', '?')} / "
                                         f"{fields.get('siblings', '?')}",
         "siblings > cores means two hardware threads share one core's vector units"),
        ("clock (MHz)", fields.get("cpu MHz", "?"),
         "as /proc/cpuinfo reports it (a VM shows its nominal clock); turbo and power saving "
         "change the real one"),
        ("threads used by torch", str(threads if threads is not None else torch.get_num_threads()),
         "intra-op threads of every CPU kernel"),
    ]
    for flag, why in MACHINE_FLAGS.items():
        rows.append((f"flag {flag}", "yes" if flag in flags else "no", why))
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    rows += [
        ("torch", torch.__version__, "the kernels and autocast rules in use"),
        ("ATen CPU capability", str(capability), "the vector ISA ATen's own kernels are built for"),
        ("MKL", versions["mkl"] or "not built in", "fp32 GEMM (SGEMM) on Intel builds"),
        ("oneDNN", versions["onednn"] or "not built in",
         "bf16/fp16/int8 matmul kernels on the CPU (brgemm, gemm_api)"),
        ("quantized engine", str(torch.backends.quantized.engine),
         "backend of torch.ao int8 operators"),
        ("fp32 matmul precision", torch.get_float32_matmul_precision(),
         "'highest' keeps fp32 matmuls in fp32 (no TF32 or bf16 shortcut)"),
    ]
    if str(device).startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        rows += [
            ("GPU", props.name, "the device that runs the numbers"),
            ("compute capability", f"{props.major}.{props.minor}",
             "7.0+: fp16 tensor cores; 8.0+: bf16 and TF32 tensor cores"),
            ("GPU memory (GiB)", f"{props.total_memory / 2**30:.1f}", "what a step must fit in"),
            ("CUDA (torch build)", str(torch.version.cuda), "runtime torch was built with"),
            ("TF32 for fp32 matmul", str(torch.backends.cuda.matmul.allow_tf32),
             "True would run '32-true' matmuls in TF32 on Ampere+"),
        ]
    return pd.DataFrame(rows, columns=["item", "value", "why"])


# --------------------------------------------------------------------------------------------
# Matmul throughput and memory bandwidth
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MatmulCase:
    """One matrix product (rows x inner) @ (inner x cols) in one format, ready to run.

    `ops` counts 2 per multiply-add; `bytes` is the least memory traffic the product needs
    (both operands read once, the result written once; int8 products write int32), so
    `intensity` = ops / bytes is its arithmetic intensity for a roofline. `calls` products are
    run per call of `fn`, so that a timed call of a small product is long enough to time.
    """

    fmt: str
    rows: int
    inner: int
    cols: int
    calls: int
    fn: Callable[[], object]

    @property
    def ops(self) -> int:
        return 2 * self.rows * self.inner * self.cols * self.calls

    @property
    def bytes(self) -> int:
        item = MATMUL_DTYPES[self.fmt].itemsize
        out = 4 if self.fmt == "int8" else item
        return (item * (self.rows * self.inner + self.inner * self.cols)
                + out * self.rows * self.cols) * self.calls

    @property
    def intensity(self) -> float:
        return self.ops / self.bytes


def matmul_case(fmt: str, rows: int, inner: int | None = None, cols: int | None = None,
                device: str = "cpu", min_ops: float = 2e8, seed: int = 0) -> MatmulCase:
    """A (rows x inner) @ (inner x cols) product in `fmt` (square when inner/cols are omitted).

    Floats are N(0, 1) rounded to the format and multiplied with ``@`` (the result in the same
    format, as autocast does); int8 operands are uniform in [-128, 127] and multiplied with
    ``torch._int_mm`` (int32 accumulation and result), PyTorch's int8 GEMM. Products smaller
    than `min_ops` operations are repeated within one call until they reach it.
    """
    if fmt not in MATMUL_DTYPES:
        raise ValueError(f"fmt: must be one of {', '.join(MATMUL_DTYPES)}; got {fmt!r}")
    inner = rows if inner is None else inner
    cols = rows if cols is None else cols
    for name, value in (("rows", rows), ("inner", inner), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: must be a positive int; got {value!r}")
    gen = torch.Generator().manual_seed(seed)
    if fmt == "int8":
        a = torch.randint(-128, 128, (rows, inner), generator=gen, dtype=torch.int8).to(device)
        b = torch.randint(-128, 128, (inner, cols), generator=gen, dtype=torch.int8).to(device)
        product = torch._int_mm
    else:
        dtype = MATMUL_DTYPES[fmt]
        a = torch.randn(rows, inner, generator=gen).to(device=device, dtype=dtype)
        b = torch.randn(inner, cols, generator=gen).to(device=device, dtype=dtype)
        product = torch.matmul
    calls = max(1, math.ceil(min_ops / (2 * rows * inner * cols)))

    def fn() -> torch.Tensor:
        for _ in range(calls):
            out = product(a, b)
        return out

    return MatmulCase(fmt, rows, inner, cols, calls, fn)


def too_slow(candidates: dict[str, Callable[[], object]], max_seconds: float,
             device: str = "cpu") -> dict[str, float | str]:
    """Run each candidate once (a first warm-up) and return those that must not be timed:
    name -> its seconds when one call took longer than `max_seconds`, or the error it raised.

    The guard for formats that a CPU runs without dedicated instructions (fp16 on a CPU without
    AVX512-FP16 can be hundreds of times slower than fp32): one call tells, before repeats.
    """
    slow: dict[str, float | str] = {}
    for name, fn in candidates.items():
        try:
            seconds = time_once(fn, device)
        except (RuntimeError, NotImplementedError) as err:
            slow[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
            continue
        if seconds > max_seconds:
            slow[name] = seconds
    return slow


def matmul_throughput(shapes: list[tuple[int, int, int]], formats: list[str], repeats: int = 5,
                      warmup: int = 1, device: str = "cpu", max_call_seconds: float = 1.0,
                      max_rows: dict[str, int] | None = None, min_ops: float = 2e8,
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Time matrix products of every shape (rows, inner, cols) in every format, interleaved.

    For each shape, in the given order, the formats still in the race are run once
    (`too_slow`), then timed with `interleaved` (`warmup` rounds, `repeats` timed rounds). A
    format is dropped at a shape, and at every later shape, when one call took longer than
    `max_call_seconds` or raised; `max_rows` caps a format's rows (skipped above, by
    parameter). Returns (times, skipped): times has one row per format, shape and repeat
    (fmt, rows, inner, cols, repeat, seconds, ops, bytes, intensity, gops = ops / seconds / 1e9);
    skipped has one row per format and shape left out (fmt, rows, inner, cols, reason).
    """
    bad = [f for f in formats if f not in MATMUL_DTYPES]
    if bad or not formats:
        raise ValueError(f"formats: must be a non-empty list from {', '.join(MATMUL_DTYPES)}; "
                         f"got {formats!r}")
    if not max_call_seconds > 0:
        raise ValueError(f"max_call_seconds: must be > 0; got {max_call_seconds!r}")
    caps = max_rows or {}
    dropped: dict[str, str] = {}
    rows_out, skipped = [], []
    for rows, inner, cols in shapes:
        cases = {}
        for fmt in formats:
            if fmt in dropped:
                reason = dropped[fmt]
            elif fmt in caps and rows > caps[fmt]:
                reason = f"above the {fmt} size cap of {caps[fmt]}"
            else:
                cases[fmt] = matmul_case(fmt, rows, inner, cols, device=device, min_ops=min_ops)
                continue
            skipped.append({"fmt": fmt, "rows": rows, "inner": inner, "cols": cols,
                            "reason": reason})
        slow = too_slow({f: c.fn for f, c in cases.items()}, max_call_seconds, device)
        for fmt, why in slow.items():
            dropped[fmt] = (f"one call took {why:.3g} s > {max_call_seconds:g} s at "
                            f"{rows}x{inner}x{cols}" if isinstance(why, float) else why)
            skipped.append({"fmt": fmt, "rows": rows, "inner": inner, "cols": cols,
                            "reason": dropped[fmt]})
            del cases[fmt]
        if not cases:
            continue
        times = interleaved({f: c.fn for f, c in cases.items()}, repeats=repeats, warmup=warmup,
                            device=device)
        for rec in times.itertuples(index=False):
            case = cases[rec.candidate]
            rows_out.append({"fmt": rec.candidate, "rows": rows, "inner": inner, "cols": cols,
                             "repeat": rec.repeat, "seconds": rec.seconds, "ops": case.ops,
                             "bytes": case.bytes, "intensity": case.intensity,
                             "gops": case.ops / rec.seconds / 1e9})
    columns = ["fmt", "rows", "inner", "cols", "repeat", "seconds", "ops", "bytes", "intensity",
               "gops"]
    return (pd.DataFrame(rows_out, columns=columns),
            pd.DataFrame(skipped, columns=["fmt", "rows", "inner", "cols", "reason"]))


def matmul_gflops(n: int, fmt: str, repeats: int = 5, warmup: int = 1,
                  device: str = "cpu") -> float:
    """Median GFLOP/s (GOP/s for int8) of an n x n x n product in `fmt`, timed on its own."""
    case = matmul_case(fmt, n, device=device)
    times = interleaved({fmt: case.fn}, repeats=repeats, warmup=warmup, device=device)
    return case.ops / float(times.seconds.median()) / 1e9


def copy_bandwidth(nbytes: int = 2**29, repeats: int = 5, warmup: int = 1,
                   device: str = "cpu") -> pd.DataFrame:
    """Memory bandwidth of a large copy (STREAM's 'copy'): one buffer of `nbytes` copied into
    another. Counts the bytes read plus the bytes written (2 * nbytes) per copy.

    Returns one row per timed repeat: repeat, seconds, bytes, gb_per_s (1e9 bytes per second).
    Make `nbytes` several times the last-level cache, or the copy measures the cache.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 4:
        raise ValueError(f"nbytes: must be an int >= 4; got {nbytes!r}")
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * 4
    times = interleaved({"copy": lambda: dst.copy_(src)}, repeats=repeats, warmup=warmup,
                        device=device)
    return pd.DataFrame({"repeat": times.repeat, "seconds": times.seconds, "bytes": moved,
                         "gb_per_s": moved / times.seconds / 1e9})


def at_threads(fn: Callable[[], object], threads: int) -> Callable[[], object]:
    """`fn` run with `threads` torch CPU threads, the previous count restored afterwards."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: must be an int >= 1; got {threads!r}")

    def run() -> object:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)

    return run


# --------------------------------------------------------------------------------------------
# Which kernel ran: MKL's and oneDNN's own verbose lines
# --------------------------------------------------------------------------------------------

def parse_kernels(text: str) -> list[str]:
    """Kernel names in MKL_VERBOSE / ONEDNN_VERBOSE output, in order of first appearance.

    MKL lines give the BLAS routine ('MKL SGEMM'); oneDNN execution lines give the primitive,
    its implementation and the data types ('oneDNN matmul brg_matmul:avx512_core_bf16 bf16').
    """
    found: list[str] = []
    for line in text.splitlines():
        mkl = re.match(r"MKL_VERBOSE\s+([A-Z_0-9]+)\(", line)
        if mkl:
            name = f"MKL {mkl.group(1)}"
        elif line.startswith("onednn_verbose") and ",exec," in line:
            parts = line.split(",")
            i = parts.index("exec")
            kind, impl = parts[i + 2], parts[i + 3]
            types = sorted(set(re.findall(r"(?:src|wei|dst)[_:]([a-z]+[0-9]+)",
                                          ",".join(parts[i + 4:]))))
            name = " ".join(x for x in ("oneDNN", kind, impl, "/".join(types)) if x)
        else:
            continue
        if name not in found:
            found.append(name)
    return found


def kernels_used(fn: Callable[[], object], device: str = "cpu") -> list[str]:
    """The MKL and oneDNN kernels `fn()` runs on the CPU, from the libraries' verbose modes.

    Their lines are printed by C code to file descriptor 1, which is redirected to a temporary
    file while `fn` runs. An empty list means neither library was called: ATen ran its own
    kernel. On CUDA nothing is traced and the list says so.
    """
    if str(device).startswith("cuda"):
        return ["CUDA (cuBLAS/cuBLASLt; not traced here)"]
    libc = None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        pass

    def flush() -> None:
        sys.stdout.flush()
        if libc is not None:
            libc.fflush(None)

    mkldnn, mkl = torch.backends.mkldnn, torch.backends.mkl
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        flush()
        saved = os.dup(1)
        os.dup2(tmp.fileno(), 1)
        try:
            with mkldnn.verbose(mkldnn.VERBOSE_ON), mkl.verbose(mkl.VERBOSE_ON):
                fn()
            flush()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        return parse_kernels(tmp.read().decode(errors="replace"))
