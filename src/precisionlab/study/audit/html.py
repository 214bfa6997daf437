"""An executed audit notebook as ONE self-contained HTML page: figures inline as data URIs, the
stylesheet inline, no script, nothing fetched from the network, so it opens from disk anywhere.

nbconvert is not a dependency of the library (and its templates pull require.js and MathJax from
a CDN), so this renders the few kinds of output an audit makes: Markdown (markdown-it), pandas
tables (their HTML), PNG/SVG figures, text/markdown displays, streams and errors.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from precisionlab.study.results import atomic_write_text

# Outputs are shown in the first of these forms a display offers.
MIME_ORDER = ("image/svg+xml", "image/png", "image/jpeg", "text/html", "text/markdown",
              "text/plain")
HIDDEN_TAGS = {"remove-cell"}  # a cell with one of these is left out
NO_INPUT_TAGS = {"remove-input"}  # its code is left out (other code folds into <details>)
NO_OUTPUT_TAGS = {"remove-output"}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Tags that would fetch something: <script>, and <link>/<img>/<iframe>/... with an http(s) URL.
EXTERNAL = re.compile(
    r"<script\b[^>]*>.*?</script\s*>|<script\b[^>]*/?>"
    r"|<(?:link|img|iframe|source|embed|object|audio|video)\b[^>]*"
    r"(?:src|href|data)\s*=\s*[\"']?\s*(?:https?:)?//[^>]*>",
    re.IGNORECASE | re.DOTALL)

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
h1, h2, h3 { line-height: 1.25; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
code, pre { font: 13px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
pre { background: #f6f8fa; padding: .6rem .8rem; overflow-x: auto; border-radius: 4px; }
pre.stderr { background: #fff8e6; } pre.error { background: #fdecea; }
details > summary { color: #777; cursor: pointer; font-size: 13px; }
table { border-collapse: collapse; margin: .8rem 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: .25rem .55rem; text-align: right; }
th { background: #f3f3f3; } tbody tr:nth-child(even) { background: #fafafa; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1rem 0; } figure img, figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 13px; color: #555; }
.cell { margin: .4rem 0; }
"""


def _text(value: object) -> str:
    """Notebook fields are a string or a list of lines."""
    return "".join(value) if isinstance(value, list) else str(value)


def markdown(text: str) -> str:
    """Markdown (CommonMark with tables) as HTML."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


def _pre(text: str, kind: str = "") -> str:
    cls = f' class="{kind}"' if kind else ""
    return f"<pre{cls}>{html.escape(ANSI.sub('', text))}</pre>"


def output(out: dict, caption: str | None = None) -> str:
    """One cell output as HTML (figures as data URIs, with `caption` when the cell has one)."""
    kind = out.get("output_type")
    if kind == "stream":
        return _pre(_text(out.get("text", "")), "stderr" if out.get("name") == "stderr" else "")
    if kind == "error":
        return _pre("\n".join(out.get("traceback") or [f"{out.get('ename')}: "
                                                       f"{out.get('evalue')}"]), "error")
    data = out.get("data", {})
    mime = next((m for m in MIME_ORDER if m in data), None)
    if mime is None:
        return ""
    value = _text(data[mime])
    if mime.startswith("image/"):
        if mime == "image/svg+xml":
            body = re.sub(r"<\?xml[^>]*>|<!DOCTYPE[^>]*>", "", value)
        else:
            b64 = "".join(value.split())
            base64.b64decode(b64, validate=True)  # a corrupt image fails here, not in a browser
            body = f'<img src="data:{mime};base64,{b64}" alt="{html.escape(caption or "figure")}">'
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        return f"<figure>{body}{cap}</figure>"
    if mime == "text/html":
        return value
    if mime == "text/markdown":
        return markdown(value)
    return _pre(value)


def cell(c: dict) -> str:
    """One notebook cell as HTML, following the Jupyter Book tags (remove-cell, -input,
    -output); code shows folded, outputs in full."""
    tags = set(c.get("metadata", {}).get("tags", []))
    if tags & HIDDEN_TAGS:
        return ""
    source = _text(c.get("source", ""))
    if c.get("cell_type") == "markdown":
        return f'<div class="cell">{markdown(source)}</div>'
    if c.get("cell_type") != "code":
        return ""
    parts = []
    if source.strip() and not tags & NO_INPUT_TAGS:
        parts.append(f"<details><summary>code</summary>{_pre(source)}</details>")
    if not tags & NO_OUTPUT_TAGS:
        figure = c.get("metadata", {}).get("mystnb", {}).get("figure", {})
        parts += [output(o, figure.get("caption")) for o in c.get("outputs", [])]
    return f'<div class="cell">{"".join(parts)}</div>' if parts else ""


def self_contained(page: str) -> str:
    """`page` without scripts or tags that would fetch anything over the network."""
    return EXTERNAL.sub("", page)


def render(nb: dict, title: str) -> str:
    """An executed notebook (nbformat 4 as a dict) as one self-contained HTML page."""
    body = "\n".join(filter(None, (cell(c) for c in nb.get("cells", []))))
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")
    return self_contained(page)


def write(notebook: Path, dest: Path, title: str) -> Path:
    """Render the executed notebook at `notebook` to `dest` (atomically)."""
    import json

    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    return atomic_write_text(dest, render(nb, title))
