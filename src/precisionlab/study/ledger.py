"""The claims ledger: every seed claim with the one verdict its chapter computed for it.

Chapter 16 renders it from the verdict files of the chapters before it and `data/claims.csv`
(never typed). The registry (`notebooks/chapters.yml`) says which chapter owns each claim; the
ledger fails loudly when a claim has no verdict, more than one, or one from another chapter.
Claims no chapter tests yet are listed apart as untested. A hardware-dependent verdict keeps the
machine it was measured on beside it. The verdict board (a figure), the counts and the
findings (a few claims' verdicts in a sentence each) summarise it for the front page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from precisionlab.study.claims import VERDICTS, Verdict, verdict_files
from precisionlab.study.plotting import PALETTE, figure
from precisionlab.study.tables import markdown_cell, show

if TYPE_CHECKING:  # the registry is the engine's: the ledger is handed one, never loads it
    from precisionlab.engine.registry import Registry

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
                         f"{'; '.join(foreign)}; rerun that chapter or fix the owner in "
                         "notebooks/chapters.yml")
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


def _evidence(row: object) -> str:
    """MyST links to the chapter of a ledger row and to the label of its evidence."""
    chapter = f"{{doc}}`{int(row.chapter[:2])} <{row.chapter}>`"
    return f"ch. {chapter}: {{ref}}`{row.evidence} <{row.evidence}>`"


def markdown(table: pd.DataFrame) -> str:
    """The ledger as a MyST Markdown table, linking each verdict to its chapter and evidence."""
    lines = ["| claim | the claim (our paraphrase; seed articles) | verdict | why (computed) | "
             "evidence |", "|---|---|---|---|---|"]
    for row in table.itertuples():
        measured = (f"<br>(hardware-dependent: measured on {markdown_cell(row.hardware)})"
                    if row.hardware else "")
        lines.append(f"| **{row.claim}** | {markdown_cell(row.paraphrase)} ({row.seeds}) | "
                     f"**{row.verdict}**{measured} | {markdown_cell(row.reason)} | "
                     f"{_evidence(row)} |")
    return "\n".join(lines)


def table_markdown(df: pd.DataFrame, percent: Sequence[str] = ()) -> str:
    """A table as readers see it, in Markdown: `tables.show`'s cells (headers, no index, yes/no,
    blanks for missing values) with fractional numbers to 2 significant digits."""
    return show(df, percent=percent, digits=2).to_markdown()


def markdown_untested(table: pd.DataFrame) -> str:
    """The untested claims as a Markdown table: id, paraphrase, seed articles."""
    lines = ["| claim | the claim (our paraphrase) | seed articles |", "|---|---|---|"]
    lines += [f"| **{r.claim}** | {markdown_cell(r.paraphrase)} | {r.seeds} |"
              for r in table.itertuples()]
    return "\n".join(lines)


# Verdict -> (fill, text colour, mark): Okabe-Ito colours (precisionlab.study.plotting) that stay
# apart under the common colour-vision deficiencies, and a mark that does not need colour.
VERDICT_STYLE = {"supported": (PALETTE[0], "white", "\u2713"),
                 "refuted": (PALETTE[3], "white", "\u2717"),
                 "nuanced": (PALETTE[6], "black", "~"),
                 "not testable here": ("#BBBBBB", "black", "?")}
FAMILIES = ("FMT", "MP", "LS", "GA", "Q", "LLM", "CIT")  # book order of the id prefixes
HARDWARE_HATCH = "///"


def family(claim: str) -> str:
    """The family of a claim id: its prefix ('MP' for 'MP-6')."""
    return claim.rsplit("-", 1)[0]


def _number(claim: str) -> int:
    tail = claim.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _check_words(table: pd.DataFrame) -> None:
    unknown = sorted(set(table.verdict) - set(VERDICTS))
    if unknown:
        raise ValueError(f"table: verdict words {', '.join(map(repr, unknown))} are not among "
                         f"{', '.join(VERDICTS)}")


def verdict_board(table: pd.DataFrame, columns: int = 7) -> Figure:
    """One cell per claim of a ledger table, coloured by verdict, a row per family (id prefix,
    wrapped at `columns` cells), each cell naming the claim and its seed articles; verdicts
    that depend on the machine that measured them are hatched and outlined. Opaque white, for
    dark pages too."""
    _check_words(table)
    if table.empty:
        raise ValueError("table: no verdict to draw")
    names = [f for f in FAMILIES if f in set(table.claim.map(family))]
    names += [f for f in dict.fromkeys(table.claim.map(family)) if f not in names]
    rows: list[list] = []  # the ledger rows of each line of cells
    ticks: dict[str, float] = {}  # family -> the middle of its lines
    for name in names:
        members = sorted((r for r in table.itertuples() if family(r.claim) == name),
                         key=lambda r: _number(r.claim))
        lines = [members[start:start + columns] for start in range(0, len(members), columns)]
        ticks[name] = -(len(rows) + (len(lines) - 1) / 2)
        rows += lines
    fig, ax = figure(width=max(5.5, 0.75 + 0.8 * columns), height=1.4 + 0.6 * len(rows))
    fig.patch.set_facecolor("white")
    fig.patch.set_alpha(1.0)
    ax.set_facecolor("white")
    for y, members in enumerate(rows):
        for x, row in enumerate(members):
            fill, ink, mark = VERDICT_STYLE[row.verdict]
            ax.add_patch(Rectangle((x + 0.04, -y - 0.42), 0.92, 0.84, facecolor=fill,
                                   edgecolor="black", linewidth=2.2 if row.hardware else 0.6,
                                   hatch=HARDWARE_HATCH if row.hardware else None))
            box = {"facecolor": fill, "edgecolor": "none", "pad": 1.5} if row.hardware else None
            ax.text(x + 0.5, -y + 0.14, f"{mark} {row.claim}", ha="center", va="center",
                    color=ink, fontsize=9, fontweight="bold", bbox=box)
            ax.text(x + 0.5, -y - 0.2, str(row.seeds), ha="center", va="center", color=ink,
                    fontsize=7 if len(str(row.seeds)) <= 10 else 6, bbox=box)
    ax.set_xlim(-0.02, columns + 0.02)  # room for the heavy outline of an edge cell
    ax.set_ylim(-len(rows) + 0.48, 0.52)
    ax.set_yticks(list(ticks.values()), list(ticks))
    ax.set_xticks([])
    ax.grid(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    ax.set_ylabel("claim family (id prefix)")
    ax.set_xlabel("claims in id order; each cell: claim id and seed articles")
    tally = counts(table)
    handles = [Patch(facecolor=VERDICT_STYLE[w][0], edgecolor="black", linewidth=0.6,
                     label=f"{VERDICT_STYLE[w][2]} {w} ({_count(row)})")
               for w, row in tally.iterrows()]
    handles.append(Patch(facecolor="white", edgecolor="black", linewidth=2.2,
                         hatch=HARDWARE_HATCH, label="hardware-dependent "
                                                     f"({int(tally['hardware-dependent'].sum())})"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02 - 0.25 / len(rows)),
              ncol=2, fontsize=8.5, frameon=False)
    ax.set_title(f"Verdicts on the {len(table)} claims, by family", loc="left")
    fig.tight_layout()
    return fig


def counts(table: pd.DataFrame) -> pd.DataFrame:
    """The study's one count: per verdict word (all four, in `claims.VERDICTS` order), how many
    claims have it, how many of those depend on the machine that measured them
    (`hardware-dependent`) and how many read the same on any machine (`on any machine`). The
    board, the counts sentence, the front page and the checked line all print from it."""
    _check_words(table)
    words = pd.Categorical(table.verdict, categories=list(VERDICTS))
    claims = pd.Series(words).value_counts(sort=False)
    hardware = pd.Series(words[table.hardware.ne("").to_numpy()]).value_counts(sort=False)
    out = pd.DataFrame({"claims": claims.to_numpy(), "hardware-dependent": hardware.to_numpy()},
                       index=pd.Index(list(VERDICTS), name="verdict"))
    out["on any machine"] = out.claims - out["hardware-dependent"]
    return out.astype(int)


def _count(row: pd.Series) -> str:
    """'28, 2 of them hardware-dependent' or '26': one word's count, as every page prints it."""
    machine = int(row["hardware-dependent"])
    return f"{int(row.claims)}" + (f", {machine} of them hardware-dependent" if machine else "")


