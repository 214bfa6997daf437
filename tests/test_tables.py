"""Tables as readers see them: `precisionlab.study.tables.show` and the published chapters'
tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from precisionlab.study.tables import cell, header, show

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("value", "text"), [
    (0.97263, "0.973"), (1.0, "1"), (0.1, "0.100"), (12.3456, "12.3"), (999.4, "999"),
    (23905.578125, "23,906"), (2445.4, "2445"), (85002, "85,002"), (1024, "1024"),
    (np.int64(-12345), "-12,345"), (0.0012345, "0.00123"), (9.97e-4, "9.97e-4"),
    (-2.5e-8, "-2.50e-8"), (6.74e9, "6,740,000,000"), (float("inf"), "inf"),
    (float("-inf"), "-inf"), (np.float32(0.5), "0.500"), (0.0, "0"),
])
def test_numbers_get_three_significant_digits_whole_numbers_stay_whole(value, text) -> None:
    assert cell(value) == text


def test_booleans_missing_values_strings_and_percentages() -> None:
    assert [cell(True), cell(np.bool_(False)), cell(None), cell(np.nan), cell(pd.NA)] == [
        "yes", "no", "", "", ""]
    assert cell("[-0.3, +0.85] (n=3)") == "[-0.3, +0.85] (n=3)"
    assert [cell(0.6, percent=True), cell(0.00004, percent=True), cell(1, percent=True)] == [
        "60%", "0.00400%", "100%"]
    assert cell(0.12345, digits=2) == "0.12"
    with pytest.raises(ValueError, match="^digits: must be at least 1, got 0"):
        cell(1.5, digits=0)


def test_headers_are_words() -> None:
    assert header("bytes_per_token") == "bytes per token"
    assert header(("step_ratio", "mean")) == "step ratio mean"
    assert header(("acc", "")) == "acc"


def test_default_index_is_dropped_and_numbers_align_right() -> None:
    df = pd.DataFrame({"precision": ["32-true", "16-mixed"], "nan_runs": [0, 3],
                       "mean": [0.9726, 0.1], "finite": [True, False]}, index=[4, 9])
    table = show(df)
    assert table.frame is df
    assert list(table.text.columns) == ["precision", "nan runs", "mean", "finite"]
    assert table.text.values.tolist() == [["32-true", "0", "0.973", "yes"],
                                          ["16-mixed", "3", "0.100", "no"]]
    assert table.numeric == (False, True, True, False)
    html = table._repr_html_()
    assert "<th" not in html.split("<tbody>")[1], "no row headers: the index is not printed"
    assert "<td style=\"text-align: right; white-space: nowrap\">0.973</td>" in html
    assert repr(table).splitlines()[0].split() == ["precision", "nan", "runs", "mean", "finite"]
    assert table.to_markdown().splitlines()[:3] == [
        "| precision | nan runs | mean | finite |", "|---|---:|---:|---|",
        "| 32-true | 0 | 0.973 | yes |"]


def test_a_meaningful_index_becomes_columns_and_column_names_the_caption() -> None:
    long = pd.DataFrame({"format": ["fp32", "fp32", "bf16"], "n": [128, 256, 128],
                         "gflops": [21.04, 26.0, 1.25]})
    wide = long.pivot_table(index="n", columns="format", values="gflops", sort=False)
    wide.columns.name = "GFLOP/s"
    table = show(wide)
    assert list(table.text.columns) == ["n", "fp32", "bf16"]
    assert table.text.values.tolist() == [["128", "21.0", "1.25"], ["256", "26", ""]]
    assert table.caption == "GFLOP/s"
    assert "<caption>GFLOP/s</caption>" in table._repr_html_()
    labelled = show(pd.DataFrame({"v": [1.5]}, index=pd.Index(["a"], name="step_name")))
    assert list(labelled.text.columns) == ["step name", "v"]
    unnamed = show(pd.DataFrame({"v": [1.5]}, index=["32-true, lr"]))
    assert unnamed.text.values.tolist() == [["32-true, lr", "1.50"]]
    multi = show(long.set_index(["format", "n"]))
    assert list(multi.text.columns) == ["format", "n", "gflops"]


def test_labels_rename_and_html_is_escaped() -> None:
    df = pd.DataFrame({"acc": [0.5], "note": ["<b>x</b> & y"]})
    table = show(df, labels={"acc": "accuracy (%)"}, percent=["acc"])
    assert table.text.values.tolist() == [["50%", "<b>x</b> & y"]]
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in table._repr_html_()
    assert list(table.text.columns) == ["accuracy (%)", "note"]


def test_bad_arguments_are_named() -> None:
    df = pd.DataFrame({"acc": [0.5]})
    with pytest.raises(ValueError, match=r"^percent/labels: no column \['ac'\]"):
        show(df, percent=["ac"])
    with pytest.raises(TypeError, match="^df: expected a pandas DataFrame, got Series"):
        show(df["acc"])


def test_published_chapters_print_no_dataframe_index() -> None:
    """Every table a published chapter prints comes through `show`: no row headers (the
    DataFrame index) in any HTML table output."""
    offenders = []
    for path in sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb")):
        for cell_ in json.loads(path.read_text())["cells"]:
            for out in cell_.get("outputs", []):
                html = "".join(out.get("data", {}).get("text/html", ""))
                for body in re.findall(r"<tbody>(.*?)</tbody>", html, flags=re.S):
                    if "<th" in body:
                        offenders.append(f"{path.name} cell {cell_.get('id')}")
    assert not offenders, f"tables printed with their DataFrame index: {offenders}"


def test_grouped_rows_print_each_group_label_once_and_a_caption_can_be_given() -> None:
    df = pd.DataFrame({"model": ["MLP", "MLP", "MLP", "LM"], "mode": ["w", "w", "a", "w"],
                       "grid": ["sym", "asym", "sym", "sym"], "int8": ["0.1 ± 0.2"] * 4})
    table = show(df.set_index(["model", "mode", "grid"]), caption="Accuracy lost (pp)")
    assert table.text.values.tolist() == [["MLP", "w", "sym", "0.1 ± 0.2"],
                                          ["", "", "asym", "0.1 ± 0.2"],
                                          ["", "a", "sym", "0.1 ± 0.2"],
                                          ["LM", "w", "sym", "0.1 ± 0.2"]]
    assert "<caption>Accuracy lost (pp)</caption>" in table._repr_html_()


def test_columns_of_numbers_written_as_text_align_right_like_numbers() -> None:
    df = pd.DataFrame({"fmt": ["bf16", "fp16"], "ratio": ["1.38", "0.70x"],
                       "share": ["60 %", ""], "interval": ["+19 [-0.2, +39]", "1"]})
    assert show(df).numeric == (False, True, True, False)
