"""The timing harness: interleaved order, medians and ratios from one run."""

from __future__ import annotations

import pytest

from precisionlab import bench, provenance


def test_interleaves_candidates_and_reports_ratios():
    calls = []
    times = bench.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                              repeats=5, warmup=1)
    assert calls[:2] == ["a", "b"]  # warm-up
    assert calls[2:6] == ["a", "b", "b", "a"]  # timed rounds alternate their order
    assert len(times) == 10 and set(times.candidate) == {"a", "b"}
    table = bench.ratios(times, "a")
    assert table.loc["a", "ratio_to_a"] == 1.0
    assert (table.median_s > 0).all()


def test_too_few_repeats_is_an_error():
    with pytest.raises(ValueError, match="^repeats: use at least 5"):
        bench.interleaved({"a": lambda: None}, repeats=3)


# --- the machine, matmul throughput, bandwidth, kernels and step memory ----------------------

import torch  # noqa: E402

CONFIG = """PyTorch built with:
  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R) 64
  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71049cd69a3df32adcccb623b12cd7baa22)
  - OpenMP 201511 (a.k.a. OpenMP 4.5)
"""

VERBOSE = """MKL_VERBOSE oneMKL 2024.0 Update 2 Product build 20240605 for Intel(R) 64 architecture
MKL_VERBOSE SGEMM(N,N,256,256,256,0x7f,0x56,256,0x56,256,0x7f,0x56,256) 797.34us CNR:OFF NThr:2
onednn_verbose,v1,info,oneDNN v3.12.0 (commit 80afa71049cd69a3df32adcccb623b12cd7baa22)
onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind
onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core_bf16,undef,src:bf16::blocked:ab::f0 wei:bf16::blocked:ab::f0 dst:bf16::blocked:ab::f0,attr-scratchpad:user,,256x256:256x256,0.599
onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core_bf16,undef,src:bf16::blocked:ab::f0 wei:bf16::blocked:ab::f0 dst:bf16::blocked:ab::f0,attr-scratchpad:user,,256x256:256x256,0.512
onednn_verbose,v1,primitive,exec,cpu,gemm_api,,undef,src_s8::blocked:ab:f0 wei_s8::blocked:ab:f0 dst_s32::blocked:ab:f0,,,256x256:256x256,6.49
"""  # noqa: E501


def test_library_versions_are_parsed_from_the_torch_config_text():
    assert provenance.parse_library_versions(CONFIG) == {"onednn": "3.12.0", "mkl": "2024.2"}
    assert provenance.parse_library_versions("PyTorch built with:\n  - GCC 13.3\n") == {
        "onednn": "", "mkl": ""}


def test_kernel_names_come_from_execution_lines_once_each_in_order():
    assert bench.parse_kernels(VERBOSE) == [
        "MKL SGEMM", "oneDNN matmul brg_matmul:avx512_core_bf16 bf16", "oneDNN gemm_api s32/s8"]
    assert bench.parse_kernels("nothing here\n") == []


def test_kernels_used_sees_a_library_gemm_or_nothing_and_leaves_stdout_working(capsys):
    a = torch.randn(64, 64)
    assert bench.kernels_used(lambda: a + 1) == []  # an ATen elementwise kernel
    used = bench.kernels_used(lambda: a @ a)
    assert isinstance(used, list) and all(isinstance(k, str) for k in used)
    print("still printing")
    assert "still printing" in capsys.readouterr().out
    assert bench.kernels_used(lambda: None, device="cuda")[0].startswith("CUDA")


def test_instruction_for_picks_the_widest_form_the_flags_allow():
    assert bench.instruction_for("fp32", {"avx512f", "fma"}) == ("VFMADD231PS zmm (FMA)", 32)
    assert bench.instruction_for("fp32", {"fma"})[1] == 16
    assert bench.instruction_for("bf16", {"avx512_bf16": True})[1] == 64
    assert bench.instruction_for("fp16", {"avx512_fp16": False, "avx512f": True}) is None
    assert bench.instruction_for("int8", {"avx_vnni"})[1] == 64
    with pytest.raises(ValueError, match="^fmt:"):
        bench.instruction_for("fp8", set())


def test_describe_machine_names_the_flags_that_decide_low_precision_speed():
    table = bench.describe_machine("cpu", threads=2)
    assert list(table.columns) == ["item", "value", "why"]
    values = table.set_index("item").value
    assert values["threads used by torch"] == "2"
    assert values["torch"] == torch.__version__
    for flag, on in provenance.cpu_info()["isa"].items():
        assert values[f"flag {flag}"] == ("yes" if on else "no")
    assert table.why.str.len().min() > 0


