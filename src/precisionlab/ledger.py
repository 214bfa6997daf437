"""The claims ledger: every seed claim with the one verdict its chapter computed for it.

Chapter 09 renders it from the verdict files of the chapters before it and `data/claims.csv`
(never typed). The registry (`notebooks/chapters.yml`) says which chapter owns each claim; the
ledger fails loudly when a claim has no verdict, more than one, or one from another chapter.
Claims no chapter tests yet are listed apart as untested. A hardware-dependent verdict keeps the
machine it was measured on beside it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from precisionlab.claims import Verdict, verdict_files
from precisionlab.registry import FILE, Registry

CLAIM_ID = re.compile(r"^\|\s*([A-Z]+-\d+)\s*\|", re.MULTILINE)


def claim_ids_in(markdown: str) -> list[str]:
    """Claim ids in the first column of a Markdown table (the study's claims.md), in order."""
    return list(dict.fromkeys(CLAIM_ID.findall(markdown)))


def verdicts_before(root: Path, registry: Registry, chapter: str) -> dict[str, list[Verdict]]:
    """Chapter -> its verdicts, for the chapters before `chapter` that have a verdict file (this
    run's where it recomputed them, `claims.verdict_files`, the committed ones otherwise)."""
    files = verdict_files(root)
    return {name: [Verdict(**e) for e in json.loads(files[name].read_text()).values()]
            for name in registry.before(chapter) if name in files}


def ledger(catalog: dict[str, dict[str, str]], verdicts: list[Verdict], owners: dict[str, str],
           required: list[str] | None = None) -> pd.DataFrame:
    """One row per claim with a verdict, in the catalog's order.

    Raises ValueError for a verdict on an id not in the catalog, a verdict recorded by a chapter
    that does not own its claim (`owners`: claim -> chapter), a claim with two verdicts, and
    each claim of `required` (default: every owned claim) without a verdict.
    """
    stray = sorted({v.claim for v in verdicts} - set(catalog))
    if stray:
        raise ValueError(f"verdicts: {', '.join(stray)} are not claim ids of data/claims.csv")
    foreign = [f"{v.claim} by {v.chapter} (owner: {owners.get(v.claim, 'none')})"
               for v in verdicts if owners.get(v.claim) != v.chapter]
    if foreign:
        raise ValueError(f"verdicts recorded by a chapter that does not own the claim: "
                         f"{'; '.join(foreign)}; rerun that chapter or fix the owner in {FILE}")
    claims = [v.claim for v in verdicts]
    twice = sorted({c for c in claims if claims.count(c) > 1})
    if twice:
        raise ValueError(f"claims with more than one verdict: {', '.join(twice)}")
    missing = [f"{c} ({owners[c]})" for c in (list(owners) if required is None else required)
               if c not in claims]
    if missing:
        raise ValueError(f"claims without a verdict: {', '.join(missing)}; run the owning "
                         "chapter, which must record one")
    order = {claim: i for i, claim in enumerate(catalog)}
    rows = [{"claim": v.claim, "seeds": catalog[v.claim]["seeds"],
             "paraphrase": catalog[v.claim]["claim"], "verdict": v.verdict, "reason": v.reason,
             "chapter": v.chapter, "evidence": v.evidence, "hardware": v.hardware}
            for v in sorted(verdicts, key=lambda v: order[v.claim])]
    return pd.DataFrame(rows, columns=["claim", "seeds", "paraphrase", "verdict", "reason",
                                       "chapter", "evidence", "hardware"])


def untested(catalog: dict[str, dict[str, str]], registry: Registry) -> pd.DataFrame:
    """The claims the registry lists as untested (no chapter owns them), in catalog order."""
    rows = [{"claim": c, "seeds": row["seeds"], "paraphrase": row["claim"]}
            for c, row in catalog.items() if c in registry.untested]
    return pd.DataFrame(rows, columns=["claim", "seeds", "paraphrase"])


def _cell(text: object) -> str:
    """Table-safe Markdown: no pipes or newlines inside a cell."""
    return str(text).replace("|", "/").replace("\n", " ")


def markdown(table: pd.DataFrame) -> str:
    """The ledger as a MyST Markdown table, linking each verdict to its chapter and evidence."""
    lines = ["| claim | the claim (our paraphrase; seed articles) | verdict | why (computed) | "
             "evidence |", "|---|---|---|---|---|"]
    for row in table.itertuples():
        measured = (f"<br>(hardware-dependent: measured on {_cell(row.hardware)})"
                    if row.hardware else "")
        link = f"{{doc}}`{int(row.chapter[:2])} <{row.chapter}>`"
        lines.append(f"| **{row.claim}** | {_cell(row.paraphrase)} ({row.seeds}) | "
                     f"**{row.verdict}**{measured} | {_cell(row.reason)} | "
                     f"ch. {link}: {{ref}}`{row.evidence} <{row.evidence}>` |")
    return "\n".join(lines)


def markdown_untested(table: pd.DataFrame) -> str:
    """The untested claims as a Markdown table: id, paraphrase, seed articles."""
    lines = ["| claim | the claim (our paraphrase) | seed articles |", "|---|---|---|"]
    lines += [f"| **{r.claim}** | {_cell(r.paraphrase)} | {r.seeds} |" for r in table.itertuples()]
    return "\n".join(lines)
