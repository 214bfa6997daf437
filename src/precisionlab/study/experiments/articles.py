"""Chapter 09's measurements (the articles' code, run): tidy tables for `rules.articles`.

Three pieces of the seed articles, rebuilt in our own code (nothing of theirs is copied):

- MP-19: a gradient formula for y = theta x under squared error, checked against fp64
  autograd on a grid of (x, y, theta) (`gradient_grid`);
- MP-23: their Keras mixed-precision examples, run with Keras 3 on its torch backend
  (`keras_examples`); Keras is imported inside the functions that need it, so importing this
  module (or `precisionlab`) never imports Keras;
- MP-25: a training formula typed in our notation as data (`FORMULA_LINES`, `SYMBOLS`) and
  checked with sympy (`formula_lines`, `formula_symbols`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np
import pandas as pd
import sympy
import torch

from precisionlab.study.store import stored

# ------------------------------------------------------------------------------------ MP-19 ---


def article_gradient(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """The article's fp32 gradient for y = theta x under squared error, as it states it:
    -2 (x - theta x). It has no y in it."""
    return -2.0 * (x - theta * x)


def special_point(x: float, y: float, theta: float) -> str:
    """Which exact condition makes the article's formula equal the true gradient at a point.

    -2 x (y - theta x) = -2 (x - theta x)  <=>  x (y - 1 - theta (x - 1)) = 0, so the two agree
    exactly when x = 0 or y = 1 + theta (x - 1) (decided in exact rational arithmetic)."""
    fx, fy, ft = Fraction(x), Fraction(y), Fraction(theta)
    if fx == 0:
        return "x = 0"
    if fy == 1 + ft * (fx - 1):
        return "y = 1 + theta (x - 1)"
    return ""


def gradient_grid(xs: Sequence[float], ys: Sequence[float],
                  thetas: Sequence[float]) -> pd.DataFrame:
    """For every (x, y, theta): d/dtheta (y - theta x)^2 from autograd in fp64 and in fp32, the
    textbook closed form -2 x (y - theta x) and the article's -2 (x - theta x); one row each."""
    grid = np.array([(x, y, t) for x in xs for y in ys for t in thetas], dtype=np.float64)
    if grid.size == 0:
        raise ValueError("xs, ys, thetas: each must hold at least one value")
    x, y, theta = grid.T
    autograd = {}
    for dtype in (torch.float64, torch.float32):
        xt, yt = torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)
        th = torch.tensor(theta, dtype=dtype, requires_grad=True)
        # One independent loss per grid point: the gradient of their sum is each point's own.
        ((yt - th * xt) ** 2).sum().backward()
        autograd[dtype] = th.grad.double().numpy()
    return pd.DataFrame({
        "x": x, "y": y, "theta": theta,
        "autograd": autograd[torch.float64], "autograd_fp32": autograd[torch.float32],
        "closed_form": -2.0 * x * (y - theta * x),
        "article": article_gradient(x, theta),
        "special": [special_point(*row) for row in grid],
    })


# ------------------------------------------------------------------------------------ MP-23 ---

