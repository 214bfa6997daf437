"""Mixed-precision training written out: precision policies, loss scalers, dtype traces, and
one training loop (`Trainer`) for them all."""

from precisionlab.amp.policy import PRECISIONS, Policy, get_policy
from precisionlab.amp.scaler import DynamicLossScaler, NoLossScaler, StaticLossScaler
from precisionlab.amp.trace import summarize_dtypes, trace_dtypes
from precisionlab.amp.trainer import Trainer, plain_loop

__all__ = [
    "PRECISIONS",
    "DynamicLossScaler",
    "NoLossScaler",
    "Policy",
    "StaticLossScaler",
    "Trainer",
    "get_policy",
    "plain_loop",
    "summarize_dtypes",
    "trace_dtypes",
]
