"""The book runner: content-hash cache, atomic writes, provenance, clear parameter errors."""

from __future__ import annotations

import hashlib
import json
import os

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from precisionlab import validate
from precisionlab.engine import cli, runner
from precisionlab.validate import ParameterError

CHAPTER = "90_tiny"


def register(root, inputs: str = "[]") -> None:
    (root / "notebooks" / "chapters.yml").write_text(
        f"parts:\n  - caption: Tiny\n    chapters:\n      - name: {CHAPTER}\n"
        f"        claims: [FMT-1]\n        inputs: {inputs}\n")


def write_template(root, extra: str = "") -> None:
    register(root)
    params = new_code_cell("n = 3\nfail = False\ndevice = 'cpu'\nthreads = 1",
                           metadata={"tags": ["parameters"]})
    check = new_code_cell("from precisionlab import validate as v\nv.integer('n', n, 1, 10)")
    work = new_code_cell(
        "import pandas as pd\nfrom precisionlab.study import claims, results\n"
        "if fail:\n    raise RuntimeError('boom')\n"
        f"results.save_table(pd.DataFrame({{'i': list(range(n))}}), '{CHAPTER}', 'table')\n"
        f"claims.record('{CHAPTER}', 'FMT-1', 'nuanced', f'n was {{n}}', 'tbl-x')\n" + extra)
    nb = new_notebook(cells=[new_markdown_cell("# Tiny"), params, check, work], metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, root / "notebooks" / f"{CHAPTER}.ipynb")


def snapshot(root) -> dict[str, bytes]:
    files = [p for d in ("book", "data") for p in (root / d).rglob("*") if p.is_file()]
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


@pytest.mark.slow
def test_execute_stamps_provenance_and_caches_by_content(mini_project):
    root = mini_project
    write_template(root)
    first = runner.execute(root, CHAPTER, progress=False)
    assert first.status == "executed"
    nb = json.loads((root / "book" / f"{CHAPTER}.ipynb").read_text())
    meta = nb["metadata"]["precisionlab"]
    assert meta["parameters"] == {"n": 3, "fail": False, "device": "cpu", "threads": 1}
    assert meta["input_key"] == runner.input_key(root, CHAPTER, "cpu", {})
    assert meta["machine"]["torch"].startswith("2.13.0")
    assert {"avx512_bf16", "avx512_fp16", "amx_tile", "avx512_vnni"} <= set(meta["machine"]["isa"])
    assert "".join(nb["cells"][-1]["source"]).startswith("## Provenance")
    assert "`precisionlab.validate`" in "".join(nb["cells"][-1]["source"])
    assert {"src/precisionlab/__init__.py", "src/precisionlab/validate.py",
            "src/precisionlab/study/claims.py"} <= set(meta["modules"])
    assert "src/precisionlab/quant/ptq.py" not in meta["modules"]
    params_cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    assert "remove-cell" in params_cell["metadata"]["tags"]
    assert (root / "data" / CHAPTER / "table.csv").read_text().splitlines() == ["i", "0", "1", "2"]
    stamped = json.loads((root / "data" / CHAPTER / "provenance.json").read_text())
    assert stamped["chapter"] == CHAPTER
    verdicts = json.loads((root / "data" / "verdicts" / f"{CHAPTER}.json").read_text())
    assert verdicts["FMT-1"]["reason"] == "n was 3"

    before = snapshot(root)
    template = root / "notebooks" / f"{CHAPTER}.ipynb"
    os.utime(template, (1, 1))  # a new file time alone is not a change
    assert runner.execute(root, CHAPTER, progress=False).status == "up to date"
    assert snapshot(root) == before

    def edit(module: str, code: str) -> None:
        path = root / "src" / "precisionlab" / module
        path.write_text(path.read_text() + code)

    edit("quant/ptq.py", "\nEDITED = 1\n")  # a module the chapter does not import
    assert runner.execute(root, CHAPTER, progress=False).status == "up to date"
    edit("validate.py", '\n# a comment\n\n\ndef later():\n    """A docstring."""\n')
    assert runner.execute(root, CHAPTER, progress=False).status == "executed"  # a new function
    validate = root / "src" / "precisionlab" / "validate.py"
    validate.write_text(validate.read_text().replace("# a comment", "# another comment")
                        .replace("A docstring.", "A docstring,\n    re-wrapped."))
    assert runner.execute(root, CHAPTER, progress=False).status == "up to date"  # same meaning
    assert snapshot(root) != before


