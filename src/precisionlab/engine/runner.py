"""The book runner: execute chapter templates with Papermill, cached, atomic, with provenance.

A template `notebooks/NN_topic.ipynb`, registered in `notebooks/chapters.yml`, is executed into
`book/NN_topic.ipynb` only when its inputs changed (template, profile parameters, the library
modules it imports, the data files it declares, dependency lock), judged by the key of
`precisionlab.engine.staleness` stored in the executed chapter, so a fresh clone re-executes
nothing; a template whose markdown alone changed is re-rendered without executing. The run happens
in a staging folder; the chapter and its results are moved into `book/` and `data/` only when every
cell succeeded. The runner knows no experiment: it executes any notebook. Its commands are in
`precisionlab.engine.cli`."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from precisionlab import provenance
from precisionlab.engine import registry, staleness
from precisionlab.study.results import RESULTS_ENV, atomic_write_text, write_json
from precisionlab.validate import ParameterError, one_of

PROFILES = registry.PROFILES
STORE = "store"  # a chapter's stored measurements: data/<chapter>/store/


class ChapterFailed(RuntimeError):
    """A chapter's execution failed; the previously published chapter is untouched."""


def quiet() -> bool:
    """Progress bars off under CI (CI=true), as the README promises."""
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def chapter_names(root: Path) -> list[str]:
    """The chapters of `notebooks/chapters.yml` in book order, each with its template; a
    template in notebooks/ that is not registered is an error saying how to register it."""
    chapters = registry.load(root)
    registry.check_templates(chapters, root)
    return chapters.names


def template_path(root: Path, chapter: str) -> Path:
    """The template of `chapter`, or a clear error listing the chapters there are."""
    one_of("chapter", chapter, chapter_names(root))
    return root / "notebooks" / f"{chapter}.ipynb"


def template_defaults(template: Path) -> dict[str, Any]:
    """The `parameters` cell's literals (the cpu book defaults), as Python values."""
    import papermill

    found = papermill.inspect_notebook(str(template))
    if not found:
        raise ParameterError(f"{template.name}: no code cell is tagged 'parameters'")
    return {name: ast.literal_eval(info["default"]) for name, info in found.items()}


def profile_overrides(root: Path, chapter: str, profile: str) -> dict[str, Any]:
    """Parameters a profile sets for a chapter (`notebooks/profiles.yml`; cpu sets none)."""
    import yaml

    one_of("profile", profile, PROFILES)
    table = registry.check_profiles(registry.load(root), yaml.safe_load(
        (root / "notebooks" / "profiles.yml").read_text()))
    return dict((table.get(chapter) or {}).get(profile) or {})


def plan(root: Path, chapter: str, profile: str = "cpu",
         overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parameters to inject, effective parameters), checking every name against the template."""
    defaults = template_defaults(template_path(root, chapter))
    injected = {**profile_overrides(root, chapter, profile), **(overrides or {})}
    unknown = sorted(set(injected) - set(defaults))
    if unknown:
        raise ParameterError(f"{unknown[0]}: not a parameter of {chapter}; "
                             f"its parameters are: {', '.join(defaults)}")
    return injected, {**defaults, **injected}


def data_inputs(root: Path, chapter: str) -> dict[str, str]:
    """Project files a chapter reads besides the library, path -> sha256 (`staleness`)."""
    return staleness.data_inputs(root, chapter)


def modules(root: Path, chapter: str) -> list[Path]:
    """The library's source files a chapter's code imports, transitively."""
    import nbformat

    nb = nbformat.read(template_path(root, chapter), as_version=4)
    try:
        return staleness.notebook_modules(root / "src", nb)
    except SyntaxError as err:
        raise ParameterError(f"{chapter}: cannot read the imports of its code: {err}") from None


def key_parts(root: Path, chapter: str, profile: str,
              injected: dict[str, Any]) -> staleness.Parts:
    """Everything that decides a chapter's output, part by part: its template's code cells,
    profile and parameters, the library modules it imports, its declared data inputs, the lock."""
    return staleness.parts_for(root, template_path(root, chapter), profile, injected,
                               modules(root, chapter), data_inputs(root, chapter))


def input_key(root: Path, chapter: str, profile: str, injected: dict[str, Any]) -> str:
    """The hash of `key_parts`: equal to the stored one, the chapter is up to date."""
    return key_parts(root, chapter, profile, injected).key()


def chapter_status(root: Path, chapter: str, profile: str | None = None) -> staleness.Status:
    """Whether the published chapter is current (at `profile`, default the one it was run
    at), and if not, which files and parts changed and what republishing costs."""
    dest = root / "book" / f"{chapter}.ipynb"
    if profile is None:
        profile = (staleness.record_of(dest) or {}).get("profile", "cpu")
    injected, _ = plan(root, chapter, profile)
    found = staleness.status(dest, template_path(root, chapter),
                             key_parts(root, chapter, profile, injected),
                             store_folder(root, chapter), _here())
    try:  # the results in data/<chapter>/ must be this run's too
        written = json.loads((root / "data" / chapter / "provenance.json").read_text())
    except (OSError, ValueError):
        written = {}
    if found.state != "not executed" and written.get("input_key") not in (
            None, (found.record or {}).get("input_key")):
        found.state = "stale"
        found.replayable = False
        found.changes.append(staleness.Change(f"data/{chapter}/ (the results of another run)",
                                              "changed", "compute"))
    return found


def store_folder(root: Path, chapter: str) -> Path:
    """Where a published chapter's measurements are kept (`precisionlab.study.store`)."""
    return root / "data" / chapter / STORE


