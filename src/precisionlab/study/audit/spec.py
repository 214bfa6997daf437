"""What an audit is given, checked before any compute: MODEL and DATA as
`package.module:function`, the task, and the audit's own parameters per profile.

`load` imports and calls both functions (the model factory once, under `torch.manual_seed(0)`),
stacks the data into tensors, checks dtypes and shapes for the task with one no-grad forward of
two examples, and raises `AuditError` whose message starts with the argument at fault
("MODEL: ...", "DATA: ...", "--task: ..."). Every run of the audit starts from a deep copy of
that one model, so runs of different precisions with the same seed share their initial weights
and differ only by precision; the seed sets the batch order (and dropout).
"""

from __future__ import annotations

import copy
import importlib
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from precisionlab import validate
from precisionlab.amp.emulation import MODES as MATMUL16_MODES
from precisionlab.amp.trainer import OPTIMIZERS
from precisionlab.data import Split
from precisionlab.formats import adam_underflow
from precisionlab.provenance import DEVICES
from precisionlab.study.designs import WORKING_PURE

__all__ = ["ADAM_EPS", "AUDIT_PRECISIONS", "AuditError", "PARAMETERS", "PROFILES",
           "PROFILE_PARAMETERS", "PTQ_CONFIGS", "PURE_FORMATS", "Subject", "TASKS", "TaskModel",
           "WORKING_PURE", "eps_is_zero", "load", "objective", "parameters", "parse_ptq",
           "recipe"]

TASKS = ("classification", "regression", "language-model")
PROFILES = ("smoke", "cpu", "gpu")
# The precisions an audit can train in; 32-true is always the reference.
AUDIT_PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
# The format a pure precision keeps its weights and Adam state in.
PURE_FORMATS = {"16-true": "fp16", "bf16-true": "bf16"}
ADAM_EPS = 1e-8  # torch's default eps for Adam and AdamW (the audit's `eps: None`)
# WORKING_PURE (from the study's designs): the pure-fp16 recipe with an eps fp16 holds, label ->
# (precision, eps). `parameters` adds it after 16-true when the audit's Adam eps rounds to 0 in
# fp16, so a diverged naive 16-true is told apart from a model that cannot train in fp16.
# The PTQ configurations run by default: weight-only int8/int4 at three granularities, and W8A8.
PTQ_CONFIGS = ("w8-tensor", "w8-channel", "w4-channel", "w4-g64", "w4-g32", "w8a8-tensor",
               "w8a8-channel")
_PTQ_NAME = re.compile(r"^w([2-8])(?:a([2-8]))?-(tensor|channel|g([1-9][0-9]*))$")

PARAMETERS: dict[str, object] = {
    "seeds": [0, 1, 2],  # >= 3 seeds: a paired 95 % interval per precision
    "steps": 200,  # optimizer steps per run
    "batch_size": 64,
    "lr": 1e-3,
    "optimizer": "adam",
    "eps": None,  # Adam/AdamW's eps in every run (None: torch's 1e-8); sgd takes None
    "precisions": list(AUDIT_PRECISIONS),
    "ptq": list(PTQ_CONFIGS),
    "loss_scales": list(range(0, 25, 2)),  # log2 of the loss scales probed for underflow
    "speed_repeats": 7,  # interleaved timing repeats per precision (>= 5, for a median)
    "eval_examples": 2048,  # at most this many test examples are evaluated
    "calibration_examples": 256,  # training examples that calibrate W8A8 activation ranges
    "margin": 0.01,  # parity: accuracy points (absolute) or a relative change of MSE/perplexity
    "matmul16": "auto",  # 16-bit CPU matmuls in training: emulated where slow (see amp.emulation)
    "device": "auto",
    "threads": None,
}
PROFILE_PARAMETERS: dict[str, dict[str, object]] = {
    "smoke": {"seeds": [0, 1, 2], "steps": 20, "speed_repeats": 5, "eval_examples": 256,
              "calibration_examples": 64, "ptq": ["w8-channel", "w4-g32", "w8a8-tensor"],
              "loss_scales": [0, 8, 16, 24]},
    "cpu": {},
    "gpu": {"seeds": [0, 1, 2, 3, 4], "steps": 1000, "speed_repeats": 20,
            "eval_examples": 10_000},
}


