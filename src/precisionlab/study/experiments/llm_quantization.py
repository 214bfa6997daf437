"""Chapter 14's measurements: quantizing real pretrained transformers (tidy tables for
`rules.llm_quantization` and `reports.llm_quantization`).

- SmolLM2-135M (`pretrained.load("smollm2")`, whose weights were dequantized from GGUF Q4_1):
  each configuration of `CONFIGS` (the book's `quantize_` for weight-only and static W8A8,
  `quant.llm` for dynamic activations, SmoothQuant and the LLM.int8()-style split) against the
  fp32 model on held-out token windows: nll, KL and delta-p per window (`evaluate`); how many
  distinct values each block of 32 weights holds (`weight_grid`).
- all-MiniLM-L6-v2 (Q-6): torch.ao's dynamic int8 (`quantize_dynamic` on nn.Linear) in two
  recipes (`dynamic_int8`: the practitioner's, and torch.ao's defaults): which modules become
  integer and which stay float (`inventory`), matmul FLOP shares, serialized size, and
  sentence-embedding fidelity to fp32 on the same sentences (`recipe_fidelity`).

transformers is imported only through `precisionlab.pretrained`, inside functions.
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from precisionlab import pretrained
from precisionlab.quant import (
    QuantConfig,
    QuantizedLayer,
    QuantSpec,
    block_minmax_grid,
    calibrate,
    distinct_per_block,
    input_absmax,
    quantize_,
    quantize_llm_,
)
from precisionlab.validate import ParameterError

# The configurations the chapter compares, by label (see `config_parts`).
CONFIGS = ("W8 per-channel", "W4 sym g32", "W4 sym g64", "W4 sym g192", "W4 asym g32",
           "W4 asym g64", "W4 asym g192", "W4 Q4_1-grid g32", "W8A8 per-tensor static",
           "W8A8 per-tensor dynamic", "W8A8 per-token", "SmoothQuant a=0",
           "SmoothQuant a=0.5", "SmoothQuant a=0.8", "LLM.int8 |x|>6")
# int4 group sizes offered; a group must divide every Linear's input width, and SmolLM2's
# attention projections read 576 = 4.5 x 128 channels, so 192 stands in for 128 there.
GROUPS = (32, 64, 96, 128, 192)
GGUF_BLOCK = 32  # Q4_1 stores blocks of 32 weights, each with its own scale and minimum
_PATTERNS = {
    "weight8": r"W8 per-channel",
    "weight4": r"W4 (?P<sym>sym|asym) g(?P<g>\d+)",
    "grid": r"W4 Q4_1-grid g(?P<g>\d+)",
    "static": r"W8A8 per-tensor static",
    "dynamic": r"W8A8 (?P<act>per-tensor|per-token)(?: dynamic)?",
    "smooth": r"SmoothQuant a=(?P<alpha>[0-9.]+)",
    "int8split": r"LLM\.int8 \|x\|>(?P<thr>[0-9.]+)",
}


def config_parts(label: str) -> tuple[str, dict[str, object]]:
    """The recipe a configuration label names and its settings, e.g. 'W4 sym g64' ->
    ('weight4', {'symmetric': True, 'group_size': 64}); unknown labels raise naming `configs`."""
    for kind, pattern in _PATTERNS.items():
        m = re.fullmatch(pattern, label) if isinstance(label, str) else None
        if m is None:
            continue
        if kind in ("weight4", "grid"):
            g = int(m["g"])
            if g not in GROUPS:
                raise ParameterError(f"configs: group size {g} in {label!r}; allowed: {GROUPS}")
            return kind, {"group_size": g, "symmetric": m.groupdict().get("sym") == "sym"}
        if kind == "dynamic":
            return kind, {"act": m["act"].replace("-", "_")}
        if kind == "smooth":
            alpha = float(m["alpha"])
            if not 0 <= alpha <= 1:
                raise ParameterError(f"configs: SmoothQuant alpha must be in [0, 1]; got {label!r}")
            return kind, {"alpha": alpha}
        if kind == "int8split":
            return kind, {"threshold": float(m["thr"])}
        return kind, {}
    raise ParameterError(f"configs: unknown configuration {label!r}; allowed: "
                         f"{', '.join(CONFIGS)} (other groups/alphas/thresholds in the same form)")


def _in_blocks(module: nn.Module, name: str) -> bool:
    """Quantize the decoder blocks' Linears; the tied embedding / lm_head stays fp32."""
    return isinstance(module, nn.Linear) and ".layers." in f".{name}"


