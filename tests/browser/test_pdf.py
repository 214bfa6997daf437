"""The PDF of the whole book (`make pdf`, _build/pdf/book.pdf), read back as its reader gets it.

poppler-utils reads it: pdftotext for each page's text, pdfimages for where the figures are,
pdftoppm to render pages to PNG (kept in _build/screenshots/pdf/). Checks: every chapter starts
a page under its title, in the order of _toc.yml; the math is typeset (each symbol the book's
TeX asks for is on the pages, as often as it is asked for) and no TeX source is left; every
figure of the single-page build is in the PDF, and pages with figures do not render blank.
Run by `make pdf` right after printing, under CI=true: a missing PDF or tool fails the test
there, elsewhere it skips (`make browser` leaves this file out).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from bookbrowser import IN_CI, ROOT, missing
from bookbrowser import SHOTS as BROWSER_SHOTS

from precisionlab.engine.pdf import PRINT_COPY

PDF = ROOT / "_build" / "pdf" / "book.pdf"
SITE = ROOT / "_build" / "pdf" / "_build" / "singlehtml"
SHOTS = BROWSER_SHOTS / "pdf"

# TeX commands and the character MathJax draws for each: what pdftotext reads back.
SYMBOLS = {"alpha": "α", "beta": "β", "theta": "θ", "kappa": "κ", "eta": "η", "epsilon": "ϵ",
           "varepsilon": "ε", "Delta": "Δ", "partial": "∂", "nabla": "∇", "sum": "∑",
           "sqrt": "√", "times": "×", "approx": "≈", "le": "≤", "leq": "≤", "ge": "≥",
           "geq": "≥", "infty": "∞", "in": "∈"}
MATH = re.compile(r"\$\$(.+?)\$\$|\$([^$\n]+)\$", re.DOTALL)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)
COMMAND = re.compile(r"\\([A-Za-z]+)")


def _run(tool: str, *args: str) -> str:
    if not shutil.which(tool):
        missing(f"no {tool}: apt-get install poppler-utils")
    return subprocess.run([tool, *args], check=True, capture_output=True, text=True).stdout


def _normal(text: str) -> str:
    """Text as compared here: one space for any run of white space, straight quotes."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"')
    return re.sub(r"\s+", " ", text.replace("\u201d", '"')).strip()


