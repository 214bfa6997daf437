"""Provenance names what decides low-precision speed: kernels, libraries, ISA, GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from precisionlab import provenance
from precisionlab.engine import staleness

XEON = {"avx2": True, "avx512f": True, "avx512_bf16": True, "avx512_fp16": True}
EPYC = {"avx2": True, "avx512f": False, "avx512_bf16": False, "avx512_fp16": False}


def test_sixteen_bit_support_in_words_follows_flags_and_the_capability_in_use():
    assert "native fp16 and bf16" in provenance.sixteen_bit_support(XEON, "AVX512")
    assert "no native fp16 or bf16" in provenance.sixteen_bit_support(EPYC, "AVX2")
    # the flags are there, but torch was told to use AVX2 kernels: no native 16-bit either
    assert "no native fp16 or bf16" in provenance.sixteen_bit_support(XEON, "AVX2")
    only_bf16 = {**XEON, "avx512_fp16": False}
    assert "bf16" in provenance.sixteen_bit_support(only_bf16, "AVX512")
    assert "no fp16" in provenance.sixteen_bit_support(only_bf16, "AVX512")


def test_has_native_16bit_is_per_format_and_needs_avx512_kernels():
    only_bf16 = {**XEON, "avx512_fp16": False}
    assert provenance.has_native_16bit("fp16", XEON, "AVX512")
    assert provenance.has_native_16bit(torch.bfloat16, only_bf16, "AVX512")
    assert not provenance.has_native_16bit(torch.float16, only_bf16, "AVX512")
    assert provenance.has_native_16bit("bf16", {"amx_bf16": True}, "AVX512")
    assert not provenance.has_native_16bit("bf16", XEON, "AVX2")  # flags, but AVX2 kernels
    assert not provenance.has_native_16bit("fp16", EPYC, "AVX512")
    with pytest.raises(ValueError, match=r"^dtype: must be one of 'fp16', 'bf16'; got 'fp8'"):
        provenance.has_native_16bit("fp8", XEON, "AVX512")


def write(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_module_closure_follows_imports_transitively(tmp_path):
    """Plain, relative, function-level and `from pkg import submodule` imports; a cycle; the
    packages on the way; third-party names and unused modules left out."""
    src, pkg = tmp_path / "src", tmp_path / "src" / "pkg"
    write(pkg / "__init__.py", "from pkg.core import f\n")
    write(pkg / "core.py", "import numpy\nfrom . import util\n")
    write(pkg / "util.py", "def g():\n    from pkg.sub.deep import h\n    return h\n")
    write(pkg / "sub" / "__init__.py")
    write(pkg / "sub" / "deep.py", "from ..core import f\nfrom .. import cyc\n")
    write(pkg / "cyc.py", "import pkg.cyc\nimport importlib\nimportlib.import_module('pkg.dyn')\n")
    write(pkg / "dyn.py")
    write(pkg / "unused.py", "import pkg.core\n")
    write(pkg / "stats" / "__init__.py")
    write(pkg / "stats" / "paired.py")
    write(pkg / "stats" / "other.py")

    def closure(*code: str) -> list[str]:
        return [p.relative_to(src).as_posix() for p in staleness.module_closure(src, code)]

    assert closure("%matplotlib inline\nimport pandas as pd\nfrom pkg.stats import paired") == [
        "pkg/__init__.py", "pkg/core.py", "pkg/cyc.py", "pkg/dyn.py", "pkg/stats/__init__.py",
        "pkg/stats/paired.py", "pkg/sub/__init__.py", "pkg/sub/deep.py", "pkg/util.py"]
    assert closure("import os") == []
    assert "pkg/unused.py" not in closure("import pkg.core", "from pkg import sub")


def test_machine_records_the_kernels_torch_picked_and_the_library_versions():
    m = provenance.machine("cpu", threads=2)
    assert m["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert m["onednn"] and m["mkl"]  # the pinned CPU wheel is built with both
    assert set(provenance.ISA_FLAGS) == set(m["isa"])
    assert "gpu" not in m  # CUDA fields only on CUDA


def test_hardware_line_names_model_threads_capability_and_libraries(monkeypatch):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    line = provenance.hardware_line("cpu", threads=3)
    m = provenance.machine("cpu", threads=3)
    for part in (str(m["cpu_model"]), "3 threads", f"{m['cpu_capability']} kernels",
                 f"oneDNN {m['onednn']}", f"MKL {m['mkl']}"):
        assert part in line
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert "forced by ATEN_CPU_CAPABILITY=default" in provenance.hardware_line("cpu", threads=3)


def test_parse_cpuinfo_reads_the_first_processor_block_only():
    text = ("processor\t: 0\nmodel name\t: Model A\ncpu cores\t: 4\nflags\t\t: fpu avx2 avx512f\n"
            "\nprocessor\t: 1\nmodel name\t: Model B\nflags\t\t: fpu\n")
    fields, flags = provenance.parse_cpuinfo(text)
    assert fields["model name"] == "Model A" and fields["cpu cores"] == "4"
    assert flags == {"fpu", "avx2", "avx512f"}
    assert provenance.parse_cpuinfo("") == ({}, frozenset())
    assert provenance.parse_cpuinfo("\n\nflags : sse\n") == ({"flags": "sse"}, {"sse"})


def test_cpu_info_is_the_one_description_of_this_cpu():
    info = provenance.cpu_info()
    assert info["isa"] == {flag: flag in info["flags"] for flag in provenance.ISA_FLAGS}
    if info["fields"]:  # a Linux /proc/cpuinfo
        assert info["cpu_model"] == info["fields"].get("model name", info["cpu_model"])
