"""Which notebook cells may nbval check: no timings in a `# NBVAL_CHECK_OUTPUT` cell.

A checked cell must print what any CPU or GPU reproduces. A cell that measures time, or reads a
value computed from a timing (followed through assignments from cell to cell), prints what the
machine decides, so `make test` fails on it. Timings are recognised by the calls that make them
(`bench.TIMING_FUNCTIONS`, `time.perf_counter`, CUDA events, ...) and by the names of the
columns they fill (`seconds`, `speedup`, ...).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from precisionlab.bench import TIMING_FUNCTIONS

CHECK_MARK = "NBVAL_CHECK_OUTPUT"
TIMING_CALLS = frozenset({*(f"bench.{name}" for name in TIMING_FUNCTIONS), "time.perf_counter",
                          "time.perf_counter_ns", "time.time", "time.monotonic",
                          "time.process_time", "timeit.timeit", "timeit.repeat", "perf_counter",
                          "torch.cuda.Event"})
# Column and attribute names that hold timings or rates derived from them.
TIMING_WORDS = frozenset({"seconds", "median_s", "speedup", "s_per_step", "ms_per_step",
                          "seconds_per_step", "gops", "gflops", "gb_per_s", "attained_gflops",
                          "latency", "throughput", "elapsed", "wall_time_s", "iqr_over_median"})
TIMING_PREFIXES = ("ratio_to_",)  # the columns `bench.ratios` adds


def _dotted(node: ast.AST) -> str:
    """'a.b.c' for a Name/Attribute chain, '' for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return ""


def _is_timing_word(word: str) -> bool:
    return word in TIMING_WORDS or word.startswith(TIMING_PREFIXES)


def _timing_uses(node: ast.AST, tainted: set[str]) -> list[str]:
    """What in `node` measures time or reads a timing: calls, tainted names, timing columns."""
    found = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and _dotted(sub.func) in TIMING_CALLS:
            found.append(f"calls {_dotted(sub.func)}")
        elif isinstance(sub, ast.Name) and sub.id in tainted:
            found.append(f"reads {sub.id} (computed from timings)")
        elif isinstance(sub, ast.Attribute) and _is_timing_word(sub.attr):
            found.append(f"reads .{sub.attr}")
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str) \
                and _is_timing_word(sub.value):
            found.append(f"reads {sub.value!r}")
    return found


def _base_names(target: ast.AST) -> set[str]:
    """Names a statement binds or mutates: `a`, `a[...]`, `a.b`, tuples of those."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Starred):
        return _base_names(target.value)
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_base_names(t) for t in target.elts)) if target.elts else set()
    if isinstance(target, (ast.Subscript, ast.Attribute)):
        return _base_names(target.value)
    return set()


def _imported(tree: ast.AST) -> set[str]:
    """Names bound by imports: modules and library functions, which a call does not mutate."""
    return {(alias.asname or alias.name).split(".")[0] for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}


def _bound_names(statements: list[ast.stmt]) -> set[str]:
    """Every name the statements (and those nested in them) assign or mutate."""
    names: set[str] = set()
    for stmt in statements:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Assign):
                names |= set().union(*(_base_names(t) for t in node.targets))
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor)):
                names |= _base_names(node.target)
            elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) \
                    and isinstance(node.value.func, ast.Attribute):
                names |= _base_names(node.value.func.value)
    return names


def _propagate(statements: list[ast.stmt], tainted: set[str],
               modules: frozenset[str] = frozenset()) -> None:
    """Follow timings through assignments, in order: a name assigned from a timing is tainted,
    a name plainly reassigned from something else is not any more. A branch on a timing (a
    guard that skips what ran too slowly) taints all its loop or branch assigns. A call on an
    imported name (`report.figure(timings)`) mutates nothing: `modules` are never tainted."""
    for stmt in statements:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if _timing_uses(stmt, tainted):
                tainted.add(stmt.name)
            continue
        if isinstance(stmt, (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.Try)):
            header = getattr(stmt, "iter", None) or getattr(stmt, "test", None)
            if isinstance(stmt, (ast.For, ast.AsyncFor)):
                if _timing_uses(header, tainted):
                    tainted |= _base_names(stmt.target)
                else:
                    tainted -= _base_names(stmt.target)
            branches = [n for n in ast.walk(stmt) if isinstance(n, (ast.If, ast.While, ast.IfExp))]
            if any(_timing_uses(n.test, tainted) for n in branches):
                tainted |= _bound_names([stmt]) - modules
            for item in getattr(stmt, "items", []):
                if item.optional_vars is not None and _timing_uses(item.context_expr, tainted):
                    tainted |= _base_names(item.optional_vars)
            bodies = [getattr(stmt, name, []) for name in ("body", "orelse", "finalbody")]
            bodies += [h.body for h in getattr(stmt, "handlers", [])]
            for _ in range(2):  # twice: a loop body feeds its own next iteration
                for body in bodies:
                    _propagate(body, tainted, modules)
            continue
        value = getattr(stmt, "value", None)
        targets: set[str] = set()
        if isinstance(stmt, ast.Assign):
            targets = set().union(*(_base_names(t) for t in stmt.targets))
        elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
            targets = _base_names(stmt.target)
        elif isinstance(stmt, ast.Expr) and isinstance(value, ast.Call) \
                and isinstance(value.func, ast.Attribute):
            # rows.append(timed) mutates rows; report.plot(timed) does not mutate a module
            targets = _base_names(value.func.value) - modules
        if not targets or value is None:
            continue
        if _timing_uses(value, tainted):
            tainted |= targets
        elif isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            tainted -= targets


def _parse(source: str) -> ast.Module:
    """Parse a cell, with IPython magics and shell escapes blanked out."""
    return ast.parse(re.sub(r"(?m)^\s*[%!].*$", "", source))


def timing_leaks(notebook: dict) -> list[str]:
    """One message per checked cell of `notebook` (a parsed .ipynb) that measures time, reads a
    timing result, or records a hardware-dependent verdict; empty when every checked cell is
    safe."""
    tainted: set[str] = set()
    problems = []
    code = [c for c in notebook.get("cells", []) if c.get("cell_type") == "code"]
    trees = [_parse("".join(cell.get("source", ""))) for cell in code]
    modules = frozenset().union(*(_imported(tree) for tree in trees))
    for index, (cell, tree) in enumerate(zip(code, trees, strict=True)):
        source = "".join(cell.get("source", ""))
        if CHECK_MARK in source:
            uses = sorted(set(_timing_uses(tree, tainted)))
            uses += ["records a hardware-dependent verdict (hardware=...)"
                     for node in ast.walk(tree) if isinstance(node, ast.keyword)
                     and node.arg == "hardware"]
            if uses:
                problems.append(f"code cell {index}: {'; '.join(uses)}")
        _propagate(tree.body, tainted, modules)
    return problems


def check_notebooks(paths: list[Path]) -> dict[str, list[str]]:
    """`timing_leaks` for each notebook file, keeping only those with problems."""
    found = {}
    for path in paths:
        leaks = timing_leaks(json.loads(Path(path).read_text(encoding="utf-8")))
        if leaks:
            found[str(path)] = leaks
    return found
