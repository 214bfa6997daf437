"""A two-node Ray cluster on loopback, a sweep on it, and what listened: run by test_sweep_ray.py.

Runs inside a fresh network namespace (`unshare --net`), where loopback is the only interface,
so nothing the cluster opens can be reached from outside. Usage:
    python ray_loopback.py PROJECT_ROOT MARKER_DIR  -> prints one JSON line
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

PORT = 6391
BIN = Path(sys.executable).parent


def loopback_up() -> None:
    """`ip link set lo up`, without iproute2: a new namespace starts with lo down."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 0x1))  # SIOCSIFFLAGS, IFF_UP


def listeners() -> list[str]:
    """Addresses of every listening TCP socket in this namespace (/proc/net/tcp, tcp6)."""
    found = []
    for name, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":
                found.append(local.split(":")[0][:width])
    return found


def is_loopback(hexaddr: str) -> bool:
    if len(hexaddr) == 8:  # little-endian IPv4
        return socket.inet_ntoa(bytes.fromhex(hexaddr)[::-1]).startswith("127.")
    raw = b"".join(bytes.fromhex(hexaddr[i:i + 8])[::-1] for i in range(0, 32, 8))
    text = socket.inet_ntop(socket.AF_INET6, raw)
    return text == "::1" or text.startswith("::ffff:127.")


def ray(*args: str, env: dict) -> None:
    subprocess.run([str(BIN / "ray"), *args], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)


def main(project: str, markers: str) -> dict:
    loopback_up()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp}"]
    out: dict = {}
    try:
        ray("start", "--head", f"--port={PORT}", "--include-dashboard=false",
            "--disable-usage-stats", *common, env=env)
        ray("start", f"--address=127.0.0.1:{PORT}", *common, env=env)
        done = subprocess.run(
            [str(BIN / "precisionlab"), "sweep", "90_tiny", "--grid", "n=[2, 3, 4]",
             "-p", "kill", f"{markers}/kill", "-p", "threads", "1",
             "--ray", f"127.0.0.1:{PORT}"],
            cwd=project, env=env, capture_output=True, text=True, timeout=600)
        out["returncode"], out["stdout"], out["stderr"] = done.returncode, done.stdout, done.stderr
        out["listeners"] = listeners()
        out["nodes"] = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{PORT}', "
             "logging_level='ERROR'); print(len([n for n in ray.nodes() if n['Alive']]))"],
            env=env, capture_output=True, text=True, timeout=120).stdout.strip()
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True,
                       timeout=120)
    out["loopback_only"] = all(is_loopback(a) for a in out.get("listeners", []))
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
