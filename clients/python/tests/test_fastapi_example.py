"""examples/fastapi: POST /renders enqueues an encode job that the Rust
worker runs; GET /renders/{id}/events streams progress until completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import ROOT, Worker, free_port, media_roots

#: The keys of a job as both examples answer it (examples/express too).
VIEW_KEYS = sorted(
    [
        "id",
        "state",
        "attempts",
        "max_attempts",
        "progress",
        "result",
        "error",
        "enqueued_at_ms",
        "started_at_ms",
        "finished_at_ms",
        "failures",
    ]
)


def _api(port: int, redis_url: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, SPOOL_REDIS_URL=redis_url, SPOOL_QUEUE="renders")
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT / "examples" / "fastapi",
        env=env,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=1).close()
            return api
        except OSError:
            assert time.monotonic() < deadline, "the API never started"
            time.sleep(0.1)


def test_redis_down_is_a_503_with_a_message_not_a_traceback() -> None:
    port = free_port()
    api = _api(port, f"redis://127.0.0.1:{free_port()}")
    try:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/renders",
            data=json.dumps({"input": "a.mp4", "output": "a", "heights": [240]}).encode(),
            headers={"content-type": "application/json"},
        )
        try:
            urllib.request.urlopen(req, timeout=20)
            raise AssertionError("enqueued without Redis")
        except urllib.error.HTTPError as e:
            body = json.loads(e.read())
            assert e.code == 503 and "Redis" in body["detail"], (e.code, body)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/renders/x", timeout=20)
            raise AssertionError("read without Redis")
        except urllib.error.HTTPError as e:
            assert e.code == 503, e.code
    finally:
        api.terminate()
        api.wait()


def test_the_sse_endpoint_streams_progress_until_completion(redis_url: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        media_roots(root, 640, 360, 4)
        port = free_port()
        api = _api(port, redis_url)
        worker = Worker(
            "spool-encoder-worker",
            redis_url,
            "renders",
            SPOOL_INPUT_ROOT=str(root / "in"),
            SPOOL_OUTPUT_ROOT=str(root / "out"),
            SPOOL_HW="cpu",
        )
        try:
            base = f"http://127.0.0.1:{port}"
            req = urllib.request.Request(
                base + "/renders",
                data=json.dumps(
                    {"input": "clip.mp4", "output": "clip_360", "heights": [360, 240]}
                ).encode(),
                headers={"content-type": "application/json"},
            )
            created = json.load(urllib.request.urlopen(req, timeout=10))
            events: list[tuple[str, object]] = []
            with urllib.request.urlopen(base + created["events"], timeout=120) as stream:
                kind = ""
                for raw in stream:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        events.append((kind, json.loads(line[6:])))
                        if kind == "done":
                            break
            kinds = [k for k, _ in events]
            assert kinds[-1] == "done" and "progress" in kinds, (events, worker.output())
            final = events[-1][1]
            assert isinstance(final, dict) and final["state"] == "completed", final
            assert len(final["result"]["outputs"]) == 2
            # A bad request is refused with the field named, nothing enqueued.
            bad = urllib.request.Request(
                base + "/renders",
                data=json.dumps({"input": "clip.mp4", "output": "x", "heights": [361]}).encode(),
                headers={"content-type": "application/json"},
            )
            try:
                urllib.request.urlopen(bad, timeout=10)
                raise AssertionError("an odd height was accepted")
            except urllib.error.HTTPError as e:
                assert e.code == 422 and "renditions[0].height" in e.read().decode()
            # The job in the shape both examples answer.
            got = json.load(urllib.request.urlopen(base + f"/renders/{created['id']}", timeout=10))
            assert sorted(got) == VIEW_KEYS and got["state"] == "completed", got
            # A job that fails ends with a distinct `failed` event and its error.
            req = urllib.request.Request(
                base + "/renders",
                data=json.dumps({"input": "missing.mp4", "output": "m", "heights": [240]}).encode(),
                headers={"content-type": "application/json"},
            )
            doomed = json.load(urllib.request.urlopen(req, timeout=10))
            with urllib.request.urlopen(base + doomed["events"], timeout=120) as stream:
                kind, last = "", None
                for raw in stream:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind != "progress":
                        last = (kind, json.loads(line[6:]))
                        break
            assert last is not None and last[0] == "failed", last
            assert last[1]["state"] == "dead" and last[1]["error"], last
        finally:
            api.terminate()
            api.wait()
            worker.stop()
