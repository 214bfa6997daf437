"""A small Sphinx extension for the book: every page's scripts exactly once.

Jupyter Book 1 registers sphinx-thebe's configuration script once per read of the sources, so
a page can carry it twice and the browser reports "Identifier 'THEBE_JS_URL' has already been
declared". The browser test (tests/browser) fails on any console error; this keeps pages clean.
"""

from __future__ import annotations

from typing import Any


def _dedupe_scripts(app: Any, pagename: str, templatename: str, context: dict,
                    doctree: Any) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attrs = getattr(script, "attributes", {}) or {}
        key = (getattr(script, "filename", str(script)) or "", attrs.get("body"))  # "" == None
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # in place: it is the builder's own list


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point (listed in _config.yml under sphinx.extra_extensions)."""
    # early: Sphinx stops calling html-page-context handlers at the first that returns a value
    app.connect("html-page-context", _dedupe_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
