"""`precisionlab audit MODEL DATA`: check the inputs, then execute the audit template with the
book's runner (content-hash cache, staging, atomic moves, provenance footer) into a folder.

    precisionlab audit mymodels:tiny_mlp mydata:pairs [--task classification] [--out DIR]
        [--profile smoke|cpu|gpu] [-p NAME VALUE ...] [--force]

MODEL and DATA are checked (`audit.load` builds the model and runs 2 examples through it) and
the parameters validated before Papermill starts; a bad one fails at once, naming the argument,
and nothing is written. DIR (default `audits/<model function name>/`) receives `report.ipynb`
(the executed audit, with its input key and provenance), `report.html` (one self-contained
page) and `summary.json`. The run is skipped while DIR/report.ipynb holds the same input key:
template, parameters, the library modules the template imports, the dependency lock and the
bytes of MODEL's and DATA's source files (so editing the model reruns the audit).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import precisionlab
from precisionlab import provenance
from precisionlab.engine import runner, staleness

TEMPLATE = Path(__file__).resolve().parents[1] / "study" / "audit" / "report.ipynb"
OUTPUTS = ("report.ipynb", "report.html", "summary.json")
FAILED = Path(".failed") / "report.ipynb"  # where a failed run's notebook is kept, under DIR


def library() -> tuple[Path, Path]:
    """(the folder holding the `precisionlab` package, the folder above it): `src/` and the
    project root in a checkout; site-packages and its parent in an installed library."""
    src = Path(precisionlab.__file__).resolve().parents[1]
    return src, src.parent


def template_modules(sources: list[Path] = ()) -> list[Path]:
    """The library files the audit template imports, transitively, the module that turns it
    into report.html, and the library files MODEL's and DATA's `sources` import."""
    import nbformat

    src, base = library()
    if not (base / "requirements.lock").is_file():
        # An installed library: src is site-packages, whose imports (torch...) are not ours to
        # follow; the whole package stands in for the modules used.
        return sorted(Path(precisionlab.__file__).resolve().parent.rglob("*.py"))
    nb = nbformat.read(TEMPLATE, as_version=4)
    code = ["import precisionlab.study.audit.html"]
    for path in sources:
        try:
            text = Path(path).read_text(encoding="utf-8")
            ast.parse(text)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue  # unreadable to the import parser: its bytes are in the key anyway
        code.append(text)
    return staleness.notebook_modules(src, nb, code)


def source_hashes(files: list[Path], cwd: Path) -> dict[str, str]:
    """sha256 of each of MODEL's and DATA's source files, named relative to `cwd` where they
    lie under it (so a moved project keeps its key)."""
    found = {}
    for path in files:
        resolved = Path(path).resolve()
        try:
            name = resolved.relative_to(cwd.resolve()).as_posix()
        except ValueError:
            name = str(resolved)
        found[name] = hashlib.sha256(resolved.read_bytes()).hexdigest()
    return found


def key_parts(injected: dict[str, Any], modules: list[Path],
              sources: dict[str, str]) -> staleness.Parts:
    """What decides an audit's report (`staleness.Parts`): the template's code cells, the
    injected parameters (bar the folder it runs in), the library modules, the lock, and in
    `extra` the user's source files and the template's prose (a report is not re-rendered)."""
    import nbformat

    _, base = library()
    injected = {k: v for k, v in injected.items() if k != "cwd"}
    prose = staleness.prose_digest(nbformat.read(TEMPLATE, as_version=4))
    return staleness.parts_for(base, TEMPLATE, str(injected.get("profile", "")), injected,
                               modules, extra={"sources": sources, "prose": prose})


def input_key(injected: dict[str, Any], modules: list[Path], sources: dict[str, str]) -> str:
    """The hash of `key_parts`: equal to the stored one, the report is up to date."""
    return key_parts(injected, modules, sources).key()


@dataclass
class AuditRun:
    """What `run_audit` did: status "executed" or "up to date", the folder, the seconds and
    the recommendations of its summary."""

    name: str
    status: str
    out: Path
    seconds: float
    recommendations: list[str]


def prepare(model: str, data: str, task: str = "classification", profile: str = "cpu",
            overrides: dict[str, Any] | None = None, out: Path | str | None = None
            ) -> tuple[runner.Job, Path]:
    """Check MODEL, DATA, the task and the parameters (AuditError naming the argument; nothing
    is written) and plan the run from the current directory: (the runner's job, the output
    folder)."""
    from precisionlab.study.audit import AuditError, load, parameters

    cwd = Path.cwd().resolve()
    params = parameters(profile, overrides)  # first: cheap, while loading a model may not be
    try:  # a GPU asked for where there is none fails now, not after the kernel has started
        provenance.resolve_device(params["device"])
    except ValueError as err:
        raise AuditError(str(err)) from None
    subject = load(model, data, task)
    out = (cwd / (out if out is not None else Path("audits") / subject.name)).resolve()
    if out.exists() and not out.is_dir():
        raise AuditError(f"--out: {out} is a file, not a folder")
    injected = {"model": model, "data": data, "task": task, "profile": profile,
                "params": params, "cwd": str(cwd)}
    modules = template_modules(subject.source_files)
    parts = key_parts(injected, modules, source_hashes(subject.source_files, cwd))
    key = parts.key()
    _, base = library()
    name = f"audit-{subject.name}"
    job = runner.Job(
        name=name, profile=profile, effective=injected, key=key, parts=parts,
        dest=out / "report.ipynb",
        base=base, modules=modules, staging=out / ".staging",
        execute=partial(_execute, injected=injected, cwd=cwd, out=out),
        move=partial(_move, out=out),
        record={"audit": subject.name, "model": model, "data": data, "task": task},
        device=params["device"], threads=params["threads"],
        finish=partial(_html, title=f"Precision audit of {model}"))
    return job, out


def _execute(staged: Path, progress: bool, injected: dict[str, Any], cwd: Path,
             out: Path) -> None:
    runner.papermill_run(TEMPLATE, staged, injected, cwd, progress, name=f"audit of "
                         f"{injected['model']}", failed=out / FAILED,
                         unchanged="the previous report is unchanged", base=cwd)


def _html(notebook: Path, results: Path, title: str) -> None:
    from precisionlab.study.audit import html

    html.write(notebook, results / "report.html", title)


def _move(staged: Path, out: Path) -> None:
    """Rename the staged summary and page into DIR (the runner writes report.ipynb, which
    holds the key, last); a successful run clears a failed one's notebook."""
    for name in ("summary.json", "report.html"):
        if not (staged / name).is_file():
            raise runner.ChapterFailed(f"the audit template wrote no {name}")
    for name in ("summary.json", "report.html"):
        os.replace(staged / name, out / name)
    shutil.rmtree(out / FAILED.parent, ignore_errors=True)


