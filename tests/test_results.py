"""Results files: written whole or not at all, under the runner's staging folder if set."""

from __future__ import annotations

import pandas as pd
import pytest

from precisionlab.study import results


def test_save_table_goes_to_the_results_dir(results_dir):
    path = results.save_table(pd.DataFrame({"a": [1, 2]}), "01_x", "t")
    assert path == results_dir / "01_x" / "t.csv"
    assert path.read_text() == "a\n1\n2\n"
    assert path.stat().st_mode & 0o044 == 0o044  # readable by group and others


def test_a_failed_write_leaves_the_old_file_and_no_temporary(results_dir):
    path = results.save_table(pd.DataFrame({"a": [1]}), "01_x", "t")

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(TypeError):
        results.atomic_write_text(path, Boom())
    assert path.read_text() == "a\n1\n"
    assert [p.name for p in path.parent.iterdir()] == ["t.csv"]


def test_bad_table_name_is_rejected(results_dir):
    with pytest.raises(ValueError, match="^name: use letters"):
        results.save_table(pd.DataFrame(), "01_x", "../escape")
