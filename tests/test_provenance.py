"""Provenance names what decides low-precision speed: kernels, libraries, ISA, GPU."""

from __future__ import annotations

import torch

from precisionlab import provenance

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
