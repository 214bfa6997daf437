"""Sweeps and the parallel book: tasks on a local pool (and on Ray, in test_sweep_ray.py)."""

from __future__ import annotations

import json
import shutil
import time

import nbformat
import pandas as pd
import pytest
from conftest import ROOT
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from precisionlab.engine import cli, runner, sweep
from precisionlab.validate import ParameterError

TINY = "90_tiny"
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def tiny_project(root) -> None:
    """A chapter whose parameters can make it fail always, fail once, or kill its worker once
    (the marker files say a first attempt happened), with a headline number and a verdict."""
    (root / "notebooks" / "chapters.yml").write_text(
        f"parts:\n  - caption: Tiny\n    chapters:\n      - name: {TINY}\n"
        "        claims: [FMT-1]\n"
        "        headline:\n          - {name: sum of i, file: table.csv, value: i}\n")
    params = new_code_cell("n = 3\nfail = False\nflaky = ''\nkill = ''\nthreads = 2\n"
                           "device = 'cpu'", metadata={"tags": ["parameters"]})
    check = new_code_cell("from precisionlab import validate as v\nv.integer('n', n, 1, 10)\n"
                          "v.integer('threads', threads, 1, 64)")
    work = new_code_cell(
        "import os, signal\nimport pandas as pd\nfrom precisionlab.study import claims, results\n"
        "if fail:\n    raise RuntimeError('boom')\n"
        "for marker in (flaky if n == 2 else '', kill if n == 3 else ''):\n"
        "    if marker and not os.path.exists(marker):\n"
        "        open(marker, 'w').close()\n"
        "        if marker == kill:\n            os.kill(os.getppid(), signal.SIGKILL)\n"
        "        raise RuntimeError('first attempt fails')\n"
        f"results.save_table(pd.DataFrame({{'i': [n * (n + 1) // 2]}}), '{TINY}', 'table')\n"
        f"claims.record('{TINY}', 'FMT-1', 'nuanced', f'n was {{n}}', 'tbl-x')\n")
    nb = new_notebook(cells=[new_markdown_cell("# Tiny"), params, check, work], metadata=KERNEL)
    nbformat.write(nb, root / "notebooks" / f"{TINY}.ipynb")


def quiet(_: str) -> None:
    pass


def test_grid_is_parsed_as_yaml_lists_and_expanded_in_order() -> None:
    grid = sweep.parse_grid(["n=[1, 2]", "lr=[1e-3, 1e-4]", "seeds=[[0], [1, 2]]"])
    assert grid == {"n": [1, 2], "lr": [1e-3, 1e-4], "seeds": [[0], [1, 2]]}
    pts = sweep.points(grid)
    assert len(pts) == 8 and pts[0] == {"n": 1, "lr": 1e-3, "seeds": [0]}
    assert pts[1] == {"n": 1, "lr": 1e-3, "seeds": [1, 2]}
    for bad, message in [("n", "NAME=VALUES"), ("n=3", "non-empty YAML list"),
                         ("n=[]", "non-empty YAML list"), ("=[1]", "NAME=VALUES"),
                         ("n=[1", "not a YAML list")]:
        with pytest.raises(ParameterError, match=message):
            sweep.parse_grid([bad])
    with pytest.raises(ParameterError, match="given twice"):
        sweep.parse_grid(["n=[1]", "n=[2]"])


def test_bad_input_fails_before_any_task(mini_project) -> None:
    tiny_project(mini_project)
    with pytest.raises(ParameterError, match="chapter: must be one of"):
        sweep.plan_sweep(mini_project, "99_none", {"n": [1]}, {})
    with pytest.raises(ParameterError, match="nope: not a parameter of 90_tiny"):
        sweep.plan_sweep(mini_project, TINY, {"nope": [1]}, {})
    with pytest.raises(ParameterError, match=r"90_tiny at n=99.*n: must be an integer from 1"):
        sweep.plan_sweep(mini_project, TINY, {"n": [2, 99]}, {})
    with pytest.raises(ParameterError, match="both swept"):
        sweep.plan_sweep(mini_project, TINY, {"n": [2]}, {"n": 3})
    assert not (mini_project / "book" / "_runs").exists()
    t0 = time.monotonic()
    with pytest.raises(ParameterError, match="no Ray cluster answers at 127.0.0.1:1"):
        sweep.make_pool(None, "127.0.0.1:1", mini_project)
    assert time.monotonic() - t0 < 15
    with pytest.raises(ParameterError, match="must be auto, HOST:PORT"):
        sweep.check_address("nowhere")
    code = cli.main(["sweep", TINY, "--grid", "n=[1, 11]"])
    assert code == 2


