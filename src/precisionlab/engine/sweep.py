"""Chapters as independent tasks, on a local pool of processes or on a Ray cluster.

`precisionlab sweep` executes a chapter once per point of a parameter grid; `precisionlab book
--jobs N` executes stale chapters in parallel, each after the chapters whose results it reads.
A task carries what a chapter's execution needs (its template, the library's source, the lock,
the registry and its declared input files) and returns the executed notebook and its results
as bytes: the machine that runs it needs the dependencies installed, not the project nor a
shared filesystem. The driver writes what comes back atomically, as `precisionlab run` does.
Scheduling, resources and placement are Ray's (or `concurrent.futures`'), not ours.

    precisionlab sweep CHAPTER --grid NAME=VALUES [--grid ...] [-p NAME VALUE ...]
                       [--profile P] [--jobs N] [--ray auto|ADDRESS] [--plot NUMBER] [--force]
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from precisionlab.engine import registry, runner, staleness
from precisionlab.study.results import atomic_write_text
from precisionlab.validate import ParameterError, parse_params

RETRIES = 1  # a failed task runs once more before it is reported
# The sweep table's columns besides the swept parameters, headline numbers and verdicts
TABLE_FIELDS = ("point", "state", "host", "device", "cpu", "threads", "wall_time_s",
                "executed_at", "notebook", "input_key", "error")
PROJECT_FILES = ("_toc.yml", "requirements.lock", "notebooks/chapters.yml",
                 "notebooks/profiles.yml", "data/claims.csv")


@dataclass
class Task:
    """One chapter execution, self-contained: `files` (relative path -> bytes) rebuild the part
    of the project it reads in a temporary folder wherever it runs."""

    chapter: str
    profile: str
    injected: dict[str, Any]  # parameters given to Papermill
    effective: dict[str, Any]  # every parameter in force
    key: str  # the input key: same key, same results
    modules: list[str]  # library files the chapter imports (relative), for provenance
    files: dict[str, bytes] = field(repr=False)
    num_cpus: float = 1
    num_gpus: float = 0
    parts: staleness.Parts | None = None  # the key's parts, for the provenance record
    keep_store: bool = False  # keep the measurements (`precisionlab.study.store`): a published run


@dataclass
class Outcome:
    """What a task sends back: the stamped notebook and the results folder's files, or the
    failed cell's message."""

    key: str
    host: str
    notebook: str | None = None
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    seconds: float = 0.0
    error: str | None = None


# ---------------------------------------------------------------- tasks, on the driver

def make_task(root: Path, chapter: str, profile: str, overrides: dict[str, Any],
              _src: dict[str, bytes] | None = None) -> Task:
    """The task executing `chapter` with `overrides` (every name checked against its template)."""
    injected, effective = runner.plan(root, chapter, profile, overrides)
    parts = runner.key_parts(root, chapter, profile, injected)
    key = parts.key()
    files = dict(_src if _src is not None else library_files(root))
    for rel in [*PROJECT_FILES, f"notebooks/{chapter}.ipynb", *runner.data_inputs(root, chapter)]:
        if (root / rel).is_file():
            files[rel] = (root / rel).read_bytes()
    threads = effective.get("threads")
    return Task(chapter, profile, injected, effective, key,
                [p.relative_to(root).as_posix() for p in runner.modules(root, chapter)], files,
                num_cpus=threads if isinstance(threads, int) and threads > 0 else 1,
                num_gpus=1 if effective.get("device") == "cuda" else 0, parts=parts)


def library_files(root: Path) -> dict[str, bytes]:
    """The library's source tree (`src/precisionlab`, with its templates), path -> bytes."""
    base = root / "src" / "precisionlab"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def publish(root: Path, task: Task, outcome: Outcome, published: bool) -> Path:
    """Write a task's results and then its notebook into the project, as `run_job` does: the
    chapter's results folder as a whole, shared files one by one, the notebook last."""
    dest, data_dest = runner.destinations(root, task.chapter, task.key, published)
    staging = root / "_build" / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{task.chapter}-back-", dir=staging) as tmp:
        staged = Path(tmp) / "data"
        for rel, data in outcome.files.items():
            path = staged / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        runner.move_results(staged, data_dest, task.chapter, whole_tree=not published)
    atomic_write_text(dest, outcome.notebook or "")
    return dest


