"""When a published result is stale, why, and what republishing it costs: the one key module.

A chapter (or an audit report) is keyed on what decides its numbers: the code cells of its
template, its profile and parameters, the library modules its code imports, transitively, its
declared data inputs and the dependency lock. A module counts by its meaning: its syntax tree
without docstrings (comments never reach the tree), so re-wrapping a docstring or a comment
changes no key. Markdown is not in the key either: a template whose prose alone changed is
re-rendered (its new markdown spliced into the executed notebook, as jupyter-cache does) and
nothing is executed. The key's parts are stored in the provenance record, so a stale chapter
says which file changed and which part of the study it belongs to.

The runner, `precisionlab status`, the book's status page, sweeps and the audit all ask here;
no chapter imports this module, so editing it makes no chapter stale.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

KEY_VERSION = 3  # 3: modules by syntax tree, templates by code cells, parts stored in records
LAZY = "_LAZY"  # a package `__init__`'s lazy names: {"name": "module:attribute" or "module"}
PROVENANCE_CELL = "provenance"  # id of the footer cell the runner appends


# -- what a file means --------------------------------------------------------------------------

def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """`tree` without the docstrings of its module, classes and functions (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(text: str) -> str:
    """sha256 of Python source by its meaning: the syntax tree without docstrings or comments,
    blind to layout (line breaks, wrapping, blank lines)."""
    tree = _strip_docstrings(ast.parse(text))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def file_digest(path: Path) -> str:
    """A file's digest: Python by `source_digest`, anything else by its bytes."""
    data = path.read_bytes()
    if path.suffix == ".py":
        try:
            return source_digest(data.decode("utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            pass  # unparsable: its bytes decide
    return hashlib.sha256(data).hexdigest()


def digests(paths: Iterable[Path], root: Path) -> dict[str, str]:
    """{path relative to `root`: digest} of each file, sorted by path."""
    found = {p.relative_to(root).as_posix(): file_digest(p) for p in paths}
    return dict(sorted(found.items()))


def combined(parts: Mapping[str, Any]) -> str:
    """One sha256 over a JSON-ready mapping (sorted keys): the key of a set of parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def lock_hash(root: Path) -> str:
    """The dependency lock's hash, or (for an installed library without the project around it)
    a hash of the installed versions of the library's direct dependencies."""
    lock = root / "requirements.lock"
    if lock.is_file():
        return hashlib.sha256(b"requirements.lock\0" + lock.read_bytes() + b"\0").hexdigest()
    from importlib import metadata

    versions = {}
    for requirement in metadata.requires("precisionlab") or []:
        name = requirement.split(";")[0].split("[")[0]
        for sep in "=<>!~ ":
            name = name.split(sep)[0]
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return combined(versions)


# -- which library files a piece of code runs --------------------------------------------------

def _module_file(src: Path, dotted: str) -> Path | None:
    """The file of module `dotted` under `src` (`a/b.py` or `a/b/__init__.py`), if it is there."""
    base = src.joinpath(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def lazy_names(init: Path) -> dict[str, str]:
    """A package's lazily imported names, {name: dotted module that defines it}, read from the
    literal dict `_LAZY = {...}` of its `__init__.py` ({} when it has none)."""
    if init.name != "__init__.py" or not init.is_file():
        return {}
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == LAZY for t in targets) and node.value:
            return {name: target.partition(":")[0]
                    for name, target in ast.literal_eval(node.value).items()}
    return {}


def _with_packages(src: Path, dotted: str, whole: bool = True) -> list[Path]:
    """Files that `import dotted` runs: every package `__init__.py` on the way, then the module
    itself ([] when the top-level name is not under `src`, e.g. numpy). With `whole`, a lazy
    package counts its lazy modules too (its attributes may be used)."""
    found, parts = [], dotted.split(".")
    for i in range(1, len(parts) + 1):
        path = _module_file(src, ".".join(parts[:i]))
        if path is None:
            break
        found.append(path)
    if whole and found and len(found) == len(parts):
        for module in lazy_names(found[-1]).values():
            found += _with_packages(src, module)
    return found


def _imports(src: Path, tree: ast.AST, package: str) -> list[Path]:
    """Files under `src` that the imports anywhere in `tree` (function bodies too) run.

    `package` is the dotted package relative imports start from ('' for a notebook's code)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found += _with_packages(src, alias.name)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".") if package else []
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if not module:
                continue
            found += _with_packages(src, module, whole=False)
            lazy = lazy_names(src.joinpath(*module.split(".")) / "__init__.py")
            for alias in node.names:  # `from pkg import submodule` imports a module too
                sub = _module_file(src, f"{module}.{alias.name}")
                if sub:
                    found += _with_packages(src, f"{module}.{alias.name}")
                elif alias.name in lazy:
                    found += _with_packages(src, lazy[alias.name])
                elif alias.name == "*":
                    found += [p for m in lazy.values() for p in _with_packages(src, m)]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found += _with_packages(src, node.args[0].value)
    return found


def module_closure(src: Path, sources: Iterable[str]) -> list[Path]:
    """The source files under `src` that running the code `sources` imports, transitively.

    Follows `import a.b`, `from a import b` (b a name, a submodule or a lazy name of a's
    `_LAZY` map), relative imports and `importlib.import_module("literal")`, at any depth of the
    code, through every module found; packages on the way count (importing a.b runs
    a/__init__.py). Lines starting with `%` or `!` (IPython magics) are skipped. Sorted."""
    todo: list[Path] = []
    for code in sources:
        lines = [ln for ln in code.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        todo += _imports(src, ast.parse("\n".join(lines)), "")
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        dotted = ".".join(path.relative_to(src).with_suffix("").parts)
        package = dotted.removesuffix(".__init__") if path.name == "__init__.py" \
            else dotted.rpartition(".")[0]
        todo += _imports(src, ast.parse(path.read_text(encoding="utf-8")), package)
    return sorted(seen)


# -- a notebook: code that runs, prose that is read ---------------------------------------------

def code_cells(nb: Any) -> list[dict[str, Any]]:
    """The code cells that decide a notebook's outputs: source and the tags Papermill reads
    (an executed notebook's injected-parameters cell and footer are not its template's)."""
    return [{"source": c.source, "parameters": "parameters" in c.metadata.get("tags", [])}
            for c in nb.cells if c.cell_type == "code"
            and "injected-parameters" not in c.metadata.get("tags", [])]


def prose_cells(nb: Any) -> list[str]:
    """The markdown a reader reads (the runner's provenance footer excluded)."""
    return [c.source for c in nb.cells
            if c.cell_type == "markdown" and c.get("id") != PROVENANCE_CELL]


def prose_digest(nb: Any) -> str:
    """sha256 of a notebook's prose: what a markdown-only edit changes."""
    return combined({"prose": prose_cells(nb)})


def _read(path: Path) -> Any:
    import nbformat

    return nbformat.read(path, as_version=4)


# -- a chapter's key, in parts --------------------------------------------------------------

@dataclass
class Parts:
    """Everything that decides a run's numbers, part by part; `key()` hashes them all."""

    code: str  # digest of the template's code cells
    profile: str
    parameters: dict[str, Any]
    modules: dict[str, str]  # library file -> digest
    lock: str
    inputs: dict[str, str] = field(default_factory=dict)  # declared data file -> sha256
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. an audit's own source files
    version: int = KEY_VERSION

    def key(self) -> str:
        return combined(self.as_dict())

    def compute_key(self) -> str:
        """The key of the measurements alone: every part but the library files that only judge
        (rules) or present (reports, figures, tables). Unchanged, a run can be replayed."""
        parts = self.as_dict()
        parts["modules"] = {p: d for p, d in parts["modules"].items()
                            if study_part(p) == "compute"}
        return combined(parts)

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), sort_keys=True))


def data_inputs(root: Path, chapter: str) -> dict[str, str]:
    """Project files a chapter reads besides the library, path -> sha256: the globs its registry
    entry declares (for the ledger: the verdict files of the chapters before it)."""
    from precisionlab.engine import registry

    found = {}
    for pattern in registry.load(root).inputs(chapter):
        for path in sorted(root.glob(pattern)):
            if path.is_file():
                found[path.relative_to(root).as_posix()] = hashlib.sha256(
                    path.read_bytes()).hexdigest()
    return found


def notebook_modules(src: Path, nb: Any, extra: Iterable[str] = ()) -> list[Path]:
    """The library files a notebook's code cells (and the code `extra`) import, transitively;
    SyntaxError when its code cannot be parsed."""
    return module_closure(src, [c["source"] for c in code_cells(nb)] + list(extra))


def parts_for(root: Path, template: Path, profile: str, injected: dict[str, Any],
              modules: list[Path], inputs: dict[str, str] | None = None,
              extra: dict[str, Any] | None = None) -> Parts:
    """The key parts of running `template` with `injected` parameters over `modules`."""
    return Parts(code=combined({"cells": code_cells(_read(template))}), profile=profile,
                 parameters=injected, modules=digests(modules, root), lock=lock_hash(root),
                 inputs=inputs or {}, extra=extra or {})


# -- why a result is stale --------------------------------------------------------------------

PARTS_OF_THE_STUDY = ("compute", "rules", "presentation", "prose")


def study_part(path: str) -> str:
    """Which part of the study a library file belongs to: `rules` (verdict rules, claims,
    ledger), `presentation` (reports, figures, tables, glued prose) or `compute` (the numerics
    and the experiments that measure)."""
    rel = path.removeprefix("src/").removeprefix("precisionlab/").removeprefix("study/")
    if rel.startswith("rules/") or rel in ("claims.py", "ledger.py"):
        return "rules"
    if rel.startswith("reports/") or rel in ("plotting.py", "tables.py", "prose.py"):
        return "presentation"
    return "compute"


@dataclass(frozen=True)
class Change:
    """One difference between a run's stored key parts and today's: `what` changed (a file's
    path, or the name of a part) and the `part` of the study it touches."""

    what: str
    how: str  # "changed", "added", "removed"
    part: str  # one of PARTS_OF_THE_STUDY

    def __str__(self) -> str:
        return f"{self.what} {self.how} ({self.part})"


def changes(stored: Mapping[str, Any] | None, current: Parts) -> list[Change]:
    """What differs between stored key parts (a provenance record's `key_parts`) and `current`:
    the files first (each with its part of the study), then parameters, profile, lock, code."""
    if not stored or stored.get("version") != current.version:
        return [Change(f"the key's definition (version {current.version})",
                       "changed" if stored else "recorded without parts", "compute")]
    now = current.as_dict()
    found: list[Change] = []
    for group, part_of in (("modules", study_part), ("inputs", lambda _: "compute")):
        before, after = stored.get(group) or {}, now[group]
        for path in sorted(set(before) | set(after)):
            if path not in after:
                found.append(Change(path, "removed", part_of(path)))
            elif path not in before:
                found.append(Change(path, "added", part_of(path)))
            elif before[path] != after[path]:
                found.append(Change(path, "changed", part_of(path)))
    for name, what in (("code", "the template's code cells"), ("parameters", "parameters"),
                       ("profile", "the profile"), ("lock", "requirements.lock"),
                       ("extra", "the audited model's source files")):
        if stored.get(name) != now[name]:
            found.append(Change(what, "changed", "compute"))
    return found


@dataclass
class Status:
    """Where a published run stands: `state` is "current", "re-render" (only its prose
    changed), "stale" or "not executed"; `changes` says why; `replayable` when its measurements
    are unchanged and stored (only rules, reports or figures changed); `seconds` its last wall
    time."""

    state: str
    changes: list[Change] = field(default_factory=list)
    record: dict[str, Any] | None = None
    prose_changed: bool = False
    replayable: bool = False

    @property
    def seconds(self) -> float | None:
        return (self.record or {}).get("wall_time_s")

    def why(self) -> str:
        """The changes in words: files first, e.g. "src/precisionlab/study/rules/mixed.py changed
        (rules)"; "" when current."""
        said = [str(c) for c in self.changes]
        if self.prose_changed:
            said.append("the template's markdown changed (prose)")
        return "; ".join(said)

    def cost(self) -> str:
        """What republishing costs: nothing, a re-render (seconds) or a recompute."""
        if self.state == "current":
            return "nothing to do"
        if self.state == "re-render":
            return "re-render the prose, execute nothing (seconds)"
        if self.replayable:
            return ("re-run the rules, reports and figures on the stored measurements, train "
                    "nothing (seconds)")
        last = f", {self.seconds:,.0f} s last time" if self.seconds else ""
        return f"re-execute the chapter{last}"


def record_of(notebook: Path) -> dict[str, Any] | None:
    """The provenance record stamped into an executed notebook, or None."""
    try:
        return json.loads(notebook.read_text(encoding="utf-8"))["metadata"]["precisionlab"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def replayable(record: dict[str, Any] | None, current: Parts, store: Path,
               here: tuple[str, str] | None) -> bool:
    """Whether a stale run can be republished from its stored measurements: its compute key is
    today's, its store is there, and this machine (`here`: CPU model and torch's capability,
    None on a GPU) is the one that measured (a figure's hardware line must name that machine)."""
    from precisionlab.study import store as stored_calls

    if not record or record.get("compute_key") != current.compute_key():
        return False
    if here is None or not (store / stored_calls.INDEX).is_file():
        return False
    measured = (record.get("measured") or record).get("machine") or {}
    return (str(measured.get("device", "cpu")) == "cpu" and not measured.get("forced")
            and (str(measured.get("cpu_model")), str(measured.get("cpu_capability"))) == here)


def this_cpu() -> tuple[str, str]:
    """(CPU model, torch's CPU capability) of this machine: what `replayable` compares."""
    from precisionlab import provenance

    return str(provenance.cpu_info()["cpu_model"]), provenance.kernels()["cpu_capability"]


def status(executed: Path, template: Path, current: Parts, store: Path | None = None,
           here: tuple[str, str] | None = None) -> Status:
    """Whether the executed notebook `executed` is what `template` run with `current` parts
    gives today, and if not, why and at what cost (`store`: its stored measurements, `here`:
    this CPU, to tell whether they can be replayed)."""
    if not executed.is_file():
        return Status("not executed")
    record = record_of(executed)
    if record is None:
        return Status("stale", [Change(f"{executed.name} (no provenance record)", "changed",
                                       "compute")])
    if record.get("input_key") != current.key():
        found = changes(record.get("key_parts"), current) or \
            [Change("the stored key", "changed", "compute")]
        return Status("stale", found, record, replayable=store is not None
                      and replayable(record, current, store, here))
    if prose_digest(_read(executed)) != prose_digest(_read(template)):
        return Status("re-render", [], record, prose_changed=True)
    return Status("current", [], record)


def splice_prose(executed: Any, template: Any) -> Any:
    """The executed notebook with the template's markdown: the executed code cells (outputs,
    tags) in their places among the template's markdown cells, Papermill's injected-parameters
    cell after the parameters cell and the provenance footer last. ValueError when the code
    cells differ (then the chapter needs executing, not re-rendering)."""
    import copy

    ran = [c for c in executed.cells if c.cell_type == "code"
           and "injected-parameters" not in c.metadata.get("tags", [])]
    injected = [c for c in executed.cells
                if "injected-parameters" in c.metadata.get("tags", [])]
    footer = [c for c in executed.cells if c.get("id") == PROVENANCE_CELL]
    wanted = code_cells(template)
    if [{"source": c.source, "parameters": "parameters" in c.metadata.get("tags", [])}
            for c in ran] != wanted:
        raise ValueError("the code cells differ: execute the notebook instead")
    out = copy.deepcopy(executed)
    cells, pending = [], iter(ran)
    for cell in template.cells:
        if cell.cell_type == "code":
            done = next(pending)
            cells.append(done)
            if "parameters" in done.metadata.get("tags", []):
                cells, injected = cells + injected, []
        else:
            cells.append(copy.deepcopy(cell))
    out.cells = injected + cells + footer  # no parameters cell: Papermill injects at the top
    return out