def _keras(device: str):
    """Import Keras 3 on its torch backend (lazily: nothing else in the book needs it).

    KERAS_TORCH_DEVICE only takes effect at Keras's first import; the device a case really
    used is read back from its weights."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    os.environ.setdefault("KERAS_TORCH_DEVICE", device)
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"KERAS_BACKEND: this chapter runs Keras on torch; the process has "
                           f"Keras on {keras.backend.backend()!r}")
    return keras


def torch_state() -> dict[str, object]:
    """torch's process-wide settings that a library could change behind our back (default
    dtype and device, thread counts, grad mode, autocast, matmul precision, the RNG state)."""
    return {
        "default dtype": str(torch.get_default_dtype()),
        "default device": str(torch.get_default_device()),
        "threads": torch.get_num_threads(),
        "interop threads": torch.get_num_interop_threads(),
        "grad enabled": torch.is_grad_enabled(),
        "cpu autocast": torch.is_autocast_enabled("cpu"),
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        "cpu RNG state": hashlib.sha256(torch.random.get_rng_state().numpy()).hexdigest()[:12],
    }


def _dense_model(keras, seed: int, activation: str | None = None):
    """The articles' model, rebuilt: one Dense unit on one input (seeded initializer, so no
    global random state is drawn)."""
    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential([keras.Input((1,)),
                             keras.layers.Dense(1, activation=activation, kernel_initializer=init)])


def _case_000(keras, seed: int, built: dict, policy_first: bool) -> str:
    """Seed 000's regression (Dense(1), Adam, squared error), policy set after the model as the
    article does, or before it (the fix). Stores the compiled model in `built`, returns its task."""
    if policy_first:
        keras.mixed_precision.set_global_policy("mixed_float16")
    built["model"] = _dense_model(keras, seed)
    if not policy_first:  # the article sets the policy after the model exists
        keras.mixed_precision.set_global_policy(keras.mixed_precision.Policy("mixed_float16"))
    built["model"].compile(optimizer="adam", loss="mean_squared_error")
    return "regression"


def _case_001(keras, seed: int, built: dict, variant: str) -> str:
    """Seed 001's binary classifier (Dense(1, sigmoid), SGD, binary cross-entropy), with the
    policy call as written (`set_policy`, its result assigned to `model`), translated
    (`set_global_policy`, keeping or dropping that assignment) or fixed (policy first)."""
    if variant == "fix":
        keras.mixed_precision.set_global_policy("mixed_float16")
    built["model"] = model = _dense_model(keras, seed, activation="sigmoid")
    policy = keras.mixed_precision.Policy("mixed_float16")
    if variant == "as written":
        model = keras.mixed_precision.set_policy(policy)  # not in Keras 3: AttributeError
    elif variant == "translated, assigned":
        model = keras.mixed_precision.set_global_policy(policy)  # returns None
    elif variant == "translated":
        keras.mixed_precision.set_global_policy(policy)
    # The article passes from_logits=True after a sigmoid (a second, unrelated slip): kept in
    # the runs as written, removed in the fix.
    loss = keras.losses.BinaryCrossentropy(from_logits=variant != "fix")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss=loss)
    return "classification"


# case -> (seed article, kind, builder(keras, seed, built) -> task). Kinds: "as written" (the
# article's logic with its own API calls), "translated" (the closest Keras 3 spelling of a call
# Keras 3 lacks), "fix" (the minimal change that trains in mixed precision).
CASES: dict[str, tuple[str, str, Callable]] = {
    "policy set after the model is built": (
        "000", "as written", lambda k, s, b: _case_000(k, s, b, policy_first=False)),
    "policy set before the model is built": (
        "000", "fix", lambda k, s, b: _case_000(k, s, b, policy_first=True)),
    "model = mixed_precision.set_policy(policy)": (
        "001", "as written", lambda k, s, b: _case_001(k, s, b, "as written")),
    "model = set_global_policy(policy)": (
        "001", "translated", lambda k, s, b: _case_001(k, s, b, "translated, assigned")),
    "set_global_policy(policy) after the model": (
        "001", "translated", lambda k, s, b: _case_001(k, s, b, "translated")),
    "policy before the model, from_logits=False": (
        "001", "fix", lambda k, s, b: _case_001(k, s, b, "fix")),
}
CASE_KINDS = ("as written", "translated", "fix")


def _data(task: str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n examples of one standard-normal feature: y = 2x + 1 (regression) or 1[x > 0.5]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1)).astype("float32")
    if task == "regression":
        return x, (2.0 * x + 1.0).astype("float32")
    return x, (x > 0.5).astype("float32")


@stored
def keras_examples(seed: int = 0, steps: int = 5, batch: int = 32,
                   device: str = "cpu") -> pd.DataFrame:
    """Run every case of `CASES` for `steps` optimizer steps (one batch of `batch` examples per
    epoch) and read what ran: the Dense layer's dtype policy, compute and variable dtypes, the
    dtype of the model's output, the optimizer's class, and the outcome ('trained' or the
    exception type). The global policy is reset to float32 after each case.

    `Model.fit` on the torch backend iterates a torch DataLoader, which draws its base seed
    from torch's global generator: the runs happen inside `torch.random.fork_rng`, so torch's
    random state after this call is what it was before (`torch_state` shows it)."""
    keras = _keras(device)
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        return pd.DataFrame([_run_case(keras, case, seed, steps, batch) for case in CASES])


def _run_case(keras, case: str, seed: int, steps: int, batch: int) -> dict[str, object]:
    """One row of `keras_examples`: build, compile and fit one case, read its Dense layer."""
    seed_article, kind, build = CASES[case]
    keras.mixed_precision.set_global_policy("float32")
    row = {"case": case, "article": seed_article, "kind": kind, "layer": "Dense",
           "policy": "", "compute dtype": "", "variable dtype": "", "output dtype": "",
           "optimizer": "", "outcome": "", "error": "", "first loss": np.nan,
           "last loss": np.nan, "steps": 0, "device": ""}
    built: dict = {}
    try:
        task = build(keras, seed, built)
        model = built["model"]
        x, y = _data(task, seed, batch)
        history = model.fit(x, y, epochs=steps, batch_size=batch, shuffle=False, verbose=0)
        losses = history.history["loss"]
        row |= {"outcome": "trained", "first loss": losses[0], "last loss": losses[-1],
                "steps": len(losses), "optimizer": type(model.optimizer).__name__,
                "output dtype": str(model(x[:4]).dtype).removeprefix("torch.")}
    except Exception as err:  # an example's outcome is its exception: recorded, not raised
        row |= {"outcome": type(err).__name__, "error": str(err).splitlines()[0]}
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if "model" in built:  # the Dense layer of the model the case built, trained or not
        layer = built["model"].layers[0]
        row |= {"policy": layer.dtype_policy.name, "compute dtype": layer.compute_dtype,
                "variable dtype": layer.variable_dtype,
                "device": layer.kernel.value.device.type}
    return row


def global_policy(device: str = "cpu") -> str:
    """The name of Keras's global dtype policy now (float32 unless something leaked)."""
    return _keras(device).mixed_precision.global_policy().name