def _here() -> tuple[str, str] | None:
    """This CPU, for replays; None when torch would run on a GPU (measured anew there)."""
    import torch

    return None if torch.cuda.is_available() else staleness.this_cpu()


record_of = staleness.record_of


def stored_key(notebook: Path) -> str | None:
    """The input key stamped into an executed chapter, if any."""
    return (record_of(notebook) or {}).get("input_key")


@dataclass
class RunResult:
    chapter: str
    status: str  # "executed", "replayed" (stored measurements), "re-rendered" or "up to date"
    notebook: Path
    seconds: float


@dataclass
class Job:
    """One notebook execution, cached by `key`: the chapters and `precisionlab audit` share
    `run_job` (staging, atomic moves, provenance, footer) and differ only in these fields."""

    name: str  # staging prefix
    profile: str
    effective: dict[str, Any]  # every parameter in force (for the provenance record)
    key: str
    dest: Path  # the executed notebook
    base: Path  # what module paths are relative to (the project root)
    modules: list[Path]  # the library files the notebook imports
    staging: Path  # parent of the staging folder
    execute: Callable[[Path, bool], None]  # (staged notebook, progress): runs the template
    move: Callable[[Path], None]  # moves the staged results folder into place
    record: dict[str, Any] = field(default_factory=dict)  # leading fields of the record
    device: str | None = None  # the device parameter (default: effective["device"])
    threads: int | None = None  # the thread parameter (default: effective["threads"])
    provenance_file: str | None = None  # e.g. "<chapter>/provenance.json" in the results
    finish: Callable[[Path, Path], None] | None = None  # (finished notebook, results): extras
    parts: staleness.Parts | None = None  # the key's parts, stored so staleness can say why
    store: str | None = None  # results subfolder keeping the measurements (`study.store`)
    replay: Path | None = None  # a published store to replay the measurements from
    measured: dict[str, Any] | None = None  # with `replay`: the run that measured them


def execute(root: Path, chapter: str, profile: str = "cpu",
            overrides: dict[str, Any] | None = None, publish: bool = True,
            force: bool = False, progress: bool = True) -> RunResult:
    """Execute one chapter unless its stored input key is current; atomic on success only.
    A current chapter whose template's markdown changed is re-rendered (`rerender`).

    `publish=True` writes `book/<chapter>.ipynb` and `data/`; otherwise the result goes beside
    it, to `book/_runs/<chapter>__<key>.ipynb` and `data/_runs/<chapter>__<key>/`.
    """
    injected, effective = plan(root, chapter, profile, overrides)
    parts = key_parts(root, chapter, profile, injected)
    key = parts.key()
    dest, data_dest = destinations(root, chapter, key, publish)
    if not force and stored_key(dest) == key:
        t0 = time.perf_counter()
        if rerender(dest, template_path(root, chapter)):
            return RunResult(chapter, "re-rendered", dest, time.perf_counter() - t0)
        return RunResult(chapter, "up to date", dest, 0.0)
    replay, measured = None, None
    record = record_of(dest) if publish and not force else None
    if record and staleness.replayable(record, parts, store_folder(root, chapter), _here()):
        replay, measured = store_folder(root, chapter), record.get("measured") or {
            k: record.get(k) for k in ("executed_at", "wall_time_s", "machine")}
    job = Job(parts=parts, store=f"{chapter}/{STORE}" if publish else None, replay=replay,
              measured=measured,
        name=chapter, profile=profile, effective=effective, key=key, dest=dest, base=root,
        modules=modules(root, chapter), staging=root / "_build" / "staging",
        execute=lambda out, shown: _papermill(root, chapter, out, injected, shown),
        move=lambda staged: move_results(staged, data_dest, chapter, whole_tree=not publish),
        record={"chapter": chapter}, provenance_file=f"{chapter}/provenance.json")
    seconds = run_job(job, progress)
    return RunResult(chapter, "replayed" if replay else "executed", dest, seconds)


