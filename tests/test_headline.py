"""Headline numbers: rows kept by `where`, names formatted from them, means per name."""

from __future__ import annotations

import math

import pytest

from precisionlab.engine import headline, registry
from precisionlab.engine.headline import HeadlineError
from precisionlab.engine.registry import Headline
from precisionlab.provenance import find_root

RUNS = """task,precision,bits,scale,seed,accuracy,loss,diverged
digits,32-true,8,0.0,0,0.90,0.5,False
digits,32-true,8,0.0,1,0.80,0.7,False
digits,16-true,4,1.0,0,0.10,,True
digits,16-true,4,1.0,1,0.20,,True
mnist1d,32-true,8,10000.0,0,0.60,1.5,False
"""


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "runs.csv").write_text(RUNS)
    return tmp_path


def test_numbers_are_means_per_formatted_name_in_first_appearance_order(folder) -> None:
    assert headline.numbers([Headline("accuracy {task} {precision}", "runs.csv", "accuracy"),
                             Headline("mean accuracy", "runs.csv", "accuracy")], folder) == {
        "accuracy digits 32-true": pytest.approx(0.85),
        "accuracy digits 16-true": pytest.approx(0.15),
        "accuracy mnist1d 32-true": pytest.approx(0.6),
        "mean accuracy": pytest.approx(0.52)}


@pytest.mark.parametrize(("where", "expected"), [
    ((("precision", "32-true"),), {"digits": 0.85, "mnist1d": 0.6}),
    ((("bits", 8), ("task", "digits")), {"digits": 0.85}),  # YAML int, CSV int
    ((("bits", "4"),), {"digits": 0.15}),  # a string matches a number by value
    ((("scale", 0),), {"digits": 0.85}),  # YAML 0 matches CSV 0.0
    ((("scale", 1.0),), {"digits": 0.15}),
    ((("scale", "1e4"),), {"mnist1d": 0.6}),  # PyYAML reads 1e4 as the string '1e4'
    ((("diverged", True),), {"digits": 0.15}),  # YAML true matches CSV True
    ((("precision", "16-mixed"),), {}),  # nothing matches: no numbers
])
def test_where_keeps_the_rows_equal_as_numbers_or_as_text(folder, where, expected) -> None:
    got = headline.numbers([Headline("{task}", "runs.csv", "accuracy", where)], folder)
    assert got == pytest.approx(expected)


def test_nan_is_ignored_and_all_nan_gives_nan_and_booleans_average(folder) -> None:
    got = headline.numbers([Headline("loss {precision}", "runs.csv", "loss"),
                            Headline("loss {task}", "runs.csv", "loss"),
                            Headline("diverged share", "runs.csv", "diverged")], folder)
    assert got["loss 32-true"] == pytest.approx((0.5 + 0.7 + 1.5) / 3)
    assert math.isnan(got["loss 16-true"])
    assert got["loss digits"] == pytest.approx(0.6)
    assert got["diverged share"] == pytest.approx(0.4)


def test_a_missing_file_gives_no_numbers(folder) -> None:
    assert headline.numbers([Headline("x", "skipped.csv", "accuracy"),
                             Headline("y", "runs.csv", "accuracy",
                                      (("task", "mnist1d"),))], folder) == {"y": 0.6}


@pytest.mark.parametrize(("entry", "message"), [
    (Headline("x", "runs.csv", "acc"), r"runs\.csv: headline 'x': value column 'acc' is not in "
                                       r"the file; its columns: task, precision"),
    (Headline("x", "runs.csv", "accuracy", (("model", "mlp"),)),
     r"runs\.csv: headline 'x': where column 'model' is not in the file"),
    (Headline("x {model}", "runs.csv", "accuracy"),
     r"runs\.csv: headline 'x \{model\}': name placeholder column 'model' is not in the file"),
    (Headline("x", "runs.csv", "task"), r"runs\.csv: headline 'x': value column 'task' is not "
                                        r"numeric"),
    (Headline("x {task:.2f}", "runs.csv", "accuracy"), r"runs\.csv: headline 'x \{task:.2f\}': "
                                                       r"cannot format the name from a row"),
])
def test_a_declaration_that_does_not_fit_the_file_fails_naming_file_and_column(
        folder, entry, message) -> None:
    with pytest.raises(HeadlineError, match=message):
        headline.numbers([entry], folder)
    assert issubclass(HeadlineError, ValueError)


def test_two_entries_giving_the_same_name_fail(folder) -> None:
    with pytest.raises(HeadlineError, match=r"gives the name 'accuracy' that an earlier"):
        headline.numbers([Headline("accuracy", "runs.csv", "accuracy"),
                          Headline("accuracy", "runs.csv", "loss")], folder)


def test_every_declared_headline_gives_a_finite_number_on_the_published_results() -> None:
    """A typo in a `headline` of notebooks/chapters.yml fails here, not in a sweep."""
    root = find_root()
    declared = [c for c in registry.load(root).chapters if c.headline]
    assert len(declared) >= 8
    for chapter in declared:
        folder = root / "data" / chapter.name
        for entry in chapter.headline:
            assert (folder / entry.file).is_file(), f"{chapter.name}: {entry.file} not published"
            got = headline.numbers([entry], folder)
            assert any(math.isfinite(v) for v in got.values()), (chapter.name, entry, got)
        assert 2 <= len(headline.numbers(chapter.headline, folder)) <= 16, chapter.name
