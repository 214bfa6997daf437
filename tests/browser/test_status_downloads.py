"""A real browser reads the execution status page, the chapter downloads and the dark mode.

The status page lists every registered chapter with its state; every chapter page has a
Downloads box whose links resolve, from file://, to the files it names (notebooks that parse, a
zip that opens); the theme's switch turns a page dark, and there the figures sit on a white
card and tables keep readable contrast. Screenshots of the dark pages go to
_build/screenshots/dark__*.png. Run by `make browser` after `make html`, like
test_book_pages.py (same Chromium, same rule: under CI=true a missing browser or book fails).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from bookbrowser import CHROMIUM_ARGS, HTML, ROOT, SHOTS, chromium, missing, offline, sync_api

from precisionlab.engine import registry

STATES = ("current", "stale", "not executed")

# Relative luminance (WCAG) of a computed CSS colour, and the contrast of text on the nearest
# painted background behind an element.
LUMINANCE_JS = """
const lum = (css) => {
  const [r, g, b] = css.match(/[\\d.]+/g).slice(0, 3).map(Number).map(v => {
    v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const painted = (el) => {
  for (let e = el; e; e = e.parentElement) {
    const bg = getComputedStyle(e).backgroundColor;
    const alpha = bg.startsWith('rgba') ? Number(bg.match(/[\\d.]+/g)[3]) : 1;
    if (alpha > 0.5) return bg;
  }
  return 'rgb(255, 255, 255)';
};
const contrast = (a, b) => (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
"""


def _chapters() -> list[str]:
    return registry.load(ROOT).names


def _page(name: str) -> Path:
    path = HTML / "book" / f"{name}.html"
    if not path.is_file():
        missing(f"no {path.relative_to(ROOT)}: run `make html` first")
    return path


@pytest.fixture(scope="module")
def seen() -> dict:
    """Open the status page and every chapter page once: light first, then dark through the
    theme's own switch; record what the checks need."""
    status_page = _page("status")
    chapter_pages = {name: _page(name) for name in _chapters()}
    executable = chromium()
    SHOTS.mkdir(parents=True, exist_ok=True)
    found: dict = {"chapters": {}}
    with sync_api().sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        offline(page)
        page.goto(status_page.as_uri(), wait_until="load")
        found["default_theme"] = page.evaluate("() => document.documentElement.dataset.theme")
        found["status_rows"] = page.evaluate("""() => Array.from(
            document.querySelectorAll('table.chapter-status tbody tr'), tr => ({
              href: tr.querySelector('td a') && tr.querySelector('td a').getAttribute('href'),
              name: tr.cells[0].innerText.replace(/\\s+/g, ''),
              state: tr.cells[1].innerText.trim()}))""")
        for _ in range(3):  # the theme's switch cycles its mode: light -> auto -> dark
            if page.evaluate("() => document.documentElement.dataset.theme") == "dark":
                break
            mode = page.evaluate("() => document.documentElement.dataset.mode")
            page.click(".theme-switch-button:visible")
            page.wait_for_function("m => document.documentElement.dataset.mode !== m", arg=mode,
                                   timeout=5_000)
        found["dark_after_clicks"] = page.evaluate("() => document.documentElement.dataset.theme")
        for name, path in chapter_pages.items():
            page.goto(path.as_uri(), wait_until="load")  # the reader's choice is kept
            page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
            found["chapters"][name] = page.evaluate("""() => {""" + LUMINANCE_JS + """
              const box = document.querySelector('.admonition.downloads');
              const imgs = Array.from(document.querySelectorAll('.bd-article img'));
              const cells = Array.from(document.querySelectorAll('.bd-article td')).slice(0, 40);
              return {
                theme: document.documentElement.dataset.theme,
                page: lum(painted(document.querySelector('.bd-article'))),
                links: box ? Array.from(box.querySelectorAll('a'), a => a.getAttribute('href'))
                           : null,
                images: imgs.map(i => ({src: i.getAttribute('src'), bg: lum(painted(i)),
                                        filter: getComputedStyle(i).filter,
                                        radius: getComputedStyle(i).borderTopLeftRadius})),
                contrast: cells.map(c => contrast(lum(getComputedStyle(c).color),
                                                  lum(painted(c)))),
              }; }""")
            page.screenshot(path=str(SHOTS / f"dark__{name}.png"), full_page=True)
        page.goto(status_page.as_uri(), wait_until="load")
        page.screenshot(path=str(SHOTS / "dark__status.png"), full_page=True)
        browser.close()
    return found


def test_status_page_lists_every_registered_chapter_with_a_state(seen: dict) -> None:
    rows = seen["status_rows"]
    assert [r["name"] for r in rows] == _chapters()
    assert all(r["href"] == f"{r['name']}.html" for r in rows), rows
    assert all((HTML / "book" / r["href"]).is_file() for r in rows)
    states = {r["name"]: r["state"] for r in rows}
    bad = {n: s for n, s in states.items() if s.split(":")[0] not in STATES}
    assert not bad, f"rows without a state: {bad}"


def test_every_chapter_page_offers_its_files(seen: dict) -> None:
    problems = []
    for name, record in seen["chapters"].items():
        links = record["links"]
        if links is None:
            problems.append(f"{name}: no Downloads box")
            continue
        files = {}
        for href in links:
            target = (HTML / "book" / unquote(urlparse(href).path)).resolve()
            if not target.is_file() or target.stat().st_size == 0:
                problems.append(f"{name}: {href} is missing or empty")
            files[target.name] = target
        expected = {f"{name}.ipynb", f"{name}-data.zip"}
        if set(files) != expected or len(links) != 3:
            problems.append(f"{name}: links {links}, expected a template, the executed "
                            "notebook and a zip")
            continue
        with zipfile.ZipFile(files[f"{name}-data.zip"]) as archive:
            if archive.testzip() is not None or f"data/{name}/provenance.json" not in \
                    archive.namelist():
                problems.append(f"{name}: the zip is damaged or lacks its provenance")
        for href in links:
            if href.endswith(".ipynb"):
                nb = json.loads((HTML / "book" / href).resolve().read_text(encoding="utf-8"))
                if not nb.get("cells"):
                    problems.append(f"{name}: {href} is not a notebook")
    assert not problems, "\n".join(problems)
    # the executed notebook offered is the one the page shows, provenance and all
    first = _chapters()[0]
    offered = HTML / "_downloads" / first / "book" / f"{first}.ipynb"
    assert offered.read_bytes() == (ROOT / "book" / f"{first}.ipynb").read_bytes()


def test_the_theme_switch_turns_pages_dark_and_figures_stay_on_a_light_card(seen: dict) -> None:
    assert seen["default_theme"] == "light"
    assert seen["dark_after_clicks"] == "dark"
    with_images = 0
    for name, record in seen["chapters"].items():
        assert record["theme"] == "dark", f"{name}: the reader's dark choice was not kept"
        assert record["page"] < 0.05, f"{name}: the page is not dark ({record['page']:.2f})"
        for image in record["images"]:
            assert image["bg"] > 0.95, f"{name}: {image['src']} has no light card"
            assert image["filter"] == "none", f"{name}: {image['src']} is dimmed"
            assert image["radius"] != "0px", f"{name}: {image['src']} has square corners"
        with_images += bool(record["images"])
        low = [round(c, 1) for c in record["contrast"] if c < 4.5]
        assert not low, f"{name}: table cells with text contrast under 4.5:1 in dark mode: {low}"
    assert with_images >= len(seen["chapters"]) // 2, "few chapter figures were checked"
    assert (SHOTS / "dark__status.png").stat().st_size > 0
    assert all((SHOTS / f"dark__{name}.png").is_file() for name in seen["chapters"])