def quantized_model(model: nn.Module, label: str, calibration: torch.Tensor,
                    absmax: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A copy of `model` quantized as configuration `label` says; `calibration` (ids, one row per
    window) sets static activation ranges; `absmax` (from `input_absmax`) feeds SmoothQuant."""
    kind, opts = config_parts(label)
    qm = copy.deepcopy(model)
    if kind == "weight8":
        quantize_(qm, QuantConfig(weight=QuantSpec(bits=8, granularity="per_channel")), _in_blocks)
    elif kind == "weight4":
        spec = QuantSpec(bits=4, symmetric=bool(opts["symmetric"]), granularity="per_group",
                         group_size=int(opts["group_size"]))
        quantize_(qm, QuantConfig(weight=spec), _in_blocks)
    elif kind == "grid":
        with torch.no_grad():
            for name, m in qm.named_modules():
                if _in_blocks(m, name):
                    m.weight.copy_(block_minmax_grid(m.weight, int(opts["group_size"])))
    elif kind == "static":
        quantize_(qm, QuantConfig(weight=QuantSpec(bits=8, granularity="per_channel"),
                                  activation=QuantSpec(bits=8, symmetric=False)), _in_blocks)
        calibrate(qm, calibration, batch_size=1)
    elif kind == "dynamic":
        quantize_llm_(qm, act=str(opts["act"]), filter_fn=_in_blocks)
    elif kind == "smooth":
        if absmax is None:
            absmax = input_absmax(model, calibration, _in_blocks)
        quantize_llm_(qm, act="per_tensor", smooth_alpha=float(opts["alpha"]), act_absmax=absmax,
                      filter_fn=_in_blocks)
    else:
        quantize_llm_(qm, act="per_token", outlier_threshold=float(opts["threshold"]),
                      filter_fn=_in_blocks)
    return qm.eval()


def weight_change(model: nn.Module, qmodel: nn.Module) -> float:
    """Relative Frobenius change ||W_q - W|| / ||W|| over the decoder blocks' Linear weights
    (NaN where the weights are not stored separately, as with SmoothQuant's scaled copies)."""
    num = den = 0.0
    quantized = dict(qmodel.named_modules())
    for name, m in model.named_modules():
        if not _in_blocks(m, name):
            continue
        q = quantized[name]
        if isinstance(q, QuantizedLayer):
            wq = q.dequantized_weight()
        elif isinstance(q, nn.Linear):
            wq = q.weight
        elif getattr(q, "smooth", None) is None:
            wq = q.qweight
        else:
            return math.nan
        num += float((wq.detach().float() - m.weight.detach().float()).pow(2).sum())
        den += float(m.weight.detach().float().pow(2).sum())
    return math.sqrt(num / den) if den else math.nan


def evaluate(model: nn.Module, windows: torch.Tensor, configs: Sequence[str],
             calibration: torch.Tensor, device: str = "cpu") -> pd.DataFrame:
    """One row per (configuration, window): nll of the fp32 reference and of the quantized
    model (nats/token), perplexities, KL(fp32 || quantized) and delta-p of the correct token."""
    widths = {m.in_features for name, m in model.named_modules() if _in_blocks(m, name)}
    for label in configs:  # every label checked before any compute
        g = config_parts(label)[1].get("group_size")
        if g is not None and any(w % g for w in widths):
            raise ParameterError(f"configs: group size {g} in {label!r} does not divide every "
                                 f"Linear input width {sorted(widths)}")
    windows, calibration = windows.to(device), calibration.to(device)
    refs = [pretrained.causal_logits(model, ids, device=device) for ids in windows]
    absmax = (input_absmax(model, calibration, _in_blocks)
              if any(config_parts(c)[0] == "smooth" for c in configs) else None)
    rows = []
    for label in configs:
        qm = quantized_model(model, label, calibration, absmax)
        change = weight_change(model, qm)
        for i, (ids, ref) in enumerate(zip(windows, refs, strict=True)):
            logits = pretrained.causal_logits(qm, ids, device=device)
            m = pretrained.next_token_metrics(ref, logits, ids[1:].cpu())
            rows.append({"config": label, "recipe": config_parts(label)[0], "window": i,
                         **m, "ppl_ref": math.exp(m["nll_ref"]), "ppl": math.exp(m["nll"]),
                         "ppl_ratio": math.exp(m["nll"] - m["nll_ref"]),
                         "weight_change": change})
        del qm
    return pd.DataFrame(rows)


def weight_grid(model: nn.Module, block: int = GGUF_BLOCK) -> pd.DataFrame:
    """Per kind of decoder Linear (q_proj, ..., down_proj) and for the embedding: tensors,
    blocks of `block` consecutive weights, the most distinct values in a block and the share
    of blocks with at most 16 (what a 4-bit grid per block allows)."""
    rows = []
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        kind = name.split(".")[-2] if ".layers." in f".{name}" else name.rsplit(".", 1)[0]
        d = distinct_per_block(p, block)
        rows.append({"kind": kind, "blocks": d.numel(), "max_distinct": int(d.max()),
                     "le16": int((d <= 16).sum())})
    t = pd.DataFrame(rows).groupby("kind", sort=False).agg(
        tensors=("blocks", "size"), blocks=("blocks", "sum"), max_distinct=("max_distinct", "max"),
        le16=("le16", "sum")).reset_index()
    t["share_le16"] = t["le16"] / t["blocks"]
    return t.drop(columns="le16")


# ------------------------------------------------------------------------------ MiniLM ---

# Q-6's two dynamic-int8 recipes (see `dynamic_int8`): the one judged, and torch.ao's defaults.
Q6_PRACTITIONER = "per-channel W8 / A8"
Q6_DEFAULTS = "torch.ao defaults"
Q6_RECIPES = (Q6_PRACTITIONER, Q6_DEFAULTS)


def _head_name(model: nn.Module) -> str | None:
    """The qualified name of a causal LM's output layer (transformers' output embeddings), or
    None for a model without one (an encoder such as MiniLM)."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    return next((name for name, m in model.named_modules() if m is head and name), None)


def dynamic_int8(model: nn.Module, recipe: str) -> nn.Module:
    """A copy of `model` (eval) whose nn.Linear layers run torch.ao's dynamic int8 kernels
    (fbgemm/x86: int8 weights, each input quantized at run time, int32 accumulation).

    torch.ao `quantize_dynamic` rather than the book's `quant.quantize_`, which fakes the
    arithmetic in float32 and has only static activation ranges: Q-6 asks what real integer
    kernels compute. Recipes:

    - `Q6_DEFAULTS`: `quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)` as written in
      most tutorials: one symmetric weight scale per tensor, and activations on 7 bits (torch.ao's
      dynamic Linear passes reduce_range=True to its kernel), a causal LM's head included.
    - `Q6_PRACTITIONER`: `torch.ao.quantization.per_channel_dynamic_qconfig` (one weight scale
      per output channel), activations on the full 8 bits (each layer's forward of torch.ao's
      module version 3, which calls the same kernel with reduce_range=False), and a causal LM's
      output layer left in float. Without VNNI, fbgemm's AVX2 kernel can saturate 16-bit pair
      sums of 8-bit activations (why torch.ao reduces the range), so this recipe's low digits
      depend on the CPU's instruction set.
    """
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear  # noqa: PLC0415
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic  # noqa: PLC0415

    if recipe not in Q6_RECIPES:
        raise ParameterError(f"recipe: must be one of {', '.join(Q6_RECIPES)}; got {recipe!r}")
    float_model = copy.deepcopy(model).eval()
    with warnings.catch_warnings():  # torch 2.13 marks torch.ao.quantization deprecated
        warnings.simplefilter("ignore")
        if recipe == Q6_DEFAULTS:
            return quantize_dynamic(float_model, {nn.Linear}, dtype=torch.qint8)
        spec: dict[object, object] = {nn.Linear: per_channel_dynamic_qconfig}
        head = _head_name(float_model)
        if head is not None:
            spec[head] = None  # a name's entry overrides the type's: the head stays float
        qmodel = quantize_dynamic(float_model, spec, dtype=torch.qint8)
    for m in qmodel.modules():
        if isinstance(m, DynamicLinear):
            m.version = 3  # forward calls the kernel without reduce_range: 8-bit activations
    return qmodel


def _leaf_kind(module: nn.Module) -> str:
    return type(module).__name__


def inventory(model: nn.Module, qmodel: nn.Module) -> pd.DataFrame:
    """One row per kind of leaf module of the float `model`: how many, their parameters and
    share of all parameters, and what `qmodel` (its dynamic-int8 copy) computes them in. The
    attention's own matmuls and softmax, which are functions rather than modules, get a row."""
    qmods = dict(qmodel.named_modules())
    total = sum(p.numel() for p in model.parameters())
    rows: dict[tuple[str, str], dict[str, object]] = {}
    n_attention = 0
    for name, m in model.named_modules():
        if type(m).__name__.endswith("SelfAttention"):
            n_attention += 1
        if list(m.children()) or not name:
            continue
        q = qmods[name]
        integer = q is not m and type(q).__module__.startswith("torch.ao.nn.quantized")
        kind = (_leaf_kind(m), "int8 x int8 matmul (dynamic)" if integer else "float32")
        row = rows.setdefault(kind, {"module": kind[0], "computes_in": kind[1], "count": 0,
                                     "parameters": 0})
        row["count"] += 1
        row["parameters"] += sum(p.numel() for p in m.parameters(recurse=False))
    out = pd.DataFrame(list(rows.values()))
    extra = {"module": "attention scores, softmax, weighted sum (functional)",
             "computes_in": "float32", "count": n_attention, "parameters": 0}
    out = pd.concat([out, pd.DataFrame([extra])], ignore_index=True)
    out["integer"] = out["computes_in"].str.startswith("int8")
    out["parameter_share"] = out["parameters"] / total
    return out


def _encode(model: nn.Module, tokenizer: object, sentences: Sequence[str]
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    batch = tokenizer(list(sentences), padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    emb = (hidden * mask).sum(1) / mask.sum(1)  # mean pooling, as sentence-transformers does
    return torch.nn.functional.normalize(emb, dim=-1), batch


def matmul_flops(model: nn.Module, tokenizer: object, sentences: Sequence[str]
                 ) -> dict[str, int]:
    """Matmul FLOPs of one fp32 forward pass over `sentences` (torch's FlopCounterMode) and
    the part of them done by nn.Linear layers (2 x in x out per token, by forward hooks).
    Counted with transformers' eager attention (the same arithmetic): FlopCounterMode does not
    count the CPU kernel of scaled_dot_product_attention, which would hide attention's matmuls."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    linear = [0]

    def count(m: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        linear[0] += 2 * args[0].numel() // m.in_features * m.in_features * m.out_features

    handles = [m.register_forward_hook(count) for m in model.modules()
               if isinstance(m, nn.Linear)]
    attention = getattr(model.config, "_attn_implementation", None)
    switch = hasattr(model, "set_attn_implementation") and attention not in (None, "eager")
    if switch:
        model.set_attn_implementation("eager")
    try:
        with FlopCounterMode(display=False) as counter:
            _encode(model, tokenizer, sentences)
    finally:
        for h in handles:
            h.remove()
        if switch:
            model.set_attn_implementation(attention)
    return {"total": int(counter.get_total_flops()), "linear": int(linear[0])}


def embedding_fidelity(model: nn.Module, qmodel: nn.Module, tokenizer: object,
                       sentences: Sequence[str]) -> pd.DataFrame:
    """One row per sentence: cosine between its fp32 and int8 embeddings (mean-pooled,
    normalized), and whether its nearest other sentence is the same in both."""
    ref, _ = _encode(model, tokenizer, sentences)
    return _fidelity(ref, qmodel, tokenizer, sentences)


def recipe_fidelity(model: nn.Module, qmodels: Mapping[str, nn.Module], tokenizer: object,
                    sentences: Sequence[str]) -> pd.DataFrame:
    """`embedding_fidelity` for each quantized copy in `qmodels` (recipe label -> model) on the
    same sentences against one fp32 encoding, stacked with a `recipe` column."""
    ref, _ = _encode(model, tokenizer, sentences)
    parts = [_fidelity(ref, q, tokenizer, sentences).assign(recipe=label)
             for label, q in qmodels.items()]
    out = pd.concat(parts, ignore_index=True)
    return out[["recipe", *out.columns.drop("recipe")]]


def _fidelity(ref: torch.Tensor, qmodel: nn.Module, tokenizer: object,
              sentences: Sequence[str]) -> pd.DataFrame:
    new, _ = _encode(qmodel, tokenizer, sentences)
    sim_ref, sim_new = ref @ ref.T, new @ new.T
    sim_ref.fill_diagonal_(-2.0)
    sim_new.fill_diagonal_(-2.0)
    nn_ref, nn_new = sim_ref.argmax(1), sim_new.argmax(1)
    return pd.DataFrame({"sentence": range(len(sentences)),
                         "cosine": (ref * new).sum(-1).double().numpy(),
                         "nn_ref": nn_ref.numpy(), "nn_int8": nn_new.numpy(),
                         "nn_agree": (nn_ref == nn_new).numpy()})
