"""The book runner: execute chapter templates with Papermill, cached, atomic, with provenance.

A template `notebooks/NN_topic.ipynb`, registered in `notebooks/chapters.yml`, is executed into
`book/NN_topic.ipynb` only when its inputs changed (template, profile parameters, the library
modules it imports, the data files it declares, dependency lock), judged by content hashes
stored in the executed chapter, so a fresh clone re-executes nothing. The run happens in a
staging folder; the chapter and its results are moved into `book/` and `data/` only when every
cell succeeded. The runner knows no experiment: it executes any notebook.

    precisionlab book [--profile cpu|smoke|gpu] [--force] [--jobs N] [--ray ADDR] [CHAPTER ...]
    precisionlab run CHAPTER -p NAME VALUE [-p NAME VALUE ...] [--profile P] [--publish]
    precisionlab status [--profile P]
    precisionlab toc [--check]
    precisionlab sweep CHAPTER --grid NAME=VALUES [...] [-p NAME VALUE] [--jobs N] [--ray ADDR]
    precisionlab audit MODEL DATA [--task T] [--out DIR] [--profile P] [-p NAME VALUE] [--force]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from precisionlab import provenance, registry
from precisionlab.results import RESULTS_ENV, atomic_write_text, write_json
from precisionlab.validate import ParameterError, one_of

PROFILES = registry.PROFILES
KEY_VERSION = 2  # bump when the meaning of the input key changes (2: imported modules, not src)


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
    """Project files a chapter reads besides the library, path -> sha256: the globs its registry
    entry declares, and for the ledger the verdict files of the chapters before it."""
    found = {}
    for pattern in registry.load(root).inputs(chapter):
        for path in sorted(root.glob(pattern)):
            if path.is_file():
                found[path.relative_to(root).as_posix()] = hashlib.sha256(
                    path.read_bytes()).hexdigest()
    return found


def modules(root: Path, chapter: str) -> list[Path]:
    """The library's source files a chapter's code imports, transitively (`module_closure`)."""
    import nbformat

    nb = nbformat.read(template_path(root, chapter), as_version=4)
    code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    try:
        return provenance.module_closure(root / "src", code)
    except SyntaxError as err:
        raise ParameterError(f"{chapter}: cannot read the imports of its code: {err}") from None


def input_key(root: Path, chapter: str, profile: str, injected: dict[str, Any]) -> str:
    """Content hash of everything that decides a chapter's output: template, profile and
    parameters, the library modules it imports, its declared data inputs and the lock."""
    template = template_path(root, chapter)
    parts = {
        "version": KEY_VERSION,
        "template": hashlib.sha256(template.read_bytes()).hexdigest(),
        "profile": profile,
        "parameters": injected,
        "modules": provenance.hash_files(modules(root, chapter), root),
        "lock": provenance.lock_hash(root),
        "inputs": data_inputs(root, chapter),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def record_of(notebook: Path) -> dict[str, Any] | None:
    """The provenance record stamped into an executed chapter, or None."""
    try:
        return json.loads(notebook.read_text(encoding="utf-8"))["metadata"]["precisionlab"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stored_key(notebook: Path) -> str | None:
    """The input key stamped into an executed chapter, if any."""
    return (record_of(notebook) or {}).get("input_key")


@dataclass
class RunResult:
    chapter: str
    status: str  # "executed" or "up to date"
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


def execute(root: Path, chapter: str, profile: str = "cpu",
            overrides: dict[str, Any] | None = None, publish: bool = True,
            force: bool = False, progress: bool = True) -> RunResult:
    """Execute one chapter unless its stored input key is current; atomic on success only.

    `publish=True` writes `book/<chapter>.ipynb` and `data/`; otherwise the result goes beside
    it, to `book/_runs/<chapter>__<key>.ipynb` and `data/_runs/<chapter>__<key>/`.
    """
    injected, effective = plan(root, chapter, profile, overrides)
    key = input_key(root, chapter, profile, injected)
    dest, data_dest = destinations(root, chapter, key, publish)
    if not force and stored_key(dest) == key:
        return RunResult(chapter, "up to date", dest, 0.0)
    job = Job(
        name=chapter, profile=profile, effective=effective, key=key, dest=dest, base=root,
        modules=modules(root, chapter), staging=root / "_build" / "staging",
        execute=lambda out, shown: _papermill(root, chapter, out, injected, shown),
        move=lambda staged: move_results(staged, data_dest, chapter, whole_tree=not publish),
        record={"chapter": chapter}, provenance_file=f"{chapter}/provenance.json")
    return RunResult(chapter, "executed", dest, run_job(job, progress))


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
    job.staging.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{job.name}-", dir=job.staging))
    staged_nb, staged_data = staging / f"{job.name}.ipynb", staging / "data"
    previous_env = os.environ.get(RESULTS_ENV)
    os.environ[RESULTS_ENV] = str(staged_data)
    # Spinning OpenMP threads slow torch 20-40x when another process holds a core; the kernel
    # inherits this (results are bit-identical either way).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    started, t0 = datetime.now(UTC), time.perf_counter()
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
        # The stamped notebook goes last: were the moves cut short, its old key makes a rerun.
        atomic_write_text(job.dest, finished)
    finally:
        if previous_env is None:
            os.environ.pop(RESULTS_ENV, None)
        else:
            os.environ[RESULTS_ENV] = previous_env
        shutil.rmtree(staging, ignore_errors=True)
    return seconds


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
        "modules": [p.relative_to(job.base).as_posix() for p in job.modules],
        "modules_hash": provenance.hash_files(job.modules, job.base),
        "lock_hash": lock_hash(job.base),
        "machine": provenance.machine(device, threads),
        "executed_at": started.strftime("%Y-%m-%d %H:%M UTC"),
        "wall_time_s": round(seconds, 1),
    }


def lock_hash(root: Path) -> str:
    """The dependency lock's hash, or (for an installed library without the project around it)
    a hash of the installed versions of the direct dependencies."""
    if (root / "requirements.lock").is_file():
        return provenance.lock_hash(root)
    from importlib import metadata

    names = [*(metadata.requires("precisionlab") or [])]
    versions = {}
    for requirement in names:
        name = requirement.split(";")[0].split("[")[0]
        for sep in "=<>!~ ":
            name = name.split(sep)[0]
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()


def _finish_notebook(staged: Path, record: dict[str, Any]) -> str:
    """Hide parameter cells, stamp provenance and add its footer, in place; return the text."""
    import nbformat

    nb = nbformat.read(staged, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    nb.metadata["precisionlab"] = record
    nb.cells.append(nbformat.v4.new_markdown_cell(footer(record), id="provenance"))
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


def parse_params(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    """`-p NAME VALUE` pairs, VALUE read as YAML like Papermill does (`[fp16, bf16]`, `3`)."""
    import yaml

    params = {}
    for name, value in pairs:
        try:
            params[name] = _numbers(yaml.safe_load(value))
        except yaml.YAMLError:
            raise ParameterError(f"{name}: {value!r} is not a YAML value (write lists as "
                                 "[a, b], strings plainly)") from None
    return params


# YAML 1.1 (PyYAML) reads `1e-4` as a string: it wants `1.0e-4`. A reader types `-p lr 1e-4`.
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _numbers(value: Any) -> Any:
    """`value` with strings in exponent notation (`1e-4`, `2E+3`) read as floats, in lists too."""
    if isinstance(value, str) and _FLOAT.match(value):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="precisionlab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    book = sub.add_parser("book", help="execute every stale chapter into book/")
    book.add_argument("chapters", nargs="*", help="only these chapters (default: all)")
    run = sub.add_parser("run", help="rerun one chapter with new parameters")
    run.add_argument("chapter")
    run.add_argument("--publish", action="store_true",
                     help="replace the published chapter in book/ (default: write beside it)")
    sweep = sub.add_parser(
        "sweep", help="rerun one chapter at every point of a parameter grid",
        description="Execute CHAPTER once per point of the grid, each an independent task on a "
        "local pool of processes or a Ray cluster; points already done are not rerun. Results "
        "go beside the published chapter (book/_runs, data/_runs); the sweep's table and "
        "figure to data/_runs/sweeps/.")
    sweep.add_argument("chapter")
    sweep.add_argument("--grid", action="append", default=[], metavar="NAME=VALUES",
                       help="a swept parameter and its values as a YAML list, e.g. "
                       "'n=[64, 128]' (repeat for a grid: every combination runs)")
    sweep.add_argument("--benchmark", action="store_true",
                       help="first run every point one by one, then the sweep (both forced), and "
                       "report the sweep's time as a ratio (written beside the table)")
    sweep.add_argument("--plot", metavar="NUMBER", default=None,
                       help="the headline number to plot against the first swept parameter "
                       "(default: the chapter's first)")
    for p in (book, sweep):
        p.add_argument("--jobs", type=int, default=None, metavar="N",
                       help="tasks at once on the local pool (sweep: default the core count, "
                       "each task getting its share as its threads; book: default 1, in order)")
        p.add_argument("--ray", metavar="ADDRESS", default=None,
                       help="run the tasks on a Ray cluster: auto (the one started on this "
                       "machine) or the head's HOST:PORT")
    status = sub.add_parser("status", help="which chapters are stale")
    status.add_argument("--check", action="store_true",
                        help="exit 1 if a chapter is stale (its published results are not "
                             "what the current inputs produce)")
    toc = sub.add_parser("toc", help="write _toc.yml from notebooks/chapters.yml")
    toc.add_argument("--check", action="store_true", help="exit 1 if _toc.yml is not current")
    audit = sub.add_parser("audit", help="audit your own model's numerics into a report",
                           description="Audit MODEL trained on DATA (each package.module:"
                           "function) in every precision: writes report.ipynb, report.html and "
                           "summary.json into --out.")
    audit.add_argument("model", metavar="MODEL", help="package.module:function returning an "
                       "fp32 torch.nn.Module (imported from the current directory or the env)")
    audit.add_argument("data", metavar="DATA", help="package.module:function returning (train, "
                       "test), each (inputs, targets) tensors or a Dataset of such pairs")
    audit.add_argument("--task", default="classification",
                       help="classification (default), regression or language-model")
    audit.add_argument("--out", metavar="DIR", default=None,
                       help="output folder (default: audits/<model function name>/)")
    for p in (run, audit, sweep):
        p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                       metavar=("NAME", "VALUE"), help="a parameter; VALUE is read as YAML")
    for p in (book, run, status, audit, sweep):
        p.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILES)}")
    for p in (book, run, audit, sweep):
        p.add_argument("--force", action="store_true", help="execute even if up to date")
    args = parser.parse_args(argv)
    if args.command == "audit":
        from precisionlab.audit import cli

        return _guarded(lambda: cli.main(args, progress=not quiet()),
                        "the previous report is unchanged")
    return _guarded(lambda: _chapters(args), "the published chapters are unchanged")


def _guarded(command: Callable[[], int], unchanged: str) -> int:
    """Run a command and turn its failures into one line and an exit code: 2 bad input (found
    before any compute), 1 a cell failed, 130 interrupted (`unchanged` says what is left)."""
    try:
        return command()
    except (ParameterError, ChapterFailed) as err:
        print(f"precisionlab: {err}", file=sys.stderr)
        return 2 if isinstance(err, ParameterError) else 1
    except KeyboardInterrupt:
        print(f"precisionlab: interrupted; {unchanged}", file=sys.stderr)
        return 130


def _chapters(args: argparse.Namespace) -> int:
    """The chapter commands: toc, status, run and book."""
    root = provenance.find_root()
    if args.command == "toc":
        current = write_toc(root, check=args.check)
        if args.check and not current:
            print("precisionlab: _toc.yml differs from notebooks/chapters.yml: run "
                  "`precisionlab toc`", file=sys.stderr)
            return 1
        return 0
    one_of("profile", args.profile, PROFILES)
    if args.command == "status":
        stale = []
        for name in chapter_names(root):
            injected, _ = plan(root, name, args.profile)
            fresh = stored_key(root / "book" / f"{name}.ipynb") == input_key(
                root, name, args.profile, injected)
            print(f"{name}: {'up to date' if fresh else 'stale'}")
            stale += [] if fresh else [name]
        if stale and args.check:
            print(f"precisionlab: stale chapters {', '.join(stale)}: run `make book` and "
                  "commit book/ and data/", file=sys.stderr)
            return 1
        return 0
    if args.command == "run":
        result = execute(root, args.chapter, args.profile, parse_params(args.parameter),
                         publish=args.publish, force=args.force, progress=not quiet())
        print(f"{result.chapter}: {result.status} -> {result.notebook.relative_to(root)}"
              f" ({result.seconds:.1f} s)")
        return 0
    if args.command == "sweep":
        return _sweep(root, args)
    names = args.chapters or chapter_names(root)
    for name in names:
        one_of("chapter", name, chapter_names(root))
    if args.jobs is not None and args.jobs < 1:
        raise ParameterError(f"--jobs: must be an integer >= 1; got {args.jobs}")
    if (args.jobs or 1) > 1 or args.ray:
        from precisionlab import sweep

        pool = sweep.make_pool(args.jobs, args.ray, root)
        try:
            failed = sweep.run_book(root, names, args.profile, pool, force=args.force)
        finally:
            pool.close()
        if failed:
            print(f"precisionlab: {', '.join(failed)} failed; the other chapters are published",
                  file=sys.stderr)
        return 1 if failed else 0
    from tqdm import tqdm

    for name in tqdm(names, desc="chapters", unit="chapter", disable=quiet()):
        result = execute(root, name, args.profile, force=args.force, progress=not quiet())
        tqdm.write(f"{name}: {result.status}"
                   + (f" ({result.seconds:.1f} s)" if result.status == "executed" else ""))
    return 0


def _sweep(root: Path, args: argparse.Namespace) -> int:
    """`precisionlab sweep`: plan and check every point, then run them on a pool."""
    from precisionlab import sweep

    if args.jobs is not None and args.jobs < 1:
        raise ParameterError(f"--jobs: must be an integer >= 1; got {args.jobs}")
    jobs = args.jobs or sweep.cores()
    threads = None if args.ray else max(1, sweep.cores() // jobs)
    planned = sweep.plan_sweep(root, args.chapter, sweep.parse_grid(args.grid),
                               parse_params(args.parameter), args.profile, threads=threads)
    pool = sweep.make_pool(jobs, args.ray, root)
    print(f"{args.chapter}: {len(planned.tasks)} points on the {pool.where}")
    try:
        if args.benchmark:
            failed = sweep.benchmark(planned, pool)["failed"]
        else:
            failed = sweep.run_sweep(planned, pool, force=args.force)
    finally:
        pool.close()
    figure = sweep.plot(planned, args.plot)
    print(f"table: {planned.table.relative_to(root)}"
          + (f"; figure: {figure.relative_to(root)}" if figure else ""))
    if failed:
        print(f"precisionlab: points {', '.join(map(str, failed))} failed (see the table's "
              "error column); the other points are written", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
