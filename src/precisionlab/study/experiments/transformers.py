"""Chapter 11's measurements (GPT and BERT, run): tidy tables for `rules.transformers`.

Seed 002 describes GPT and BERT with an attention formula, a factorization of BERT's
probability and two short Hugging Face snippets; seed 004 says mixed precision works on such
models without redesigning them. We rebuild each piece in our own code (nothing of theirs is
copied) and measure it:

- LLM-1: the article's attention exp(Q K^T / sqrt(d)) / Z V against torch's
  `scaled_dot_product_attention`, with and without the causal mask (`attention_table`);
- LLM-2, LLM-3: change token j and measure how the hidden states before j move, in a causal
  GPT-2 (random weights) and the real pretrained MiniLM encoder (`perturbation_table`);
- LLM-4: the snippets' calls, run offline, as a table of facts (`snippet_facts`);
- MP-27: autocast around unmodified `GPT2LMHeadModel` and `BertForMaskedLM` built from reduced
  configs: loss and gradients against fp32, and what fp16 loses without a loss scale
  (`autocast_table`).

`transformers` is imported inside the functions that need it, so importing this module (or
`precisionlab`) stays light. Every model is built from a config (random weights, no download)
except MiniLM, which `precisionlab.pretrained` loads offline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from precisionlab.study.store import stored

DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
# fp16's smallest positive subnormal, 2**-24: a gradient below it cannot be stored in fp16.
FP16_TINY = 2.0 ** -24


def _offline() -> None:
    """Forbid downloads before transformers is used (the same switches as `pretrained`)."""
    from precisionlab import pretrained  # noqa: PLC0415 - pulls transformers in

    pretrained.offline()


# ------------------------------------------------------------------------------------ LLM-1 ---

def article_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The article's attention, literally: exp(Q K^T / sqrt(d)) divided by its row sums Z,
    times V, in the inputs' dtype, with no causal mask and no max subtracted before exp."""
    weights = torch.exp(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]))
    return weights / weights.sum(-1, keepdim=True) @ v


def attention_table(shapes: Sequence[tuple[int, int, int]], seeds: Sequence[int],
                    dtypes: Sequence[str] = ("float64", "float32", "float16"),
                    logit_scales: Sequence[float] = (1.0, 30.0, 300.0),
                    device: str = "cpu") -> pd.DataFrame:
    """One row per (shape (heads, length, d), seed, dtype, logit scale): the article's formula
    and SDPA (non-causal and causal) on the same Q, K, V (Q multiplied by the scale, so the
    largest logit grows with it); max |difference| (computed in fp64), whether each output is
    finite, and the largest |logit|. Q, K, V are standard normal, drawn in fp64 per seed."""
    rows = []
    for heads, length, d in shapes:
        for seed in seeds:
            gen = torch.Generator().manual_seed(int(seed))
            q64, k64, v64 = (torch.randn(1, heads, length, d, generator=gen,
                                         dtype=torch.float64) for _ in range(3))
            for name in dtypes:
                dtype = DTYPES[name]
                for scale in logit_scales:
                    q, k, v = ((t * s).to(device, dtype) for t, s in
                               ((q64, scale), (k64, 1.0), (v64, 1.0)))
                    ours = article_attention(q, k, v).double()
                    full = F.scaled_dot_product_attention(q, k, v).double()
                    causal = F.scaled_dot_product_attention(q, k, v, is_causal=True).double()
                    logits = (q64 * scale) @ k64.transpose(-2, -1) / math.sqrt(d)
                    both = ours.isfinite().all() and full.isfinite().all()
                    rows.append({
                        "heads": heads, "length": length, "d": d, "seed": int(seed),
                        "dtype": name, "logit_scale": float(scale),
                        "max_logit": float(logits.abs().max()),
                        "formula_finite": bool(ours.isfinite().all()),
                        "sdpa_finite": bool(full.isfinite().all()),
                        "diff_noncausal": float((ours - full).abs().max()) if both else math.nan,
                        "diff_causal": (float((ours - causal).abs().max())
                                        if both and causal.isfinite().all() else math.nan),
                        "eps": float(torch.finfo(dtype).eps),
                    })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- LLM-2, LLM-3 ---

def tiny_gpt2(seed: int, n_layer: int = 2, n_embd: int = 128, n_head: int = 4,
              n_positions: int = 128, lm_head: bool = False) -> nn.Module:
    """An unmodified transformers GPT-2 (GPT2Model, or GPT2LMHeadModel if `lm_head`) from a
    reduced GPT2Config, random weights drawn with `seed`, in eval mode (no dropout)."""
    _offline()
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model  # noqa: PLC0415

    torch.manual_seed(int(seed))
    config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions)
    return (GPT2LMHeadModel if lm_head else GPT2Model)(config).eval()


