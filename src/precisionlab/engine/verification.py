"""Which kernels CI's one nbval pass runs on: kernels that differ from the ones that published.

nbval proves that the code regenerates the published checked outputs; it proves the most when
the kernels that re-execute differ from the ones that executed. On a CPU other than the
publishing one (another model or another torch CPU capability) this CPU's own kernels already
differ, so the pass runs natively. On the publishing CPU itself a native pass would reproduce
every bit and prove nothing about another machine, so it runs torch's generic kernels instead
(`make portability`: ATEN_CPU_CAPABILITY=default, oneDNN capped at AVX2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from precisionlab import provenance
from precisionlab.engine import staleness

NATIVE, PORTABLE = "native", "portable"


@dataclass(frozen=True)
class Choice:
    """The kernels to verify with (`mode`: native or portable) and why, in one sentence."""

    mode: str
    why: str


def cpu_identity(machine: dict[str, Any]) -> tuple[str, str]:
    """What makes two CPUs print different low bits: (CPU model, torch's CPU capability)."""
    return str(machine.get("cpu_model", "?")), str(machine.get("cpu_capability", "?"))


def publishing_cpus(root: Path) -> dict[tuple[str, str], list[str]]:
    """{(CPU model, capability): chapters} of the published book's provenance records (runs on
    a GPU or with forced kernels do not name a CPU's native kernels and are left out)."""
    found: dict[tuple[str, str], list[str]] = {}
    for notebook in sorted((root / "book").glob("[0-9][0-9]_*.ipynb")):
        machine = (staleness.record_of(notebook) or {}).get("machine") or {}
        if str(machine.get("device", "cpu")).startswith("cuda") or machine.get("forced"):
            continue
        found.setdefault(cpu_identity(machine), []).append(notebook.stem)
    return found


def decide(here: tuple[str, str], published: dict[tuple[str, str], list[str]]) -> Choice:
    """Native kernels when `here` published no chapter, else torch's generic kernels."""
    model, capability = here
    if here in published:
        chapters = published[here]
        return Choice(PORTABLE, f"this CPU ({model}, {capability} kernels) published "
                      f"{len(chapters)} of the chapters, so a native pass would reproduce their "
                      "bits; verifying on torch's generic kernels instead (as another CPU would)")
    others = "; ".join(f"{m} ({c})" for m, c in sorted(published)) or "no recorded CPU"
    return Choice(NATIVE, f"this CPU ({model}, {capability} kernels) published no chapter "
                  f"(the book was published on: {others}), so its own kernels already differ")


def choose(root: Path) -> Choice:
    """`decide` for this machine and the book under `root`."""
    here = cpu_identity({"cpu_model": provenance.cpu_info()["cpu_model"],
                         **provenance.kernels()})
    return decide(here, publishing_cpus(root))
