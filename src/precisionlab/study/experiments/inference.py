"""Inference in every precision on two real pretrained models (chapter 13): output fidelity
against fp32, latency as ratios measured in one run, residual-stream outliers, and memory.

Models come from `precisionlab.pretrained` (offline); transformers is imported there, lazily.
SmolLM2's weights were dequantized from a Q4_1 GGUF file, so they lie on a 4-bit grid; that
does not change what 16-bit inference does to them, but it is why its fp32 is "fp32 of a 4-bit
model".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from precisionlab import bench, memory, validate
from precisionlab import pretrained as pre
from precisionlab.amp.emulation import get_matmul16, matmul16, set_matmul16
from precisionlab.amp.policy import get_policy
from precisionlab.formats import FORMATS
from precisionlab.pretrained import REFERENCE as REF  # every precision is compared with it
from precisionlab.study import stats
from precisionlab.study.designs import INT8
from precisionlab.validate import one_of

DTYPES = {n: FORMATS[n].torch_dtype for n in ("fp32", "bf16", "fp16")}  # the registry's
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}
SMOL_CONTEXT = pre.MAX_CONTEXT["smollm2"]  # the longest window SmolLM2 reads

# The parameters `check_parameters` checks (the template's `device` is resolved there instead).
PARAMETERS = ("seeds", "threads", "precisions", "context", "n_windows", "windows_per_file",
              "n_sentences",
              "latency_sentences", "latency_context", "repeats", "warmup", "activation_context",
              "kv_context", "int8")


def check_parameters(params: Mapping[str, object]) -> dict[str, object]:
    """Chapter 13's parameters (a mapping holding at least `PARAMETERS`), checked before any
    compute: the first bad one raises a `ParameterError` whose message starts with its name.
    Returns the parameters with `precisions` as a list, plus the MiniLM `sentences` and their
    `sentences_sha` (drawing them is the check that `n_sentences` are available)."""
    v = validate
    p = dict(params)
    v.integers("seeds", p["seeds"], 0, 2**32 - 1)
    v.integer("threads", p["threads"], 1, 256)
    p["precisions"] = v.subset_of("precisions", p["precisions"], pre.PRECISIONS)
    if REF not in p["precisions"]:
        raise v.ParameterError(f"precisions: must include {REF!r}, the reference")
    v.integer("context", p["context"], 2, SMOL_CONTEXT)
    v.integer("windows_per_file", p["windows_per_file"], 1, 100)
    v.integer("n_windows", p["n_windows"], 2,  # an interval needs 2
              len(pre.STDLIB_FILES) * p["windows_per_file"])
    v.integer("n_sentences", p["n_sentences"], 3)
    p["sentences"], p["sentences_sha"] = pre.stdlib_sentences(p["n_sentences"])  # fails if too many
    v.integer("latency_sentences", p["latency_sentences"], 1, p["n_sentences"])
    v.integer("latency_context", p["latency_context"], 2, p["context"])  # timed on window 0
    v.integer("repeats", p["repeats"], 5, 1000)  # bench.interleaved needs >= 5 for a median
    v.integer("warmup", p["warmup"], 0, 100)
    v.integer("activation_context", p["activation_context"], 2, p["context"])  # from window 0
    v.integer("kv_context", p["kv_context"], 1, 10**7)
    v.one_of("int8", p["int8"], [True, False])
    return p


def variants(model: nn.Module, precisions: Sequence[str], device: str = "cpu",
             int8: bool = True) -> dict[str, nn.Module]:
    """The model to run for each precision: the fp32 model itself (32-true, *-mixed), one 16-bit
    copy per '*-true' precision and, on the CPU when `int8`, a dynamic-int8 copy."""
    for p in precisions:
        one_of("precisions", p, pre.PRECISIONS)
    out = {p: pre.precision_model(model, p) for p in precisions}
    if int8 and torch.device(device).type == "cpu":
        from precisionlab.quant import backends  # noqa: PLC0415 - torch.ao warnings on import

        out[INT8] = backends.to_int8_backend(model, "torch.ao")
    return out


def run_causal(model: nn.Module, ids: torch.Tensor, precision: str, device: str = "cpu"
               ) -> torch.Tensor:
    """Next-token logits of one window under `precision` (INT8 runs the quantized copy as is)."""
    if precision == INT8:
        with torch.no_grad():
            return model(ids.unsqueeze(0).to(device)).logits[0, :-1].float().cpu()
    return pre.causal_logits(model, ids, precision, device)


def low_dtype(precision: str) -> torch.dtype:
    """The dtype a precision's float matmuls run in: its policy's compute dtype (fp32 for
    32-true, and for int8, whose integer matmuls are not float)."""
    return torch.float32 if precision == INT8 else get_policy(precision).compute_dtype


def causal_parity(models: dict[str, nn.Module], ids: torch.Tensor, device: str = "cpu",
                  matmul16_mode: str = "auto") -> pd.DataFrame:
    """Per window and precision: nll (nats), perplexity, KL from fp32 and mean delta-p of the
    correct token, against the fp32 logits of the same window (rows pair by window), and the
    window's predicted `tokens` (the weight of its means: every token counts once).

    The numbers, not the speed, are measured here: with `matmul16_mode` 'auto' the 16-bit
    matmuls run emulated (`amp.emulation`: fp32 kernels on the 16-bit operands, rounded once,
    what a native kernel gives up to the order of its fp32 sums) on CPUs without native fp16
    and bf16 arithmetic, where torch's own 16-bit kernels are tens of times slower."""
    if REF not in models:
        raise ValueError(f"models: needs {REF!r}, the reference")
    previous = get_matmul16()
    set_matmul16(matmul16_mode)
    rows = []
    try:
        for w in range(ids.shape[0]):
            ref = run_causal(models[REF], ids[w], REF, device)
            targets = ids[w, 1:]
            for p, m in models.items():
                if p == REF:
                    logits = ref
                else:
                    with matmul16(low_dtype(p), device):
                        logits = run_causal(m, ids[w], p, device)
                met = pre.next_token_metrics(ref, logits, targets)
                rows.append({"window": w, "precision": p, **met,
                             "perplexity": math.exp(met["nll"]), "tokens": int(targets.numel()),
                             "finite": bool(torch.isfinite(logits).all())})
    finally:
        set_matmul16(previous)
    return pd.DataFrame(rows)