class AuditError(validate.ParameterError):
    """Bad input to an audit; the message starts with the argument at fault."""


def objective(task: str) -> str:
    """The Trainer objective of a task: mse for regression, cross-entropy otherwise."""
    return "mse" if task == "regression" else "cross-entropy"


def parse_ptq(name: str) -> dict[str, object]:
    """A PTQ configuration name ('w4-g64', 'w8a8-channel') as weight_bits, granularity
    ('tensor', 'channel' or 'group'), group_size (or None) and activation_bits (or None)."""
    m = _PTQ_NAME.match(name) if isinstance(name, str) else None
    if m is None:
        raise AuditError(f"ptq: unknown configuration {name!r}; names look like w8-tensor, "
                         "w8-channel, w4-g64 (weight bits 2-8, per tensor, channel or group of "
                         "N) or w8a8-tensor (8-bit activations too)")
    bits, act, gran, group = m.groups()
    return {"weight_bits": int(bits), "granularity": "group" if group else gran,
            "group_size": int(group) if group else None,
            "activation_bits": int(act) if act else None}


def recipe(label: str, eps: float | None = None) -> tuple[str, float | None]:
    """(precision, Adam eps) a run label trains with: a WORKING_PURE label its own eps, any
    other label is a precision trained with the audit's `eps`."""
    return WORKING_PURE.get(label, (label, eps))


def eps_is_zero(precision: str, optimizer: str, eps: float | None) -> bool:
    """Whether Adam/AdamW's eps rounds to 0 in the format a pure `precision` keeps its state
    in (`formats.adam_underflow`): then the update divides by ~0 wherever v underflows."""
    fmt = PURE_FORMATS.get(precision)
    return (fmt is not None and optimizer in ("adam", "adamw")
            and bool(adam_underflow(fmt, eps=ADAM_EPS if eps is None else eps)["eps_is_zero"]))


def _precisions(p: dict) -> list[str]:
    """The checked run labels: 32-true first, and each WORKING_PURE recipe right after its
    precision when the audit's eps rounds to 0 there (AuditError for one with SGD)."""
    known = AUDIT_PRECISIONS + tuple(WORKING_PURE)
    labels = validate.subset_of("precisions", p["precisions"], known)
    labels = ["32-true"] + [x for x in labels if x != "32-true"]
    for label, (precision, _) in WORKING_PURE.items():
        if label in labels and p["optimizer"] == "sgd":
            raise AuditError(f"precisions: {label!r} sets Adam's eps; optimizer sgd has none")
        if label not in labels and precision in labels and eps_is_zero(
                precision, p["optimizer"], p["eps"]):
            labels.insert(labels.index(precision) + 1, label)
    return labels


