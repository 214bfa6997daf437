"""Verdicts on the seed articles' claims, recorded by the chapters from measured data.

A chapter computes a verdict and calls `record`, which writes `data/verdicts/<chapter>.json`
(rendered by the claims ledger) and prints the verdict word and its evidence: the line nbval
checks, so it must come out the same on any CPU or GPU. The reason, with its measured numbers,
is shown by `explain` in an unchecked cell. A verdict whose word depends on the hardware (a
speed claim) carries the hardware it was measured on, and its cell is never checked. The claim
ids and our own paraphrases live in `data/claims.csv`, so the book builds without the seeds.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from precisionlab.provenance import find_root
from precisionlab.study.results import results_root, write_json

VERDICTS = ("supported", "refuted", "nuanced", "not testable here")


def sig2(x: float) -> str:
    """A number to 2 significant digits, without an exponent where a plain number is short:
    the robust form for numbers in a verdict's reason (e.g. 0.0123 -> '0.012', 1234 -> '1200')."""
    return f"{float(f'{x:.2g}'):g}"


def span(values: Iterable[float], fmt: Callable[[float], str] = sig2) -> str:
    """'a' when every value reads alike under `fmt`, else 'lo-hi': a range in a reason or a
    caption (e.g. [1.01, 1.02] -> '1', [1, 2] -> '1-2')."""
    values = list(values)
    lo, hi = fmt(min(values)), fmt(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def catalog(root: Path | None = None) -> dict[str, dict[str, str]]:
    """Claim id -> {'seeds', 'claim'} from the project's `data/claims.csv`."""
    path = (root or find_root()) / "data" / "claims.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        n = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None, []))
        if n != 3:
            raise ValueError(f"data/claims.csv: row {row['id']} has {n} fields; quote a claim "
                             "that contains a comma")
    return {row["id"]: row for row in rows}


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict, why, and the label of the figure or table that is its evidence."""

    claim: str
    verdict: str
    reason: str
    evidence: str
    chapter: str
    hardware: str = ""  # set when the verdict word depends on the hardware that measured it

    def line(self) -> str:
        """The verdict word and its evidence: what `record` prints (no measured number)."""
        return f"{self.claim}: {self.verdict} [evidence: {self.evidence}]"

    def explained(self) -> str:
        """The verdict with its full reason, and the machine if it depends on one."""
        measured = f" (hardware-dependent: measured on {self.hardware})" if self.hardware else ""
        return f"{self.claim}: {self.verdict} - {self.reason} [evidence: {self.evidence}]{measured}"


@dataclass(frozen=True)
class Finding:
    """What a rule (`precisionlab.study.rules`) concludes about one claim, before a chapter
    records it. The reason's first clause (up to its first '; ') is the one that carries the
    verdict, unwelcome part included: the front page's findings quote it alone."""

    claim: str
    verdict: str
    reason: str
    evidence: str
    hardware: str = ""

    def __post_init__(self) -> None:
        _check_fields(self.verdict, self.reason, self.evidence, self.hardware)


def _check_fields(verdict: str, reason: str, evidence: str, hardware: str) -> None:
    if verdict not in VERDICTS:
        raise ValueError(f"verdict: must be one of {', '.join(VERDICTS)}; got {verdict!r}")
    if not reason.strip() or "\n" in reason:
        raise ValueError("reason: give a non-empty one-line reason")
    if not evidence.strip():
        raise ValueError("evidence: give the label of the figure or table that decides the claim")
    if "\n" in hardware:
        raise ValueError("hardware: give one line naming the machine, or '' if it does not matter")


def record(chapter: str, claim: str | Finding, verdict: str = "", reason: str = "",
           evidence: str = "", hardware: str = "") -> Verdict:
    """Validate and store a verdict for `claim` from `chapter`, print its line, return it.

    `claim` may be a rule's `Finding`, which carries the other fields:
    `record(CHAPTER, rules.mixed.mp12(table))`.

    Give `hardware` (e.g. `provenance.hardware_line(device)`) when the verdict or its reason
    rests on a speed measured on this machine; the ledger shows it beside the verdict. A
    verdict whose word depends on speed is recorded in an unchecked cell."""
    if isinstance(claim, Finding):
        claim, verdict, reason, evidence, hardware = (
            claim.claim, claim.verdict, claim.reason, claim.evidence, claim.hardware)
    known = catalog()
    if claim not in known:
        raise ValueError(f"claim: unknown claim id {claim!r}; known ids: {', '.join(known)}")
    _check_fields(verdict, reason, evidence, hardware)
    result = Verdict(claim, verdict, reason.strip(), evidence.strip(), chapter, hardware.strip())
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


def explain(chapter: str, *claim_ids: str) -> None:
    """Print the full reason of verdicts `chapter` recorded (all of them if no id is given)."""
    known = recorded(chapter)
    missing = [c for c in claim_ids if c not in known]
    if missing:
        raise ValueError(f"claim_ids: {', '.join(missing)} not recorded by {chapter} in this run; "
                         f"recorded: {', '.join(known) or 'none'}")
    for claim in claim_ids or list(known):
        print(known[claim].explained())


def verdict_files(root: Path | None = None) -> dict[str, Path]:
    """Chapter -> verdict file: the committed ones under `data/verdicts/`, replaced by those this
    run wrote to its results folder (nbval's scratch folder, the runner's staging folder), so a
    ledger executed after the chapters renders what they just recomputed."""
    folders = [(root or find_root()) / "data" / "verdicts", results_root() / "verdicts"]
    return {path.stem: path for folder in folders for path in sorted(folder.glob("*.json"))}


def load_verdicts(root: Path | None = None) -> list[Verdict]:
    """Every verdict of `verdict_files`, sorted by chapter then claim id."""
    found = []
    for _, path in sorted(verdict_files(root).items()):
        found += [Verdict(**entry) for entry in json.loads(path.read_text()).values()]
    return found
