"""What the browser tests share: where the built book is, and Debian's chromium for Playwright.

Under CI=true a missing browser, book or tool is a failure (the check may not be skipped),
elsewhere a skip.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest

from precisionlab.engine.pdf import CHROMIUM_ARGS, REFRESH, chromium_path, offline

__all__ = ["CHROMIUM_ARGS", "HTML", "IN_CI", "REFRESH", "ROOT", "SHOTS", "chromium", "missing",
           "offline", "sync_api"]

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")


def missing(what: str) -> None:
    """Fail under CI, skip elsewhere, saying what is missing and how to get it."""
    if IN_CI:
        pytest.fail(f"{what} (CI=true: the browser check may not be skipped)")
    pytest.skip(what)


def chromium() -> str:
    """Debian's chromium (or $CHROMIUM), never a browser Playwright downloads."""
    path = chromium_path()
    if not path:
        missing("no Chromium found: apt-get install chromium, or set CHROMIUM=/path/to/it")
    return path


def sync_api() -> ModuleType:
    """`playwright.sync_api`: under CI=true it must import, elsewhere its absence skips."""
    if IN_CI:
        return __import__("playwright.sync_api", fromlist=["sync_playwright"])
    return pytest.importorskip("playwright.sync_api")