def embed(model: nn.Module, tokenizer: object, sentences: Sequence[str], precision: str,
          device: str = "cpu") -> torch.Tensor:
    """Mean-pooled, L2-normalized sentence embeddings (fp32, CPU) of an encoder under
    `precision` (the sentence-transformers recipe of all-MiniLM-L6-v2)."""
    batch = tokenizer(list(sentences), padding=True, truncation=True, return_tensors="pt")
    batch = {k: v.to(device) for k, v in batch.items()}
    if precision == INT8:
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
    else:
        with pre.precision_context(precision, device):
            hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled, dim=-1).cpu()


def encoder_parity(models: dict[str, nn.Module], tokenizer: object, sentences: Sequence[str],
                   device: str = "cpu") -> pd.DataFrame:
    """Per sentence and precision: cosine of its embedding to fp32's, and whether its nearest
    other sentence (by cosine) is the same one fp32 finds."""
    ref = embed(models[REF], tokenizer, sentences, REF, device)
    ref_nn = _nearest(ref)
    rows = []
    for p, m in models.items():
        e = ref if p == REF else embed(m, tokenizer, sentences, p, device)
        cos = (e * ref).sum(-1)
        same = _nearest(e) == ref_nn
        rows += [{"sentence": i, "precision": p, "cosine": float(cos[i]),
                  "nn_agree": bool(same[i])} for i in range(len(sentences))]
    return pd.DataFrame(rows)


def _nearest(e: torch.Tensor) -> torch.Tensor:
    sim = e @ e.T
    sim.fill_diagonal_(-math.inf)
    return sim.argmax(-1)


