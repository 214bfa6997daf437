"""Shared test fixtures: a throwaway copy of the project for runner tests."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    """Results written by the code under test go to a temporary folder, never to data/."""
    monkeypatch.setenv("PRECISIONLAB_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"


@pytest.fixture
def mini_project(tmp_path, monkeypatch):
    """A minimal project (toc, lock, src, data/claims.csv) with one tiny chapter template."""
    root = tmp_path / "proj"
    (root / "notebooks").mkdir(parents=True)
    (root / "book").mkdir()
    (root / "data").mkdir()
    shutil.copytree(ROOT / "src" / "precisionlab", root / "src" / "precisionlab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "requirements.lock", root / "requirements.lock")
    shutil.copy(ROOT / "data" / "claims.csv", root / "data" / "claims.csv")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\n")
    (root / "notebooks" / "profiles.yml").write_text(
        "90_tiny:\n  smoke:\n    n: 2\n")
    monkeypatch.chdir(root)
    monkeypatch.delenv("PRECISIONLAB_RESULTS_DIR", raising=False)
    return root


@pytest.fixture(scope="session")
def scaling_measured():
    """Chapter 03's sweep and underflow probe at toy sizes, shared by its experiment and report
    tests: (runs, traces, underflow)."""
    from precisionlab.study.experiments import scaling

    model = dict(mlp_hidden=[8], tf_context=8, tf_d_model=8, tf_layers=1)
    runs, traces = scaling.sweep("transformer", [0, 1], [8], steps=3, batch=4, lr=1e-3,
                                 growth_interval=2, **model)
    under = scaling.underflow("transformer", [0, 1], [8], steps=2, checkpoints=[0.0, 1.0],
                              batch=4, lr=1e-3, **model)
    return runs, traces, under


def _no_network(*args, **kwargs):
    raise OSError("test: the network was used (loading must be offline)")


@pytest.fixture(scope="session")
def no_network():
    """Any socket connection in the process fails while the fixture is active."""
    import socket

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", _no_network)
    mp.setattr(socket, "create_connection", _no_network)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def minilm(no_network):
    """The real all-MiniLM-L6-v2 encoder, loaded once per test session, with the network cut."""
    from precisionlab import pretrained

    return pretrained.load("minilm")


@pytest.fixture(scope="session")
def smollm2(no_network):
    """The real SmolLM2-135M causal LM (fp32, dequantized from Q4_1), loaded once per session
    with the network cut (~35 s on a 2-core AVX2 CPU)."""
    from precisionlab import pretrained

    return pretrained.load("smollm2")


def glue_names(notebook: Path) -> tuple[set[str], set[str]]:
    """The names a template's prose cites ({glue:text}`name`) and those its code glues by a
    literal `glue("name", ...)`; names glued from a dict (`glue_all`) the caller adds."""
    cited, glued = set(), set()
    for cell in json.loads(notebook.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            cited |= set(re.findall(r"\{glue:text\}`([^`]+)`", source))
        else:
            glued |= set(re.findall(r'glue\("([^"]+)"', source))
    return cited, glued
