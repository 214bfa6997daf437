"""The claims ledger: every seed claim with the verdicts the chapters computed for it.

Chapter 09 renders it from the verdict files (`claims.verdict_files`) and `data/claims.csv`
(never typed), and it fails loudly when a claim of the list has no verdict. A hardware-dependent
verdict keeps the machine it was measured on beside it. `check_citations` computes the
verdict data for CIT-1 from `data/citations.csv`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from precisionlab.claims import Verdict

CLAIM_ID = re.compile(r"^\|\s*([A-Z]+-\d+)\s*\|", re.MULTILINE)


def claim_ids_in(markdown: str) -> list[str]:
    """Claim ids in the first column of a Markdown table (the study's claims.md), in order."""
    return list(dict.fromkeys(CLAIM_ID.findall(markdown)))


def ledger(catalog: dict[str, dict[str, str]], verdicts: list[Verdict],
           required: list[str] | None = None) -> pd.DataFrame:
    """One row per (claim, chapter verdict), in the catalog's order.

    Raises ValueError naming every claim of `required` (default: the catalog) that has no
    verdict, and every verdict whose claim is not in the catalog.
    """
    required = list(catalog) if required is None else required
    unknown_required = [c for c in required if c not in catalog]
    if unknown_required:
        raise ValueError(f"claims: {', '.join(unknown_required)} are in the study's list but not "
                         "in data/claims.csv; add their ids and paraphrases there")
    stray = sorted({v.claim for v in verdicts} - set(catalog))
    if stray:
        raise ValueError(f"verdicts: {', '.join(stray)} are not claim ids of data/claims.csv")
    have = {v.claim for v in verdicts}
    missing = [c for c in required if c not in have]
    if missing:
        raise ValueError(f"claims without a verdict: {', '.join(missing)}; every claim needs a "
                         "chapter that computes one")
    order = {claim: i for i, claim in enumerate(catalog)}
    rows = [{"claim": v.claim, "seeds": catalog[v.claim]["seeds"],
             "paraphrase": catalog[v.claim]["claim"], "verdict": v.verdict, "reason": v.reason,
             "chapter": v.chapter, "evidence": v.evidence, "hardware": v.hardware}
            for v in verdicts]
    table = pd.DataFrame(rows)
    table["_order"] = table.claim.map(order)
    return table.sort_values(["_order", "chapter"]).drop(columns="_order").reset_index(drop=True)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def check_citations(citations: pd.DataFrame, min_overlap: float = 0.6) -> pd.DataFrame:
    """Add to the seeds' citations whether each is identifiable and, if so, correct.

    An entry is identifiable when it gives an arXiv id. It is correct when what that id really
    holds shares at least `min_overlap` of the cited title's words and names the cited source.
    """
    needed = {"cited title", "cited source", "arXiv id", "what the id really holds"}
    if not needed <= set(citations.columns):
        raise ValueError(f"citations: need columns {sorted(needed)}; got {list(citations.columns)}")
    out = citations.copy()
    ids = out["arXiv id"].fillna("").astype(str).str.strip()
    out["identifiable"] = ids != ""
    overlap, source_named = [], []
    for title, source, actual in zip(out["cited title"], out["cited source"].fillna(""),
                                     out["what the id really holds"].fillna(""), strict=True):
        cited = _words(title)
        overlap.append(len(cited & _words(actual)) / len(cited) if cited else 0.0)
        source_named.append(bool(source) and source.lower() in actual.lower())
    out["title_overlap"] = overlap
    out["source_named"] = source_named
    out["correct"] = out.identifiable & (out.title_overlap >= min_overlap) & out.source_named
    return out


def read_citations(root: Path) -> pd.DataFrame:
    """`data/citations.csv`, with ids kept as text (1710.03740 is not a number)."""
    return pd.read_csv(root / "data" / "citations.csv", dtype=str, keep_default_na=False)