def latency(calls: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 1,
            device: str = "cpu") -> pd.DataFrame:
    """Per timed round and precision: seconds, and the speed-up over fp32 paired within the
    round (fp32's seconds in that round over this precision's). Every precision runs once per
    round, after `warmup` untimed rounds (`bench.interleaved`), so drift hits them alike and the
    rounds give the ratios' spread."""
    if REF not in calls:
        raise ValueError(f"calls: needs {REF!r}, the reference; got {', '.join(calls)}")
    t = bench.interleaved(calls, repeats, warmup, device).rename(
        columns={"candidate": "precision", "repeat": "round"})
    ref = t[t.precision == REF].set_index("round").seconds
    t["speedup"] = t["round"].map(ref) / t.seconds
    return t[["precision", "round", "seconds", "speedup"]]


def latency_summary(rounds: pd.DataFrame) -> pd.DataFrame:
    """Per model (when `rounds` has that column) and precision, from `latency`'s rounds: median
    seconds and IQR / median, and the speed-up over fp32 as the geometric mean of the paired
    per-round ratios with its 95 % interval (`stats.interval` of their logs, exponentiated:
    ratios multiply, so their logs are averaged). Beyond noise means the interval excludes 1."""
    keys = ["model", "precision"] if "model" in rounds.columns else ["precision"]
    rows = []
    for key, part in rounds.groupby(keys, sort=False):
        s = part.seconds
        iv = stats.interval(np.log(part.speedup.to_numpy(dtype=float)))
        rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)),
                     "median_s": float(s.median()),
                     "iqr_over_median": float((s.quantile(0.75) - s.quantile(0.25)) / s.median()),
                     "speedup": math.exp(iv.mean), "speedup_low": math.exp(iv.low),
                     "speedup_high": math.exp(iv.high), "rounds": iv.n})
    return pd.DataFrame(rows)


def causal_calls(models: dict[str, nn.Module], ids: torch.Tensor, device: str = "cpu"
                 ) -> dict[str, Callable[[], object]]:
    """One forward of window `ids` per precision, ready for `latency`."""
    return {p: (lambda m=m, p=p: run_causal(m, ids, p, device)) for p, m in models.items()}


def encoder_calls(models: dict[str, nn.Module], tokenizer: object, sentences: Sequence[str],
                  device: str = "cpu") -> dict[str, Callable[[], object]]:
    """One batch of sentence embeddings per precision, ready for `latency`."""
    return {p: (lambda m=m, p=p: embed(m, tokenizer, sentences, p, device))
            for p, m in models.items()}


# Outliers ---------------------------------------------------------------------------------------
def blocks(model: nn.Module) -> list[nn.Module]:
    """The residual blocks of a Llama causal LM or of a BERT encoder, in order."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "layers"):
        return list(inner.layers)
    if hasattr(model, "encoder"):
        return list(model.encoder.layer)
    raise ValueError(f"model: {type(model).__name__} is neither a Llama-style LM nor a BERT "
                     "encoder")


def residual_outputs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The hidden state leaving each block (fp32, CPU, (tokens, channels)) for one sequence,
    caught by forward hooks."""
    caught: list[torch.Tensor] = []

    def hook(_module: nn.Module, _args: object, out: object) -> None:
        x = out[0] if isinstance(out, tuple) else out
        caught.append(x[0].detach().float().cpu())

    handles = [b.register_forward_hook(hook) for b in blocks(model)]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return caught


