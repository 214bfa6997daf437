"""A sweep on a two-node Ray cluster on loopback, with a worker killed mid-task."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_sweep import TINY, tiny_project

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow  # starts a two-node Ray cluster


def namespace_available() -> bool:
    """Whether this machine lets us make a network namespace of our own (`unshare --net`)."""
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--net", "--map-root-user", "true"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not namespace_available(),
                    reason="unshare --net is not permitted here: the cluster would listen on "
                           "the host's network")
def test_sweep_on_a_two_node_ray_cluster_retries_a_killed_worker(mini_project, tmp_path):
    tiny_project(mini_project)
    done = subprocess.run(
        ["unshare", "--net", "--map-root-user", sys.executable, str(HERE / "ray_loopback.py"),
         str(mini_project), str(tmp_path)],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["returncode"] == 0, out["stderr"][-3000:] + out["stdout"][-3000:]
    assert out["nodes"] == "2"
    assert out["listeners"] and out["loopback_only"], out["listeners"]
    assert "3 points on the Ray cluster at 127.0.0.1:6391 (2 CPUs)" in out["stdout"]
    # n=3 killed the Ray worker running it on its first attempt: Ray reported the lost worker
    # and the driver ran the task again
    assert "point 1 (n=3): failed" in out["stdout"] and "retrying" in out["stdout"]
    table = next((mini_project / "data" / "_runs" / "sweeps").glob(f"{TINY}__sweep-*.csv"))
    df = pd.read_csv(table)
    assert list(df.state) == ["executed"] * 3
    assert list(df["sum of i"]) == [3, 6, 10]
    assert list(df["verdict FMT-1"]) == ["nuanced"] * 3
    for path in df.notebook:
        assert (mini_project / path).is_file()
