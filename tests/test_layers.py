"""The house in three wings, one folder each: which module may import which, and no circle.

- numerics, `precisionlab.*` (what readers import: formats, amp, quant, ...): only numerics;
- study, `precisionlab.study.*` (tasks, stats, experiments, rules, reports, claims, ledger,
  ...): numerics and study, and rules and reports never import experiments (they judge and
  present tables);
- engine, `precisionlab.engine.*` (runner, staleness, registry, sweep, the CLI, the Sphinx
  extension, ...): anything but experiments, rules and reports (it runs notebooks and knows no
  experiment).

Imports under `if TYPE_CHECKING:` are type hints, not arrows; function-level imports count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
NUMERICS = ("formats", "lowbit", "amp", "quant", "memory", "bench", "data", "models",
            "pretrained", "gradstats", "provenance", "validate", "lazy")  # the top level
JUDGES = ("precisionlab.study.rules", "precisionlab.study.reports")  # never import experiments
EXPERIMENTS = "precisionlab.study.experiments"


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def wing(module: str) -> str:
    """The wing of a dotted module: its folder ('' for the top package itself)."""
    if module == "precisionlab":
        return ""
    for name in ("study", "engine"):
        if _under(module, f"precisionlab.{name}"):
            return name
    if module.removeprefix("precisionlab.").split(".")[0] in NUMERICS:
        return "numerics"
    raise AssertionError(f"{module} is in no wing: put it in study/ or engine/, or list it in "
                         "NUMERICS (tests/test_layers.py)")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _nodes(tree: ast.AST):
    """Every node of `tree` except the bodies of `if TYPE_CHECKING:` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def _module_of(path: Path) -> str:
    dotted = ".".join(path.relative_to(SRC).with_suffix("").parts)
    return dotted.removesuffix(".__init__")


def _exists(dotted: str) -> bool:
    base = SRC.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports(path: Path) -> set[str]:
    """The precisionlab modules `path` imports (a `from pkg import sub` names the submodule)."""
    module = _module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in _nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _exists(sub) else target)
    return {m for m in found if m.startswith("precisionlab") and m != module}


def graph() -> dict[str, set[str]]:
    return {_module_of(p): imports(p) for p in sorted((SRC / "precisionlab").rglob("*.py"))}


def wrong_arrows(edges: dict[str, set[str]]) -> list[str]:
    """Every import that points the wrong way, as 'a -> b (why)'."""
    bad = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            w_from, w_to = wing(source), wing(target)
            if w_to == "" or w_from == "":
                continue
            if w_from == "numerics" and w_to != "numerics":
                bad.append(f"{source} -> {target} (numerics import only numerics)")
            elif w_from == "study" and w_to == "engine":
                bad.append(f"{source} -> {target} (the study never imports the engine)")
            elif _under(target, EXPERIMENTS) and (
                    w_from == "engine" or any(_under(source, j) for j in JUDGES)):
                bad.append(f"{source} -> {target} (only experiments compute)")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_in_a_wing():
    for module in graph():
        wing(module)


def test_no_arrow_points_the_wrong_way():
    assert wrong_arrows(graph()) == []


def test_the_house_has_no_import_circle():
    assert cycles(graph()) == []


def test_the_checks_catch_what_they_should():
    """The rules themselves, on a made-up graph: each kind of wrong arrow and a circle."""
    edges = {
        "precisionlab.amp.trainer": {"precisionlab.study.claims"},
        "precisionlab.study.rules.mixed": {"precisionlab.study.experiments.mixed"},
        "precisionlab.study.ledger": {"precisionlab.engine.registry"},
        "precisionlab.engine.runner": {"precisionlab.study.experiments.speed",
                                       "precisionlab.study.results"},
        "precisionlab.study.reports.speed": {"precisionlab.bench", "precisionlab.study.stats"},
    }
    assert wrong_arrows(edges) == [
        "precisionlab.amp.trainer -> precisionlab.study.claims (numerics import only numerics)",
        "precisionlab.engine.runner -> precisionlab.study.experiments.speed (only experiments "
        "compute)",
        "precisionlab.study.ledger -> precisionlab.engine.registry (the study never imports the "
        "engine)",
        "precisionlab.study.rules.mixed -> precisionlab.study.experiments.mixed (only experiments "
        "compute)",
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    with pytest.raises(AssertionError, match="in no wing"):
        wing("precisionlab.mystery")


def test_importing_the_package_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, precisionlab; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
