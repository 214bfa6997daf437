"""Verdicts: validated, printed as one robust line (word and evidence), stored for the ledger."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from precisionlab.study import claims

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_CLAIMS = SHARED / "claims.md"
# The study's list is both files: the first reading's claims and the second reading's.
STUDY_LISTS = (SHARED_CLAIMS, SHARED / "claims-more.md")


def test_record_prints_one_line_and_merges_by_claim(results_dir, capsys):
    claims.record("01_x", "FMT-1", "refuted", "bf16 exists", "tbl-formats")
    claims.record("01_x", "FMT-2", "supported", "first", "fig-a")
    again = claims.record("01_x", "FMT-2", "nuanced", "second", "fig-b")
    out = capsys.readouterr().out.splitlines()
    # the checked line holds no reason: its numbers are measured and differ between machines
    assert out[0] == "FMT-1: refuted [evidence: tbl-formats]"
    assert out[-1] == again.line()
    stored = json.loads((results_dir / "verdicts" / "01_x.json").read_text())
    assert list(stored) == ["FMT-1", "FMT-2"]
    assert stored["FMT-2"] == {"claim": "FMT-2", "verdict": "nuanced", "reason": "second",
                               "evidence": "fig-b", "chapter": "01_x", "hardware": ""}
    assert claims.recorded("01_x") == {"FMT-1": claims.Verdict("FMT-1", "refuted", "bf16 exists",
                                                               "tbl-formats", "01_x"),
                                       "FMT-2": again}
    assert claims.recorded("02_none") == {}


def test_explain_prints_the_reasons_and_a_hardware_verdict_names_its_machine(results_dir, capsys):
    claims.record("08_x", "MP-7", "nuanced", "1.2x at best", "fig-step", hardware="AMD EPYC, AVX2")
    claims.record("08_x", "MP-6", "supported", "matches", "tbl-final")
    assert capsys.readouterr().out.splitlines()[0] == "MP-7: nuanced [evidence: fig-step]"
    claims.explain("08_x", "MP-7")
    assert capsys.readouterr().out == ("MP-7: nuanced - 1.2x at best [evidence: fig-step] "
                                       "(hardware-dependent: measured on AMD EPYC, AVX2)\n")
    claims.explain("08_x")
    assert len(capsys.readouterr().out.splitlines()) == 2
    with pytest.raises(ValueError, match=r"^claim_ids: MP-1 not recorded by 08_x"):
        claims.explain("08_x", "MP-1")
    with pytest.raises(ValueError, match=r"^hardware: "):
        claims.record("08_x", "MP-7", "nuanced", "r", "e", hardware="two\nlines")


def test_verdicts_of_this_run_replace_the_committed_ones_chapter_by_chapter(tmp_path, monkeypatch):
    root = tmp_path / "project"
    committed = root / "data" / "verdicts"
    committed.mkdir(parents=True)
    scratch = tmp_path / "scratch"
    monkeypatch.setenv("PRECISIONLAB_RESULTS_DIR", str(scratch))

    def entry(claim, verdict, chapter):
        return {claim: {"claim": claim, "verdict": verdict, "reason": "r", "evidence": "e",
                        "chapter": chapter}}  # files written before `hardware` existed load too

    (committed / "01_a.json").write_text(json.dumps(entry("FMT-1", "refuted", "01_a")))
    (committed / "02_b.json").write_text(json.dumps(entry("MP-6", "supported", "02_b")))
    (scratch / "verdicts").mkdir(parents=True)
    (scratch / "verdicts" / "02_b.json").write_text(json.dumps(entry("MP-6", "refuted", "02_b")))
    found = {v.claim: v.verdict for v in claims.load_verdicts(root)}
    assert found == {"FMT-1": "refuted", "MP-6": "refuted"}  # 02 recomputed, 01 as committed


@pytest.mark.parametrize("args, message", [
    (("XX-9", "refuted", "r", "e"), r"^claim: unknown claim id 'XX-9'; known ids: MP-1, "),
    (("FMT-1", "true", "r", "e"), r"^verdict: must be one of supported, refuted, nuanced, not "),
    (("FMT-1", "refuted", "", "e"), r"^reason: "),
    (("FMT-1", "refuted", "two\nlines", "e"), r"^reason: "),
    (("FMT-1", "refuted", "r", " "), r"^evidence: "),
])
def test_record_rejects_bad_input_and_writes_nothing(results_dir, args, message):
    with pytest.raises(ValueError, match=message):
        claims.record("01_x", *args)
    assert not (results_dir / "verdicts").exists()


@pytest.mark.skipif(not all(p.exists() for p in STUDY_LISTS),
                    reason="no ../shared/claims.md and claims-more.md beside the project")
def test_catalog_has_every_claim_id_of_the_study_with_its_seeds():
    rows = [re.findall(r"^\| ([A-Z]+-\d+) \| ([^|]+) \|", p.read_text(), flags=re.M)
            for p in STUDY_LISTS]
    listed = {claim: seeds.strip() for found in rows for claim, seeds in found}
    assert all(rows) and sum(map(len, rows)) == len(listed)  # no id in both lists
    catalog = claims.catalog()
    assert set(listed) == set(catalog)
    assert {c: row["seeds"] for c, row in catalog.items()} == listed


def test_catalog_rejects_a_row_with_an_unquoted_comma(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "claims.csv").write_text("id,seeds,claim\nMP-1,000,one, two\n")
    with pytest.raises(ValueError, match=r"^data/claims.csv: row MP-1 has 4 fields; quote"):
        claims.catalog(tmp_path)


def test_sig2_keeps_two_significant_digits_without_exponents() -> None:
    from precisionlab.study.claims import sig2

    assert [sig2(x) for x in (0.012345, 1234.0, 0.5, 3.0, 2.5e-8, 0.996)] == [
        "0.012", "1200", "0.5", "3", "2.5e-08", "1"]


def test_span_reads_a_range_once_when_its_ends_read_alike() -> None:
    assert claims.span([1.01, 1.02]) == "1" and claims.span([2, 1]) == "1-2"
    assert claims.span(iter([1.155, 1.4]), lambda x: f"{x:.3g}") == "1.16-1.4"
    assert claims.span([3, 3, 3], lambda n: str(int(n))) == "3"


def test_a_finding_is_checked_when_made_and_recorded_whole(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRECISIONLAB_RESULTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="verdict: must be one of"):
        claims.Finding("MP-1", "probably", "a reason", "tbl-x")
    with pytest.raises(ValueError, match="reason: give a non-empty one-line reason"):
        claims.Finding("MP-1", "refuted", "two\nlines", "tbl-x")
    found = claims.Finding("MP-1", "refuted", "no integer casts", "tbl-casts")
    verdict = claims.record("02_test", found)
    assert (verdict.claim, verdict.verdict, verdict.evidence) == ("MP-1", "refuted", "tbl-casts")
    assert capsys.readouterr().out.strip() == "MP-1: refuted [evidence: tbl-casts]"
