"""Emulated 16-bit matmuls against torch's own fp16/bf16 kernels, on small sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from precisionlab.amp import Trainer, get_matmul16, set_matmul16
from precisionlab.amp.emulation import Emulated16BitMatmuls, matmul16
from precisionlab.data import digits
from precisionlab.formats import FORMATS
from precisionlab.models import MLP, CNN1d

NAME = {torch.float16: "fp16", torch.bfloat16: "bf16"}


@pytest.fixture(autouse=True)
def native_after():
    yield
    set_matmul16("native")


def ulps_apart(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> float:
    """Largest |a - b| in units of the 16-bit format's spacing at b's magnitude."""
    u = FORMATS[NAME[dtype]].unit_roundoff * 2  # spacing of [1, 2)
    scale = torch.exp2(torch.floor(torch.log2(b.float().abs().clamp_min(1e-30))))
    return float(((a.float() - b.float()).abs() / (u * scale)).max())


def forward_backward(fn, *tensors):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    out.backward(torch.ones_like(out))
    return [out.detach()] + [t.grad for t in leaves]


CASES = {
    "linear": (lambda x, w, b: F.linear(x, w, b), [(33, 20), (17, 20), (17,)]),
    "matmul (bmm)": (lambda a, b: a @ b, [(3, 9, 20), (3, 20, 7)]),
    "baddbmm": (lambda c, a, b: torch.baddbmm(c, a, b), [(3, 9, 7), (3, 9, 20), (3, 20, 7)]),
    "conv1d": (lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=2),
               [(4, 3, 40), (5, 3, 5), (5,)]),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", list(CASES))
def test_emulated_ops_equal_torch_on_integer_data_and_stay_within_an_ulp_on_random(case, dtype):
    fn, shapes = CASES[case]
    g = torch.Generator().manual_seed(0)
    # small integers: every product and sum is exact in fp32, so both paths must agree bit for bit
    ints = [torch.randint(-3, 4, s, generator=g).to(dtype) for s in shapes]
    native = forward_backward(fn, *ints)
    with Emulated16BitMatmuls():
        emulated = forward_backward(fn, *ints)
    for n, e in zip(native, emulated, strict=True):
        assert e.dtype == n.dtype == dtype
        assert torch.equal(n, e)
    # random data: the two differ only in the order of fp32 sums, so by at most one rounding
    rand = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    native = forward_backward(fn, *rand)
    with Emulated16BitMatmuls():
        emulated = forward_backward(fn, *rand)
    for n, e in zip(native, emulated, strict=True):
        assert ulps_apart(e, n, dtype) <= 1.0


def test_mixed_dtypes_and_fp32_pass_through_untouched():
    x, w = torch.randn(4, 8), torch.randn(3, 8).half()
    with Emulated16BitMatmuls(), pytest.raises(RuntimeError, match="dtype"):
        F.linear(x, w)  # the native dtype error stays
    a, b = torch.randn(5, 6), torch.randn(6, 7)
    with Emulated16BitMatmuls():
        assert torch.equal(a @ b, torch.mm(a, b))


def test_the_switch_validates_and_auto_follows_the_cpu():
    with pytest.raises(ValueError, match=r"^matmul16: must be one of native, emulated, auto"):
        set_matmul16("fast")
    from precisionlab.amp.emulation import native_16bit_cpu

    assert set_matmul16("auto") == ("native" if native_16bit_cpu() else "emulated")
    set_matmul16("emulated")
    with matmul16(torch.float32, "cpu") as on32, matmul16(torch.bfloat16, "cpu") as on16:
        assert (on32, on16) == (False, True)
    set_matmul16("native")
    with matmul16(torch.bfloat16, "cpu") as on:
        assert not on and get_matmul16() == "native"


def test_auto_emulates_unless_the_cpu_has_both_16_bit_formats(monkeypatch):
    from precisionlab import provenance
    from precisionlab.amp.emulation import native_16bit_cpu

    monkeypatch.setattr(provenance, "kernels", lambda: {"cpu_capability": "AVX512"})
    for flags, native in [({"avx512_fp16": True, "avx512_bf16": True}, True),
                          ({"avx512_bf16": True}, False), ({"amx_bf16": True}, False), ({}, False)]:
        monkeypatch.setattr(provenance, "cpu_info", lambda f=flags: {"isa": f})
        assert native_16bit_cpu() is native
        assert set_matmul16("auto") == ("native" if native else "emulated")


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "bf16-true"])
def test_a_short_emulated_training_run_tracks_the_native_one(precision):
    data = digits(0)

    def run(mode):
        set_matmul16(mode)
        torch.manual_seed(0)
        return Trainer(precision=precision, steps=20, seed=0, progress=False,
                       eval_every=None).fit(MLP([64, 32, 10]), data)

    native, emulated = run("native"), run("emulated")
    assert native.loss.iloc[0] == pytest.approx(emulated.loss.iloc[0], rel=1e-2)
    assert native.loss.iloc[-1] == pytest.approx(emulated.loss.iloc[-1], rel=0.05)


def test_cnn_trains_under_emulation():
    from precisionlab.data import mnist1d

    set_matmul16("emulated")
    torch.manual_seed(0)
    h = Trainer(precision="bf16-mixed", steps=5, batch_size=32, seed=0, progress=False,
                eval_every=None).fit(CNN1d(), mnist1d(0, n_samples=400))
    assert h.loss.notna().all()


def test_emulation_leaves_saved_activation_bytes_unchanged():
    # chapter 8 counts step memory with emulated matmuls: autograd must save the same tensors
    from precisionlab.memory import step_memory

    data = digits(0)
    counts = {}
    for mode in ("native", "emulated"):
        set_matmul16(mode)
        counts[mode] = step_memory(MLP([64, 48, 10]), data, "bf16-mixed", batch_size=32)
    assert counts["native"] == counts["emulated"]


def test_applied_in_rounds_away_updates_below_half_the_spacing():
    from precisionlab.amp.emulation import applied_in

    before = torch.tensor([1.0, 1.0, 1000.0])
    after = before + torch.tensor([-1e-4, -1e-3, 0.25])
    got = applied_in(before, after, torch.float16)
    assert got.dtype == torch.float32
    # 1e-4 < 2^-12 (half the fp16 spacing below 1) is lost; 1e-3 is not; at 1000 the fp16
    # spacing is 0.5, so 0.25 is a tie and rounds to even (1000 stays)
    assert got.tolist() == [1.0, float(torch.tensor(1 - 1e-3).half()), 1000.0]
    assert applied_in(before, after, torch.float32).tolist() == after.tolist()
