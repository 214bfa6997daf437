"""Audit any model's numerics: `precisionlab audit MODEL DATA` as a library.

    subject = audit.load("mymodels:tiny_mlp", "mydata:pairs", "classification")
    params = audit.parameters("smoke", {"steps": 50})
    result = audit.run(subject, params)         # runs, parity, modules, underflow, ptq, speed...
    audit.summary(subject, result)              # JSON-ready dict with recommendations
    audit.plots.parity(result); audit.tables.parity(result)
"""

from __future__ import annotations

import importlib

from precisionlab.study.audit.measure import Result, run
from precisionlab.study.audit.spec import (
    PARAMETERS,
    PROFILE_PARAMETERS,
    PROFILES,
    TASKS,
    AuditError,
    Subject,
    TaskModel,
    load,
    parameters,
)
from precisionlab.study.audit.summary import summary

__all__ = ["PARAMETERS", "PROFILES", "PROFILE_PARAMETERS", "TASKS", "AuditError", "Result",
           "Subject", "TaskModel", "load", "parameters", "plots", "run", "summary", "tables"]


def __getattr__(name: str) -> object:
    """`audit.plots` and `audit.tables` import on first use (matplotlib is slow to import)."""
    if name in ("plots", "tables"):
        return importlib.import_module(f"precisionlab.study.audit.{name}")
    raise AttributeError(f"module 'precisionlab.study.audit' has no attribute {name!r}")
