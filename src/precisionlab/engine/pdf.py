"""The whole book as one PDF (`make pdf`): the single-page HTML build printed by Chromium.

Sphinx's singlehtml builder puts every chapter in one page. Headless Debian chromium, driven by
Playwright through `executable_path` (never `playwright install`, which downloads a browser),
opens that page from file:// with every request to another host refused, waits until MathJax
has typeset and every image has loaded, and prints it on A4 pages with the navigation hidden.
It fails, naming what is wrong, on a console error, a request to another host, an image that
did not load or math left untypeset. The chapters do not import this module.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REFRESH = re.compile(r'http-equiv="refresh"[^>]*url=([^"\'>]+)', re.IGNORECASE)
PRINT_COPY = "_print.html"  # written beside the site's index.html, so its URLs resolve

# The reader's page, not the website: no navigation or buttons, no "Show code cell source" of a
# cell the reader cannot open, wide tables wrapped rather than cut at the page edge, and each
# chapter (a document the single page inlines, after a `document-<name>` anchor) on a new page.
# The theme's own print rules show #jb-print-docs-body (the title and a contents list) instead
# of the first heading.
PRINT_CSS = """
html, body { background: #fff !important; }
.bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .bd-header-article, .bd-footer,
.bd-footer-article, .bd-footer-content, .prev-next-area, .headerlink, .copybtn, .skip-link,
details.hide > summary, #pst-back-to-top, .sbt-scroll-pixel-helper { display: none !important; }
.bd-main, .bd-main .bd-content, .bd-article-container, .bd-article, .bd-page-width,
.bd-container, .bd-container__inner { max-width: none !important; width: auto !important;
  margin: 0 !important; padding: 0 !important; display: block !important; }
#jb-print-docs-body h1 { margin-top: 35vh !important; }
#jb-print-docs-body .precisionlab-subtitle { text-align: center; font-size: 1.3rem;
  break-after: page; }
