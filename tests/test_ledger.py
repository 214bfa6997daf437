"""The claims ledger (one verdict per claim, from its owner) and the CIT-1 citation rule."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.patches import Rectangle

from precisionlab.engine import registry
from precisionlab.provenance import find_root
from precisionlab.study.claims import Verdict, catalog
from precisionlab.study.ledger import (
    VERDICT_STYLE,
    checked_counts,
    claim_ids_in,
    counts,
    counts_sentence,
    findings,
    first_clause,
    ledger,
    markdown,
    markdown_untested,
    table_markdown,
    untested,
    verdict_board,
    verdicts_before,
)
from precisionlab.study.results import save_text
from precisionlab.study.rules import citations

CATALOG = {"A-1": {"seeds": "001", "claim": "first"}, "B-2": {"seeds": "002", "claim": "second"},
           "C-3": {"seeds": "003", "claim": "third"}}
OWNERS = {"A-1": "03_y", "B-2": "01_x"}
REGISTRY = registry.parse({"parts": [{"caption": "P", "chapters": [
    {"name": "01_x", "claims": ["B-2"]}, {"name": "03_y", "claims": ["A-1"]},
    {"name": "09_ledger", "ledger": True}]}], "untested": ["C-3"]})


def verdict(claim: str, chapter: str, word: str = "refuted", hardware: str = "") -> Verdict:
    return Verdict(claim, word, "because", "fig-x", chapter, hardware)


def test_claim_ids_are_read_from_the_first_column_of_a_markdown_table() -> None:
    text = ("| id | seeds |\n|---|---|\n| MP-1 | 000 |\n| Q-10 | 003 |\n| MP-1 | again |\n"
            "MP-2 prose\n")
    assert claim_ids_in(text) == ["MP-1", "Q-10"]


def test_ledger_orders_by_catalog_and_keeps_the_machine_of_a_speed_verdict() -> None:
    speed = verdict("B-2", "01_x", "nuanced", hardware="AMD EPYC, AVX2")
    table = ledger(CATALOG, [speed, verdict("A-1", "03_y")], OWNERS)
    assert table.claim.tolist() == ["A-1", "B-2"]
    assert table.paraphrase.tolist() == ["first", "second"]
    assert table.hardware.tolist() == ["", "AMD EPYC, AVX2"]
    text = markdown(table)
    assert "| **A-1** | first (001) | **refuted** | because | ch. {doc}`3 <03_y>`: " in text
    assert "(hardware-dependent: measured on AMD EPYC, AVX2)" in text


@pytest.mark.parametrize(("verdicts", "required", "message"), [
    ([verdict("A-1", "03_y")], None, r"^claims without a verdict: B-2 \(01_x\)"),
    ([verdict("A-1", "01_x"), verdict("B-2", "01_x")], None,
     r"^verdicts recorded by a chapter that does not own the claim: A-1 by 01_x \(owner: 03_y\)"),
    ([verdict("C-3", "01_x")], [], r"C-3 by 01_x \(owner: none\)"),
    ([verdict("Z-9", "01_x")], [], r"^verdicts: Z-9 are not claim ids"),
])
def test_ledger_fails_loudly_unless_each_claim_has_one_verdict_from_its_owner(
        verdicts, required, message) -> None:
    with pytest.raises(ValueError, match=message):
        ledger(CATALOG, verdicts, OWNERS, required)


def test_two_verdicts_on_one_claim_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^claims with more than one verdict: A-1"):
        ledger(CATALOG, [verdict("A-1", "03_y"), verdict("A-1", "03_y", "nuanced")], OWNERS, [])


def test_ledger_renders_what_there_is_when_nothing_is_required() -> None:
    assert ledger(CATALOG, [verdict("B-2", "01_x")], OWNERS, required=[]).claim.tolist() == ["B-2"]


def test_untested_claims_are_listed_apart() -> None:
    todo = untested(CATALOG, REGISTRY)
    assert todo.to_dict("records") == [{"claim": "C-3", "seeds": "003", "paraphrase": "third"}]
    assert markdown_untested(todo).splitlines()[-1] == "| **C-3** | third | 003 |"


def test_the_ledger_reads_only_the_verdict_files_of_chapters_before_it(tmp_path, results_dir):
    folder = tmp_path / "data" / "verdicts"
    folder.mkdir(parents=True)
    for name, claim in (("01_x", "B-2"), ("09_ledger", "C-3"), ("05_unregistered", "A-1")):
        (folder / f"{name}.json").write_text(json.dumps(
            {claim: {"claim": claim, "verdict": "refuted", "reason": "r", "evidence": "e",
                     "chapter": name, "hardware": ""}}))
    found = verdicts_before(tmp_path, REGISTRY, "09_ledger")
    assert {name: [v.claim for v in vs] for name, vs in found.items()} == {"01_x": ["B-2"]}


# A synthetic ledger: families out of book order in the catalog, MP-10 listed before MP-2, one
# verdict that depends on the machine, no "not testable here".
BOARD_CATALOG = {
    "Q-1": {"seeds": "003, 004", "claim": "Quantization keeps accuracy."},
    "MP-10": {"seeds": "004", "claim": "Mixed precision computes in INT8."},
    "MP-2": {"seeds": "000", "claim": "A number splits in two."},
    "FMT-1": {"seeds": "(none)", "claim": "Half precision is enough."},
}
BOARD_OWNERS = {"Q-1": "05_q", "MP-10": "05_q", "MP-2": "02_mp", "FMT-1": "01_fmt"}
REASONS = {
    "Q-1": "int8 vs fp32: mlp +0.1 [-0.22, +0.43] pp (n=3; paired); 4 bits lower",
    "MP-10": "0 of 948 ops use int8; sparsity 1 %",
    "MP-2": "none of the 24 casts turns a float into an integer",
    "FMT-1": "fp16 failed at 2^-16 (inf; NaN) where bf16 did not; bf16 erred 7.9x fp16",
}


def board_table() -> pd.DataFrame:
    words = {"Q-1": "nuanced", "MP-10": "refuted", "MP-2": "refuted", "FMT-1": "supported"}
    machine = {"MP-10": "AMD EPYC, 2 threads; torch 2.13 with AVX2 kernels"}
    found = [Verdict(c, words[c], REASONS[c], f"tbl-{c.lower()}", BOARD_OWNERS[c],
                     machine.get(c, "")) for c in BOARD_CATALOG]
    return ledger(BOARD_CATALOG, found, BOARD_OWNERS)


def test_counts_give_every_verdict_word_in_order_and_the_speed_dependent_ones() -> None:
    tally = counts(board_table())
    assert tally.index.tolist() == ["supported", "refuted", "nuanced", "not testable here"]
    assert tally.claims.tolist() == [1, 2, 1, 0]
    assert tally["hardware-dependent"].tolist() == [0, 1, 0, 0]
    assert tally["on any machine"].tolist() == [1, 1, 1, 0]
    assert counts_sentence(board_table()) == (
        "4 claims, each with one verdict from the 3 chapters that tested them: 1 supported, "
        "2 refuted (1 of them hardware-dependent), 1 nuanced and 0 not testable here. 1 of "
        "these verdicts depends on the "
        "machine that measured them (a speed, or the numerics of its 16-bit kernels) and may "
        "read otherwise on other hardware.")
    assert checked_counts(board_table()) == (
        "verdict words on any machine: supported 1, refuted 1, nuanced 1, not testable here 0; "
        "hardware-dependent: 1 (each word's count on the board = its count here + its "
        "hardware-dependent ones)")
    robust = board_table().assign(hardware="")
    assert "machine" not in counts_sentence(robust)
    with pytest.raises(ValueError, match=r"^table: verdict words 'maybe' are not among"):
        counts(board_table().assign(verdict="maybe"))


def test_the_verdict_board_has_a_cell_per_claim_by_family_coloured_by_verdict() -> None:
    table = board_table()
    fig = verdict_board(table, columns=1)  # one cell a line: MP's two claims wrap
    try:
        ax = fig.axes[0]
        assert to_hex(fig.get_facecolor(), keep_alpha=True) == "#ffffffff"  # opaque on dark pages
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(loc="left")
        assert [t.get_text() for t in ax.get_yticklabels()] == ["FMT", "MP", "Q"]
        cells = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(cells) == 4
        texts = [t.get_text() for t in ax.texts]
        ids = [t.split(" ", 1)[1] for t in texts[::2]]
        assert ids == ["FMT-1", "MP-2", "MP-10", "Q-1"]  # book order of families, ids by number
        assert texts[1::2] == ["(none)", "000", "004", "003, 004"]  # the seed articles
        words = table.set_index("claim").verdict
        for cell, claim in zip(cells, ids, strict=True):
            assert to_hex(cell.get_facecolor()) == to_hex(VERDICT_STYLE[words[claim]][0])
            assert bool(cell.get_hatch()) == (claim == "MP-10")  # the speed-dependent one
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend[:4] == ["\u2713 supported (1)",
                              "\u2717 refuted (2, 1 of them hardware-dependent)",
                              "~ nuanced (1)", "? not testable here (0)"]
        assert legend[4].startswith("hardware-dependent") and legend[4].endswith("1)")
        ticks = [t.get_position()[1] for t in ax.get_yticklabels()]
        assert ticks == [0, -1.5, -3]  # MP's label sits between its two lines
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="no verdict to draw"):
        verdict_board(table.iloc[:0])


@pytest.mark.parametrize(("reason", "clause"), [
    ("a; b; c", "a"),
    ("x (n=3; paired) and y; rest", "x (n=3; paired) and y"),
    ("at [1; 2] then {p; q}; more", "at [1; 2] then {p; q}"),
    ("no separator at all", "no separator at all"),
])
def test_the_first_clause_ends_at_the_first_separator_outside_brackets(reason, clause) -> None:
    assert first_clause(reason) == clause


def test_findings_state_each_featured_verdict_with_its_number_and_evidence() -> None:
    text = findings(board_table(), ["Q-1", "MP-10", "FMT-1"])
    lines = text.splitlines()
    assert len(lines) == 3 and all(line.startswith("- ") for line in lines)
    assert lines[0] == (
        "- *Quantization keeps accuracy* (Q-1; seed articles: 003, 004): **nuanced** \u2014 "
        "int8 vs fp32: mlp +0.1 [-0.22, +0.43] pp (n=3; paired). "
        "Evidence: ch. {doc}`5 <05_q>`: {ref}`tbl-q-1 <tbl-q-1>`.")
    assert "**refuted** (hardware-dependent: measured on AMD EPYC, 2 threads) \u2014 0 of 948" \
        in lines[1]
    assert "(FMT-1; seed articles: none)" in lines[2]
    assert "fp16 failed at 2^-16 (inf; NaN) where bf16 did not." in lines[2]
    with pytest.raises(ValueError, match=r"^featured: LS-1 have no verdict in the ledger"):
        findings(board_table(), ["Q-1", "LS-1"])


def test_a_table_for_readers_has_headers_no_index_and_readable_cells() -> None:
    df = pd.DataFrame({"title": ["A | B", None], "share": [0.6, 0.0], "named": [True, False],
                       "score": [0.12345, 3.0]}, index=[7, 8])
    assert table_markdown(df, percent=["share"]).splitlines() == [
        "| title | share | named | score |", "|---|---:|---|---:|",
        "| A / B | 60% | yes | 0.12 |", "|  | 0% | no | 3 |"]


def test_markdown_for_another_page_goes_to_the_chapters_results(results_dir) -> None:
    path = save_text("- one\n- two\n\n", "16_ledger", "findings")
    assert path == results_dir / "16_ledger" / "findings.md"
    assert path.read_text() == "- one\n- two\n"
    with pytest.raises(ValueError, match="^name: "):
        save_text("x", "16_ledger", "../intro")


def cited(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["cited title", "cited source", "arXiv id"])


LOOKUP = pd.DataFrame({
    "arXiv id": ["1710.03740", "1712.05770"],
    "title": ["Mixed Precision Training", ""],
    "affiliations": ["Baidu Research; NVIDIA", ""],
    "source": ["https://arxiv.org/abs/1710.03740", "https://arxiv.org/abs/1712.05770"],
    "checked_on": ["2026-11-22", "2026-11-22"]})
RIGHT = ("Mixed Precision Training", "NVIDIA", "1710.03740")
WRONG_SOURCE = ("Mixed Precision Training", "Microsoft", "1710.03740")
UNRELATED = ("Dynamic Mixed Precision Training", "NVIDIA", "1712.05770")
NO_ID = ("Deep learning with mixed precision", "NVIDIA", "")


@pytest.mark.parametrize(("rows", "word", "reason"), [
    ((RIGHT, NO_ID), "supported", "1 of 1 arXiv ids hold the cited paper"),
    ((WRONG_SOURCE, UNRELATED, NO_ID), "refuted", "0 of 2 arXiv ids hold the cited paper from "
                                                  "the cited source; 1 of 3 entries give no id"),
    ((RIGHT, UNRELATED), "nuanced", "1 of 2 arXiv ids"),
    ((NO_ID,), "not testable here", "no entry gives an arXiv id"),
])
def test_cit1_reaches_every_verdict(rows, word, reason) -> None:
    finding = citations.cit1(citations.check(cited(*rows), LOOKUP))
    assert (finding.claim, finding.verdict, finding.evidence) == ("CIT-1", word, "tbl-citations")
    assert reason in finding.reason


def test_citation_check_needs_the_title_and_the_source_and_a_looked_up_id() -> None:
    out = citations.check(cited(RIGHT, WRONG_SOURCE, UNRELATED, NO_ID), LOOKUP)
    assert out.correct.tolist() == [True, False, False, False]
    assert out.identifiable.tolist() == [True, True, True, False]
    assert out.source_named.tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match=r"^lookup: no row for arXiv id 9999.00001; add"):
        citations.check(cited(("A title", "X", "9999.00001")), LOOKUP)
    with pytest.raises(ValueError, match=r"^citations: need columns"):
        citations.check(cited(RIGHT).drop(columns="cited source"), LOOKUP)
    with pytest.raises(ValueError, match=r"^lookup: need columns"):
        citations.check(cited(RIGHT), LOOKUP.drop(columns="checked_on"))


def test_the_projects_citations_lookup_and_claims_are_consistent() -> None:
    root = find_root()
    cited_table, lookup = citations.read(root)
    checked = citations.check(cited_table, lookup)
    assert checked["arXiv id"].tolist()[:5] == ["1712.06082", "1902.09602", "1710.03740",
                                                "1712.05770", "1712.08083"]
    assert not checked.correct.any()  # no seed citation holds the cited paper
    assert lookup.source.str.startswith("https://arxiv.org/abs/").all()
    assert (lookup.source == "https://arxiv.org/abs/" + lookup["arXiv id"]).all()
    assert lookup.checked_on.str.fullmatch(r"\d{4}-\d\d-\d\d").all()
    assert {"CIT-1", "Q-1", "MP-7"} <= set(catalog(root))


def attributions(*rows: tuple[str, str, str]) -> pd.DataFrame:
    """An attributions table from (subject, as stated, documented) rows, sourced and dated."""
    return pd.DataFrame([{"seed": "001", "subject": s, "attribute": "who made it",
                          "as stated": said, "documented": true, "source": "https://example.org",
                          "checked_on": "2026-12-01"} for s, said, true in rows])


SAME = ("D2L", "UC Berkeley", "uc  berkeley")  # case and spacing do not matter
HALF = ("ONNX", "Microsoft", "Microsoft; Facebook")
OTHER = ("Ampere", "a mixed-precision library", "a GPU architecture")


@pytest.mark.parametrize(("rows", "word", "reason"), [
    ((SAME,), "supported", "1 of 1 attributions match"),
    ((HALF, OTHER), "refuted", "0 of 2 attributions match the tool's own documentation; "
                               "incomplete: ONNX"),
    ((SAME, OTHER), "nuanced", "1 of 2 attributions match"),
    ((), "not testable here", "no attribution to check"),
])
def test_cit2_reaches_every_verdict(rows, word, reason) -> None:
    table = attributions(*rows) if rows else attributions(SAME).iloc[:0]
    finding = citations.cit2(citations.check_attributions(table))
    assert (finding.claim, finding.verdict, finding.evidence) == ("CIT-2", word, "tbl-attributions")
    assert reason in finding.reason


def test_an_attribution_is_correct_incomplete_or_wrong_and_must_be_sourced() -> None:
    out = citations.check_attributions(attributions(SAME, HALF, OTHER))
    assert out.match.tolist() == ["correct", "incomplete", "wrong"]
    # naming more than the documentation does is not "incomplete"
    assert citations.check_attributions(attributions(
        ("ONNX", "Microsoft; Google", "Microsoft"))).match.tolist() == ["wrong"]
    unsourced = attributions(SAME).assign(source="")
    with pytest.raises(ValueError, match=r"^attributions: D2L need a source page and the date"):
        citations.check_attributions(unsourced)
    with pytest.raises(ValueError, match=r"^attributions: need columns"):
        citations.check_attributions(attributions(SAME).drop(columns="documented"))


def test_the_projects_attributions_are_sourced_and_dated() -> None:
    table = citations.read_attributions(find_root())
    checked = citations.check_attributions(table)
    assert set(checked.subject) >= {"NVIDIA Ampere", "TensorFlow Addons", "ONNX", "GPT"}
    assert table.source.str.startswith("https://").all()
    assert table.checked_on.str.fullmatch(r"\d{4}-\d\d-\d\d").all()
    assert set(table.seed) <= {"000", "001", "002", "003", "004"}


def test_the_published_front_page_counts_equal_the_verdict_files() -> None:
    """The counts sentence glued into the published ledger (and so the front page) is the one
    the committed verdict files give today: a stale ledger fails here."""
    root = Path(__file__).resolve().parents[1]
    found = [Verdict(**e) for f in sorted((root / "data" / "verdicts").glob("*.json"))
             for e in json.loads(f.read_text()).values()]
    reg = registry.load(root)
    table = ledger(catalog(root), found, reg.owners())
    nb = json.loads((root / "book" / "16_claims_ledger.ipynb").read_text())
    glued = [o["data"]["application/papermill.record/text/plain"]
             for c in nb["cells"] if c["cell_type"] == "code"
             for o in c.get("outputs", []) if o.get("metadata", {}).get("scrapbook", {})
             .get("name") == "counts_sentence"]
    assert glued, "the published ledger glues no counts_sentence"
    assert "".join(glued[0]).strip("'\"") == counts_sentence(table)
