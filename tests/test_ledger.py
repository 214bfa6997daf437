"""The claims ledger and the CIT-1 citation check."""

from __future__ import annotations

import pandas as pd
import pytest

from precisionlab.claims import Verdict, catalog
from precisionlab.ledger import check_citations, claim_ids_in, ledger, read_citations
from precisionlab.provenance import find_root

CATALOG = {"A-1": {"seeds": "001", "claim": "first"}, "B-2": {"seeds": "002", "claim": "second"}}


def verdict(claim: str, chapter: str = "01_x", word: str = "refuted") -> Verdict:
    return Verdict(claim, word, "because", "fig-x", chapter)


def test_claim_ids_are_read_from_the_first_column_of_a_markdown_table() -> None:
    text = ("| id | seeds |\n|---|---|\n| MP-1 | 000 |\n| Q-10 | 003 |\n| MP-1 | again |\n"
            "MP-2 prose\n")
    assert claim_ids_in(text) == ["MP-1", "Q-10"]


def test_ledger_orders_by_catalog_and_keeps_every_chapter_verdict() -> None:
    table = ledger(CATALOG, [verdict("B-2"), verdict("A-1", "03_y", "nuanced"),
                             verdict("A-1", "01_x")])
    assert list(zip(table.claim, table.chapter, strict=True)) == [("A-1", "01_x"), ("A-1", "03_y"),
                                                     ("B-2", "01_x")]
    assert table.paraphrase.tolist() == ["first", "first", "second"]


def test_ledger_keeps_the_machine_of_a_hardware_dependent_verdict() -> None:
    speed = Verdict("A-1", "nuanced", "1.2x", "fig-step", "08_x", hardware="AMD EPYC, AVX2")
    table = ledger(CATALOG, [speed, verdict("B-2")])
    assert table.hardware.tolist() == ["AMD EPYC, AVX2", ""]


def test_ledger_fails_loudly_on_a_claim_without_verdict_or_an_unknown_one() -> None:
    with pytest.raises(ValueError, match="claims without a verdict: B-2"):
        ledger(CATALOG, [verdict("A-1")])
    with pytest.raises(ValueError, match="claims: C-3 are in the study's list but not"):
        ledger(CATALOG, [verdict("A-1"), verdict("B-2")], required=["A-1", "C-3"])
    with pytest.raises(ValueError, match="verdicts: Z-9 are not claim ids"):
        ledger(CATALOG, [verdict("A-1"), verdict("B-2"), verdict("Z-9")])


def test_citation_check_needs_title_and_source() -> None:
    rows = pd.DataFrame({
        "cited title": ["Mixed Precision Training", "Mixed Precision Training", "A title", "X"],
        "cited source": ["NVIDIA", "Microsoft", "NVIDIA", ""],
        "arXiv id": ["1710.03740", "1710.03740", "1712.0", ""],
        "what the id really holds": ["Mixed Precision Training, Micikevicius et al. (NVIDIA)",
                                     "Mixed Precision Training, Micikevicius et al. (NVIDIA)",
                                     "Unrelated: a Riccati equation", ""]})
    out = check_citations(rows)
    assert out.correct.tolist() == [True, False, False, False]
    assert out.identifiable.tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="citations: need columns"):
        check_citations(rows.drop(columns="cited source"))


def test_the_projects_citations_and_claims_are_consistent() -> None:
    root = find_root()
    checked = check_citations(read_citations(root))
    assert checked["arXiv id"].tolist()[:5] == ["1712.06082", "1902.09602", "1710.03740",
                                                "1712.05770", "1712.08083"]
    assert not checked.correct.any()  # no seed citation holds the cited paper
    assert {"CIT-1", "Q-1", "MP-7"} <= set(catalog(root))