def outlier_stats(hidden: Sequence[torch.Tensor]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per layer: max |x|, its channel and token, the median channel's max |x| and the ratio;
    and per layer and channel, the channel's max |x| over tokens (long table)."""
    rows, chans = [], []
    for layer, x in enumerate(hidden):
        per_channel = x.abs().amax(0)
        flat = int(x.abs().argmax())
        top = int(per_channel.argmax())
        med = float(per_channel.median())
        rows.append({"layer": layer, "max_abs": float(per_channel.max()), "channel": top,
                     "token": flat // x.shape[1], "median_channel_max": med,
                     "ratio": float(per_channel.max()) / med,
                     "sum_squares_fp32": float((x.double() ** 2).sum(-1).max())})
        chans.append(pd.DataFrame({"layer": layer, "channel": range(x.shape[1]),
                                   "max_abs": per_channel.numpy()}))
    return pd.DataFrame(rows), pd.concat(chans, ignore_index=True)


def outlier_vector(layers: pd.DataFrame, hidden: Sequence[torch.Tensor]) -> torch.Tensor:
    """The residual vector (one token's channels) holding the largest |x| of `outlier_stats`'s
    per-layer table: `hidden[layer][token]` of the row with the largest max_abs."""
    row = layers.loc[layers.max_abs.idxmax()]
    return hidden[int(row.layer)][int(row.token)]


def rms_norm_in(vector: torch.Tensor) -> pd.DataFrame:
    """RMSNorm's statistic for one residual vector computed in each format: the largest x^2,
    the mean of x^2 and 1/sqrt(mean + eps) (what scales the vector), whether the statistic and
    the output are finite, and the output's largest error against fp32's.
    transformers computes it in fp32; fp16 shows what would happen if it did not."""
    rows = []
    ref = None
    for name, dtype in DTYPES.items():
        x = vector.to(dtype)
        sq = x * x
        mean = sq.mean()
        inv = torch.rsqrt(mean + 1e-5)
        out = (x * inv).float()
        if ref is None:
            ref = out
        rows.append({"format": name, "max_x": float(x.abs().max()), "max_x2": float(sq.max()),
                     "mean_x2": float(mean), "inv_rms": float(inv),
                     "finite": bool(torch.isfinite(mean)) and bool(torch.isfinite(out).all()),
                     "output_all_zero": bool((out == 0).all()),
                     "max_abs_error": float((out - ref).abs().max())})
    return pd.DataFrame(rows)


# Memory -----------------------------------------------------------------------------------------
# Bytes per parameter held through an Adam training step, by recipe: weights, gradients, Adam's
# m and v, and the fp32 master copy where the recipe keeps one.
RECIPES = {
    "32-true": {"weights": 4, "gradients": 4, "adam_m": 4, "adam_v": 4, "master": 0},
    "bf16-mixed (fp32 weights, autocast)": {"weights": 4, "gradients": 4, "adam_m": 4,
                                            "adam_v": 4, "master": 0},
    "bf16-mixed (16-bit weights + fp32 master)": {"weights": 2, "gradients": 2, "adam_m": 4,
                                                  "adam_v": 4, "master": 4},
    "bf16-true": {"weights": 2, "gradients": 2, "adam_m": 2, "adam_v": 2, "master": 0},
    "inference 32-true": {"weights": 4, "gradients": 0, "adam_m": 0, "adam_v": 0, "master": 0},
    "inference bf16-true / 16-true": {"weights": 2, "gradients": 0, "adam_m": 0, "adam_v": 0,
                                      "master": 0},
    "inference int8 (weights)": {"weights": 1, "gradients": 0, "adam_m": 0, "adam_v": 0,
                                 "master": 0},
}

# Published sizes (Touvron et al. 2023, "Llama 2", Table 1 and the released config.json files):
# parameters, layers, hidden size, key/value heads, head dimension.
PUBLISHED = pd.DataFrame([
    {"model": "Llama-2-7B", "parameters": 6.74e9, "layers": 32, "hidden": 4096, "kv_heads": 32,
     "head_dim": 128},
    {"model": "Llama-2-13B", "parameters": 13.0e9, "layers": 40, "hidden": 5120, "kv_heads": 40,
     "head_dim": 128},
    {"model": "Llama-2-70B", "parameters": 69.0e9, "layers": 80, "hidden": 8192, "kv_heads": 8,
     "head_dim": 128},
])
PUBLISHED_SOURCE = ("Touvron et al. 2023, Llama 2 (arXiv:2307.09288), and the config.json "
                    "files released with the models")


def recipe_bytes() -> pd.DataFrame:
    """Bytes per parameter of each recipe, by part, with the total."""
    t = pd.DataFrame(RECIPES).T.rename_axis("recipe").reset_index()
    t["total"] = t[["weights", "gradients", "adam_m", "adam_v", "master"]].sum(axis=1)
    return t


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, bytes_per_value: int) -> int:
    """KV-cache bytes per token: 2 (K and V) x layers x kv_heads x head_dim x bytes."""
    return 2 * layers * kv_heads * head_dim * bytes_per_value


