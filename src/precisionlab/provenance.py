"""Where a number came from: the machine and the software that produced it (device facts).

Low-precision speed and even the low bits of results depend on the CPU's instruction set, the
kernels torch picks for it (its CPU capability, MKL and oneDNN), the thread count and, on CUDA,
the GPU, so every executed chapter and results file carries this record. Results repeat bit for
bit only on one machine and build with one thread count; another CPU changes the low bits.
What decides whether a published result is current (the inputs' key) is `staleness`, apart.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

# CPU flags that decide how fast (or whether) low-precision kernels run.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile",
             "avx512_vnni", "avx_vnni")
DEVICES = ("auto", "cpu", "cuda")


def find_root(start: Path | None = None) -> Path:
    """The project root: the nearest folder upwards holding both `_toc.yml` and `notebooks/`."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() and (folder / "notebooks").is_dir():
            return folder
    raise FileNotFoundError(
        f"no Precision Lab project (a folder with _toc.yml and notebooks/) above {here}"
    )


def parse_cpuinfo(text: str) -> tuple[dict[str, str], frozenset[str]]:
    """The first processor's `key: value` fields of /proc/cpuinfo text and its flag set (the
    library's one /proc/cpuinfo parser; the other processors repeat the same facts)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # end of the first processor's block
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields, frozenset(fields.get("flags", "").split())


def cpu_info() -> dict[str, object]:
    """This CPU, from /proc/cpuinfo where it exists: cpu_model, cpu_count, isa (the ISA flags
    above, each True/False), and the raw first-processor `fields` and `flags` (all of them)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    fields, flags = parse_cpuinfo(text)
    return {
        "cpu_model": fields.get("model name") or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "isa": {flag: flag in flags for flag in ISA_FLAGS},
        "fields": fields,
        "flags": flags,
    }


def resolve_device(device: str = "auto") -> str:
    """Map `auto` to `cuda` when a CUDA GPU is present, else `cpu`; reject anything else."""
    if device not in DEVICES:
        raise ValueError(f"device: must be one of {', '.join(DEVICES)}; got {device!r}")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device: 'cuda' was asked for but torch sees no CUDA GPU; use 'cpu' or 'auto'")
    return device


def device_name(device: str) -> str:
    """A human name for the device that ran the numbers (CPU model or GPU name)."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    return str(cpu_info()["cpu_model"])


def parse_library_versions(config: str) -> dict[str, str]:
    """oneDNN and MKL versions from the text of ``torch.__config__.show()`` ('' if absent)."""
    onednn = re.search(r"(?:MKL-DNN|oneDNN)\s+v?([0-9][0-9.]*)", config)
    mkl = re.search(r"Math Kernel Library Version\s+([0-9][0-9.]*)", config)
    return {"onednn": onednn.group(1) if onednn else "",
            "mkl": mkl.group(1) if mkl else ""}


def kernels() -> dict[str, str]:
    """What decides which CPU kernels torch runs: the vector ISA ATen dispatches to (its 'CPU
    capability', which ATEN_CPU_CAPABILITY can lower) and the MKL and oneDNN versions."""
    import torch

    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    return {"cpu_capability": str(capability), "forced": os.environ.get("ATEN_CPU_CAPABILITY", ""),
            **parse_library_versions(torch.__config__.show())}


def gpu_info(device: str) -> dict[str, str]:
    """GPU name, compute capability and CUDA version on CUDA; empty on the CPU."""
    if not str(device).startswith("cuda"):
        return {}
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return {"gpu": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}",
            "cuda": str(torch.version.cuda)}


def machine(device: str = "cpu", threads: int | None = None) -> dict[str, object]:
    """The software and hardware that ran a computation, as a JSON-ready dict."""
    import torch

    info = cpu_info()
    return {
        "device": device,
        "device_name": device_name(device),
        "cpu_model": info["cpu_model"],
        "cpu_count": info["cpu_count"],
        "isa": info["isa"],
        **kernels(),
        **gpu_info(device),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def has_native_16bit(dtype: str, isa: dict[str, bool] | None = None,
                     capability: str | None = None) -> bool:
    """Whether torch's CPU kernels have instructions for `dtype` ('fp16'/'bf16', or the torch
    dtype) rather than converting to fp32 around every operation: AVX-512 kernels with
    avx512_fp16 for fp16, avx512_bf16 or AMX bf16 for bf16. Defaults: this machine."""
    name = {"torch.float16": "fp16", "torch.bfloat16": "bf16"}.get(str(dtype), str(dtype))
    if name not in ("fp16", "bf16"):
        raise ValueError(f"dtype: must be one of 'fp16', 'bf16'; got {dtype!r}")
    isa = cpu_info()["isa"] if isa is None else isa
    capability = kernels()["cpu_capability"] if capability is None else capability
    if not capability.upper().startswith("AVX512"):
        return False
    if name == "fp16":
        return bool(isa.get("avx512_fp16"))
    return bool(isa.get("avx512_bf16") or isa.get("amx_bf16"))


def sixteen_bit_support(isa: dict[str, bool], capability: str) -> str:
    """In words, what this CPU's kernels can do with fp16 and bf16: the fact that decides their
    speed against fp32 (native instructions, or conversion to fp32 around every operation)."""
    fp16, bf16 = (has_native_16bit(d, isa, capability) for d in ("fp16", "bf16"))
    if bf16 and isa.get("amx_bf16"):
        return "AMX bf16 matrix units and AVX-512 vectors"
    if fp16 and bf16:
        return "native fp16 and bf16 instructions (avx512_fp16, avx512_bf16)"
    if bf16:
        return "native bf16 dot products (avx512_bf16) but no fp16 arithmetic"
    if fp16:
        return "native fp16 instructions (avx512_fp16) but no bf16 arithmetic"
    return "no native fp16 or bf16 arithmetic (16-bit values are converted to fp32 and back)"


def hardware_line(device: str = "cpu", threads: int | None = None) -> str:
    """One line naming, in words, the hardware and kernels that made a figure or a verdict: what
    a reader needs to judge whether a speed result carries over to their machine."""
    m = machine(device, threads)
    if str(device).startswith("cuda"):
        return (f"{m['gpu']} (compute capability {m['compute_capability']}, CUDA {m['cuda']}), "
                f"torch {m['torch']}")
    forced = f", forced by ATEN_CPU_CAPABILITY={m['forced']}" if m["forced"] else ""
    libs = ", ".join(f"{name} {m[key]}" for name, key in (("oneDNN", "onednn"), ("MKL", "mkl"))
                     if m[key])
    return (f"{m['cpu_model']}, {m['threads']} threads; torch {m['torch']} with "
            f"{m['cpu_capability']} kernels{forced} ({libs}); "
            f"{sixteen_bit_support(m['isa'], m['cpu_capability'])}")