#jb-print-toc { break-after: page; }
#jb-print-toc ul { list-style: none; padding-left: 0; }
#jb-print-toc li.part { margin-top: .8rem; font-weight: 600; }
#jb-print-toc a { text-decoration: none; }
span[id^="document-"] + section { break-before: page; }
span[id^="document-"] + section > h3 { font-size: 1.9rem; margin-top: 0; }
.precisionlab-part { break-before: page; font-size: 1.1rem; text-transform: uppercase;
  color: #555; margin: 0 0 .5rem; }
.precisionlab-part + span[id^="document-"] + section { break-before: avoid; }
.bd-main .bd-content .bd-article h1:first-of-type { display: block; }
img, figure, mjx-container[display="true"], .cell_input { break-inside: avoid; }
img { max-width: 100% !important; height: auto !important; }
h1, h2, h3, h4, h5 { break-after: avoid; }
pre { white-space: pre-wrap !important; overflow-wrap: anywhere; overflow: visible !important; }
.cell_output, .output, .table-wrapper, .bd-article table { overflow: visible !important;
  max-height: none !important; }
.bd-article table { font-size: .8em; }
.bd-article table.precisionlab-wrap :is(th, td) { overflow-wrap: anywhere;
  white-space: normal !important; }
"""

# Ready to print: math typeset (or none to typeset) and every image decoded or failed.
SETTLE_JS = """async () => {
  if (document.querySelector('.math') && window.MathJax && MathJax.startup) {
    await MathJax.startup.promise;
  }
  await Promise.all(Array.from(document.images, img => img.complete ? null
    : new Promise(done => { img.onload = img.onerror = done; })));
  return {
    spans: document.querySelectorAll('.math').length,
    typeset: document.querySelectorAll('mjx-container').length,
    merrors: document.querySelectorAll('mjx-merror').length,
    images: Array.from(document.images, img => ({src: img.getAttribute('src'),
                                                  ok: img.naturalWidth > 0})),
  };
}"""

# Part captions (the single page drops them) before each part's first chapter, the book's
# subtitle under its title, and a contents list of parts and chapters linking to each.
CONTENTS_JS = """([subtitle, parts]) => {
  const partOf = new Map(parts.map(([caption, doc]) => ['document-' + doc, caption]));
  const list = document.createElement('ul');
  for (const anchor of document.querySelectorAll('span[id^="document-"]')) {
    const caption = partOf.get(anchor.id);
    if (caption) {
      const title = document.createElement('p');
      title.className = 'precisionlab-part';
      title.textContent = caption;
      anchor.before(title);
      const item = list.appendChild(document.createElement('li'));
      item.className = 'part';
      item.textContent = caption;
    }
    const section = anchor.nextElementSibling;
    const heading = section && section.querySelector('h1, h2, h3');
    if (!heading) continue;
    const link = list.appendChild(document.createElement('li'))
      .appendChild(document.createElement('a'));
    link.href = '#' + section.id;
    link.textContent = heading.textContent.replace(/#$/, '');
  }
  const toc = document.getElementById('jb-print-toc');
  const heading = document.createElement('h2');
  heading.textContent = 'Contents';
  if (toc) toc.replaceChildren(heading, list);
  const title = document.querySelector('#jb-print-docs-body h1');
  if (title && subtitle) {
    const line = document.createElement('p');
    line.className = 'precisionlab-subtitle';
    line.textContent = subtitle;
    title.after(line);
  }
}"""

# 0.85: the page's text at about 10 pt, and a column about as wide as the website's. The
# browser lays the page out at the printed column's width, so what fits on screen fits on paper.
PDF_SCALE = 0.85
MARGIN_MM = 16
COLUMN_PX = round((210 - 2 * MARGIN_MM) / 25.4 * 96 / PDF_SCALE)  # A4 is 210 mm wide

# A table wider than the column gets a smaller font, down to half size, then wraps its cells
# anywhere: on paper nothing can scroll, and what passes the edge is cut off.
FIT_TABLES_JS = """() => {
  for (const table of document.querySelectorAll('.bd-article table')) {
    const width = table.parentElement.clientWidth;
    for (let size = 0.75; table.scrollWidth > width && size >= 0.5; size -= 0.05) {
      table.style.fontSize = size + 'em';
    }
    if (table.scrollWidth > width) table.classList.add('precisionlab-wrap');
  }
}"""

FOOTER = ('<div style="width:100%;font-size:8px;color:#666;text-align:center">'
          '<span class="pageNumber"></span> / <span class="totalPages"></span></div>')


def chromium_path() -> str | None:
    """Debian's chromium (or $CHROMIUM), never a browser Playwright downloads; None if absent."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser")


def find_chromium() -> str:
    """The browser that prints (`chromium_path`), or exit saying how to get one."""
    path = chromium_path()
    if not path:
        raise SystemExit("no Chromium found: apt-get install chromium, or set CHROMIUM=/path")
    return path


def offline(page: Any, blocked: list[str] | None = None) -> None:
    """Let a Playwright `page` load only local URLs (file:, data:, blob:, about:): any other
    request is aborted and, when `blocked` is given, appended to it."""
    def route(route: Any, request: Any) -> None:
        if urlparse(request.url).scheme in ("file", "data", "blob", "about"):
            route.continue_()
        else:
            if blocked is not None:
                blocked.append(request.url)
            route.abort()

    page.route("**/*", route)


def root_page(site: Path) -> Path:
    """The single page itself: where the site's index.html redirects (the book's root doc)."""
    index = site / "index.html"
    if not index.exists():
        raise SystemExit(f"no single-page build in {site}: run `make pdf`, which builds it")
    redirect = REFRESH.search(index.read_text(encoding="utf-8"))
    return site / redirect.group(1) if redirect else index


def printable_copy(site: Path) -> Path:
    """A copy of the single page at the site's root, with links to itself made in-page.

    Sphinx's singlehtml builder writes URLs relative to the output root even when the root
    document lives in a folder (book/intro), so the page finds its images, styles and MathJax
    from the root only; a few (a figure glued from another chapter) are written relative to the
    document's folder instead, and lose their `../`. Links to `book/intro.html#x` become in-PDF
    links. The search index it refers to is never written by that builder, and a PDF has no
    search box.
    """
    page = root_page(site)
    name = page.relative_to(site).as_posix()
    html = page.read_text(encoding="utf-8")
    up = "../" * name.count("/")
    if up:
        html = html.replace(f'src="{up}', 'src="').replace(f'href="{up}', 'href="')
    html = html.replace(f'href="{name}#', 'href="#').replace(f'href="{name}"', 'href="#"')
    html = html.replace('<script src="searchindex.js"></script>', "")
    copy = site / PRINT_COPY
    copy.write_text(html, encoding="utf-8")
    return copy


def part_captions(toc: Path) -> list[tuple[str, str]]:
    """(caption, first document) of each part in _toc.yml: the single page drops the captions."""
    parts = yaml.safe_load(toc.read_text(encoding="utf-8")).get("parts", [])
    return [(part["caption"], part["chapters"][0]["file"]) for part in parts
            if part.get("caption") and part.get("chapters")]


def subtitle(config: Path) -> str:
    """What follows "Title:" in the book's title in _config.yml (the page shows only "Title")."""
    title = str(yaml.safe_load(config.read_text(encoding="utf-8")).get("title", ""))
    return title.partition(":")[2].strip()


def print_book(site: Path, out: Path, book: Path, chromium: str) -> dict:
    """Print the single-page build at `site` of the book in folder `book` to `out`.

    Returns what was checked on the way: console errors, requests to other hosts, images, math.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    page_path = printable_copy(site)
    found: dict = {"errors": [], "external": []}

    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": COLUMN_PX, "height": 1400})
        offline(page, found["external"])
        page.on("console", lambda msg: found["errors"].append(msg.text)
                if msg.type == "error" else None)
        page.on("pageerror", lambda exc: found["errors"].append(str(exc)))
        page.goto(page_path.resolve().as_uri(), wait_until="load", timeout=120_000)
        try:
            page.wait_for_function("() => !document.querySelector('.math') || "
                                   "(window.MathJax && MathJax.startup)", timeout=30_000)
        except PlaywrightTimeout:
            found["mathjax"] = "MathJax did not start in 30 s: the math would print as TeX"
        found.update(page.evaluate(SETTLE_JS))
        page.evaluate(CONTENTS_JS, [subtitle(book / "_config.yml"),
                                    part_captions(book / "_toc.yml")])
        page.add_style_tag(content=PRINT_CSS)
        page.emulate_media(media="print")
        page.evaluate(FIT_TABLES_JS)
        page.pdf(path=str(out), format="A4", print_background=True, scale=PDF_SCALE,
                 outline=True, tagged=True,
                 margin={"top": "16mm", "bottom": "18mm", "left": f"{MARGIN_MM}mm",
                         "right": f"{MARGIN_MM}mm"},
                 display_header_footer=True, header_template="<span></span>",
                 footer_template=FOOTER)
        browser.close()
    return found


def problems(found: dict) -> list[str]:
    """What a reader of the PDF would see as broken, one line each."""
    bad = [f"console error: {e}" for e in found["errors"]]
    bad += [found["mathjax"]] if "mathjax" in found else []
    bad += [f"request to another host (the PDF is made offline): {u}" for u in found["external"]]
    bad += [f"image did not load: {i['src']}" for i in found["images"] if not i["ok"]]
    if found["typeset"] < found["spans"] or found["merrors"]:
        bad.append(f"math: {found['typeset']} of {found['spans']} formulas typeset, "
                   f"{found['merrors']} in error")
    return bad


def main(argv: list[str] | None = None) -> int:
    """Command line: python -m precisionlab.engine.pdf --site _build/pdf/_build/singlehtml."""
    parser = argparse.ArgumentParser(prog="python -m precisionlab.engine.pdf", description=__doc__)
    parser.add_argument("--site", type=Path, default=Path("_build/pdf/_build/singlehtml"),
                        help="the singlehtml build of the book")
    parser.add_argument("--out", type=Path, default=Path("_build/pdf/book.pdf"))
    parser.add_argument("--book", type=Path, default=Path("."),
                        help="the book's folder: its _config.yml and _toc.yml")
    args = parser.parse_args(argv)
    start = time.monotonic()
    found = print_book(args.site, args.out, args.book, find_chromium())
    bad = problems(found)
    if bad:
        print(f"{args.out} is not fit to read:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {args.out.stat().st_size / 1e6:.1f} MB, {len(found['images'])} "
          f"images, {found['typeset']} formulas, in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