# ------------------------------------------------------------------------------------ MP-25 ---

# Seed 004's training formula, hand-typed in our notation (sympy syntax; argmin(theta, f) is
# "the theta that minimizes f"). The article aligns two lines joined by "=", and they are the same.
FORMULA_LINES = ("argmin(theta, L(theta, x_int, x_fp))",
                 "argmin(theta, L(theta, x_int, x_fp))")
# What its derivation then says training minimizes: the loss of the "parallel" result x_tilde.
TRAINING_OBJECTIVE = "argmin(theta, L(theta, x_tilde))"
# Every symbol the article introduces around the formula, hand-typed from its text in our
# notation: (symbol, what the article says it is (our paraphrase), its definition as a formula
# in other symbols ("" where the text names it but gives no formula), kind). "given" symbols are
# the problem's own (a reader supplies them); "derived" ones need a definition to be computed.
SYMBOLS = (
    ("theta", "the model's parameters", "", "given"),
    ("x", "the input data", "", "given"),
    ("y", "the target (worked example)", "", "given"),
    ("L", "the objective; in the worked example (y - theta^T x)^2", "", "given"),
    ("x_int", "the data in the integer type (INT8)", "", "derived"),
    ("x_fp", "the data in half precision (FP16)", "", "derived"),
    ("x_tilde_int", "the result of the integer computation", "", "derived"),
    ("x_tilde_fp", "the result of the half-precision computation", "", "derived"),
    ("x_tilde", "the result of computing the two in parallel", "", "derived"),
)
_FUNCTIONS = ("argmin", "L")


def parse(text: str, names: Sequence[str]) -> sympy.Expr:
    """A formula in our notation as a sympy expression: argmin (our notation) and L are undefined
    functions, every other name in `names` a symbol; an unknown name is an error."""
    local = {name: sympy.Function(name) if name in _FUNCTIONS else sympy.Symbol(name)
             for name in (*names, "argmin")}
    expr = sympy.parse_expr(text, local_dict=local, evaluate=True)
    unknown = _names(expr) - set(names) - {"argmin"}
    if unknown:
        raise ValueError(f"formula {text!r}: names {sorted(unknown)} are not in the symbol list")
    return expr


def _names(expr: sympy.Expr) -> set[str]:
    """The symbols and undefined functions an expression uses, by name."""
    funcs = {type(f).__name__ for f in expr.atoms(sympy.core.function.AppliedUndef)}
    return {str(s) for s in expr.free_symbols} | funcs


def formula_lines(lines: Sequence[str] = FORMULA_LINES,
                  symbols: Sequence[tuple] = SYMBOLS) -> pd.DataFrame:
    """Each "=" step of a chain of formula lines: identical (the same expression tree after
    parsing) and equal (sympy reduces their difference to 0), one row per step."""
    if len(lines) < 2:
        raise ValueError("lines: a chain of equalities needs at least two lines")
    names = [s[0] for s in symbols]
    exprs = [parse(text, names) for text in lines]
    return pd.DataFrame([
        {"step": f"line {i + 1} = line {i + 2}", "left": lines[i], "right": lines[i + 1],
         "identical": exprs[i] == exprs[i + 1],
         "equal": sympy.simplify(exprs[i] - exprs[i + 1]) == 0}
        for i in range(len(lines) - 1)])