def checked_counts(table: pd.DataFrame) -> str:
    """The counts as a checked cell may print them (the same on any machine): each word's
    claims whose verdict does not depend on the machine, then the hardware-dependent total;
    from `counts`, so they add up to the board's."""
    tally = counts(table)
    words = ", ".join(f"{w} {int(n)}" for w, n in tally["on any machine"].items())
    return (f"verdict words on any machine: {words}; hardware-dependent: "
            f"{int(tally['hardware-dependent'].sum())} (each word's count on the board = its "
            "count here + its hardware-dependent ones)")


def counts_sentence(table: pd.DataFrame) -> str:
    """The counts as one sentence: claims, chapters and each verdict word with its number (and
    how many of those depend on the machine)."""
    tally = counts(table)
    words = [f"{int(row.claims)} {w}" + (f" ({int(row['hardware-dependent'])} of them "
                                         "hardware-dependent)" if row["hardware-dependent"] else "")
             for w, row in tally.iterrows()]
    chapters = table.chapter.nunique()
    text = (f"{len(table)} claims, each with one verdict from the {chapters} chapter"
            f"{'s' if chapters != 1 else ''} that tested them: {', '.join(words[:-1])} and "
            f"{words[-1]}.")
    machine = int(tally["hardware-dependent"].sum())
    if machine:
        verb = "depends" if machine == 1 else "depend"
        text += (f" {machine} of these verdicts {verb} on the machine that measured them (a "
                 "speed, or the numerics of its 16-bit kernels) and may read otherwise on other "
                 "hardware.")
    return text


