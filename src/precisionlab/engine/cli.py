"""The `precisionlab` command: every subcommand's arguments, in one place.

    precisionlab book [--profile cpu|smoke|gpu] [--force] [--jobs N] [--ray ADDR] [CHAPTER ...]
    precisionlab run CHAPTER -p NAME VALUE [-p NAME VALUE ...] [--profile P] [--publish]
    precisionlab status [--profile P] [--check]
    precisionlab kernels
    precisionlab toc [--check]
    precisionlab sweep CHAPTER --grid NAME=VALUES [...] [-p NAME VALUE] [--jobs N] [--ray ADDR]
    precisionlab audit MODEL DATA [--task T] [--out DIR] [--profile P] [-p NAME VALUE] [--force]

The runner (`precisionlab.engine.runner`), sweeps (`precisionlab.engine.sweep`) and the audit
(`precisionlab.engine.audit`) do the work; this module only parses and reports, so none of them
imports another through it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from precisionlab import provenance
from precisionlab.engine import runner
from precisionlab.engine.runner import PROFILES, ChapterFailed, quiet
from precisionlab.validate import ParameterError, one_of, parse_params


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
    status = sub.add_parser("status", help="which chapters are stale, why, and what "
                            "republishing them costs")
    status.add_argument("--check", action="store_true",
                        help="exit 1 if a chapter is stale (its published results are not "
                             "what the current inputs produce)")
    sub.add_parser("kernels", help="which kernels a verification pass should run on here: this "
                   "CPU's own when it differs from the one that published the book, else "
                   "torch's generic ones (prints native or portable, then why)")
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
        p.add_argument("--profile", default=None if p is status else "cpu",
                       help=f"one of {', '.join(PROFILES)}" + (
                           " (default: the profile each chapter was run at)" if p is status
                           else " (default: cpu)"))
    for p in (book, run, audit, sweep):
        p.add_argument("--force", action="store_true", help="execute even if up to date")
    args = parser.parse_args(argv)
    if args.command == "audit":
        return _guarded(lambda: _audit(args), "the previous report is unchanged")
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
        current = runner.write_toc(root, check=args.check)
        if args.check and not current:
            print("precisionlab: _toc.yml differs from notebooks/chapters.yml: run "
                  "`precisionlab toc`", file=sys.stderr)
            return 1
        return 0
    if args.command == "kernels":
        from precisionlab.engine import verification

        choice = verification.choose(root)
        print(choice.mode)
        print(choice.why, file=sys.stderr)
        return 0
    if args.profile is not None:
        one_of("profile", args.profile, PROFILES)
    if args.command == "status":
        return _status(root, args.profile, args.check)
    if args.command == "run":
        result = runner.execute(root, args.chapter, args.profile, parse_params(args.parameter),
                         publish=args.publish, force=args.force, progress=not quiet())
        print(f"{result.chapter}: {result.status} -> {result.notebook.relative_to(root)}"
              f" ({result.seconds:.1f} s)")
        return 0
    if args.command == "sweep":
        return _sweep(root, args)
    names = args.chapters or runner.chapter_names(root)
    for name in names:
        one_of("chapter", name, runner.chapter_names(root))
    if args.jobs is not None and args.jobs < 1:
        raise ParameterError(f"--jobs: must be an integer >= 1; got {args.jobs}")
    if (args.jobs or 1) > 1 or args.ray:
        from precisionlab.engine import sweep

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
        result = runner.execute(root, name, args.profile, force=args.force, progress=not quiet())
        tqdm.write(f"{name}: {result.status}"
                   + (f" ({result.seconds:.1f} s)" if result.status != "up to date" else ""))
    return 0


def _sweep(root: Path, args: argparse.Namespace) -> int:
    """`precisionlab sweep`: plan and check every point, then run them on a pool."""
    from precisionlab.engine import sweep

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




def _status(root: Path, profile: str | None, check: bool) -> int:
    """`precisionlab status`: each chapter's state, and for a stale one which files changed,
    the part of the study each belongs to and what republishing costs."""
    behind = []
    for name in runner.chapter_names(root):
        found = runner.chapter_status(root, name, profile)
        line = f"{name}: {'up to date' if found.state == 'current' else found.state}"
        if found.state in ("stale", "re-render"):
            line += f"\n    why: {found.why()}\n    republishing: {found.cost()}"
            behind.append(name)
        print(line)
    if behind and check:
        print(f"precisionlab: chapters not current: {', '.join(behind)}: run `make book` and "
              "commit book/ and data/", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _audit(args: argparse.Namespace) -> int:
    """`precisionlab audit`: run (or find up to date) the report, then say where it is."""
    from precisionlab.engine.audit import OUTPUTS, run_audit, shown

    done = run_audit(args.model, args.data, args.task, args.profile,
                     parse_params(args.parameter), args.out, args.force, not quiet())
    if done.status == "up to date":
        print(f"{done.name}: up to date -> {shown(done.out)}/ (--force reruns it)")
    else:
        print(f"{done.name}: executed in {done.seconds:.1f} s -> {shown(done.out)}/")
    for name in OUTPUTS:
        print(f"  {shown(done.out / name)}")
    if done.recommendations:
        print("Recommendations:")
        for sentence in done.recommendations:
            print(f"  - {sentence}")
    return 0