# ---------------------------------------------------------------- a task, on the worker

def run_task(task: Task) -> Outcome:
    """Execute a task in a temporary copy of what it reads, with the library it carries first
    on the kernel's path; return the stamped notebook and the results folder's files."""
    host = socket.gethostname()
    with tempfile.TemporaryDirectory(prefix=f"precisionlab-{task.chapter}-") as tmp:
        root = Path(tmp)
        for rel, data in task.files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        (root / "book").mkdir(exist_ok=True)
        out = root / "_results"
        job = runner.Job(
            name=task.chapter, profile=task.profile, effective=task.effective, key=task.key,
            dest=root / "_executed.ipynb", base=root, modules=[root / m for m in task.modules],
            staging=root / "_build" / "staging",
            execute=lambda nb, shown: runner.papermill_run(
                root / "notebooks" / f"{task.chapter}.ipynb", nb, task.injected, root / "book",
                shown, name=task.chapter, failed=root / "_build" / "failed.ipynb",
                unchanged=f"nothing was written on {host}", base=root),
            move=lambda staged: staged.rename(out) if staged.exists() else out.mkdir(),
            record={"chapter": task.chapter, "host": host},
            provenance_file=f"{task.chapter}/provenance.json", parts=task.parts,
            store=f"{task.chapter}/{runner.STORE}" if task.keep_store else None)
        with runner.environ(PYTHONPATH=library_first(root),
                      HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1")):
            try:
                seconds = runner.run_job(job, progress=False)
            except runner.ChapterFailed as err:
                return Outcome(task.key, host, error=str(err))
        files = {p.relative_to(out).as_posix(): p.read_bytes()
                 for p in sorted(out.rglob("*")) if p.is_file()}
        return Outcome(task.key, host, job.dest.read_text(encoding="utf-8"), files, seconds)


def library_first(root: Path) -> str:
    """A PYTHONPATH with `root`'s library before anything installed: a kernel started with it
    imports the carried source, not the worker's own copy."""
    return os.pathsep.join([str(root / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])


# ---------------------------------------------------------------- pools

class LocalPool:
    """At most `jobs` tasks at a time on this machine. Each of `jobs` slots keeps one worker
    process from task to task (as Ray does: imports are paid once); a worker that dies fails
    only the task it held, and its slot starts a new one."""

    def __init__(self, jobs: int) -> None:
        self.threads = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="precisionlab")
        self.local = threading.local()
        self.workers: list[ProcessPoolExecutor] = []
        self.lock = threading.Lock()
        self.where = f"local pool of {jobs}"

    def submit(self, task: Task) -> Future:
        return self.threads.submit(self._run, task)

    def _run(self, task: Task) -> Outcome:
        worker = getattr(self.local, "worker", None)
        if worker is None:
            worker = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
            self.local.worker = worker
            with self.lock:
                self.workers.append(worker)
        try:
            return worker.submit(run_task, task).result()
        except BrokenProcessPool:
            self.local.worker = None  # it died with this task; the slot's next task starts anew
            raise

    def close(self) -> None:
        with self.lock:
            workers = list(self.workers)
        for worker in workers:  # an interrupted sweep leaves no worker behind
            for process in list((getattr(worker, "_processes", None) or {}).values()):
                if process.is_alive():
                    process.kill()
            worker.shutdown(wait=False, cancel_futures=True)
        self.threads.shutdown(wait=True, cancel_futures=True)


class RayPool:
    """Tasks on a Ray cluster, each asking for its threads as CPUs and, on the gpu profile,
    one GPU; the library travels with the job (`py_modules`), the rest with each task."""

    def __init__(self, address: str, root: Path) -> None:
        check_address(address)
        import ray

        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False,
                     runtime_env={"py_modules": [str(root / "src" / "precisionlab")],
                                  "env_vars": {"OMP_WAIT_POLICY": "PASSIVE",
                                               "HF_HUB_OFFLINE": "1"}})
        except ConnectionError as err:
            raise ParameterError(f"--ray: no Ray cluster at {address!r}: {err}") from None
        self.ray = ray
        self.remote = ray.remote(run_task)
        self.where = f"Ray cluster at {address} ({_ray_cpus(ray)} CPUs)"

    def submit(self, task: Task) -> Future:
        return self.remote.options(num_cpus=task.num_cpus, num_gpus=task.num_gpus,
                                   max_retries=0).remote(task).future()

    def close(self) -> None:
        self.ray.shutdown()