@pytest.mark.slow
def test_failed_cell_is_named_and_leaves_previous_results(mini_project):
    root = mini_project
    write_template(root)
    runner.execute(root, CHAPTER, progress=False)
    before = snapshot(root)
    with pytest.raises(runner.ChapterFailed, match=r"cell In \[4\] .*RuntimeError: boom"):
        runner.execute(root, CHAPTER, overrides={"fail": True}, progress=False)
    assert snapshot(root) == before
    assert not list((root / "_build" / "staging").iterdir())
    assert (root / "_build" / "failed" / f"{CHAPTER}.ipynb").exists()


@pytest.mark.slow
def test_bad_value_fails_in_the_validation_cell(mini_project):
    root = mini_project
    write_template(root, extra="raise AssertionError('compute must not run')")
    with pytest.raises(runner.ChapterFailed,
                       match=r"cell In \[3\] .*n: must be an integer from 1 to 10"):
        runner.execute(root, CHAPTER, overrides={"n": 99}, progress=False)
    assert not (root / "book" / f"{CHAPTER}.ipynb").exists()
    assert not (root / "data" / CHAPTER).exists()


def test_unknown_parameter_or_profile_or_chapter_fails_before_any_kernel(mini_project):
    root = mini_project
    write_template(root)
    with pytest.raises(ParameterError, match=r"^m: not a parameter of 90_tiny; .*n, fail"):
        runner.execute(root, CHAPTER, overrides={"m": 1})
    with pytest.raises(ParameterError, match=r"^profile: must be one of 'cpu', 'smoke', 'gpu'"):
        runner.execute(root, CHAPTER, profile="tpu")
    with pytest.raises(ParameterError, match=r"^chapter: must be one of '90_tiny'"):
        runner.execute(root, "91_missing")


def test_a_template_outside_the_registry_is_an_error_saying_how_to_register_it(mini_project):
    root = mini_project
    write_template(root)
    (root / "notebooks" / "91_new.ipynb").write_bytes(
        (root / "notebooks" / f"{CHAPTER}.ipynb").read_bytes())
    with pytest.raises(ParameterError, match=r"^chapter: '91_new' is not in notebooks/chapters"):
        runner.chapter_names(root)
    assert cli.main(["status"]) == 2


def test_toc_is_written_from_the_registry_and_checked(mini_project, capsys):
    root = mini_project
    write_template(root)
    assert cli.main(["toc", "--check"]) == 1
    assert "run `precisionlab toc`" in capsys.readouterr().err
    assert cli.main(["toc"]) == 0
    assert "      - file: book/90_tiny\n" in (root / "_toc.yml").read_text()
    assert cli.main(["toc", "--check"]) == 0


@pytest.mark.slow
def test_profiles_and_reruns_go_beside_the_published_chapter(mini_project):
    root = mini_project
    write_template(root)
    runner.execute(root, CHAPTER, progress=False)
    before = snapshot(root)
    injected, effective = runner.plan(root, CHAPTER, "smoke")
    assert injected == {"n": 2} and effective["n"] == 2
    rerun = runner.execute(root, CHAPTER, overrides={"n": 5}, publish=False, progress=False)
    assert rerun.notebook.parent == root / "book" / "_runs"
    run_data = root / "data" / "_runs" / rerun.notebook.stem
    assert (run_data / CHAPTER / "table.csv").read_text().count("\n") == 6
    assert json.loads((run_data / "verdicts" / f"{CHAPTER}.json").read_text())["FMT-1"]["reason"] \
        == "n was 5"
    after = {k: v for k, v in snapshot(root).items() if "/_runs/" not in k}
    assert after == before