def formula_symbols(symbols: Sequence[tuple] = SYMBOLS,
                    formulas: Sequence[str] = (*FORMULA_LINES, TRAINING_OBJECTIVE)) -> pd.DataFrame:
    """Per symbol: whether the text defines it (a given symbol, or a formula whose names are all
    defined, resolved in order) and whether the formulas use it; one row per symbol."""
    names = [s[0] for s in symbols]
    used = set().union(*(_names(parse(text, names)) for text in formulas))
    defined: set[str] = set()
    rows = []
    for symbol, role, definition, kind in symbols:
        if kind not in ("given", "derived"):
            raise ValueError(f"symbols: kind of {symbol!r} must be 'given' or 'derived'; "
                             f"got {kind!r}")
        ok = kind == "given" or (bool(definition) and _names(parse(definition, names)) <= defined)
        if ok:
            defined.add(symbol)
        rows.append({"symbol": symbol, "article says": role, "definition": definition or "(none)",
                     "kind": kind, "defined": ok, "used in the formula": symbol in used})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------- LLM-7 ---
# Seed 003 calls a text classifier "hybrid training": an embedding, an LSTM over a packed batch
# and a linear layer, trained by a loop over labelled batches. Rebuilt here in our own code: the
# same torch calls in the same order, with the article's unpacking of `pad_packed_sequence` kept
# behind `as_written` (it unpacks the result as (outputs, (h, c)); torch returns (padded
# outputs, lengths)) and the fix (keep the LSTM's own final state) behind `as_written=False`.

LSTM_MODULES = ("heapq", "textwrap", "statistics")  # stdlib sources the lines come from


class PackedLSTMClassifier(torch.nn.Module):
    """Embedding -> LSTM over a packed, sequence-first batch -> linear on the last hidden state.

    `as_written=True` reads the hidden state from `pad_packed_sequence`'s result the way seed
    003 does; `as_written=False` keeps the LSTM's own (h_n, c_n)."""

    def __init__(self, vocab: int, embed: int = 16, hidden: int = 32, classes: int = 2,
                 as_written: bool = True) -> None:
        super().__init__()
        self.as_written = as_written
        self.embed = torch.nn.Embedding(vocab, embed)
        self.rnn = torch.nn.LSTM(embed, hidden)
        self.head = torch.nn.Linear(hidden, classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) for token ids (T, B) padded to T, with lengths (B,) descending."""
        packed = torch.nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths.cpu())
        outputs, (h_n, c_n) = self.rnn(packed)
        if self.as_written:  # the article's line: this unpacks (padded outputs, lengths)
            _, (h_n, c_n) = torch.nn.utils.rnn.pad_packed_sequence(outputs)
        return self.head(h_n.squeeze(0))


def text_lines(n: int, seed: int = 0, max_len: int = 40) -> tuple[list[tuple[str, int]], str]:
    """`n` stripped source lines of 3 to `max_len` characters from LSTM_MODULES, drawn with
    `seed`, half of them block headers: label 1 if the line ends with ':' (def, if, for, ...),
    else 0. Also the sha256 of the sources read."""
    import importlib.util
    from pathlib import Path

    texts = [Path(importlib.util.find_spec(m).origin).read_text(encoding="utf-8")
             for m in LSTM_MODULES]
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    lines = [ln.strip() for t in texts for ln in t.splitlines()
             if 3 <= len(ln.strip()) <= max_len and ln.strip().isascii()]
    pools = [[ln for ln in lines if not ln.endswith(":")], [ln for ln in lines if ln.endswith(":")]]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return [(pools[k][rng.integers(len(pools[k]))], int(k)) for k in labels], digest


def text_batches(lines: Sequence[tuple[str, int]], batch: int, seed: int = 0
                 ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The article's batch format: (ids (T, B) padded with 0, lengths (B,) sorted descending,
    labels (B,)); characters are byte values + 1 (0 is padding)."""
    order = np.random.default_rng(seed).permutation(len(lines))
    out = []
    for i in range(0, len(order) - batch + 1, batch):
        part = sorted((lines[j] for j in order[i:i + batch]), key=lambda t: -len(t[0]))
        seqs = [torch.tensor([min(ord(c), 126) + 1 for c in s]) for s, _ in part]
        ids = torch.nn.utils.rnn.pad_sequence(seqs)  # (T, B), sequence first
        out.append((ids, torch.tensor([len(s) for s in seqs]),
                    torch.tensor([k for _, k in part])))
    return out


