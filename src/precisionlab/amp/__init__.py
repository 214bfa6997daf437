"""Mixed-precision training written out: precision policies, loss scalers, dtype traces, and
one training loop (`Trainer`) for them all."""

from __future__ import annotations

from precisionlab.lazy import attach

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

__getattr__, __dir__ = attach(__name__, _LAZY)
