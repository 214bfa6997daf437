"""Where a number came from: the machine, the software and the inputs that produced it.

Low-precision speed and even the low bits of results depend on the CPU's instruction set and the
thread count, so every executed chapter and results file carries this record.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

# CPU flags that decide how fast (or whether) low-precision kernels run.
ISA_FLAGS = ("avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile", "avx512_vnni",
             "avx_vnni")
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


def cpu_info() -> dict[str, object]:
    """CPU model, core count and the ISA flags above, read from /proc/cpuinfo where it exists."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "isa": {flag: flag in flags for flag in ISA_FLAGS},
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


def hash_files(paths: list[Path], root: Path) -> str:
    """sha256 over the relative names and bytes of files: a content hash, blind to file times."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def src_hash(root: Path) -> str:
    """Content hash of the library (every file under src/precisionlab, no caches)."""
    files = [p for p in (root / "src" / "precisionlab").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    return hash_files(files, root)


def lock_hash(root: Path) -> str:
    """Content hash of the pinned dependency lock."""
    return hash_files([root / "requirements.lock"], root)


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
        "threads": threads if threads is not None else torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def hardware_line(device: str = "cpu", threads: int | None = None) -> str:
    """One line naming the hardware, for figure captions: model, threads, the flags that matter."""
    m = machine(device, threads)
    flags = ", ".join(f for f, on in m["isa"].items() if on) or "no low-precision ISA extensions"
    if device == "cuda":
        return f"{m['device_name']} (CUDA), torch {m['torch']}"
    return f"{m['cpu_model']}, {m['threads']} threads ({flags}), torch {m['torch']}"
