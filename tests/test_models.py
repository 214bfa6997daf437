"""Tests for precisionlab.models: shapes, causality, argument checks, and that training helps."""

import math

import pytest
import torch
import torch.nn.functional as F

from precisionlab.data import char_sequences, mnist1d
from precisionlab.models import MLP, CNN1d, TinyTransformer


def test_cnn1d_output_shape():
    assert CNN1d()(torch.randn(5, 40)).shape == (5, 10)
    assert CNN1d(n_classes=3, length=37, channels=8)(torch.randn(2, 37)).shape == (2, 3)


def test_cnn1d_training_reduces_loss():
    torch.manual_seed(0)
    s = mnist1d(n_samples=500)
    model = CNN1d(channels=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = s.x_train[:256], s.y_train[:256]
    first = F.cross_entropy(model(x), y).item()
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_transformer_output_shape_and_context_limit():
    model = TinyTransformer(vocab_size=11, context=16, d_model=32, n_heads=4, n_layers=1)
    assert model(torch.randint(0, 11, (3, 16))).shape == (3, 16, 11)
    assert model(torch.randint(0, 11, (3, 5))).shape == (3, 5, 11)
    with pytest.raises(ValueError, match="^idx: "):
        model(torch.randint(0, 11, (1, 17)))


def test_transformer_is_causal():
    torch.manual_seed(0)
    model = TinyTransformer(vocab_size=20, context=12, d_model=32, n_layers=2).eval()
    idx = torch.randint(0, 20, (2, 12))
    changed = idx.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 20
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_transformer_does_not_use_fused_attention(monkeypatch):
    def fused(*args, **kwargs):
        raise AssertionError("scaled_dot_product_attention called")

    monkeypatch.setattr(F, "scaled_dot_product_attention", fused)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", fused)
    TinyTransformer(vocab_size=7, context=8, d_model=16, n_heads=2)(torch.zeros(1, 8).long())


def test_transformer_training_reduces_loss():
    torch.manual_seed(0)
    s = char_sequences(context=16, n_train=64, n_test=4, max_chars=20_000)
    model = TinyTransformer(s.n_classes, context=16, d_model=32, n_heads=4, n_layers=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = F.cross_entropy(model(s.x_train).flatten(0, 1), s.y_train.flatten()).item()
    assert abs(first - math.log(s.n_classes)) < 0.2  # small init: near-uniform predictions
    for _ in range(40):
        loss = F.cross_entropy(model(s.x_train).flatten(0, 1), s.y_train.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 1.0


def test_mlp_unchanged():
    assert [type(m).__name__ for m in MLP([4, 8, 3])] == ["Linear", "ReLU", "Linear"]


@pytest.mark.parametrize("make, name", [
    (lambda: CNN1d(n_classes=0), "n_classes"),
    (lambda: CNN1d(length=-1), "length"),
    (lambda: CNN1d(channels=1.5), "channels"),
    (lambda: TinyTransformer(0), "vocab_size"),
    (lambda: TinyTransformer(10, context=0), "context"),
    (lambda: TinyTransformer(10, d_model=30, n_heads=4), "n_heads"),
    (lambda: TinyTransformer(10, n_layers=0), "n_layers"),
    (lambda: TinyTransformer(10, dropout=1.0), "dropout"),
])
def test_argument_errors_name_the_parameter(make, name):
    with pytest.raises(ValueError, match=f"^{name}: "):
        make()


def test_fp32_island_keeps_its_layer_in_fp32_under_autocast() -> None:
    from precisionlab.models import FP32Island

    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0]]))
    x = torch.tensor([[0.75, 0.75 + 2.0**-12]])  # closer than bf16 can tell apart
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = layer(x)
        island = FP32Island(layer)(x)
    assert plain.dtype == torch.bfloat16 and float(plain) == 0.0
    assert island.dtype == torch.float32 and float(island) == -(2.0**-12)