def first_clause(reason: str) -> str:
    """The first clause of a verdict's reason: the text up to its first '; ' outside brackets.
    Rules put the clause that carries the verdict first (`claims.Finding`), the measurements
    after it, so this is what the findings quote."""
    depth = 0
    for i, char in enumerate(reason):
        depth += char in "([{"
        depth -= char in ")]}"
        if depth == 0 and reason.startswith("; ", i):
            return reason[:i]
    return reason


def findings(table: pd.DataFrame, featured: Sequence[str]) -> str:
    """The `featured` claims' verdicts as a MyST Markdown list, a sentence each: our paraphrase,
    the verdict word (with the machine if it depends on one), the first clause of the reason
    with its numbers, and links to the chapter and the evidence."""
    by_claim = {row.claim: row for row in table.itertuples()}
    missing = [c for c in featured if c not in by_claim]
    if missing:
        raise ValueError(f"featured: {', '.join(missing)} have no verdict in the ledger; "
                         f"choose among {', '.join(by_claim) or 'none'}")
    lines = []
    for claim in featured:
        row = by_claim[claim]
        machine = (f" (hardware-dependent: measured on {row.hardware.split('; ')[0]})"
                   if row.hardware else "")
        paraphrase = markdown_cell(row.paraphrase).rstrip(".")
        seeds = row.seeds.strip("() ") or "none"
        measured = markdown_cell(first_clause(row.reason)).rstrip(".")
        lines.append(f"- *{paraphrase}* ({row.claim}; seed articles: {seeds}): "
                     f"**{row.verdict}**{machine} \N{EM DASH} {measured}. "
                     f"Evidence: {_evidence(row)}.")
    return "\n".join(lines)
