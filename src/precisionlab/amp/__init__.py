"""Mixed-precision training written out: precision policies, loss scalers, dtype traces, and
one training loop (`Trainer`) for them all."""

from precisionlab.amp.emulation import describe as describe_matmul16
from precisionlab.amp.emulation import get_matmul16, set_matmul16
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
    "describe_matmul16",
    "get_matmul16",
    "get_policy",
    "plain_loop",
    "set_matmul16",
    "summarize_dtypes",
    "trace_dtypes",
]