def run_audit(model: str, data: str, task: str = "classification", profile: str = "cpu",
              overrides: dict[str, Any] | None = None, out: Path | str | None = None,
              force: bool = False, progress: bool = True) -> AuditRun:
    """Audit MODEL on DATA into `out` unless its report is current (see the module docstring).

    Raises AuditError (bad input, before any compute) or runner.ChapterFailed (a cell failed;
    the previous report is untouched and the failed notebook kept under DIR/.failed/)."""
    job, out = prepare(model, data, task, profile, overrides, out)
    name = f"audit of {model}"
    if not force and runner.stored_key(job.dest) == job.key:
        return AuditRun(name, "up to date", out, 0.0, recommendations(out))
    out.mkdir(parents=True, exist_ok=True)
    try:
        seconds = runner.run_job(job, progress)
    finally:  # leave no empty staging folder, nor an empty DIR after an interruption
        for folder in (job.staging, out):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return AuditRun(name, "executed", out, seconds, recommendations(out))


def recommendations(out: Path) -> list[str]:
    """The recommendations of DIR/summary.json ([] when it is missing or unreadable)."""
    try:
        return list(json.loads((out / "summary.json").read_text())["recommendations"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def shown(path: Path) -> str:
    """`path` relative to the current directory when it lies under it."""
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)
