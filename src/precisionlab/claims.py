"""Verdicts on the seed articles' claims, recorded by the chapters from measured data.

A chapter computes a verdict and calls `record`; it prints one deterministic line (checked by
nbval) and writes `data/verdicts/<chapter>.json`, which the claims ledger renders. The claim
ids and our own paraphrases live in `data/claims.csv`, so the book builds without the seeds.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from precisionlab.provenance import find_root
from precisionlab.results import results_root, write_json

VERDICTS = ("supported", "refuted", "nuanced", "not testable here")


def sig2(x: float) -> str:
    """A number to 2 significant digits, without an exponent where a plain number is short:
    the robust form for numbers in a verdict's reason (e.g. 0.0123 -> '0.012', 1234 -> '1200')."""
    return f"{float(f'{x:.2g}'):g}"


def catalog(root: Path | None = None) -> dict[str, dict[str, str]]:
    """Claim id -> {'seeds', 'claim'} from the project's `data/claims.csv`."""
    path = (root or find_root()) / "data" / "claims.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict, why, and the label of the figure or table that is its evidence."""

    claim: str
    verdict: str
    reason: str
    evidence: str
    chapter: str

    def line(self) -> str:
        """The one-line summary a chapter prints (deterministic, so nbval can check it)."""
        return f"{self.claim}: {self.verdict} - {self.reason} [evidence: {self.evidence}]"


def record(chapter: str, claim: str, verdict: str, reason: str, evidence: str) -> Verdict:
    """Validate and store a verdict for `claim` from `chapter`, print its line, return it."""
    known = catalog()
    if claim not in known:
        raise ValueError(f"claim: unknown claim id {claim!r}; known ids: {', '.join(known)}")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict: must be one of {', '.join(VERDICTS)}; got {verdict!r}")
    if not reason.strip() or "\n" in reason:
        raise ValueError("reason: give a non-empty one-line reason")
    if not evidence.strip():
        raise ValueError("evidence: give the label of the figure or table that decides the claim")
    result = Verdict(claim, verdict, reason.strip(), evidence.strip(), chapter)
    path = results_root() / "verdicts" / f"{chapter}.json"
    entries = json.loads(path.read_text()) if path.exists() else {}
    entries[claim] = asdict(result)
    write_json(path, dict(sorted(entries.items())))
    print(result.line())
    return result


def recorded(chapter: str) -> dict[str, Verdict]:
    """The verdicts `chapter` has recorded so far in this run, by claim id."""
    path = results_root() / "verdicts" / f"{chapter}.json"
    entries = json.loads(path.read_text()) if path.exists() else {}
    return {claim: Verdict(**entry) for claim, entry in entries.items()}


def load_verdicts(root: Path | None = None) -> list[Verdict]:
    """Every verdict recorded under `data/verdicts/`, sorted by chapter then claim id."""
    folder = (root or find_root()) / "data" / "verdicts"
    found = []
    for path in sorted(folder.glob("*.json")):
        found += [Verdict(**entry) for entry in json.loads(path.read_text()).values()]
    return found
