"""audit.load and audit.parameters: every bad input fails naming its argument; TaskModel."""

from __future__ import annotations

import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from precisionlab.study import audit
from precisionlab.study.audit.spec import eps_is_zero, parse_ptq, recipe
from precisionlab.validate import ParameterError

MODELS = """
import torch
from torch import nn

def mlp():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

def regressor():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

def lm():
    return nn.Sequential(nn.Embedding(11, 8), nn.Linear(8, 11))

def half():
    return mlp().half()

def a_list():
    return [mlp()]

def broken():
    raise RuntimeError("no weights today")

NOT_A_FUNCTION = 3
"""

DATA = """
import torch

def _xy(n, y):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 8, generator=g), y

def classes():
    x, _ = _xy(40, None)
    y = torch.arange(40) % 3
    return (x[:30], y[:30]), (x[30:], y[30:])

def float_targets():
    (x, y), (xt, yt) = classes()
    return (x, y.float()), (xt, yt.float())

def too_many_classes():
    (x, y), (xt, yt) = classes()
    return (x, y + 5), (xt, yt)

def values():
    x, _ = _xy(40, None)
    y = x.sum(1)
    return (x[:30], y[:30]), (x[30:], y[30:])

def tokens():
    ids = torch.arange(40 * 6).reshape(40, 6) % 11
    return (ids[:30, :-1], ids[:30, 1:]), (ids[30:, :-1], ids[30:, 1:])

def tokens_flat():
    ids = torch.arange(40) % 11
    return (ids[:30], ids[:30]), (ids[30:], ids[30:])

class Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return self.x[i], self.y[i]

def dataset():
    (x, y), (xt, yt) = classes()
    return Pairs(x, y), Pairs(xt, yt)

def single():
    return classes()[0]

def not_pairs():
    (x, y), test = classes()
    return (x, y, y), test
"""


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A folder outside src/ holding a model and a data module, as the current directory."""
    name = f"m{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}_models.py").write_text(textwrap.dedent(MODELS))
    (tmp_path / f"{name}_data.py").write_text(textwrap.dedent(DATA))
    (tmp_path / f"{name}_bad.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return SimpleNamespace(m=f"{name}_models", d=f"{name}_data", bad=f"{name}_bad",
                           path=tmp_path)


def _error(*args: str) -> str:
    with pytest.raises(audit.AuditError) as e:
        audit.load(*args)
    return str(e.value)


def test_load_a_classifier_defined_outside_src(here):
    s = audit.load(f"{here.m}:mlp", f"{here.d}:classes", "classification")
    assert (s.name, s.task, s.parameters) == ("mlp", "classification", 8 * 16 + 16 + 16 * 3 + 3)
    assert s.split.x_train.shape == (30, 8) and s.split.y_test.dtype == torch.int64
    assert [p.name for p in s.source_files] == [f"{here.m}.py", f"{here.d}.py"]
    a, b = s.make_model(), s.make_model()
    assert isinstance(a, audit.TaskModel) and a is not b
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb) and pa.data_ptr() != pb.data_ptr()  # same init, fresh copy
    torch.manual_seed(0)
    assert torch.equal(a.module[0].weight, nn.Sequential(nn.Linear(8, 16))[0].weight)


def test_load_datasets_regression_and_language_model(here):
    s = audit.load(f"{here.m}:mlp", f"{here.d}:dataset", "classification")
    assert s.split.x_train.shape == (30, 8) and s.split.y_train.shape == (30,)
    r = audit.load(f"{here.m}:regressor", f"{here.d}:values", "regression")
    assert r.make_model()(r.split.x_test).shape == (10,)  # (B, 1) squeezed for (B,) targets
    lm = audit.load(f"{here.m}:lm", f"{here.d}:tokens", "language-model")
    assert lm.make_model()(lm.split.x_test).shape == (10, 5, 11)


@pytest.mark.parametrize("model, data, task, start, words", [
    ("{m}:mlp", "{d}:classes", "segmentation", "--task:", "classification"),
    ("{bad}:f", "{d}:classes", "classification", "MODEL:", "does not import"),
    ("no_such_module_xyz:f", "{d}:classes", "classification", "MODEL:", "does not import"),
    ("{m}:nothing", "{d}:classes", "classification", "MODEL:", "no function 'nothing'"),
    ("{m}:NOT_A_FUNCTION", "{d}:classes", "classification", "MODEL:", "not a function"),
    ("{m}", "{d}:classes", "classification", "MODEL:", "package.module:function"),
    ("{m}:a_list", "{d}:classes", "classification", "MODEL:", "got list"),
    ("{m}:half", "{d}:classes", "classification", "MODEL:", "fp32"),
    ("{m}:broken", "{d}:classes", "classification", "MODEL:", "no weights today"),
    ("{m}:mlp", "{d}:nothing", "classification", "DATA:", "no function"),
    ("{m}:mlp", "{d}:single", "classification", "DATA:", "train"),
    ("{m}:mlp", "{d}:not_pairs", "classification", "DATA:", "(inputs, targets)"),
    ("{m}:mlp", "{d}:float_targets", "classification", "DATA:", "integer class indices"),
    ("{m}:mlp", "{d}:too_many_classes", "classification", "DATA:", "3 classes"),
    ("{m}:mlp", "{d}:classes", "regression", "DATA:", "floating point"),
    ("{m}:mlp", "{d}:values", "regression", "DATA:", "do not match"),
    ("{m}:lm", "{d}:tokens_flat", "language-model", "DATA:", "(N, T)"),
    ("{m}:mlp", "{d}:classes", "language-model", "DATA:", "token ids"),
    ("{m}:lm", "{d}:classes", "classification", "MODEL:", "forward"),
])
def test_bad_input_names_the_argument(here, model, data, task, start, words):
    f = dict(m=here.m, d=here.d, bad=here.bad)
    message = _error(model.format(**f), data.format(**f), task)
    assert message.startswith(start) and words in message


def test_audit_error_is_a_parameter_error():
    assert issubclass(audit.AuditError, ParameterError)


class _Output:
    def __init__(self, logits):
        self.logits = logits


class _Wrapped(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.lin, self.kind = nn.Linear(4, 3), kind

    def forward(self, x):
        y = self.lin(x)
        return {"hf": _Output(y), "tuple": (y, "cache"), "list": [y], "dict": {"logits": y},
                "plain": y, "none": "text"}[self.kind]


@pytest.mark.parametrize("kind", ["hf", "tuple", "list", "dict", "plain"])
def test_task_model_returns_one_tensor(kind):
    torch.manual_seed(0)
    inner = _Wrapped(kind)
    x = torch.randn(2, 4)
    assert torch.equal(audit.TaskModel(inner)(x), inner.lin(x))


def test_task_model_squeezes_regression_only_when_told():
    lin = nn.Linear(4, 1)
    x = torch.randn(5, 4)
    assert audit.TaskModel(lin, squeeze=True)(x).shape == (5,)
    assert audit.TaskModel(lin)(x).shape == (5, 1)
    with pytest.raises(TypeError, match="not a tensor"):
        audit.TaskModel(_Wrapped("none"))(torch.randn(2, 4))


def test_parameters_per_profile_and_overrides():
    smoke, cpu, gpu = (audit.parameters(p) for p in audit.PROFILES)
    # the defaults, bar the working pure-fp16 recipe that Adam's default eps adds (below)
    working = list(audit.PARAMETERS["precisions"])
    working.insert(working.index("16-true") + 1, "16-true, eps 1e-4")
    assert cpu == {**audit.PARAMETERS, "lr": 1e-3, "precisions": working}
    assert len(cpu["seeds"]) >= 3 and smoke["steps"] < cpu["steps"] < gpu["steps"]
    p = audit.parameters("smoke", {"precisions": ["bf16-mixed"], "ptq": [], "steps": 3})
    assert p["precisions"] == ["32-true", "bf16-mixed"] and p["ptq"] == [] and p["steps"] == 3
    assert audit.PARAMETERS["steps"] == 200  # the defaults are not changed by a call


@pytest.mark.parametrize("profile, overrides, start", [
    ("fast", None, "profile:"),
    ("cpu", {"stpes": 3}, "stpes:"),
    ("cpu", {"steps": 0}, "steps:"),
    ("cpu", {"seeds": []}, "seeds:"),
    ("cpu", {"lr": -1}, "lr:"),
    ("cpu", {"optimizer": "lion"}, "optimizer:"),
    ("cpu", {"precisions": ["fp8"]}, "precisions:"),
    ("cpu", {"ptq": ["w9-channel"]}, "ptq:"),
    ("cpu", {"ptq": "w8-channel"}, "ptq:"),
    ("cpu", {"loss_scales": [1.5]}, "loss_scales:"),
    ("cpu", {"speed_repeats": 2}, "speed_repeats:"),
    ("cpu", {"device": "tpu"}, "device:"),
    ("cpu", {"threads": 0}, "threads:"),
    ("cpu", {"eps": 0}, "eps:"),
    ("cpu", {"eps": 1.5}, "eps:"),
    ("cpu", {"eps": "small"}, "eps:"),
    ("cpu", {"optimizer": "sgd", "eps": 1e-4}, "eps:"),
    ("cpu", {"optimizer": "sgd", "precisions": ["16-true, eps 1e-4"]}, "precisions:"),
])
def test_bad_parameters_name_the_parameter(profile, overrides, start):
    with pytest.raises(audit.AuditError) as e:
        audit.parameters(profile, overrides)
    assert str(e.value).startswith(start)


@pytest.mark.parametrize("overrides, labels", [
    ({}, ["32-true", "16-mixed", "bf16-mixed", "16-true", "16-true, eps 1e-4", "bf16-true"]),
    ({"optimizer": "adamw", "precisions": ["16-true"]}, ["32-true", "16-true",
                                                         "16-true, eps 1e-4"]),
    ({"eps": 1e-8, "precisions": ["bf16-true", "16-true"]}, ["32-true", "bf16-true", "16-true",
                                                             "16-true, eps 1e-4"]),
    # an eps fp16 holds: 16-true is already the working recipe
    ({"eps": 1e-4, "precisions": ["16-true"]}, ["32-true", "16-true"]),
    ({"optimizer": "sgd", "precisions": ["16-true"]}, ["32-true", "16-true"]),  # no eps at all
    ({"precisions": ["bf16-true", "16-mixed"]}, ["32-true", "bf16-true", "16-mixed"]),
    # asked for by name: kept once, where it was put
    ({"precisions": ["16-true, eps 1e-4", "16-true"]}, ["32-true", "16-true, eps 1e-4",
                                                         "16-true"]),
])
def test_adam_at_an_eps_fp16_rounds_to_zero_adds_the_working_pure_recipe(overrides, labels):
    assert audit.parameters("smoke", overrides)["precisions"] == labels


def test_a_run_label_names_its_precision_and_eps():
    assert recipe("16-true, eps 1e-4", 1e-8) == ("16-true", 1e-4)
    assert recipe("16-true", 1e-6) == ("16-true", 1e-6) and recipe("32-true") == ("32-true", None)
    assert eps_is_zero("16-true", "adam", None)  # torch's 1e-8 < 2^-25, half fp16's subnormal
    assert eps_is_zero("16-true", "adamw", 2.0**-25)  # a tie rounds to even: 0
    assert not eps_is_zero("16-true", "adam", 2.0**-24)  # fp16's smallest subnormal itself
    assert not eps_is_zero("bf16-true", "adam", None)  # bf16 has float32's range
    assert not eps_is_zero("16-true", "sgd", None) and not eps_is_zero("16-mixed", "adam", None)


def test_ptq_names():
    assert parse_ptq("w4-g64") == {"weight_bits": 4, "granularity": "group", "group_size": 64,
                                   "activation_bits": None}
    assert parse_ptq("w8a8-channel")["activation_bits"] == 8
    assert parse_ptq("w8-tensor")["granularity"] == "tensor"