def _ray_cpus(ray: Any) -> int:
    return int(ray.cluster_resources().get("CPU", 0))


def check_address(address: str, timeout: float = 3.0) -> None:
    """Fail within seconds when no Ray cluster answers at `address` (`auto`, `HOST:PORT` or
    `ray://HOST:PORT`), instead of waiting on Ray's own reconnection attempts."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ParameterError(f"--ray: must be auto, HOST:PORT or ray://HOST:PORT (the head "
                             f"node's address, as `ray start --head` prints it); got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ParameterError(f"--ray: no Ray cluster answers at {hostport} ({err.strerror or err}"
                             f"); start one with `ray start --head` and give its address") from None


def make_pool(jobs: int | None, ray: str | None, root: Path) -> LocalPool | RayPool:
    """A Ray pool when `ray` is given, else a local one of `jobs` processes."""
    if ray:
        return RayPool(ray, root)
    return LocalPool(jobs or cores())


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def drive(pool: LocalPool | RayPool, names: Sequence[str], deps: dict[str, list[str]],
          prepare: Callable[[str], Task | None],
          finish: Callable[[str, Task | None, Outcome | None, str | None], None],
          retries: int = RETRIES, say: Callable[[str], None] = print) -> list[str]:
    """Run the task of each name once the names it depends on are done; `prepare` gives the
    task (None: nothing to run), `finish` receives each outcome or error. A failed task is
    retried `retries` times; names depending on a failure are not run. Returns the failures."""
    pending, running, attempts = list(names), {}, {}
    done, failed = set(), []
    while pending or running:
        for name in list(pending):
            blocked = [d for d in deps.get(name, []) if d in failed]
            if blocked:
                pending.remove(name)
                failed.append(name)
                finish(name, None, None, f"not run: it reads the results of {blocked[0]}, "
                                         "which failed")
            elif all(d in done for d in deps.get(name, [])):
                pending.remove(name)
                task = prepare(name)
                if task is None:
                    done.add(name)
                else:
                    running[pool.submit(task)] = (name, task)
        if not running:
            continue
        finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for future in finished:
            name, task = running.pop(future)
            try:
                outcome = future.result()
                error = outcome.error
            except Exception as err:  # a worker that died, a lost node: Ray's or ours
                outcome, error = None, f"{type(err).__name__}: {err}"
            if error and attempts.get(name, 0) < retries:
                attempts[name] = attempts.get(name, 0) + 1
                say(f"{name}: failed ({error.splitlines()[0]}); retrying")
                running[pool.submit(task)] = (name, task)
                continue
            finish(name, task, None if error else outcome, error)
            (failed.append if error else done.add)(name)
    return failed


# ---------------------------------------------------------------- sweeps

def parse_grid(specs: Sequence[str]) -> dict[str, list]:
    """`NAME=VALUES` options, VALUES a YAML list (`seeds=[[0], [1]]`, `lr=[1e-3, 1e-4]`)."""

    grid: dict[str, list] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParameterError(f"--grid: must be NAME=VALUES with VALUES a YAML list, like "
                                 f"n=[32, 64]; got {spec!r}")
        try:
            values = parse_params([[name, text]])[name]
        except ParameterError:
            raise ParameterError(f"--grid {name}: {text!r} is not a YAML list") from None
        if not isinstance(values, list) or not values:
            raise ParameterError(f"--grid {name}: must be a non-empty YAML list like [1, 2]; "
                                 f"got {text!r}")
        if name in grid:
            raise ParameterError(f"--grid {name}: given twice")
        grid[name] = values
    if not grid:
        raise ParameterError("--grid: give at least one NAME=VALUES")
    return grid


def points(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first name varying slowest."""
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


