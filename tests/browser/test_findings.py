"""The findings first: the front page and the claims ledger, as a reader opens them.

The front page (book/intro.html) must show the verdict board (an image that loaded), the counts
sentence and the findings, each finding linking to an anchor that exists; the ledger page must
show the board and the ledger table before the detail of CIT-1. Same browser as
test_book_pages.py (Debian's `chromium` through Playwright); under CI=true a missing browser or
book is a failure, elsewhere a skip.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from bookbrowser import CHROMIUM_ARGS, HTML, ROOT, chromium, missing, offline, sync_api

from precisionlab.study.claims import VERDICTS

_SHARE = r"(?: \(\d+ of them hardware-dependent\))?"  # a word's machine-dependent share
COUNTS = re.compile(r"(\d+) claims, each with one verdict from the (\d+) chapters that tested "
                    rf"them: (\d+) supported{_SHARE}, (\d+) refuted{_SHARE}, (\d+) nuanced"
                    rf"{_SHARE} and (\d+) not testable here{_SHARE}\.")
FRONT = HTML / "book" / "intro.html"
LEDGER = HTML / "book" / "16_claims_ledger.html"

# What the front page's section holds: its images (loaded, drawn size), the counts sentence,
# and each finding's text, verdict words in bold and link targets.
SECTION = """id => {
    const section = document.getElementById(id);
    if (!section) return null;
    return {
        images: Array.from(section.querySelectorAll('img'), img => ({
            src: img.getAttribute('src'), loaded: img.complete && img.naturalWidth > 0,
            width: img.getBoundingClientRect().width,
            height: img.getBoundingClientRect().height})),
        pasted: Array.from(section.querySelectorAll('.pasted-text'), s => s.textContent),
        findings: Array.from(section.querySelectorAll('li'), li => ({
            text: li.textContent,
            bold: Array.from(li.querySelectorAll('strong'), b => b.textContent),
            links: Array.from(li.querySelectorAll('a[href]'), a => a.href)})),
    };
}"""
# Top of each element on the page, in document coordinates (null where missing).
TOPS = """selectors => selectors.map(sel => {
    const e = document.querySelector(sel);
    return e ? e.getBoundingClientRect().top + window.scrollY : null;
})"""


@pytest.fixture(scope="module")
def pages() -> dict[str, dict]:
    """Open the front page and the ledger once each; record what the checks need."""
    for path in (FRONT, LEDGER):
        if not path.is_file():
            missing(f"no {path.relative_to(ROOT)}: run `make html` first")
    executable = chromium()
    found: dict[str, dict] = {}
    with sync_api().sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        offline(page)
        page.goto(FRONT.as_uri(), wait_until="load")
        found["front"] = page.evaluate(SECTION, "what-the-study-found")
        page.goto(LEDGER.as_uri(), wait_until="load")
        found["ledger"] = page.evaluate(SECTION, "every-verdict-at-a-glance")
        found["ledger_tops"] = page.evaluate(TOPS, [
            "#fig-verdict-board img", "#the-ledger table", "#cit-1-the-reading-lists",
            "#cit-1-the-reading-lists table"])
        found["cit_headers"] = page.evaluate("""() => Array.from(
            document.querySelectorAll('#cit-1-the-reading-lists table'),
            t => Array.from(t.querySelectorAll('thead th'), th => th.textContent.trim()))""")
        browser.close()
    return found


def _anchor_exists(url: str) -> bool:
    """The page of a file:// link exists and holds an element with the link's fragment as id."""
    parsed = urlparse(url)
    target = Path(unquote(parsed.path))
    if parsed.scheme != "file" or not target.is_file():
        return False
    text = target.read_text(encoding="utf-8", errors="replace")
    return not parsed.fragment or f'id="{parsed.fragment}"' in text


def test_the_front_page_shows_the_verdict_board(pages: dict) -> None:
    front = pages["front"]
    assert front is not None, "book/intro.html has no section 'What the study found'"
    images = front["images"]
    assert len(images) == 1, f"expected the verdict board, found images {images}"
    board = images[0]
    assert board["loaded"], f"the verdict board did not load: {board['src']}"
    assert board["width"] > 300 and board["height"] > 300, f"the board is drawn too small: {board}"


def test_the_front_page_counts_every_claim_of_the_study(pages: dict) -> None:
    text = " ".join(pages["front"]["pasted"])
    match = COUNTS.search(text)
    assert match, f"no counts sentence on the front page; pasted text: {text!r}"
    total, chapters, *per_word = (int(n) for n in match.groups())
    with (ROOT / "data" / "claims.csv").open(newline="", encoding="utf-8") as handle:
        assert total == len(list(csv.DictReader(handle)))  # the ledger renders every claim
    assert sum(per_word) == total and chapters >= 1
    assert match.group(0) in " ".join(pages["ledger"]["pasted"])  # the same words as the ledger


def test_the_front_page_findings_state_a_verdict_and_link_to_their_evidence(pages: dict) -> None:
    findings = pages["front"]["findings"]
    assert 5 <= len(findings) <= 8, f"expected 5-8 findings, found {len(findings)}"
    for finding in findings:
        assert any(word in VERDICTS for word in finding["bold"]), finding["text"]
        evidence = [url for url in finding["links"] if urlparse(url).fragment]
        assert evidence, f"no link to an evidence anchor in: {finding['text']}"
        broken = [url for url in finding["links"] if not _anchor_exists(url)]
        assert not broken, f"broken links {broken} in: {finding['text']}"
    assert [f["text"] for f in findings] == [f["text"] for f in pages["ledger"]["findings"]]


def test_the_ledger_page_puts_the_board_and_table_before_the_cit1_detail(pages: dict) -> None:
    board, table, cit1, cit1_table = pages["ledger_tops"]
    assert None not in (board, table, cit1, cit1_table), pages["ledger_tops"]
    assert board < table < cit1 <= cit1_table
    headers = pages["cit_headers"]
    assert headers and all(h and h[0] for h in headers), f"a CIT-1 table shows an index: {headers}"
    assert not any("_" in name for h in headers for name in h), f"raw column names: {headers}"