def rerender(executed: Path, template: Path) -> bool:
    """Splice the template's markdown into an executed notebook whose prose differs (its code
    cells are the template's, by the key): written atomically; False when already the same."""
    import nbformat

    old, new = nbformat.read(executed, as_version=4), nbformat.read(template, as_version=4)
    if staleness.prose_digest(old) == staleness.prose_digest(new):
        return False
    atomic_write_text(executed, nbformat.writes(staleness.splice_prose(old, new)) + "\n")
    return True


def destinations(root: Path, chapter: str, key: str, publish: bool) -> tuple[Path, Path]:
    """(executed notebook, results folder) of a run: the published chapter in `book/` and
    `data/`, or a rerun beside it under `_runs/`, named by its input key."""
    if publish:
        return root / "book" / f"{chapter}.ipynb", root / "data"
    run_name = f"{chapter}__{key[:10]}"
    return root / "book" / "_runs" / f"{run_name}.ipynb", root / "data" / "_runs" / run_name


def run_job(job: Job, progress: bool = True) -> float:
    """Execute a job's notebook in a staging folder with results pointed there; on success
    stamp provenance, move the results into place, then write the notebook; return seconds.

    A failing cell raises ChapterFailed naming it, and leaves every previous output in place;
    an interruption leaves them too (the staging folder is removed either way)."""
    from precisionlab.study import store

    job.staging.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{job.name}-", dir=job.staging))
    staged_nb, staged_data = staging / f"{job.name}.ipynb", staging / "data"
    # Spinning OpenMP threads slow torch 20-40x when another process holds a core; the kernel
    # inherits this (results are bit-identical either way).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    kernel_env = {RESULTS_ENV: str(staged_data),
                  store.WRITE_ENV: str(staged_data / job.store) if job.store else None,
                  store.READ_ENV: str(job.replay) if job.replay else None}
    started, t0 = datetime.now(UTC), time.perf_counter()
    with environ(**kernel_env):
        try:
            job.execute(staged_nb, progress)
            seconds = time.perf_counter() - t0
            record = _provenance(job, started, seconds)
            staged_data.mkdir(parents=True, exist_ok=True)
            if job.provenance_file:
                write_json(staged_data / job.provenance_file, record)
            finished = _finish_notebook(staged_nb, record)
            if job.finish:
                job.finish(staged_nb, staged_data)
            job.move(staged_data)
            # The stamped notebook goes last: were the moves cut short, its old key makes a
            # rerun.
            atomic_write_text(job.dest, finished)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return seconds


@contextlib.contextmanager
def environ(**values: str | None) -> Iterator[None]:
    """Set (or, for None, unset) environment variables for the kernels started inside, then
    restore them."""
    def put(settings: dict[str, str | None]) -> None:
        for k, v in settings.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    old = {k: os.environ.get(k) for k in values}
    try:
        put(values)
        yield
    finally:
        put(old)


def _papermill(root: Path, chapter: str, out: Path, injected: dict[str, Any],
               progress: bool) -> None:
    papermill_run(template_path(root, chapter), out, injected, root / "book", progress,
                  name=chapter, failed=root / "_build" / "failed" / f"{chapter}.ipynb",
                  unchanged="the published chapter is unchanged", base=root)


def papermill_run(template: Path, out: Path, injected: dict[str, Any], cwd: Path,
                  progress: bool, name: str, failed: Path, unchanged: str, base: Path) -> None:
    """Execute `template` into `out` with Papermill; a failing cell raises ChapterFailed that
    names the cell and says `unchanged`, keeping the failed notebook at `failed`."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        papermill.execute_notebook(
            str(template), str(out), parameters=injected, cwd=str(cwd), kernel_name="python3",
            progress_bar=progress, log_output=False,
        )
    except PapermillExecutionError as err:
        failed.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            shutil.copyfile(out, failed)
        raise ChapterFailed(
            f"{name}: cell In [{err.exec_count}] (cell {err.cell_index} of the notebook) "
            f"failed: {err.ename}: {err.evalue}\n  {unchanged}; "
            f"the failed notebook is kept at {_shown(failed, base)}"
        ) from None


def _shown(path: Path, base: Path) -> str:
    """`path` relative to `base` when it lies under it, else as it is."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _provenance(job: Job, started: datetime, seconds: float) -> dict[str, Any]:
    device = job.device if job.device is not None else job.effective.get("device", "auto")
    device = provenance.resolve_device(device) if device in provenance.DEVICES else str(device)
    threads = job.threads if job.threads is not None else job.effective.get("threads")
    return {
        **job.record,
        "profile": job.profile,
        "parameters": job.effective,
        "input_key": job.key,
        "compute_key": job.parts.compute_key() if job.parts else None,
        "key_parts": job.parts.as_dict() if job.parts else None,
        **({"measured": job.measured} if job.replay else {}),
        "modules": [p.relative_to(job.base).as_posix() for p in job.modules],
        "modules_hash": staleness.combined(staleness.digests(job.modules, job.base)),
        "lock_hash": staleness.lock_hash(job.base),
        "machine": provenance.machine(device, threads),
        "executed_at": started.strftime("%Y-%m-%d %H:%M UTC"),
        "wall_time_s": round(seconds, 1),
    }


