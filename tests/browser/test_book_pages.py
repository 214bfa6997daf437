"""A real browser reads the built book: every page of _build/html in headless Chromium.

Checks what a reader would notice: console errors, images that did not load, math left as
TeX source, internal links to pages or anchors that do not exist, and anything fetched from
another host (the book must work offline). A screenshot of each page goes to
_build/screenshots/. Run by `make browser` after `make html`; Debian's `chromium` is driven by
Playwright through `executable_path` (never `playwright install`, which downloads a browser).
Under CI=true a missing browser or book is a failure, elsewhere a skip.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from bookbrowser import CHROMIUM_ARGS, HTML, REFRESH, SHOTS, chromium, missing, offline, sync_api


def _pages() -> list[Path]:
    pages = sorted(p for p in HTML.rglob("*.html") if "_sources" not in p.parts
                   and "_static" not in p.parts)
    if not pages:
        missing(f"no built book in {HTML}: run `make html` first")
    return pages


@pytest.fixture(scope="module")
def visits() -> dict[Path, dict]:
    """Open every page once; record what the checks need."""
    pages = _pages()
    executable = chromium()
    SHOTS.mkdir(parents=True, exist_ok=True)
    found: dict[Path, dict] = {}
    with sync_api().sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        for path in pages:
            redirect = REFRESH.search(path.read_text(encoding="utf-8", errors="replace"))
            if redirect:  # e.g. the root index.html: a meta refresh to the first page
                found[path] = {"errors": [], "external": [], "images": [], "ids": set(),
                               "math": {"spans": 0}, "links": [redirect.group(1)], "redirect": True}
                continue
            page = context.new_page()
            record: dict = {"errors": [], "external": []}

            offline(page, record["external"])
            page.on("console", lambda msg, record=record: record["errors"].append(msg.text)
                    if msg.type == "error" else None)
            page.on("pageerror", lambda exc, record=record: record["errors"].append(str(exc)))
            page.goto(path.as_uri(), wait_until="load")
            if page.evaluate("() => document.querySelector('.math') !== null"):
                page.wait_for_function("() => window.MathJax && MathJax.startup", timeout=20_000)
                page.evaluate("() => MathJax.startup.promise")
            record["math"] = page.evaluate("""() => ({
                spans: document.querySelectorAll('.math').length,
                typeset: document.querySelectorAll('mjx-container').length,
                errors: document.querySelectorAll('mjx-merror').length})""")
            record["images"] = page.evaluate("""() => Array.from(document.images).map(img => ({
                src: img.getAttribute('src'), ok: img.complete && img.naturalWidth > 0}))""")
            record["links"] = page.evaluate("""() => Array.from(
                document.querySelectorAll('a[href]'), a => a.getAttribute('href'))""")
            record["ids"] = set(page.evaluate(
                "() => Array.from(document.querySelectorAll('[id]'), e => e.id)"))
            name = str(path.relative_to(HTML)).replace("/", "__").removesuffix(".html")
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
            found[path] = record
            page.close()
        browser.close()
    return found


def test_the_book_has_its_chapters(visits: dict[Path, dict]) -> None:
    chapters = [p for p in visits if p.parent.name == "book" and p.name[:2].isdigit()]
    assert len(chapters) >= 4, f"only {len(chapters)} chapter pages in {HTML / 'book'}"
    rendered = [r for r in visits.values() if not r.get("redirect")]
    assert len(list(SHOTS.glob("*.png"))) >= len(rendered)


def test_no_console_errors(visits: dict[Path, dict]) -> None:
    bad = {str(p.relative_to(HTML)): r["errors"] for p, r in visits.items() if r["errors"]}
    assert not bad, f"console errors: {bad}"


def test_nothing_is_fetched_from_another_host(visits: dict[Path, dict]) -> None:
    bad = {str(p.relative_to(HTML)): r["external"] for p, r in visits.items() if r["external"]}
    assert not bad, f"requests to other hosts (the book must work offline): {bad}"


def test_every_image_loaded(visits: dict[Path, dict]) -> None:
    bad = {str(p.relative_to(HTML)): [i["src"] for i in r["images"] if not i["ok"]]
           for p, r in visits.items()}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"images that did not load: {bad}"
    chapters = [r for p, r in visits.items() if p.parent.name == "book" and p.name[:2].isdigit()]
    assert sum(len(r["images"]) for r in chapters) >= len(chapters), "chapters lost their figures"


def test_math_is_typeset(visits: dict[Path, dict]) -> None:
    with_math = {p: r["math"] for p, r in visits.items() if r["math"]["spans"]}
    assert with_math, "no page has math: the MathJax check would check nothing"
    bad = {str(p.relative_to(HTML)): m for p, m in with_math.items()
           if m["typeset"] < m["spans"] or m["errors"]}
    assert not bad, f"math left untypeset or in error: {bad}"


def test_internal_links_resolve(visits: dict[Path, dict]) -> None:
    broken = []
    for page, record in visits.items():
        for href in record["links"]:
            parsed = urlparse(href)
            if parsed.scheme in ("http", "https", "mailto", "javascript") or parsed.netloc:
                continue
            target = (page.parent / unquote(parsed.path)).resolve() if parsed.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(HTML)} -> {href} (no such file)")
                continue
            if parsed.fragment and target in visits and unquote(parsed.fragment) not in visits[
                    target]["ids"]:
                broken.append(f"{page.relative_to(HTML)} -> {href} (no such anchor)")
    assert not broken, "broken internal links:\n" + "\n".join(broken)
