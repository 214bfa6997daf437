"""The claims ledger (one verdict per claim, from its owner) and the CIT-1 citation rule."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from precisionlab import registry
from precisionlab.claims import Verdict, catalog
from precisionlab.ledger import (
    claim_ids_in,
    ledger,
    markdown,
    markdown_untested,
    untested,
    verdicts_before,
)
from precisionlab.provenance import find_root
from precisionlab.rules import citations

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
