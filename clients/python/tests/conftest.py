"""Real servers for the tests: redis-server processes on free loopback ports
(never a mock), a three-master Redis Cluster, and the Rust binaries
(`SPOOL_BIN_DIR`, default target/debug; scripts/test-clients.sh builds them)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN_DIR = Path(os.environ.get("SPOOL_BIN_DIR", ROOT / "target" / "debug"))


def free_port(below: int = 65536) -> int:
    """A free loopback port; cluster nodes need one under 55536 (their bus
    listens on port + 10000)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < below:
            return port


class RedisProcess:
    """One redis-server on a free port, killed on `stop`."""

    def __init__(self, *extra: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="spool-py-redis-")
        self.port = free_port(55536 if "--cluster-enabled" in extra else 65536)
        self.extra = extra
        self._spawn()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                self.dir,
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server on {self.port} did not start") from None
                time.sleep(0.02)

    def kill(self) -> None:
        """Kills the server (SIGKILL); `restart` brings it back."""
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        """Starts it again on the same port and data."""
        self._spawn()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_url() -> Iterator[str]:
    r = RedisProcess()
    yield r.url
    r.stop()


@pytest.fixture
def redis_password() -> Iterator[tuple[str, str]]:
    password = "Py-s3cret-Zq81"
    r = RedisProcess("--requirepass", password)
    yield f"redis://:{password}@127.0.0.1:{r.port}", password
    r.stop()


@pytest.fixture
def sentinel_url() -> Iterator[str]:
    """A master and one sentinel watching it, as `redis+sentinel://`."""
    master = RedisProcess()
    port = free_port()
    conf = Path(tempfile.mkdtemp(prefix="spool-py-sentinel-")) / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor spoolmaster 127.0.0.1 {master.port} 1\n"
    )
    proc = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        out = subprocess.run(
            ["redis-cli", "-p", str(port), "sentinel", "get-master-addr-by-name", "spoolmaster"],
            capture_output=True,
            text=True,
        ).stdout
        if str(master.port) in out:
            break
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"the sentinel never knew the master: {out!r}")
        time.sleep(0.05)
    yield f"redis+sentinel://127.0.0.1:{port}/spoolmaster"
    proc.kill()
    proc.wait()
    master.stop()


@pytest.fixture
def cluster_url() -> Iterator[str]:
    nodes = [
        RedisProcess("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        for _ in range(3)
    ]
    addrs = [f"127.0.0.1:{n.port}" for n in nodes]
    subprocess.run(
        ["redis-cli", "--cluster", "create", *addrs, "--cluster-yes"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        out = subprocess.run(
            ["redis-cli", "-p", str(nodes[0].port), "cluster", "info"],
            capture_output=True,
            text=True,
        ).stdout
        if "cluster_state:ok" in out:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cluster never became ok: {out}")
        time.sleep(0.1)
    yield "redis+cluster://" + ",".join(addrs)
    for n in nodes:
        n.stop()


def media_roots(root: Path, w: int, h: int, secs: int) -> tuple[Path, Path]:
    """`root/in` holding a generated H.264 clip `clip.mp4` (lavfi testsrc2,
    25 fps) and an empty `root/out`, for an encoder worker's two roots."""
    (root / "in").mkdir()
    (root / "out").mkdir()
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={w}x{h}:rate=25:duration={secs}",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(root / "in" / "clip.mp4"),
        ],
        check=True,
    )
    return root / "in", root / "out"


def binary(name: str) -> Path:
    for p in (BIN_DIR / name, BIN_DIR / "examples" / name):
        if p.exists():
            return p
    raise RuntimeError(
        f"{name} is not built in {BIN_DIR}: run scripts/test-clients.sh (it builds the Rust "
        "binaries first) or set SPOOL_BIN_DIR"
    )


class Worker:
    """A Rust worker process (sleep_worker or spool-encoder-worker)."""

    def __init__(self, name: str, url: str, queue: str, **env: str) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="spool-py-worker-", delete=False)
        full = dict(os.environ)
        full.update(
            SPOOL_REDIS_URL=url,
            SPOOL_QUEUE=queue,
            SPOOL_METRICS_ADDR="off",
            SPOOL_SWEEP_INTERVAL="200ms",
            **env,
        )
        self.proc = subprocess.Popen(
            [str(binary(name))], env=full, stdout=self.log, stderr=self.log
        )

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