@pytest.mark.slow
def test_interrupted_run_leaves_nothing_half_written(mini_project, monkeypatch):
    root = mini_project
    write_template(root)
    runner.execute(root, CHAPTER, progress=False)
    before = snapshot(root)

    def interrupted(root_, chapter, out, injected, progress):
        out.write_text("{half a notebook")
        (out.parent / "data" / CHAPTER).mkdir(parents=True)
        (out.parent / "data" / CHAPTER / "table.csv").write_text("i\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_papermill", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.execute(root, CHAPTER, overrides={"n": 4}, progress=False)
    assert snapshot(root) == before
    assert not list((root / "_build" / "staging").iterdir())


def test_parse_params_reads_yaml_like_papermill():
    assert validate.parse_params([("formats", "[fp16, bf16]"), ("seeds", "[0,1]"), ("lr", "0.5"),
                                ("device", "cpu")]) == {
        "formats": ["fp16", "bf16"], "seeds": [0, 1], "lr": 0.5, "device": "cpu"}


def test_parse_params_reads_exponent_notation_as_numbers():
    # PyYAML alone reads 1e-4 as the string '1e-4' (YAML 1.1 wants 1.0e-4)
    got = validate.parse_params([("lr", "1e-4"), ("scales", "[1E+3, 2e-2, x1e-4]"), ("name", "e5")])
    assert got == {"lr": 1e-4, "scales": [1000.0, 0.02, "x1e-4"], "name": "e5"}


def test_declared_data_inputs_are_part_of_the_key(mini_project):
    root = mini_project
    write_template(root)
    plain = runner.input_key(root, CHAPTER, "cpu", {})
    register(root, inputs="['data/verdicts/0[1-8]_*.json']")
    (root / "data" / "verdicts").mkdir()
    ledger_input = root / "data" / "verdicts" / "05_x.json"
    ledger_input.write_text("{}")
    first = runner.input_key(root, CHAPTER, "cpu", {})
    assert first != plain
    (root / "data" / "verdicts" / "09_own.json").write_text("{}")  # not an input: same key
    (root / "data" / "other.csv").write_text("x")
    assert runner.input_key(root, CHAPTER, "cpu", {}) == first
    ledger_input.write_text('{"Q-1": {}}')  # an input changed: the chapter is stale
    assert runner.input_key(root, CHAPTER, "cpu", {}) != first
    assert runner.data_inputs(root, CHAPTER) == {
        "data/verdicts/05_x.json": hashlib.sha256(b'{"Q-1": {}}').hexdigest()}


def test_a_ledger_chapter_reads_the_verdicts_of_the_chapters_before_it(mini_project):
    root = mini_project
    write_template(root)
    (root / "notebooks" / "chapters.yml").write_text(
        "parts:\n  - caption: A\n    chapters:\n      - name: 10_x\n"
        f"      - name: {CHAPTER}\n        ledger: true\n      - name: 95_after\n")
    (root / "data" / "verdicts").mkdir()
    for name in ("10_x", CHAPTER, "95_after"):
        (root / "data" / "verdicts" / f"{name}.json").write_text("{}")
    assert list(runner.data_inputs(root, CHAPTER)) == ["data/verdicts/10_x.json"]


@pytest.mark.slow
def test_a_markdown_edit_re_renders_without_executing(mini_project):
    root = mini_project
    write_template(root, extra="import time\nprint('ran at', time.time())")
    runner.execute(root, CHAPTER, progress=False)
    published = root / "book" / f"{CHAPTER}.ipynb"
    before = nbformat.read(published, as_version=4)
    results = snapshot(root)
    template = root / "notebooks" / f"{CHAPTER}.ipynb"
    nb = nbformat.read(template, as_version=4)
    nb.cells[0].source = "# Tiny, retitled"
    nb.cells.insert(2, new_markdown_cell("A new paragraph between two code cells."))
    nbformat.write(nb, template)
    status = runner.chapter_status(root, CHAPTER)
    assert (status.state, status.why()) == ("re-render",
                                            "the template's markdown changed (prose)")

    done = runner.execute(root, CHAPTER, progress=False)
    assert done.status == "re-rendered"
    after = nbformat.read(published, as_version=4)
    codes = [c for c in after.cells if c.cell_type == "code"]
    assert codes == [c for c in before.cells if c.cell_type == "code"]  # outputs kept as run
    assert [c.source for c in after.cells if c.cell_type == "markdown"][:2] == [
        "# Tiny, retitled", "A new paragraph between two code cells."]
    assert after.cells[-1].id == "provenance"
    assert after.metadata["precisionlab"] == before.metadata["precisionlab"]
    assert {k: v for k, v in snapshot(root).items() if not k.startswith("book/")} == {
        k: v for k, v in results.items() if not k.startswith("book/")}
    assert runner.chapter_status(root, CHAPTER).state == "current"
    assert runner.execute(root, CHAPTER, progress=False).status == "up to date"


@pytest.mark.slow
def test_status_names_the_file_and_the_part_that_made_a_chapter_stale(mini_project, capsys):
    root = mini_project
    write_template(root, extra="from precisionlab.study import tables")
    runner.execute(root, CHAPTER, progress=False)
    for module, code in (("tables.py", "\nX = 1\n"), ("claims.py", "\nY = 2\n")):
        path = root / "src" / "precisionlab" / "study" / module
        path.write_text(path.read_text() + code)
    status = runner.chapter_status(root, CHAPTER)
    assert status.state == "stale"
    assert status.why() == ("src/precisionlab/study/claims.py changed (rules); "
                            "src/precisionlab/study/tables.py changed (presentation)")
    assert status.cost().startswith("re-execute the chapter, ")
    assert cli.main(["status", "--check"]) == 1
    out = capsys.readouterr().out
    assert f"{CHAPTER}: stale\n    why: src/precisionlab/study/claims.py changed (rules)" in out
    assert "republishing: re-execute the chapter" in out


def write_measuring_chapter(root, log) -> None:
    """A chapter whose measurement is a stored experiment (it logs each real run) and whose
    verdict comes from a rule module: the shape of the book's chapters, in miniature."""
    register(root)
    pkg = root / "src" / "precisionlab" / "study"
    (pkg / "experiments" / "tiny.py").write_text(
        "import pandas as pd\n\nfrom precisionlab.study.store import stored\n\n\n@stored\n"
        "def measure(n, log):\n    with open(log, 'a') as f:\n        f.write('ran\\n')\n"
        "    return pd.DataFrame({'i': list(range(n))})\n")
    (pkg / "rules" / "tiny.py").write_text("def word(table):\n    return 'nuanced'\n")
    params = new_code_cell("n = 3\ndevice = 'cpu'\nthreads = 1", metadata={"tags": ["parameters"]})
    work = new_code_cell(
        "from precisionlab.study import claims\n"
        "from precisionlab.study.experiments import tiny as X\n"
        "from precisionlab.study.rules import tiny as R\n"
        f"table = X.measure(n, {str(log)!r})\n"
        f"print(claims.record('{CHAPTER}', 'FMT-1', R.word(table), f'{{len(table)}} rows', "
        "'tbl-x'))")
    nb = new_notebook(cells=[new_markdown_cell("# Tiny"), params, work], metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, root / "notebooks" / f"{CHAPTER}.ipynb")


@pytest.mark.slow
def test_a_rule_change_replays_the_stored_measurements(mini_project, monkeypatch, tmp_path):
    root = mini_project
    monkeypatch.setenv("PYTHONPATH", str(root / "src"))  # the kernel imports this project
    log = tmp_path / "measured.log"
    write_measuring_chapter(root, log)
    assert runner.execute(root, CHAPTER, progress=False).status == "executed"
    first = runner.record_of(root / "book" / f"{CHAPTER}.ipynb")
    assert (root / "data" / CHAPTER / "store" / "index.json").is_file()
    assert log.read_text().splitlines() == ["ran"]

    rule = root / "src" / "precisionlab" / "study" / "rules" / "tiny.py"
    rule.write_text("def word(table):\n    return 'supported' if len(table) == 3 else 'refuted'\n")
    status = runner.chapter_status(root, CHAPTER)
    assert (status.state, status.why()) == ("stale", "src/precisionlab/study/rules/tiny.py changed "
                                            "(rules)")
    assert status.replayable and status.cost().startswith("re-run the rules, reports")

    assert runner.execute(root, CHAPTER, progress=False).status == "replayed"
    assert log.read_text().splitlines() == ["ran"]  # nothing measured again
    verdicts = json.loads((root / "data" / "verdicts" / f"{CHAPTER}.json").read_text())
    assert verdicts["FMT-1"]["verdict"] == "supported"
    record = runner.record_of(root / "book" / f"{CHAPTER}.ipynb")
    assert record["measured"]["executed_at"] == first["executed_at"]
    assert record["compute_key"] == first["compute_key"] != None  # noqa: E711
    nb = nbformat.read(root / "book" / f"{CHAPTER}.ipynb", as_version=4)
    assert "replayed from the run of" in nb.cells[-1].source
    assert runner.chapter_status(root, CHAPTER).state == "current"
    assert (root / "data" / CHAPTER / "store" / "index.json").is_file()  # kept for next time

    experiment = root / "src" / "precisionlab" / "study" / "experiments" / "tiny.py"
    experiment.write_text(experiment.read_text().replace("range(n)", "range(n + 0)"))
    status = runner.chapter_status(root, CHAPTER)
    assert status.why() == "src/precisionlab/study/experiments/tiny.py changed (compute)"
    assert not status.replayable
    assert runner.execute(root, CHAPTER, progress=False).status == "executed"
    assert log.read_text().splitlines() == ["ran", "ran"]
    assert "measured" not in runner.record_of(root / "book" / f"{CHAPTER}.ipynb")
