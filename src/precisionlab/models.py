"""Small models for the chapters: plain PyTorch, nothing of the precision machinery."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Sequential):
    """Linear-ReLU stack, e.g. MLP([64, 256, 256, 10]) for digits."""

    def __init__(self, sizes: Sequence[int]) -> None:
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"sizes: need at least two positive layer widths; got {sizes!r}")
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)


class FP32Island(nn.Module):
    """Runs the wrapped module in float32 even inside an autocast region: the per-op fix for a
    layer whose inputs need more resolution than a 16-bit format keeps."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.module(x.float())


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: must be a positive int; got {value!r}")


class CNN1d(nn.Module):
    """Three Conv1d-ReLU layers (kernel 5, stride 2 on the last two) and a linear head: MNIST-1D."""

    def __init__(self, n_classes: int = 10, length: int = 40, channels: int = 32) -> None:
        super().__init__()
        _check_positive(n_classes=n_classes, length=length, channels=channels)
        self.convs = nn.Sequential(
            nn.Conv1d(1, channels, 5, padding=2), nn.ReLU(),
            nn.Conv1d(channels, channels, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv1d(channels, channels, 5, stride=2, padding=2), nn.ReLU(),
        )
        out_length = (((length - 1) // 2 + 1) - 1) // 2 + 1  # two stride-2 convs, padding 2
        self.head = nn.Linear(channels * out_length, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x.unsqueeze(1))  # (B, 1, L) -> (B, C, L / 4)
        return self.head(h.flatten(1))  # (B, n_classes)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a causal mask, each op written out (no fused kernel)."""

    def __init__(self, d_model: int, n_heads: int, context: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q, self.k, self.v = (nn.Linear(d_model, d_model) for _ in range(3))
        self.proj = nn.Linear(d_model, d_model)
        self.attn_dropout, self.resid_dropout = nn.Dropout(dropout), nn.Dropout(dropout)
        mask = torch.tril(torch.ones(context, context, dtype=torch.bool))
        self.register_buffer("mask", mask, persistent=False)  # (context, context)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        H = self.n_heads
        q = self.q(x).view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)
        k = self.k(x).view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)
        v = self.v(x).view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // H)  # (B, H, T, T)
        scores = scores.masked_fill(~self.mask[:T, :T], float("-inf"))
        att = self.attn_dropout(torch.softmax(scores, dim=-1))  # (B, H, T, T)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)  # (B, H, T, D) -> (B, T, C)
        return self.resid_dropout(self.proj(y))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x)) with a 4x GELU MLP."""

    def __init__(self, d_model: int, n_heads: int, context: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, context, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))  # (B, T, C)
        return x + self.mlp(self.ln2(x))  # (B, T, C)


class TinyTransformer(nn.Module):
    """Decoder-only char model after nanoGPT: token + position embeddings, blocks, LayerNorm, head.

    Weights are initialized N(0, 0.02) with zero biases as in nanoGPT; the head is not tied.
    """

    def __init__(self, vocab_size: int, context: int = 64, d_model: int = 64, n_heads: int = 4,
                 n_layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        _check_positive(vocab_size=vocab_size, context=context, d_model=d_model,
                        n_heads=n_heads, n_layers=n_layers)
        if d_model % n_heads:
            raise ValueError(f"n_heads: must divide d_model={d_model}; got {n_heads}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout: must be in [0, 1); got {dropout!r}")
        self.context = context
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(context, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(Block(d_model, n_heads, context, dropout)
                                      for _ in range(n_layers)))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        if T > self.context:
            raise ValueError(f"idx: sequence length {T} exceeds context {self.context}")
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        x = self.ln_f(self.blocks(x))  # (B, T, C)
        return self.head(x)  # (B, T, vocab)