def _finish_notebook(staged: Path, record: dict[str, Any]) -> str:
    """Hide parameter cells, stamp provenance and add its footer, in place; return the text."""
    import nbformat

    nb = nbformat.read(staged, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    nb.metadata["precisionlab"] = record
    nb.cells.append(nbformat.v4.new_markdown_cell(footer(record), id=staleness.PROVENANCE_CELL))
    text = nbformat.writes(nb) + "\n"
    staged.write_text(text, encoding="utf-8")
    return text


def footer(record: dict[str, Any]) -> str:
    """The provenance table shown at the foot of each chapter."""
    m = record["machine"]
    flags = ", ".join(f for f, on in m["isa"].items() if on) or "none of " + ", ".join(m["isa"])
    params = "; ".join(f"`{k}={v!r}`" for k, v in record["parameters"].items())
    rows = [
        ("Profile", f"`{record['profile']}`"),
        ("Parameters", params.replace("|", "\\|")),
        ("Executed", f"{record['executed_at']}, wall time {record['wall_time_s']} s"),
        *([("Measurements", _measured(record["measured"]))] if record.get("measured") else []),
        ("Device", f"{m['device']}: {m['device_name']}"),
        ("CPU", f"{m['cpu_model']}, {m['cpu_count']} cores, {m['threads']} threads"),
        ("ISA flags present", flags),
        ("Software", f"torch {m['torch']}, Python {m['python']}, {m['platform']}"),
        ("Library modules used", ", ".join(f"`{module_name(p)}`" for p in record["modules"])),
        ("Hashes", f"modules `{record['modules_hash'][:12]}`, lock `{record['lock_hash'][:12]}`, "
                   f"inputs `{record['input_key'][:12]}`"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"## Provenance\n\n| | |\n|---|---|\n{table}\n"


def _measured(measured: dict[str, Any]) -> str:
    """The footer's line for a replayed chapter: which run measured its numbers."""
    m = measured.get("machine") or {}
    return (f"replayed from the run of {measured.get('executed_at', '?')} (wall time "
            f"{measured.get('wall_time_s', '?')} s, {m.get('cpu_model', '?')}); the rules, "
            "reports and figures ran on them anew")


def module_name(path: str) -> str:
    """`src/precisionlab/amp/__init__.py` -> `precisionlab.amp`, for the provenance footer."""
    dotted = path.removeprefix("src/").removesuffix(".py").replace("/", ".")
    return dotted.removesuffix(".__init__")


def write_toc(root: Path, check: bool = False) -> bool:
    """Write `_toc.yml` from the registry; with `check`, only say whether it is current."""
    text = registry.toc(registry.load(root))
    current = (root / "_toc.yml").read_text() == text
    if not check and not current:
        atomic_write_text(root / "_toc.yml", text)
    return current


def move_results(staged: Path, dest: Path, chapter: str, whole_tree: bool) -> None:
    """Move staged results into place: the chapter's own folder as a whole, shared files one by
    one (each an atomic rename), so readers never see a mix of two runs of one chapter."""
    if not staged.exists():
        return
    if whole_tree:
        _replace_dir(staged, dest)
        return
    for entry in sorted(staged.iterdir()):
        if entry.is_dir() and entry.name == chapter:
            _replace_dir(entry, dest / chapter)
        else:
            for file in sorted(p for p in entry.rglob("*") if p.is_file()) if entry.is_dir() \
                    else [entry]:
                target = dest / file.relative_to(staged)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(file, target)


def _replace_dir(new: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    shutil.move(str(new), str(target))
    shutil.rmtree(old, ignore_errors=True)
