"""Mixed-precision training written out: precision policies, loss scalers, dtype traces, and
one training loop (`Trainer`) for them all."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {  # public name -> "module:attribute" (or a submodule)
    "describe_matmul16": "precisionlab.amp.emulation:describe",
    "DynamicLossScaler": "precisionlab.amp.scaler:DynamicLossScaler",
    "get_matmul16": "precisionlab.amp.emulation:get_matmul16",
    "get_policy": "precisionlab.amp.policy:get_policy",
    "NoLossScaler": "precisionlab.amp.scaler:NoLossScaler",
    "plain_loop": "precisionlab.amp.trainer:plain_loop",
    "Policy": "precisionlab.amp.policy:Policy",
    "PRECISIONS": "precisionlab.amp.policy:PRECISIONS",
    "set_matmul16": "precisionlab.amp.emulation:set_matmul16",
    "StaticLossScaler": "precisionlab.amp.scaler:StaticLossScaler",
    "summarize_dtypes": "precisionlab.amp.trace:summarize_dtypes",
    "trace_dtypes": "precisionlab.amp.trace:trace_dtypes",
    "Trainer": "precisionlab.amp.trainer:Trainer",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Import a public name on first use, so importing the package imports nothing: a
    chapter's key holds the modules it uses, and `import precisionlab.amp` costs no torch."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attribute = _LAZY[name].partition(":")
    value = importlib.import_module(module)
    value = getattr(value, attribute) if attribute else value
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
