"""Saved-activation bytes, matmul FLOPs and accumulated gradients, against hand-computed cases."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from precisionlab import memory
from precisionlab.amp import Trainer
from precisionlab.data import digits
from precisionlab.models import MLP


def test_a_linear_layer_saves_its_input_and_nothing_else():
    torch.manual_seed(0)
    layer, x = nn.Linear(10, 5), torch.randn(8, 10)  # x needs no grad: W is not saved
    got = memory.saved_activation_bytes(lambda: layer(x).sum().backward(),
                                        exclude=layer.parameters())
    assert got == 8 * 10 * 4  # the fp32 input, (8, 10)


def test_mlp_counts_input_and_hidden_once_and_parameters_only_when_asked():
    torch.manual_seed(0)
    model, x = MLP([10, 32, 5]), torch.randn(8, 10)
    step = lambda: model(x).sum().backward()  # noqa: E731
    # Saved: x by the first addmm; the ReLU output, saved by ReLU and by the second addmm (one
    # storage, counted once); the second weight, which the second addmm needs for dL/dh.
    assert memory.saved_activation_bytes(step, exclude=model.parameters()) == 4 * 8 * (10 + 32)
    assert memory.saved_activation_bytes(step) == 4 * 8 * (10 + 32) + 4 * 32 * 5


def test_peak_is_taken_after_each_backward_frees_its_graph():
    torch.manual_seed(0)
    model, x = MLP([10, 32, 5]), torch.randn(8, 10)

    def accumulate(k: int) -> None:
        for part in x.chunk(k):
            model(part).sum().backward()

    one = memory.saved_activation_bytes(lambda: accumulate(1), exclude=model.parameters())
    four = memory.saved_activation_bytes(lambda: accumulate(4), exclude=model.parameters())
    assert four * 4 == one
    held = []  # a graph kept alive is never freed: its bytes stay in the peak
    two = memory.saved_activation_bytes(lambda: held.extend(model(p).sum() for p in x.chunk(2)),
                                        exclude=model.parameters())
    assert two == one


def test_views_count_their_own_bytes_and_overlaps_once():
    a = torch.randn(100, 10, requires_grad=True)

    def f() -> None:
        (a[:10] * 2).sum().backward()  # mul by a constant saves nothing of a
        (a[:10] * a[:10]).sum().backward()  # saves the same view twice: counted once

    assert memory.saved_activation_bytes(f) == 10 * 10 * 4
    assert memory._union_length([(0, 10), (5, 20), (30, 40)]) == 30


def test_matmul_flops_of_a_linear_forward_and_backward():
    torch.manual_seed(0)
    model, x = MLP([10, 32, 5]), torch.randn(8, 10)
    flops = memory.matmul_flops(lambda: model(x).sum().backward())
    forward = 2 * 8 * (10 * 32 + 32 * 5)
    # backward: weight gradients of both layers, input gradient of the second only (x needs none)
    assert flops == forward + 2 * 8 * (10 * 32 + 32 * 5) + 2 * 8 * 32 * 5


def _digits_mlp_and_batch(n: int):
    """A seeded MLP 64-16-10 and the first `n` digits training examples."""
    data = digits(0)
    torch.manual_seed(0)
    return MLP([64, 16, 10]), data.x_train[:n], data.y_train[:n]


def test_accumulated_gradient_in_float64_is_the_full_batch_gradient():
    model, x, y = _digits_mlp_and_batch(64)
    full = memory.accumulated_gradient(model, x, y, 1, "64-true")
    for k in (2, 8, 64):
        parts = memory.accumulated_gradient(model, x, y, k, "64-true")
        assert memory.relative_error(parts, full) < 1e-14
    assert all(p.grad is None for p in model.parameters())  # the caller's model is untouched
    assert next(model.parameters()).dtype == torch.float32


def test_accumulated_gradient_is_what_the_trainer_steps_with():
    data = digits(0)
    torch.manual_seed(0)
    model = MLP([64, 16, 10]).double()
    batch, k = 32, 4
    idx = torch.randint(len(data.x_train), (batch,), generator=torch.Generator().manual_seed(3))
    grads = memory.accumulated_gradient(model, data.x_train[idx], data.y_train[idx], k, "64-true")
    trained = copy.deepcopy(model)
    Trainer(precision="64-true", optimizer="sgd", lr=1.0, steps=1, batch_size=batch,
            accumulation_steps=k, seed=3, eval_every=None, progress=False).fit(trained, data)
    steps = [(a - b).detach() for a, b in zip(model.parameters(), trained.parameters(),
                                              strict=True)]
    assert memory.relative_error(steps, grads) < 1e-12


def test_low_precision_accumulators_lose_more_as_k_grows():
    data = digits(0)
    torch.manual_seed(0)
    model = MLP([64, 32, 10])
    x, y = data.x_train[:256], data.y_train[:256]
    err = {}
    for p in ("32-true", "bf16-true"):
        ref = memory.reference_gradient(model, x, y, p)
        for k in (1, 256):
            err[p, k] = memory.relative_error(memory.accumulated_gradient(model, x, y, k, p), ref)
    assert err["32-true", 1] < 1e-6 and err["32-true", 256] < 1e-6
    assert err["bf16-true", 256] > 4 * err["bf16-true", 1]


def test_reference_gradient_holds_what_the_precision_stores():
    data = digits(0)
    torch.manual_seed(0)
    model = MLP([64, 8, 10])
    x, y = data.x_train[:32], data.y_train[:32]
    held = copy.deepcopy(model).bfloat16().double()
    expected = memory.accumulated_gradient(held, x.bfloat16().double(), y, 1, "64-true")
    assert memory.relative_error(memory.reference_gradient(model, x, y, "bf16-true"),
                                 expected) == 0.0
    fp32 = memory.accumulated_gradient(model.double(), x.double(), y, 1, "64-true")
    model.float()
    for p in ("32-true", "bf16-mixed", "16-mixed"):
        assert memory.relative_error(memory.reference_gradient(model, x, y, p), fp32) == 0.0


def test_relative_error_and_flushed_share():
    ref = [torch.tensor([1.0, 2.0]), torch.tensor([0.0, 2.0])]
    got = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])]
    assert memory.relative_error(got, ref) == pytest.approx(2 / 3)
    assert memory.flushed_share(got, ref) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="^reference"):
        memory.relative_error(got, [torch.zeros(2), torch.zeros(2)])


def test_bad_arguments_are_clear_errors():
    x, y = torch.randn(6, 64), torch.zeros(6, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"^k: must be a positive integer dividing the batch"):
        memory.accumulated_gradient(MLP([64, 10]), x, y, 4)
    with pytest.raises(ValueError, match=r"^precision"):
        memory.accumulated_gradient(MLP([64, 10]), x, y, 2, "fp16")
    with pytest.raises(ValueError, match=r"^device"):
        memory.peak_cuda_bytes(lambda: None, "cpu")


def test_exact_parts_summed_in_float64_terms_match_and_low_precision_drifts():
    model, x, y = _digits_mlp_and_batch(256)
    ref = memory.accumulated_gradient(model, x, y, 1, "64-true")
    out = memory.sum_exact_parts(model, x, y, [1, 16, 256],
                                 (torch.float64, torch.float32, torch.bfloat16))
    assert sorted(out) == [1, 16, 256]
    for k in out:  # in float64 every k gives the full-batch gradient
        assert memory.relative_error(out[k][torch.float64].grads, ref) < 1e-14
    assert out[1][torch.float32].flushed == 0.0
    err = {(k, d): memory.relative_error(out[k][d].grads, ref) for k in out for d in out[k]}
    assert err[256, torch.float32] < 1e-6 < err[256, torch.bfloat16]
    assert err[256, torch.bfloat16] > 5 * err[1, torch.bfloat16]


def test_coarse_parts_are_the_sums_of_fine_ones():
    model, x, y = _digits_mlp_and_batch(64)
    together = memory.sum_exact_parts(model, x, y, [4, 64], (torch.bfloat16,))
    alone = memory.sum_exact_parts(model, x, y, [4], (torch.bfloat16,))
    # bf16 rounding of a part computed directly or gathered from 16 finer parts in float64
    # agrees except where the two float64 values straddle a bf16 rounding boundary
    a, b = (memory._flat(r[4][torch.bfloat16].grads) for r in (together, alone))
    assert (a == b).double().mean() > 0.999
    with pytest.raises(ValueError, match=r"^ks: must be positive integers"):
        memory.sum_exact_parts(model, x, y, [3, 64])


def test_a_part_below_the_smallest_subnormal_is_flushed():
    x = torch.tensor([[1e-9], [1e-9]])  # dL/dW = x * (p - onehot): far below fp16's 6e-8
    y = torch.zeros(2, dtype=torch.int64)
    one = nn.Linear(1, 1, bias=False)  # one class: p - onehot is 0, every part is exactly 0
    assert memory.sum_exact_parts(one, x, y, [2], (torch.float16,))[2][torch.float16].flushed == 0
    two = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        two.weight.copy_(torch.tensor([[1.0], [0.0]]))
    out = memory.sum_exact_parts(two, x, y, [2], (torch.float16, torch.float32))[2]
    assert out[torch.float16].flushed == 1.0 and out[torch.float32].flushed == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_peak_cuda_bytes_sees_a_new_tensor():
    got = memory.peak_cuda_bytes(lambda: torch.empty(1024, 1024, device="cuda"))
    assert got >= 4 * 1024 * 1024


def test_step_memory_counts_weights_grads_adam_state_and_activations():
    data = digits(0)
    torch.manual_seed(0)
    model = MLP([64, 256, 10])
    n = sum(p.numel() for p in model.parameters())
    fp32 = memory.step_memory(model, data, "32-true", batch_size=256)
    assert fp32["weight_bytes"] == fp32["grad_bytes"] == 4 * n
    # Adam: two fp32 moments per weight and a one-element fp32 step counter per tensor
    assert fp32["optimizer_state_bytes"] == 2 * 4 * n + 4 * len(list(model.parameters()))
    assert fp32["total_bytes"] == sum(v for k, v in fp32.items() if k != "total_bytes")
    # saved by the step: the input (256 x 64), the hidden ReLU output (256 x 256) and the loss's
    # log-softmax (256 x 10), in fp32, plus the int64 targets and a 4-byte scalar of nll_loss
    assert fp32["activation_bytes"] == 4 * 256 * (64 + 256 + 10) + 8 * 256 + 4
    bf16 = memory.step_memory(model, data, "bf16-mixed", batch_size=256)
    assert bf16["weight_bytes"] == fp32["weight_bytes"]  # fp32 master weights
    assert bf16["activation_bytes"] < fp32["activation_bytes"]
    split = memory.step_memory(model, data, "32-true", batch_size=256, accumulation_steps=4)
    # a quarter of the batch per micro-batch; nll_loss's 4-byte scalar is per micro-batch
    assert 4 * (split["activation_bytes"] - 4) == fp32["activation_bytes"] - 4
    assert all(p.grad is None for p in model.parameters())  # the caller's model is untouched


def test_step_memory_of_pure_16bit_leaves_out_its_own_16bit_weights():
    data = digits(0)
    torch.manual_seed(0)
    model = MLP([64, 256, 10])
    n, tensors = sum(p.numel() for p in model.parameters()), len(list(model.parameters()))
    fp32 = memory.step_memory(model, data, "32-true", batch_size=256)
    for precision in ("bf16-true", "16-true"):
        low = memory.step_memory(model, data, precision, batch_size=256)
        # weights, grads and both Adam moments in 16 bits; the step counters stay fp32 scalars
        assert low["weight_bytes"] == low["grad_bytes"] == 2 * n
        assert low["optimizer_state_bytes"] == 2 * 2 * n + 4 * tensors
        # the same tensors saved as in 32-true, at 2 bytes instead of 4 (the int64 targets and
        # the loss's scalar keep theirs): the 16-bit weights are parameters, not activations
        assert low["activation_bytes"] == 2 * 256 * (64 + 256 + 10) + 8 * 256 + 2
        assert low["activation_bytes"] < fp32["activation_bytes"] / 2 + 8 * 256
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is not cast


def test_byte_counters_count_elements_and_the_saved_file():
    layer = nn.Linear(256, 128)
    assert memory.tensor_bytes(layer.parameters()) == (256 * 128 + 128) * 4
    fp32, bf16 = memory.file_bytes(layer), memory.file_bytes(copy.deepcopy(layer).bfloat16())
    assert fp32 > (256 * 128 + 128) * 4  # the tensors plus the file format's overhead
    assert fp32 - (256 * 128 + 128) * 4 < 2000
    assert bf16 - (256 * 128 + 128) * 2 < 2000