def _documents() -> list[str]:
    """The book's documents in reading order, as _toc.yml lists them."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    return [toc["root"]] + [c["file"] for part in toc.get("parts", [])
                            for c in part.get("chapters", [])]


def _markdown(doc: str) -> str:
    """A document's Markdown, with a notebook's Markdown outputs: where its math is written."""
    path = ROOT / f"{doc}.ipynb"
    if not path.exists():
        return (ROOT / f"{doc}.md").read_text(encoding="utf-8")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    parts = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    parts += ["".join(o["data"]["text/markdown"]) for c in cells for o in c.get("outputs", [])
              if "text/markdown" in o.get("data", {})]
    return "\n".join(parts)


def _title(doc: str) -> str:
    found = re.search(r"^# (.+)$", _markdown(doc), re.MULTILINE)
    assert found, f"{doc} has no '# title' line"
    return _normal(re.sub(r"[`*]", "", found.group(1)))


def _tex() -> list[str]:
    """Every formula of the book, as written in its sources (code spans left out)."""
    return [m.group(1) or m.group(2) for doc in _documents()
            for m in MATH.finditer(CODE.sub("", _markdown(doc)))]


@pytest.fixture(scope="module")
def pages() -> list[str]:
    """The text of each page of the PDF."""
    if not PDF.exists():
        missing(f"no {PDF.relative_to(ROOT)}: run `make pdf`")
    text = _run("pdftotext", "-enc", "UTF-8", str(PDF), "-")
    return text.split("\f")[:-1]  # each page ends with a form feed


def test_every_chapter_starts_a_page_in_order(pages: list[str]) -> None:
    documents = _documents()
    assert len(pages) >= len(documents), f"{len(pages)} pages for {len(documents)} documents"
    starts = [_normal(page) for page in pages]
    found, after = [], 0
    for doc in documents:
        # the title first, after at most the part's caption (in capitals) and the number
        heading = re.compile(r"(?:[^a-z]+ )?(?:\d+\. )?" + re.escape(_title(doc)))
        hits = [i for i, start in enumerate(starts) if i >= after and heading.match(start)]
        assert hits, f"no page after page {after} starts with the title of {doc}: {_title(doc)!r}"
        found.append(hits[0])
        after = hits[0] + 1
    assert len(set(found)) == len(documents)


def test_math_is_typeset(pages: list[str]) -> None:
    asked = Counter(SYMBOLS[c] for tex in _tex() for c in COMMAND.findall(tex) if c in SYMBOLS)
    assert len(asked) >= 5, f"the book's math uses only {sorted(asked)}: too little to check"
    text = "".join(pages)
    short = {s: f"{text.count(s)} of {n}" for s, n in asked.items() if text.count(s) < n}
    assert not short, f"math symbols missing from the PDF (found of asked): {short}"


def test_no_tex_source_is_left(pages: list[str]) -> None:
    commands = {c for tex in _tex() for c in COMMAND.findall(tex)} | {"frac", "begin"}
    raw = re.compile(r"\$\$|\\[()\[\]]|\\(?:" + "|".join(sorted(commands)) + r")\b")
    bad = {i + 1: sorted(set(raw.findall(page))) for i, page in enumerate(pages)
           if raw.search(page)}
    assert not bad, f"TeX source printed as text (page: what): {bad}"


def test_figures_are_there_and_not_blank(tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image") if not IN_CI else __import__(
        "PIL.Image", fromlist=["open"])
    if not PDF.exists():
        missing(f"no {PDF.relative_to(ROOT)}: run `make pdf`")
    rows = [line.split() for line in _run("pdfimages", "-list", str(PDF)).splitlines()[2:]]
    figures = [int(r[0]) for r in rows if r[2] == "image" and int(r[3]) >= 200]
    images = (SITE / PRINT_COPY).read_text(encoding="utf-8").count("<img")
    assert len(figures) >= images, f"{len(figures)} figures in the PDF, {images} in the book"
    shown = sorted(set(figures))
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    for number in [1, shown[0], shown[len(shown) // 2], shown[-1]]:
        _run("pdftoppm", "-png", "-r", "60", "-f", str(number), "-l", str(number),
             "-singlefile", str(PDF), str(SHOTS / f"page-{number:03d}"))
    for number in shown[0], shown[len(shown) // 2], shown[-1]:
        pixels = np.asarray(image.open(SHOTS / f"page-{number:03d}.png").convert("RGB"), int)
        ink = (pixels.min(axis=2) < 200).mean()  # anything darker than a light grey
        colour = (np.ptp(pixels, axis=2) > 80).mean()  # plotted lines and bars, not black text
        assert ink > 0.01 and colour > 0.002, (
            f"page {number} renders nearly blank: {ink:.1%} ink, {colour:.2%} in colour")
        _run("pdfimages", "-png", "-f", str(number), "-l", str(number), str(PDF),
             str(tmp_path / f"p{number}"))
        for path in sorted(tmp_path.glob(f"p{number}-*.png")):
            figure = np.asarray(image.open(path).convert("RGB"), int)
            assert np.ptp(figure) > 100, f"a figure on page {number} is one flat colour"


def test_the_printed_copy_finds_its_files_from_the_root(tmp_path: Path) -> None:
    from precisionlab.engine.pdf import printable_copy

    (tmp_path / "book").mkdir()
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; '
                                         'url=book/intro.html" />', encoding="utf-8")
    (tmp_path / "book" / "intro.html").write_text(
        '<script src="searchindex.js"></script><img src="_images/a.png">'
        '<img src="../_images/b.png"><a href="book/intro.html#fig-1">Fig. 1</a>'
        '<a href="book/intro.html">top</a>', encoding="utf-8")
    copy = printable_copy(tmp_path)
    assert copy.parent == tmp_path
    assert copy.read_text(encoding="utf-8") == (
        '<img src="_images/a.png"><img src="_images/b.png">'
        '<a href="#fig-1">Fig. 1</a><a href="#">top</a>')
