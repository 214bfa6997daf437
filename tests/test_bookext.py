"""The book's Sphinx extension: the execution status table and the chapter downloads."""

from __future__ import annotations

import io
import json
import zipfile

import nbformat
import pytest
from docutils import nodes
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from precisionlab.engine import bookext, runner

RUN, WAITING = "90_tiny", "91_waiting"


def write_project(root) -> None:
    """Two registered chapters: 90_tiny (imports validate, writes a table and a verdict) and
    91_waiting (never executed)."""
    (root / "notebooks" / "chapters.yml").write_text(
        "parts:\n  - caption: Tiny\n    chapters:\n"
        f"      - name: {RUN}\n        claims: [FMT-1]\n      - name: {WAITING}\n")
    for name in (RUN, WAITING):
        params = new_code_cell("n = 3\ndevice = 'cpu'\nthreads = 1",
                               metadata={"tags": ["parameters"]})
        work = new_code_cell(
            "import pandas as pd\nfrom precisionlab import validate\n"
            "from precisionlab.study import claims, results\n"
            "validate.integer('n', n, 1, 10)\n"
            f"results.save_table(pd.DataFrame({{'i': list(range(n))}}), '{name}', 'table')\n"
            f"claims.record('{name}', 'FMT-1', 'nuanced', f'n was {{n}}', 'tbl-x')")
        nb = new_notebook(cells=[new_markdown_cell(f"# {name}"), params, work], metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
        nbformat.write(nb, root / "notebooks" / f"{name}.ipynb")


def row(root, name: str) -> bookext.ChapterStatus:
    return next(r for r in bookext.chapter_status(root) if r.name == name)


@pytest.mark.slow
def test_status_follows_the_runner_key_at_the_profile_run(mini_project):
    root = mini_project
    write_project(root)
    assert [(r.name, r.state) for r in bookext.chapter_status(root)] == [
        (RUN, "not executed"), (WAITING, "not executed")]

    runner.execute(root, RUN, profile="smoke", progress=False)  # smoke sets n: 2
    tiny = row(root, RUN)
    record = json.loads((root / "book" / f"{RUN}.ipynb").read_text())["metadata"]["precisionlab"]
    injected, _ = runner.plan(root, RUN, "smoke")
    assert tiny.state == "current" and tiny.why == ""
    assert tiny.input_key == record["input_key"] == runner.input_key(root, RUN, "smoke", injected)
    assert tiny.profile == "smoke"
    assert tiny.wall_time_s == record["wall_time_s"] > 0
    assert tiny.executed_at == record["executed_at"]
    machine = record["machine"]
    assert tiny.machine == f"{machine['cpu_model']} (cpu, {machine['cpu_capability']})"
    assert row(root, WAITING).state == "not executed"

    validate = root / "src" / "precisionlab" / "validate.py"
    source = validate.read_text()
    validate.write_text(source + "\n# a comment changes no meaning\n")
    assert row(root, RUN).state == "current"
    validate.write_text(source + "\nEDITED = True\n")
    assert (row(root, RUN).state, row(root, RUN).why.split("; republishing")[0]) == (
        "stale", "src/precisionlab/validate.py changed (compute)")
    assert "republishing: re-execute the chapter" in row(root, RUN).why
    validate.write_text(source)
    assert row(root, RUN).state == "current"

    (root / "notebooks" / "profiles.yml").write_text(f"{RUN}:\n  smoke:\n    n: 4\n")
    assert row(root, RUN).why.startswith("parameters changed (compute)")
    (root / "notebooks" / "profiles.yml").write_text(f"{RUN}:\n  smoke:\n    n: 2\n")

    template = root / "notebooks" / f"{RUN}.ipynb"
    nb = nbformat.read(template, as_version=4)
    nb.cells[0].source = "# Tiny, reworded"
    nbformat.write(nb, template)
    assert (row(root, RUN).state, row(root, RUN).why) == (
        "prose changed", "the template's markdown changed (prose); republishing: re-render the "
        "prose, execute nothing (seconds)")
    nb.cells.append(nbformat.v4.new_code_cell("x = 1"))
    nbformat.write(nb, template)
    assert row(root, RUN).why.startswith("the template's code cells changed (compute)")


@pytest.mark.slow
def test_results_of_another_run_make_a_chapter_stale(mini_project):
    root = mini_project
    write_project(root)
    runner.execute(root, RUN, progress=False)
    assert row(root, RUN).state == "current"
    stamped = root / "data" / RUN / "provenance.json"
    record = json.loads(stamped.read_text())
    stamped.write_text(json.dumps({**record, "input_key": "0" * 64}))
    assert (row(root, RUN).state, row(root, RUN).why.split("; republishing")[0]) == (
        "stale", f"data/{RUN}/ (the results of another run) changed (compute)")


def test_machine_label_names_gpu_or_cpu_and_its_kernels():
    gpu = {"device": "cuda", "gpu": "NVIDIA H200", "compute_capability": "9.0",
           "cpu_model": "AMD EPYC", "cpu_capability": "AVX2"}
    assert bookext.machine_label(gpu) == "NVIDIA H200 (cuda, compute 9.0)"
    cpu = {"device": "cpu", "cpu_model": "Intel(R) Xeon(R)", "cpu_capability": "DEFAULT",
           "forced": "default"}
    assert bookext.machine_label(cpu) == "Intel(R) Xeon(R) (cpu, DEFAULT, forced)"


def test_summary_counts_states_time_and_machines():
    rows = [bookext.ChapterStatus("01_a", "current", "", "cpu", 10.4, "A (cpu, AVX2)"),
            bookext.ChapterStatus("02_b", "stale", "the lock changed", "cpu", 1200.0,
                                  "B (cpu, AVX512)"),
            bookext.ChapterStatus("03_c", "not executed", "")]
    assert bookext.status_summary(rows) == (
        "3 chapters: 1 current, 1 stale, 1 not executed. Their last runs took 1,210 s of wall "
        "time in all, on 2 machines.")


def test_status_table_links_every_chapter_and_shows_its_state():
    rows = [bookext.ChapterStatus("01_a", "current", "", "cpu", 39.3, "A (cpu, AVX2)",
                                  "2026-12-01 22:20 UTC", "956aa8081ce250f8"),
            bookext.ChapterStatus("02_b", "not executed", "")]
    table = bookext.status_table(rows, "book/status")
    body = next(iter(table.findall(nodes.tbody)))
    cells = [[entry.astext() for entry in r.findall(nodes.entry)] for r in body.children]
    assert cells == [["01_a", "current", "cpu", "39\u00a0s", "A (cpu, AVX2)", "2026-12-01 22:20",
                      "956aa8081c"],
                     ["02_b", "not executed", "", "", "", "", ""]]
    targets = [x["reftarget"] for x in table.findall(lambda n: n.tagname == "pending_xref")]
    assert targets == ["/book/01_a", "/book/02_b"]


def test_breakable_name_adds_no_character():
    code = bookext._breakable("06_quantization_aware_training")
    assert code.astext() == "06_quantization_aware_training"
    assert [p.astext() for p in code.children] == ["06_", "quantization_", "aware_", "training"]


@pytest.mark.slow
def test_downloads_are_the_template_the_executed_chapter_and_a_deterministic_zip(mini_project):
    root = mini_project
    write_project(root)
    runner.execute(root, RUN, progress=False)
    (root / "data" / RUN / ".table.old").mkdir()  # left by an interrupted move: not a result
    (root / "data" / RUN / ".table.old" / "stale.csv").write_text("x\n")
    found = bookext.chapter_downloads(root, RUN)
    assert [d.path for d in found] == [f"_downloads/{RUN}/notebooks/{RUN}.ipynb",
                                       f"_downloads/{RUN}/book/{RUN}.ipynb",
                                       f"_downloads/{RUN}/{RUN}-data.zip"]
    assert found[0].data == (root / "notebooks" / f"{RUN}.ipynb").read_bytes()
    assert found[1].data == (root / "book" / f"{RUN}.ipynb").read_bytes()
    archive = zipfile.ZipFile(io.BytesIO(found[2].data))
    assert archive.namelist() == [f"data/{RUN}/provenance.json", f"data/{RUN}/table.csv",
                                  f"data/verdicts/{RUN}.json"]
    assert archive.read(f"data/{RUN}/table.csv") == (root / "data" / RUN / "table.csv").read_bytes()
    assert archive.testzip() is None
    assert bookext.chapter_downloads(root, RUN)[2].data == found[2].data  # same bytes each build
    # the never-executed chapter offers only its template
    assert [d.path for d in bookext.chapter_downloads(root, WAITING)] == [
        f"_downloads/{WAITING}/notebooks/{WAITING}.ipynb"]


def test_downloads_box_links_relative_to_the_page():
    found = [bookext.Download("_downloads/01_a/notebooks/01_a.ipynb", b"x" * 2500, "`t` here"),
             bookext.Download("_downloads/01_a/01_a-data.zip", b"z" * 1_200_000, "results")]
    box = bookext.downloads_box(found, "book")
    refs = list(box.findall(nodes.reference))
    assert [r["refuri"] for r in refs] == ["../_downloads/01_a/notebooks/01_a.ipynb",
                                           "../_downloads/01_a/01_a-data.zip"]
    items = [item.astext() for item in box.findall(nodes.list_item)]
    assert items == ["notebooks/01_a.ipynb (2 kB): t here", "01_a-data.zip (1.2 MB): results"]
    assert box.children[0].astext() == "Downloads"