def test_matmul_case_counts_operations_and_bytes_and_computes_the_product():
    case = bench.matmul_case("fp32", 8, 4, 2, min_ops=0)
    assert (case.calls, case.ops) == (1, 2 * 8 * 4 * 2)
    assert case.bytes == 4 * (8 * 4 + 4 * 2 + 8 * 2)
    assert case.intensity == case.ops / case.bytes
    square = bench.matmul_case("int8", 16, min_ops=0)
    assert square.bytes == 16 * 16 * (1 + 1 + 4)  # int8 operands, int32 result
    out = square.fn()
    assert out.dtype == torch.int32 and out.shape == (16, 16)
    small = bench.matmul_case("bf16", 8, min_ops=10_000)  # 1024 ops per product
    assert small.calls == 10 and small.ops == 10 * 1024
    assert small.fn().dtype == torch.bfloat16
    with pytest.raises(ValueError, match="^fmt:"):
        bench.matmul_case("fp64", 8)
    with pytest.raises(ValueError, match="^inner:"):
        bench.matmul_case("fp32", 8, 0)


def test_int8_case_is_the_exact_integer_product():
    torch.manual_seed(0)
    case = bench.matmul_case("int8", 32, min_ops=0, seed=3)
    gen = torch.Generator().manual_seed(3)
    a = torch.randint(-128, 128, (32, 32), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (32, 32), generator=gen, dtype=torch.int8)
    assert torch.equal(case.fn().long(), a.long() @ b.long())


def test_too_slow_reports_errors_and_calls_over_the_limit():
    def broken():
        raise RuntimeError("no kernel for this dtype\nmore detail")

    slow = bench.too_slow({"ok": lambda: None, "broken": broken}, max_seconds=10.0)
    assert slow == {"broken": "RuntimeError: no kernel for this dtype"}
    slow = bench.too_slow({"work": lambda: sum(range(1000))}, max_seconds=1e-12)
    assert set(slow) == {"work"} and slow["work"] > 0


def test_matmul_throughput_is_tidy_and_skips_by_cap_and_by_slowness():
    shapes = [(16, 16, 16), (32, 32, 32)]
    times, skipped = bench.matmul_throughput(shapes, ["fp32", "int8"], repeats=5, warmup=0,
                                             max_rows={"int8": 16}, min_ops=0)
    assert len(times) == 5 * 3  # fp32 at both sizes, int8 at 16 only
    pairs = set(zip(times.fmt, times.rows, strict=True))
    assert pairs == {("fp32", 16), ("fp32", 32), ("int8", 16)}
    assert (times.gops == times.ops / times.seconds / 1e9).all()
    assert skipped[["fmt", "rows"]].values.tolist() == [["int8", 32]]
    assert "cap" in skipped.reason.iloc[0]
    times, skipped = bench.matmul_throughput(shapes, ["fp32"], max_call_seconds=1e-12, min_ops=0)
    assert times.empty and list(times.columns)[:2] == ["fmt", "rows"]
    assert skipped.rows.tolist() == [16, 32]  # dropped at the first size and every later one
    assert skipped.reason.str.contains("one call took").all()
    with pytest.raises(ValueError, match="^formats:"):
        bench.matmul_throughput(shapes, ["fp8"])


def test_matmul_gflops_is_positive():
    assert bench.matmul_gflops(32, "fp32", repeats=5, warmup=0) > 0


def test_copy_bandwidth_counts_read_and_write_bytes():
    table = bench.copy_bandwidth(4096, repeats=5, warmup=0)
    assert len(table) == 5 and (table.bytes == 2 * 4096).all()
    assert (table.gb_per_s == table.bytes / table.seconds / 1e9).all()
    with pytest.raises(ValueError, match="^nbytes:"):
        bench.copy_bandwidth(2)


def test_at_threads_sets_and_restores_the_thread_count():
    before = torch.get_num_threads()
    seen = []
    bench.at_threads(lambda: seen.append(torch.get_num_threads()), 1)()
    assert seen == [1] and torch.get_num_threads() == before

    def fail():
        raise KeyError("x")

    with pytest.raises(KeyError):
        bench.at_threads(fail, 1)()
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="^threads:"):
        bench.at_threads(lambda: None, 0)