def tiny_bert_mlm(seed: int, n_layer: int = 2, hidden: int = 128, n_head: int = 4) -> nn.Module:
    """An unmodified transformers BertForMaskedLM from a reduced BertConfig (BERT's vocabulary
    of 30522), random weights drawn with `seed`, in eval mode (no dropout)."""
    _offline()
    from transformers import BertConfig, BertForMaskedLM  # noqa: PLC0415

    torch.manual_seed(int(seed))
    config = BertConfig(num_hidden_layers=n_layer, hidden_size=hidden, num_attention_heads=n_head,
                        intermediate_size=4 * hidden)
    return BertForMaskedLM(config).eval()


def hidden_states(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Last hidden states (length, width) of `model` for one (length,) window of ids, fp32."""
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(input_ids=ids.unsqueeze(0).to(device))
    return out.last_hidden_state[0].float().cpu()


def perturbation_table(models: dict[str, nn.Module], positions: Sequence[int],
                       seeds: Sequence[int], length: int = 16, low_id: int = 1000
                       ) -> pd.DataFrame:
    """For each model, seed and position j: a window of `length` random ids (drawn per seed from
    [low_id, vocab), away from special tokens), the same window with token j replaced by another
    such id; one row per output position p with the max |change| of its hidden state (`delta`)
    and whether p lies before j."""
    rows = []
    for name, model in models.items():
        vocab = int(model.config.vocab_size)
        for seed in seeds:
            gen = torch.Generator().manual_seed(int(seed))
            ids = torch.randint(low_id, vocab, (length,), generator=gen)
            base = hidden_states(model, ids)
            for j in positions:
                if not 0 <= j < length:
                    raise ValueError(f"positions: {j} is outside a window of {length} tokens")
                changed = ids.clone()
                while changed[j] == ids[j]:
                    changed[j] = int(torch.randint(low_id, vocab, (1,), generator=gen))
                delta = (hidden_states(model, changed) - base).abs().amax(-1)
                rows += [{"model": name, "seed": int(seed), "j": int(j), "position": p,
                          "before_j": p < j, "delta": float(delta[p])} for p in range(length)]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ LLM-4 ---

def _error_name(call) -> str:
    """The exception type `call()` raises, or 'no error'."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the type is the fact we record
        return type(exc).__name__
    return "no error"


def snippet_facts(tokenizer: object, seeds: tuple[int, int] = (0, 1), n_layer: int = 2
                  ) -> pd.DataFrame:
    """The snippets' calls, rebuilt and run offline, as facts: one row per fact with what the
    article assumes, what happens (`observed`, exact text) and whether that contradicts it.
    Models use the default GPT2Config/BertConfig widths with `n_layer` layers (the facts do not
    depend on depth; 12 layers only cost build time). `tokenizer`: MiniLM's (BERT's vocab)."""
    _offline()
    from transformers import (  # noqa: PLC0415
        BertConfig,
        BertModel,
        GPT2Config,
        GPT2LMHeadModel,
        GPT2Model,
    )

    ids = torch.tensor([101, 102, 103, 104, 105])  # the snippets' 1-D ids
    outs = []
    for seed in seeds:
        torch.manual_seed(int(seed))
        gpt = GPT2Model(GPT2Config(n_layer=n_layer)).eval()
        with torch.no_grad():
            outs.append(gpt(ids).last_hidden_state)
    differ = bool((outs[0] - outs[1]).abs().max() > 0)
    with torch.no_grad():
        gpt_out = gpt(ids)
    torch.manual_seed(int(seeds[0]))
    bert = BertModel(BertConfig(num_hidden_layers=n_layer)).eval()
    bert_1d = _error_name(lambda: bert(ids))
    with torch.no_grad():
        bert_out = bert(ids.unsqueeze(0))
    torch.manual_seed(int(seeds[0]))
    head = GPT2LMHeadModel(GPT2Config(n_layer=n_layer)).eval()
    with torch.no_grad():
        logits = head(ids.unsqueeze(0)).logits[0].double()
    row_sums_one = bool(torch.allclose(logits.sum(-1), torch.ones(len(ids), dtype=torch.float64),
                                       atol=1e-3))
    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
    n_special = sum(int(i) in special for i in ids.tolist())
    return pd.DataFrame([
        {"fact": "GPT2Model(GPT2Config()) loads pretrained weights",
         "article assumes": "pretrained", "observed":
         "random: two seeds give different outputs" if differ else "two seeds give equal outputs",
         "contradicts": differ},
        {"fact": "GPT2Model output has .logits", "article assumes": "yes",
         "observed": _error_name(lambda: gpt_out.logits), "contradicts":
         not hasattr(gpt_out, "logits")},
        {"fact": "BertModel output has .logits", "article assumes": "yes",
         "observed": _error_name(lambda: bert_out.logits), "contradicts":
         not hasattr(bert_out, "logits")},
        {"fact": "BertModel accepts 1-D ids", "article assumes": "yes", "observed": bert_1d,
         "contradicts": bert_1d != "no error"},
        {"fact": "GPT2Model accepts 1-D ids", "article assumes": "yes",
         "observed": type(gpt_out).__name__, "contradicts": False},
        {"fact": "ids 101-105 are ordinary words (BERT vocab)", "article assumes": "text",
         "observed": f"{n_special} of 5 are special tokens: {' '.join(tokens)}",
         "contradicts": n_special > 0},
        {"fact": "LM-head logits are a probability distribution", "article assumes": "yes",
         "observed": (f"rows sum to 1: {row_sums_one}; negative entries: "
                      f"{bool((logits < 0).any())}"),
         "contradicts": not row_sums_one or bool((logits < 0).any())},
    ])


# ------------------------------------------------------------------------------------ MP-27 ---

def _lm_batch(model_name: str, vocab: int, seed: int, batch: int, length: int
              ) -> dict[str, torch.Tensor]:
    """Random ids (drawn per seed) and labels: next-token labels for GPT-2 (the model shifts
    them), 15 % of positions as masked-LM targets for BERT (others -100, inputs there [MASK])."""
    gen = torch.Generator().manual_seed(10_000 + int(seed))
    ids = torch.randint(1000, vocab, (batch, length), generator=gen)
    if model_name == "gpt2":
        return {"input_ids": ids, "labels": ids.clone()}
    chosen = torch.rand(batch, length, generator=gen) < 0.15
    chosen[:, 0] = True  # at least one target per row
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    return {"input_ids": torch.where(chosen, torch.full_like(ids, 103), ids), "labels": labels}


def _loss_and_grads(model: nn.Module, batch: dict[str, torch.Tensor], dtype: torch.dtype | None,
                    scale: float) -> tuple[float, torch.Tensor]:
    """Loss and all parameter gradients (flattened, fp32, divided by `scale`) of one forward and
    backward under autocast(`dtype`) (None: fp32), with the loss multiplied by `scale`."""
    device = next(model.parameters()).device
    model.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
    (loss.float() * scale).backward()
    grads = torch.cat([(p.grad.float() / scale).flatten() if p.grad is not None
                       else torch.zeros(p.numel(), device=device)
                       for p in model.parameters()]).cpu()
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


@stored
def autocast_table(seeds: Sequence[int], models: Sequence[str] = ("gpt2", "bert"),
                   n_layer: int = 2, width: int = 128, batch: int = 4, length: int = 32,
                   fp16_scale: float = 2.0 ** 16, device: str = "cpu") -> pd.DataFrame:
    """One row per (model, seed, precision): fp32, bf16 and fp16 autocast (unscaled), and fp16
    autocast with the loss scaled by `fp16_scale` (halved until no gradient overflows, as a
    dynamic scaler would) and unscaled in fp32 ('fp16-scaled', `scale` the one used), around
    unmodified GPT2LMHeadModel / BertForMaskedLM from reduced configs. Columns: loss,
    loss_rel_diff and grad_cosine / grad_rel_error against fp32, `flushed` (share of the
    nonzero fp32 gradient entries that are exactly 0), `nonfinite`, and (fp32 rows)
    `below_fp16_tiny` (share of nonzero fp32 gradient entries under 2**-24 in magnitude)."""
    rows = []
    settings = (("fp32", None, 1.0), ("bf16", torch.bfloat16, 1.0),
                ("fp16", torch.float16, 1.0), ("fp16-scaled", torch.float16, float(fp16_scale)))
    for name in models:
        for seed in seeds:
            if name == "gpt2":
                model = tiny_gpt2(seed, n_layer, width, 4, max(128, length), lm_head=True)
            elif name == "bert":
                model = tiny_bert_mlm(seed, n_layer, width, 4)
            else:
                raise ValueError(f"models: {name!r} is not one of gpt2, bert")
            model = model.to(device)
            data = _lm_batch(name, int(model.config.vocab_size), seed, batch, length)
            ref_loss = ref = None
            for precision, dtype, scale in settings:
                loss, g = _loss_and_grads(model, data, dtype, scale)
                while scale > 1 and not bool(g.isfinite().all()):
                    # What a dynamic loss scaler does on overflow: skip, halve the scale.
                    scale /= 2
                    loss, g = _loss_and_grads(model, data, dtype, scale)
                if ref is None:
                    ref_loss, ref = loss, g.double()
                gd = g.double()
                finite = bool(gd.isfinite().all())
                nonzero = ref != 0
                rows.append({
                    "model": name, "seed": int(seed), "precision": precision,
                    "scale": scale, "loss": loss,
                    "loss_rel_diff": abs(loss - ref_loss) / abs(ref_loss),
                    "grad_cosine": float(F.cosine_similarity(gd, ref, dim=0)) if finite
                    else math.nan,
                    "grad_rel_error": float((gd - ref).norm() / ref.norm()) if finite
                    else math.nan,
                    "flushed": float((nonzero & (gd == 0)).sum() / nonzero.sum()),
                    "nonfinite": float((~gd.isfinite()).double().mean()),
                    "below_fp16_tiny": float(((ref.abs() < FP16_TINY) & nonzero).sum()
                                             / nonzero.sum()),
                    "entries": int(ref.numel()),
                })
    return pd.DataFrame(rows)