@pytest.mark.slow
def test_local_sweep_retries_resumes_and_reports_failures(mini_project, tmp_path) -> None:
    tiny_project(mini_project)
    said: list[str] = []
    grid = {"n": [2, 3], "fail": [False, True]}
    fixed = {"flaky": str(tmp_path / "flaky"), "kill": str(tmp_path / "kill")}
    planned = sweep.plan_sweep(mini_project, TINY, grid, fixed, threads=1)
    pool = sweep.LocalPool(2)
    try:
        failed = sweep.run_sweep(planned, pool, say=said.append)
    finally:
        pool.close()
    assert failed == [1, 3]
    # n=2 failed once, n=3 killed its worker once: both retried and done; the failing points
    # were retried once each
    assert sum("retrying" in s for s in said) == 2 + 2
    assert any("terminated abruptly" in s for s in said)  # the killed worker
    df = pd.read_csv(planned.table)
    assert list(df.point) == [0, 1, 2, 3]
    assert list(df.state) == ["executed", "failed", "executed", "failed"]
    assert list(df["sum of i"].iloc[[0, 2]]) == [3, 6]
    assert list(df["verdict FMT-1"].iloc[[0, 2]]) == ["nuanced", "nuanced"]
    assert "RuntimeError: boom" in df.error[1] and "cell In [" in df.error[1]
    assert set(df.threads.dropna()) == {1} and df.host.notna().iloc[0]
    for i in (0, 2):
        nb = json.loads((mini_project / df.notebook[i]).read_text())
        assert nb["metadata"]["precisionlab"]["parameters"]["threads"] == 1
    # A rerun executes only the failed points again: the done ones are up to date.
    said.clear()
    pool = sweep.LocalPool(2)
    try:
        failed = sweep.run_sweep(sweep.plan_sweep(mini_project, TINY, grid, fixed, threads=1),
                                 pool, say=said.append)
    finally:
        pool.close()
    assert failed == [1, 3]
    assert sum("up to date" in s for s in said) == 2
    assert sweep.plot(planned) == planned.table.with_suffix(".png")
    with pytest.raises(ParameterError, match="--plot: 'nope' is not a headline number"):
        sweep.plot(planned, "nope")


@pytest.mark.slow
def test_book_jobs_runs_a_chapter_after_the_ones_it_reads(mini_project) -> None:
    (mini_project / "notebooks" / "chapters.yml").write_text(
        "parts:\n  - caption: Two\n    chapters:\n      - name: 90_first\n"
        "      - name: 91_second\n        inputs: [data/90_first/table.csv]\n"
        "      - name: 92_third\n")
    params = "n = 3\nthreads = 1\ndevice = 'cpu'"
    for name, body in [
            ("90_first", "import time\ntime.sleep(2)\nresults.save_table("
                         "pd.DataFrame({'i': [n]}), '90_first', 'table')"),
            ("91_second", "i = int(pd.read_csv('../data/90_first/table.csv').i[0])\n"
                          "results.save_table(pd.DataFrame({'j': [i + 1]}), '91_second', 't')"),
            ("92_third", "results.save_table(pd.DataFrame({'k': [n]}), '92_third', 't')")]:
        nb = new_notebook(cells=[
            new_code_cell(params, metadata={"tags": ["parameters"]}),
            new_code_cell("import pandas as pd\nfrom precisionlab.study import results\n" + body)],
            metadata=KERNEL)
        nbformat.write(nb, mini_project / "notebooks" / f"{name}.ipynb")
    (mini_project / "notebooks" / "profiles.yml").write_text("{}\n")
    said: list[str] = []
    pool = sweep.LocalPool(3)
    try:
        failed = sweep.run_book(mini_project, ["90_first", "91_second", "92_third"], "cpu", pool,
                                say=said.append)
    finally:
        pool.close()
    assert failed == []
    assert pd.read_csv(mini_project / "data" / "91_second" / "t.csv").j[0] == 4
    order = [s.split(":")[0] for s in said]
    assert order.index("90_first") < order.index("91_second")
    assert order.index("92_third") < order.index("91_second")  # it did not wait
    for name in ("90_first", "91_second", "92_third"):
        key = runner.input_key(mini_project, name, "cpu", {})
        assert runner.stored_key(mini_project / "book" / f"{name}.ipynb") == key
    # Published the way `precisionlab book` does, and so current for it.
    code = cli.main(["status", "--check"])
    assert code == 0


@pytest.fixture
def book_copy(tmp_path, monkeypatch):
    """The project's templates, registry, library and lock, without its results."""
    root = tmp_path / "book_copy"
    for name in ("notebooks", "src/precisionlab"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("_toc.yml", "requirements.lock", "data/claims.csv"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    (root / "book").mkdir()
    monkeypatch.chdir(root)
    monkeypatch.delenv("PRECISIONLAB_RESULTS_DIR", raising=False)
    return root


TIMED = ("mp22_timings.csv",)  # what a chapter times differs from run to run


def run_files(root, chapter: str, key: str) -> dict[str, bytes]:
    _, folder = runner.destinations(root, chapter, key, False)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.csv")
            if p.name not in TIMED}


@pytest.mark.slow
def test_a_smoke_sweep_of_two_chapters_equals_their_runs_one_by_one(book_copy) -> None:
    grids = {"10_iterative_refinement": {"n": [32, 48]},
             "01_number_formats": {"train_steps": [20, 40]}}
    for chapter, grid in grids.items():
        planned = sweep.plan_sweep(book_copy, chapter, grid, {}, "smoke", threads=1)
        alone = {}
        for run in planned.runs:
            result = runner.execute(book_copy, chapter, "smoke", run, publish=False,
                                    progress=False)
            key = runner.stored_key(result.notebook)
            alone[key] = run_files(book_copy, chapter, key)
            shutil.rmtree(runner.destinations(book_copy, chapter, key, False)[1])
            result.notebook.unlink()
        pool = sweep.LocalPool(2)
        try:
            assert sweep.run_sweep(planned, pool, say=quiet) == []
        finally:
            pool.close()
        for task in planned.tasks:
            files = run_files(book_copy, chapter, task.key)
            assert files.keys() == alone[task.key].keys() and len(files) >= 2
            for name, data in files.items():
                assert data == alone[task.key][name], f"{chapter} {name} differs"
        df = pd.read_csv(planned.table)
        assert list(df.state) == ["executed", "executed"]
        numbers = [c for c in df.columns if c not in sweep.TABLE_FIELDS
                   and not c.startswith("verdict ") and c not in grid]
        assert numbers and df[numbers].notna().all().all()
        assert any(c.startswith("verdict ") for c in df.columns)
        assert sweep.plot(planned).is_file()
