"""Computed numbers and sentences into a chapter's prose: myst-nb `glue`, never typed by hand."""

from __future__ import annotations

from collections.abc import Mapping


def glue_all(texts: Mapping[str, object]) -> None:
    """Glue each text under its name (`{glue:text}` in the Markdown), without displaying it."""
    from myst_nb import glue  # only inside a notebook kernel; importing the package needs none

    for key, text in texts.items():
        glue(key, str(text), display=False)