def kv_table(shape: Mapping[str, int]) -> pd.DataFrame:
    """KV-cache bytes per token of a model of `shape` (`model_shape`) in each format of BYTES."""
    return pd.DataFrame([{"format": f, "kv_bytes_per_token": kv_bytes_per_token(
        shape["layers"], shape["kv_heads"], shape["head_dim"], b)} for f, b in BYTES.items()])


def activation_per_unit(acts: pd.DataFrame, shape: Mapping[str, int]) -> float:
    """Saved activation bytes per token per layer and hidden unit: the smallest bytes_per_token
    of the bf16 precisions in `acts` (`activation_bytes`) over layers x hidden (NaN without a
    bf16 row)."""
    bf16 = float(acts[acts.precision.str.startswith("bf16")].bytes_per_token.min())
    return bf16 / (shape["layers"] * shape["hidden"])


def model_shape(model: nn.Module) -> dict[str, int]:
    """Layers, hidden size, key/value heads and head dimension of a Llama-style model's config."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return {"layers": c.num_hidden_layers, "hidden": c.hidden_size,
            "kv_heads": c.num_key_value_heads, "head_dim": int(head_dim)}


def activation_bytes(models: dict[str, nn.Module], ids: torch.Tensor, device: str = "cpu"
                     ) -> pd.DataFrame:
    """Peak bytes autograd saves for a forward+backward of the next-token loss on one window,
    per precision (32-true and *-mixed on the fp32 model, *-true on their copies), and per
    token."""
    rows = []
    x = ids.unsqueeze(0).to(device)
    for p, m in models.items():
        if p == INT8:
            continue  # dynamic int8 kernels have no backward

        def step(m: nn.Module = m, p: str = p) -> None:
            with torch.enable_grad(), get_policy(p).autocast(torch.device(device).type):
                logits = m(x).logits[0, :-1].float()
                loss = torch.nn.functional.cross_entropy(logits, x[0, 1:])
            loss.backward()

        saved = memory.saved_activation_bytes(step, exclude=list(m.parameters()))
        m.zero_grad(set_to_none=True)
        rows.append({"precision": p, "tokens": x.shape[1], "saved_bytes": saved,
                     "bytes_per_token": saved / x.shape[1]})
    return pd.DataFrame(rows)


def scaled_memory(published: pd.DataFrame, per_token_per_unit: float, context: int
                  ) -> pd.DataFrame:
    """Published models' bytes by formula: weights at 2 bytes (bf16), Adam mixed training at
    16 bytes per parameter (2 + 2 + 4 + 4 + 4), KV cache per token at 2 bytes and for `context`
    tokens, and saved activations per token = `per_token_per_unit` x layers x hidden (the
    measured SmolLM2 value per layer and hidden unit, scaled)."""
    t = published.copy()
    t["weights_bf16_GB"] = t.parameters * 2 / 1e9
    t["adam_mixed_GB"] = t.parameters * 16 / 1e9
    t["kv_bytes_per_token_bf16"] = [kv_bytes_per_token(r.layers, r.kv_heads, r.head_dim, 2)
                                    for r in t.itertuples()]
    t[f"kv_GB_{context}_tokens"] = t.kv_bytes_per_token_bf16 * context / 1e9
    t["activation_MB_per_token"] = per_token_per_unit * t.layers * t.hidden / 1e6
    return t