def check_points(root: Path, chapter: str, runs: list[dict[str, Any]]) -> None:
    """Run the chapter's check cell (the cell after `parameters`) on every point's parameters in
    one Python process, so a value the chapter rejects fails before any task starts."""
    import nbformat

    nb = nbformat.read(runner.template_path(root, chapter), as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(c for c in nb.cells if c.cell_type == "code")
              if "parameters" in c.metadata.get("tags", [])]
    if not tagged or tagged[0] + 1 >= len(code):
        return
    params, check = code[tagged[0]], code[tagged[0] + 1]
    script = (
        "import contextlib, io, json, sys\n"
        "spec = json.loads(sys.stdin.read())\n"
        "errors = []\n"
        "for injected in spec['runs']:\n"
        "    scope = {}\n"
        "    try:\n"
        "        with contextlib.redirect_stdout(io.StringIO()):\n"
        "            exec(spec['params'], scope)\n"
        "            scope.update(injected)\n"
        "            exec(spec['check'], scope)\n"
        "        errors.append(None)\n"
        "    except Exception as err:\n"
        "        errors.append(f'{type(err).__name__}: {err}')\n"
        "print(json.dumps(errors))\n")
    env = {**os.environ, "PYTHONPATH": library_first(root), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", script], cwd=root / "book", env=env,
                          input=json.dumps({"params": params, "check": check, "runs": runs}),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ParameterError(f"{chapter}: its check cell could not be run on the grid: "
                             f"{done.stderr.strip().splitlines()[-1:]}")
    for run, error in zip(runs, json.loads(done.stdout.strip().splitlines()[-1]), strict=True):
        if error:
            shown = ", ".join(f"{k}={v!r}" for k, v in run.items())
            raise ParameterError(f"{chapter} at {shown}: {error.removeprefix('ParameterError: ')}")


@dataclass
class Sweep:
    """A planned sweep: its points, their tasks, and where its table goes."""

    root: Path
    chapter: str
    profile: str
    grid: dict[str, list]
    fixed: dict[str, Any]
    runs: list[dict[str, Any]]  # per point, every parameter injected beyond the profile's
    tasks: list[Task]
    table: Path
    failures: dict[int, str] = field(default_factory=dict)
    states: dict[int, str] = field(default_factory=dict)


def plan_sweep(root: Path, chapter: str, grid: dict[str, list], fixed: dict[str, Any],
               profile: str = "cpu", threads: int | None = None) -> Sweep:
    """Check everything before any task starts: the chapter, every name, every point's values
    against the chapter's own check cell. `threads` (a local pool's share of the cores) is given
    to chapters with a `threads` parameter unless the grid or `fixed` sets it."""
    runner.one_of("profile", profile, runner.PROFILES)
    runner.template_path(root, chapter)
    clash = sorted(set(grid) & set(fixed))
    if clash:
        raise ParameterError(f"{clash[0]}: both swept (--grid) and fixed (-p); give it once")
    defaults = runner.template_defaults(runner.template_path(root, chapter))
    extra = {}
    if threads and "threads" in defaults and "threads" not in grid and "threads" not in fixed:
        extra["threads"] = threads
    runs = [{**fixed, **extra, **point} for point in points(grid)]
    src = library_files(root)
    tasks = [make_task(root, chapter, profile, run, _src=src) for run in runs]
    profile_params = runner.profile_overrides(root, chapter, profile)
    check_points(root, chapter, [{**profile_params, **run} for run in runs])
    ident = json.dumps([chapter, profile, grid, fixed, extra], sort_keys=True, default=str)
    name = f"{chapter}__sweep-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"
    return Sweep(root, chapter, profile, grid, fixed, runs, tasks,
                 root / "data" / "_runs" / "sweeps" / f"{name}.csv")


def run_sweep(sweep: Sweep, pool: LocalPool | RayPool, force: bool = False,
              say: Callable[[str], None] = print) -> list[int]:
    """Execute the points not already done (same input key) on `pool`; write each point's
    results as it comes back and rewrite the sweep's table. Returns the failed points."""
    root = sweep.root
    labels = {f"point {i} {_shown(sweep.grid, run)}": i for i, run in enumerate(sweep.runs)}

    def prepare(label: str) -> Task | None:
        i = labels[label]
        task = sweep.tasks[i]
        dest, _ = runner.destinations(root, sweep.chapter, task.key, False)
        if not force and runner.stored_key(dest) == task.key:
            sweep.states[i] = "up to date"
            say(f"{label}: up to date")
            return None
        return task

    def finish(label: str, task: Task | None, outcome: Outcome | None, error: str | None) -> None:
        i = labels[label]
        if outcome is not None and task is not None:
            publish(root, task, outcome, published=False)
            sweep.states[i] = "executed"
            say(f"{label}: executed on {outcome.host} ({outcome.seconds:.1f} s)")
        else:
            sweep.failures[i] = error or "failed"
            sweep.states[i] = "failed"
            say(f"{label}: failed after {RETRIES + 1} attempts: {error}")
        write_table(sweep)

    failed = drive(pool, list(labels), {}, prepare, finish, say=say)
    write_table(sweep)
    return sorted(labels[label] for label in failed)


def benchmark(sweep: Sweep, pool: LocalPool | RayPool,
              say: Callable[[str], None] = print) -> dict[str, Any]:
    """Time the points run one by one (in this process, as `precisionlab run` runs them), then
    the same points as a sweep on `pool`, both forced, in one session; write the ratio beside the
    sweep's table."""
    from precisionlab import provenance
    from precisionlab.study.results import write_json

    t0 = time.perf_counter()
    for run in sweep.runs:
        runner.execute(sweep.root, sweep.chapter, sweep.profile, run, publish=False, force=True,
                       progress=False)
    serial = time.perf_counter() - t0
    say(f"one by one: {serial:.1f} s")
    t0 = time.perf_counter()
    failed = run_sweep(sweep, pool, force=True, say=say)
    swept = time.perf_counter() - t0
    result = {"chapter": sweep.chapter, "profile": sweep.profile, "grid": sweep.grid,
              "points": len(sweep.runs), "pool": pool.where, "one_by_one_s": round(serial, 1),
              "sweep_s": round(swept, 1), "ratio": round(swept / serial, 3), "failed": failed,
              "machine": provenance.machine("cpu")}
    write_json(sweep.table.with_suffix(".benchmark.json"), result)
    say(f"sweep: {swept:.1f} s, {result['ratio']:.2f}x the time one by one")
    return result


def _shown(grid: dict[str, list], run: dict[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={run[k]!r}" for k in grid) + ")"


def table(sweep: Sweep) -> Any:
    """The sweep's tidy table, read back from the points' files: one row per point with its
    swept values, state, headline numbers, verdicts, the machine that ran it and where it is."""
    import pandas as pd

    from precisionlab.engine import headline

    chapter = registry.load(sweep.root).chapter(sweep.chapter)
    rows = []
    for i, (run, task) in enumerate(zip(sweep.runs, sweep.tasks, strict=True)):
        row: dict[str, Any] = {"point": i, **{k: _cell(run[k]) for k in sweep.grid}}
        dest, folder = runner.destinations(sweep.root, sweep.chapter, task.key, False)
        if runner.stored_key(dest) == task.key:
            row["state"] = sweep.states.get(i, "done")
            row.update(headline.numbers(chapter.headline, folder / sweep.chapter))
            verdicts = folder / "verdicts" / f"{sweep.chapter}.json"
            if verdicts.is_file():
                for claim, entry in json.loads(verdicts.read_text()).items():
                    row[f"verdict {claim}"] = entry["verdict"]
            record = json.loads((folder / sweep.chapter / "provenance.json").read_text())
            m = record["machine"]
            row.update(host=record.get("host", ""), device=f"{m['device']}: {m['device_name']}",
                       cpu=f"{m['cpu_model']} ({m.get('cpu_capability', '')})",
                       threads=m["threads"], wall_time_s=record["wall_time_s"],
                       executed_at=record["executed_at"],
                       notebook=dest.relative_to(sweep.root).as_posix())
        else:
            row["state"] = sweep.states.get(i, "not run")
        row["input_key"] = task.key[:12]
        row["error"] = sweep.failures.get(i, "")
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(value: Any) -> Any:
    """A swept value as a table cell: scalars as they are, lists in YAML's flow style."""
    return value if isinstance(value, int | float | str | bool) else json.dumps(value)


def write_table(sweep: Sweep) -> Path:
    """Rewrite the sweep's CSV atomically (it grows as points come back)."""
    atomic_write_text(sweep.table, table(sweep).to_csv(index=False))
    return sweep.table


def plot(sweep: Sweep, number: str | None = None) -> Path | None:
    """A figure of one headline number (default: the first) against the first swept parameter,
    one line per combination of the others; saved beside the table. None without numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from precisionlab.study import plotting

    df = table(sweep)
    numbers = [c for c in df.columns if c not in (*TABLE_FIELDS, *sweep.grid)
               and not c.startswith("verdict ")]
    if number is not None and number not in numbers:
        raise ParameterError(f"--plot: {number!r} is not a headline number of "
                             f"{sweep.chapter}; its numbers: {', '.join(numbers) or 'none'}")
    number = number or (numbers[0] if numbers else None)
    done = df[df[number].notna()] if number else df.iloc[0:0]
    if done.empty:
        return None
    plotting.use_style()
    x, others = next(iter(sweep.grid)), list(sweep.grid)[1:]
    values = sweep.grid[x]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    position = {_cell(v): (v if numeric else k) for k, v in enumerate(values)}
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    groups = done.groupby(others, sort=False) if others else [((), done)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{k}={v}" for k, v in zip(others, key, strict=True)) or None
        ax.plot([position[v] for v in group[x]], group[number], marker="o", label=label)
    if not numeric:
        ax.set_xticks(range(len(values)), [str(_cell(v)) for v in values])
    ax.set_xlabel(f"{x} (swept parameter)")
    ax.set_ylabel(number)
    if others:
        ax.legend(fontsize="small")
    machines = sorted({cpu if device.startswith("cpu") else f"{device} (host CPU {cpu})"
                       for cpu, device in zip(done["cpu"], done["device"], strict=True)})
    ax.set_title(f"{sweep.chapter}, profile {sweep.profile}: {number}", fontsize="medium")
    fig.text(0.01, 0.01, "Ran on: " + "; ".join(machines), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path = sweep.table.with_suffix(".png")
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- the book in parallel

def run_book(root: Path, names: Sequence[str], profile: str, pool: LocalPool | RayPool,
             force: bool = False, say: Callable[[str], None] = print) -> list[str]:
    """Execute the stale chapters of `names` on `pool`, each once the chapters whose results it
    reads are current (its key is computed then, from their new results). Returns failures."""
    reg = registry.load(root)
    deps = {n: [d for d in reg.depends_on(n) if d in names] for n in names}
    src = library_files(root)

    def prepare(name: str) -> Task | None:
        task = make_task(root, name, profile, {}, _src=src)
        task.keep_store = True
        dest, _ = runner.destinations(root, name, task.key, True)
        if not force and runner.stored_key(dest) == task.key:
            rendered = runner.rerender(dest, runner.template_path(root, name))
            say(f"{name}: {'re-rendered' if rendered else 'up to date'}")
            return None
        return task

    def finish(name: str, task: Task | None, outcome: Outcome | None, error: str | None) -> None:
        if outcome is not None and task is not None:
            publish(root, task, outcome, published=True)
            say(f"{name}: executed on {outcome.host} ({outcome.seconds:.1f} s)")
        else:
            say(f"{name}: {error}")

    return drive(pool, list(names), deps, prepare, finish, say=say)
