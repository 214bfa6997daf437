"""Verdict rules of the claims ledger: CIT-1 and CIT-2.

CIT-1 (seeds 001, 004): the papers the articles cite say what the articles say they say. Tested
on two tables: `data/citations.csv`, each reading-list entry as the article gives it (title,
the organisation named as source, arXiv id), and `data/arxiv_lookup.csv`, what each cited id's
arXiv abstract page holds (title, authors, affiliations), with the page and the date it was read.
The lookup was typed from those pages; the book cannot reach arXiv, so it is data with its
source, not something recomputed.

CIT-2 (seeds 001, 002, 004): their tool and resource attributions (what NVIDIA Ampere is, where
Keras mixed precision lives, whose course D2L is, who started ONNX, what GPT stands for).
Tested on `data/attributions.csv`: each attribution as stated, what the tool's own documentation
says, that page and the date it was read (typed by hand, like the arXiv lookup).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from precisionlab.study.claims import Finding

MIN_OVERLAP = 0.6  # share of the cited title's words the real title must carry to be "the same"
CITED = ("cited title", "cited source", "arXiv id")
LOOKUP = ("arXiv id", "title", "affiliations", "source", "checked_on")


def read(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(citations, lookup) from `data/`, ids kept as text (1710.03740 is not a number)."""
    def load(name: str) -> pd.DataFrame:
        return pd.read_csv(root / "data" / name, dtype=str, keep_default_na=False)

    return load("citations.csv"), load("arxiv_lookup.csv")


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def check(citations: pd.DataFrame, lookup: pd.DataFrame,
          min_overlap: float = MIN_OVERLAP) -> pd.DataFrame:
    """Each citation with `identifiable` (it gives an arXiv id), `title_overlap` (share of the
    cited title's words in the title at that id), `source_named` (the cited organisation is
    among the paper's affiliations) and `correct` (identifiable, overlap >= `min_overlap`, and
    source named). An id missing from the lookup is an error: look it up first."""
    for name, table, needed in (("citations", citations, CITED), ("lookup", lookup, LOOKUP)):
        if not set(needed) <= set(table.columns):
            raise ValueError(f"{name}: need columns {list(needed)}; got {list(table.columns)}")
    ids = citations["arXiv id"].fillna("").astype(str).str.strip()
    unknown = sorted(set(ids[ids != ""]) - set(lookup["arXiv id"]))
    if unknown:
        raise ValueError(f"lookup: no row for arXiv id {', '.join(unknown)}; add what its abstract "
                         "page holds, with source and checked_on, to data/arxiv_lookup.csv")
    found = lookup.set_index("arXiv id")[["title", "affiliations"]].fillna("")
    out = citations.assign(identifiable=ids != "").join(found, on="arXiv id")
    out[["title", "affiliations"]] = out[["title", "affiliations"]].fillna("")
    out["title_overlap"] = [len(_words(cited) & _words(real)) / max(len(_words(cited)), 1)
                            for cited, real in zip(out["cited title"], out["title"], strict=True)]
    out["source_named"] = [bool(src.strip()) and src.strip().lower() in aff.lower()
                           for src, aff in zip(out["cited source"].fillna(""), out["affiliations"],
                                               strict=True)]
    out["correct"] = out.identifiable & (out.title_overlap >= min_overlap) & out.source_named
    return out


def cit1(checked: pd.DataFrame, evidence: str = "tbl-citations") -> Finding:
    """CIT-1 from `check`'s table.

    not testable here: no entry gives an arXiv id; supported: every entry with an id holds the
    cited paper from the cited source; refuted: none does; nuanced: some do. The reason also
    counts the entries that give no id or authors, which nobody can check."""
    n, n_id, n_ok = len(checked), int(checked.identifiable.sum()), int(checked.correct.sum())
    unchecked = f"{n - n_id} of {n} entries give no id or authors at all"
    if n_id == 0:
        return Finding("CIT-1", "not testable here",
                       f"no entry gives an arXiv id to look up; {unchecked}", evidence)
    verdict = "supported" if n_ok == n_id else "refuted" if n_ok == 0 else "nuanced"
    return Finding("CIT-1", verdict, f"{n_ok} of {n_id} arXiv ids hold the cited paper from the "
                   f"cited source; {unchecked}", evidence)


# CIT-2: the tool and resource attributions of seeds 001, 002 and 004.
ATTRIBUTIONS = ("seed", "subject", "attribute", "as stated", "documented", "source", "checked_on")


def read_attributions(root: Path) -> pd.DataFrame:
    """`data/attributions.csv`: each attribution as the article states it, what the tool's own
    documentation says (`documented`), that page (`source`) and the date it was read."""
    return pd.read_csv(root / "data" / "attributions.csv", dtype=str, keep_default_na=False)


def _names(text: str) -> set[str]:
    """The names in a ';'-separated field, compared without case, spaces or punctuation."""
    return {" ".join(sorted(_words(part))) for part in text.split(";") if _words(part)}


def check_attributions(table: pd.DataFrame) -> pd.DataFrame:
    """Each attribution with `match`: 'correct' when the stated names are the documented ones,
    'incomplete' when they are some but not all of them (ONNX has two founders, the article
    names one), 'wrong' otherwise. A row without a source or date is an error."""
    if not set(ATTRIBUTIONS) <= set(table.columns):
        raise ValueError(f"attributions: need columns {list(ATTRIBUTIONS)}; "
                         f"got {list(table.columns)}")
    blank = (table.source.str.strip() == "") | (table.checked_on.str.strip() == "")
    unsourced = table.subject[blank]
    if len(unsourced):
        raise ValueError(f"attributions: {', '.join(unsourced)} need a source page and the date "
                         "it was read (columns source, checked_on)")
    def match(stated: str, documented: str) -> str:
        said, true = _names(stated), _names(documented)
        return "correct" if said == true else "incomplete" if said and said < true else "wrong"
    return table.assign(match=[match(s, d) for s, d in
                               zip(table["as stated"], table["documented"], strict=True)])


def cit2(checked: pd.DataFrame, evidence: str = "tbl-attributions") -> Finding:
    """CIT-2 from `check_attributions`'s table: supported if every attribution is correct,
    refuted if none is (an incomplete one does not hold as stated), nuanced otherwise; the
    reason names the incomplete ones."""
    n = len(checked)
    if n == 0:
        return Finding("CIT-2", "not testable here", "no attribution to check", evidence)
    ok = int((checked.match == "correct").sum())
    partial = list(checked.subject[checked.match == "incomplete"])
    verdict = "supported" if ok == n else "refuted" if ok == 0 else "nuanced"
    half = f"; incomplete: {', '.join(partial)}" if partial else ""
    return Finding("CIT-2", verdict, f"{ok} of {n} attributions match the tool's own "
                   f"documentation{half}", evidence)