def parameters(profile: str = "cpu", overrides: dict | None = None) -> dict:
    """The audit's parameters for `profile` (cpu defaults updated by the profile's, then by
    `overrides`), checked; raises AuditError naming the parameter and what it allows. With
    Adam or AdamW at an eps fp16 rounds to 0, the precisions gain the working pure-fp16 recipe
    ("16-true, eps 1e-4") after 16-true."""
    if profile not in PROFILES:
        raise AuditError(f"profile: must be one of {', '.join(PROFILES)}; got {profile!r}")
    overrides = dict(overrides or {})
    unknown = [k for k in overrides if k not in PARAMETERS]
    if unknown:
        raise AuditError(f"{unknown[0]}: unknown audit parameter; known: "
                         f"{', '.join(PARAMETERS)}")
    p = {**copy.deepcopy(PARAMETERS), **copy.deepcopy(PROFILE_PARAMETERS[profile]), **overrides}
    try:
        p["seeds"] = validate.integers("seeds", p["seeds"], low=0, high=2**32 - 1)
        for name in ("steps", "batch_size", "eval_examples", "calibration_examples"):
            p[name] = validate.integer(name, p[name], low=1)
        p["speed_repeats"] = validate.integer("speed_repeats", p["speed_repeats"], low=5)
        p["lr"] = validate.positive("lr", p["lr"])
        p["margin"] = validate.positive("margin", p["margin"])
        validate.one_of("optimizer", p["optimizer"], OPTIMIZERS)
        if p["eps"] is not None:
            if p["optimizer"] == "sgd":
                raise AuditError("eps: only Adam and AdamW have an eps; sgd takes None")
            p["eps"] = validate.positive("eps", p["eps"])
            if not p["eps"] < 1:
                raise AuditError(f"eps: must be None or a number in (0, 1); got {p['eps']!r}")
        p["precisions"] = _precisions(p)
        if isinstance(p["ptq"], str) or not isinstance(p["ptq"], Sequence):
            raise AuditError(f"ptq: must be a list of configuration names such as "
                             f"{', '.join(PTQ_CONFIGS)} (or []); got {p['ptq']!r}")
        for name in p["ptq"]:
            parse_ptq(name)
        if len(set(p["ptq"])) != len(p["ptq"]):
            raise AuditError(f"ptq: has repeated entries: {p['ptq']!r}")
        p["ptq"] = list(p["ptq"])
        p["loss_scales"] = sorted(validate.integers("loss_scales", p["loss_scales"], low=-24,
                                                    high=100))
        validate.one_of("matmul16", p["matmul16"], MATMUL16_MODES)
        validate.one_of("device", p["device"], DEVICES)
        if p["threads"] is not None:
            validate.integer("threads", p["threads"], low=1)
    except AuditError:
        raise
    except validate.ParameterError as e:
        raise AuditError(str(e)) from None
    return p


class TaskModel(nn.Module):
    """Wraps a user's model so its forward returns one tensor: the `.logits` of a Hugging Face
    output, the first item of a tuple or list, and (B, 1) squeezed to (B,) when `squeeze`
    (regression on 1-D targets)."""

    def __init__(self, module: nn.Module, squeeze: bool = False) -> None:
        super().__init__()
        self.module = module
        self.squeeze = squeeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's output as a single tensor."""
        return unwrap(self.module(x), self.squeeze)


def unwrap(out: object, squeeze: bool = False) -> torch.Tensor:
    """One tensor from a model output (see TaskModel)."""
    if not isinstance(out, torch.Tensor):
        logits = getattr(out, "logits", None)
        if isinstance(logits, torch.Tensor):
            out = logits
        elif isinstance(out, dict) and isinstance(out.get("logits"), torch.Tensor):
            out = out["logits"]
        elif isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
            out = out[0]
        else:
            raise TypeError(f"the model returned {type(out).__name__}, not a tensor, a tuple "
                            "starting with one, or an object with .logits")
    if squeeze and out.dim() == 2 and out.shape[1] == 1:
        out = out.squeeze(1)
    return out


@dataclass
class Subject:
    """A loaded, checked audit subject: the model factory's one model (built under
    torch.manual_seed(0)) and the data as a Split of tensors."""

    name: str
    model_spec: str
    data_spec: str
    task: str
    split: Split
    parameters: int
    source_files: list[Path]
    base_model: nn.Module = field(repr=False)
    squeeze: bool = False

    def make_model(self) -> TaskModel:
        """A fresh deep copy of the factory's model (same initial weights every call), wrapped
        in TaskModel."""
        return TaskModel(copy.deepcopy(self.base_model), self.squeeze)