def article_loop(model: torch.nn.Module, batches: Sequence[tuple], lr: float = 1e-2
                 ) -> dict[str, object]:
    """The article's training loop, rebuilt: per batch, unpack (inputs, lengths, labels), zero
    the gradients, forward, cross-entropy against the labels, backward, Adam step. Returns the
    losses, how many loss terms each step computed, and the outcome ('trained' or the
    exception's type, with its first line)."""
    calls = {"n": 0}
    cross_entropy = torch.nn.CrossEntropyLoss()

    def criterion(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return cross_entropy(outputs, labels)

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    try:
        for batch in batches:
            inputs, lengths, labels = batch
            optimizer.zero_grad()
            loss = criterion(model(inputs, lengths), labels)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    except Exception as err:  # the outcome is the exception: recorded, not raised
        return {"outcome": type(err).__name__, "error": str(err).splitlines()[0],
                "losses": losses, "loss_terms_per_step": calls["n"] / max(len(losses), 1)}
    return {"outcome": "trained", "error": "", "losses": losses,
            "loss_terms_per_step": calls["n"] / max(len(losses), 1)}


def lstm_forward_as_written(batch_sizes: Sequence[int], seed: int = 0) -> pd.DataFrame:
    """The article's forward at each batch size: outcome ('ran' or the exception type), the
    exception's first line, and the type `pad_packed_sequence` returned (what was unpacked)."""
    lines, _ = text_lines(max(batch_sizes), seed)
    rows = []
    for b in batch_sizes:
        torch.manual_seed(seed)
        model = PackedLSTMClassifier(128, as_written=True)
        ids, lengths, _ = text_batches(lines[:b], b, seed)[0]
        with torch.no_grad():
            packed = torch.nn.utils.rnn.pack_padded_sequence(model.embed(ids), lengths)
            returned = torch.nn.utils.rnn.pad_packed_sequence(model.rnn(packed)[0])
            try:
                model(ids, lengths)
                outcome, error = "ran", ""
            except Exception as err:  # recorded per batch size, not raised
                outcome, error = type(err).__name__, str(err).splitlines()[0]
        rows.append({"batch_size": b, "outcome": outcome, "error": error,
                     "pad_packed_sequence returns": f"{type(returned).__name__} of "
                     f"{len(returned)}: {', '.join(type(t).__name__ for t in returned)}",
                     "second item shape": tuple(returned[1].shape)})
    return pd.DataFrame(rows)


@stored
def lstm_training(seed: int = 0, steps: int = 30, batch: int = 16, lr: float = 1e-2
                  ) -> pd.DataFrame:
    """The article's loop with the forward fixed (`as_written=False`), run three ways on the
    same lines: on labelled batches (the article's data), on unlabelled batches (inputs and
    lengths only, what unsupervised or semi-supervised training would feed it), and with the
    forward as written. One row per probe: outcome, steps run, first and last loss (mean of
    the first and last five steps), loss terms per step, parameter dtypes, autocast on."""
    lines, digest = text_lines(steps * batch, seed)
    labelled = text_batches(lines, batch, seed)[:steps]
    probes = {"fixed forward, labelled batches": (False, labelled),
              "fixed forward, unlabelled batches": (False, [b[:2] for b in labelled]),
              "forward as written, labelled batches": (True, labelled)}
    rows = []
    for probe, (as_written, batches) in probes.items():
        torch.manual_seed(seed)
        model = PackedLSTMClassifier(128, as_written=as_written)
        r = article_loop(model, batches, lr)
        losses = r["losses"]
        k = min(5, len(losses))
        rows.append({"probe": probe, "outcome": r["outcome"], "error": r["error"],
                     "steps": len(losses),
                     "first_loss": float(np.mean(losses[:k])) if k else np.nan,
                     "last_loss": float(np.mean(losses[-k:])) if k else np.nan,
                     "loss_terms_per_step": r["loss_terms_per_step"],
                     "parameter_dtypes": ", ".join(sorted({str(p.dtype).removeprefix("torch.")
                                                           for p in model.parameters()})),
                     "autocast": torch.is_autocast_enabled("cpu"), "text_sha256": digest})
    return pd.DataFrame(rows)
