"""What the browser tests share: where the built book is, and Debian's chromium for Playwright.

Under CI=true a missing browser, book or tool is a failure (the check may not be skipped),
elsewhere a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")


def missing(what: str) -> None:
    """Fail under CI, skip elsewhere, saying what is missing and how to get it."""
    if IN_CI:
        pytest.fail(f"{what} (CI=true: the browser check may not be skipped)")
    pytest.skip(what)


def chromium() -> str:
    """Debian's chromium (or $CHROMIUM), never a browser Playwright downloads."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser")
    if not path:
        missing("no Chromium found: apt-get install chromium, or set CHROMIUM=/path/to/it")
    return path