def _resolve(arg: str, spec: object) -> tuple[Callable, Path | None, str]:
    """Import `package.module:function`; (function, its module's file, function name)."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise AuditError(f"{arg}: expected 'package.module:function'; got {spec!r}")
    module_name, function_name = spec.split(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's to see
        raise AuditError(f"{arg}: module {module_name!r} does not import "
                         f"({type(e).__name__}: {e})") from e
    fn = getattr(module, function_name, None)
    if fn is None:
        raise AuditError(f"{arg}: module {module_name!r} has no function {function_name!r}")
    if not callable(fn):
        raise AuditError(f"{arg}: {spec} is a {type(fn).__name__}, not a function")
    path = getattr(module, "__file__", None)
    return fn, Path(path).resolve() if path else None, function_name


def _call(arg: str, spec: str, fn: Callable) -> object:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        raise AuditError(f"{arg}: {spec}() raised {type(e).__name__}: {e}") from e


def _check_model(spec: str, model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise AuditError(f"MODEL: {spec}() must return a torch.nn.Module; "
                         f"got {type(model).__name__}")
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    if not any(True for _ in model.parameters()):
        raise AuditError(f"MODEL: {spec}() returned a module with no parameters")
    for name, t in tensors:
        if t.is_floating_point() and t.dtype != torch.float32:
            raise AuditError(f"MODEL: {spec}() must return an fp32 model; {name!r} is "
                             f"{str(t.dtype).replace('torch.', '')}")
    return model


def _part(which: str, part: object) -> tuple[torch.Tensor, torch.Tensor]:
    """A (inputs, targets) pair of tensors from a pair or a Dataset of pairs."""
    if isinstance(part, tuple | list):
        if len(part) != 2:
            raise AuditError(f"DATA: {which} must be (inputs, targets) or a Dataset of such "
                             f"pairs; got a {type(part).__name__} of {len(part)} items")
        x, y = part
        try:
            x, y = torch.as_tensor(x), torch.as_tensor(y)
        except Exception as e:  # noqa: BLE001
            raise AuditError(f"DATA: {which} inputs and targets must be tensors ({e})") from e
    elif isinstance(part, torch.utils.data.Dataset) and hasattr(part, "__len__"):
        items = [part[i] for i in range(len(part))]
        if not items:
            raise AuditError(f"DATA: {which} Dataset is empty")
        if not all(isinstance(it, tuple | list) and len(it) == 2 for it in items):
            raise AuditError(f"DATA: {which} Dataset must yield (input, target) pairs; "
                             f"got {type(items[0]).__name__}")
        try:
            x = torch.stack([torch.as_tensor(it[0]) for it in items])
            y = torch.stack([torch.as_tensor(it[1]) for it in items])
        except Exception as e:  # noqa: BLE001
            raise AuditError(f"DATA: {which} items do not stack into tensors ({e})") from e
    else:
        raise AuditError(f"DATA: {which} must be (inputs, targets) tensors or a "
                         f"torch.utils.data.Dataset of pairs; got {type(part).__name__}")
    if x.dim() == 0 or y.dim() == 0 or len(x) != len(y) or len(x) == 0:
        raise AuditError(f"DATA: {which} inputs {tuple(x.shape)} and targets {tuple(y.shape)} "
                         "must have the same, nonzero number of examples")
    return x, y


def _check_data(spec: str, data: object, task: str) -> Split:
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise AuditError(f"DATA: {spec}() must return (train, test); got "
                         f"{type(data).__name__}" + (f" of {len(data)} items"
                                                     if isinstance(data, tuple | list) else ""))
    (x_tr, y_tr), (x_te, y_te) = _part("train", data[0]), _part("test", data[1])
    if x_tr.shape[1:] != x_te.shape[1:] or y_tr.shape[1:] != y_te.shape[1:]:
        raise AuditError(f"DATA: train and test shapes differ: inputs {tuple(x_tr.shape)} vs "
                         f"{tuple(x_te.shape)}, targets {tuple(y_tr.shape)} vs "
                         f"{tuple(y_te.shape)}")
    x_tr, x_te = (t.float() if t.is_floating_point() else t for t in (x_tr, x_te))
    if task == "regression":
        if not y_tr.is_floating_point():
            raise AuditError(f"DATA: regression targets must be floating point; got "
                             f"{str(y_tr.dtype).replace('torch.', '')}")
        y_tr, y_te = y_tr.float(), y_te.float()
    else:
        kind = "classification" if task == "classification" else "language-model"
        if y_tr.is_floating_point() or y_tr.dtype == torch.bool or y_tr.is_complex():
            raise AuditError(f"DATA: {kind} targets must be integer class indices (int64); "
                             f"got {str(y_tr.dtype).replace('torch.', '')}")
        y_tr, y_te = y_tr.long(), y_te.long()
        if int(min(y_tr.min(), y_te.min())) < 0:
            raise AuditError(f"DATA: {kind} targets must be >= 0")
    if task == "language-model":
        if x_tr.is_floating_point() or x_tr.dim() != 2 or x_tr.shape != y_tr.shape:
            raise AuditError("DATA: language-model data must be int64 token ids (N, T) and "
                             "next-token targets of the same shape; got inputs "
                             f"{str(x_tr.dtype).replace('torch.', '')} {tuple(x_tr.shape)}, "
                             f"targets {tuple(y_tr.shape)}")
        x_tr, x_te = x_tr.long(), x_te.long()
    return Split("audit", x_tr, y_tr, x_te, y_te)


def _check_forward(model: nn.Module, split: Split, task: str, squeeze: bool) -> None:
    """One no-grad forward of 2 training examples; output shape must fit the task."""
    x, y = split.x_train[:2], split.y_train[:2]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = unwrap(model(x), squeeze)
    except Exception as e:  # noqa: BLE001
        raise AuditError(f"MODEL: forward of 2 DATA examples with inputs "
                         f"{tuple(x.shape)} failed ({type(e).__name__}: {e})") from e
    finally:
        model.train(was_training)
    if not out.is_floating_point():
        raise AuditError(f"MODEL: forward must return floating-point outputs; got {out.dtype}")
    if task == "regression":
        if out.shape != y.shape:
            raise AuditError(f"DATA: regression targets {tuple(y.shape[1:])} per example do "
                             f"not match the model's outputs {tuple(out.shape[1:])}")
        return
    if out.shape[:-1] != y.shape:
        what = ("(B, T, V) logits for (B, T) targets" if task == "language-model"
                else "(B, C) logits for (B,) targets")
        raise AuditError(f"DATA: {task} needs {what}; the model gives {tuple(out.shape)} "
                         f"for targets {tuple(y.shape)}")
    classes = out.shape[-1]
    top = int(max(split.y_train.max(), split.y_test.max()))
    if top >= classes:
        raise AuditError(f"DATA: targets go up to {top} but the model's output has "
                         f"{classes} classes")


def load(model: str, data: str, task: str) -> Subject:
    """Import, call and check MODEL and DATA for `task` (see the module docstring); the
    current directory is put on sys.path first. Raises AuditError naming the argument."""
    if task not in TASKS:
        raise AuditError(f"--task: must be one of {', '.join(TASKS)}; got {task!r}")
    model_fn, model_file, name = _resolve("MODEL", model)
    data_fn, data_file, _ = _resolve("DATA", data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = _check_model(model, _call("MODEL", model, model_fn))
    split = _check_data(data, _call("DATA", data, data_fn), task)
    squeeze = task == "regression" and split.y_train.dim() == 1
    _check_forward(net, split, task, squeeze)
    n_params = sum(p.numel() for p in net.parameters())
    files = list(dict.fromkeys(f for f in (model_file, data_file)
                               if f is not None and f.suffix == ".py"))
    return Subject(name=name, model_spec=model, data_spec=data, task=task, split=split,
                   parameters=n_params, source_files=files, base_model=net, squeeze=squeeze)


def finite(x: float) -> bool:
    """True for a finite float."""
    return isinstance(x, int | float) and math.isfinite(x)
