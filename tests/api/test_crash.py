"""A real crash: the server process is killed mid-task, then started again on the same data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.api.conftest import TINY, fast
from tests.api.helpers import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def service(models: Path, outputs: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """``fooocus-api`` as its own process, answering on ``port``."""
    command = [
        sys.executable,
        "-m",
        "fooocus_api.cli",
        "--models-dir",
        str(models),
        "--output-path",
        str(outputs),
        "--disable-preset-download",
        "--nowebui",
    ]
    env = {**os.environ, "API_PORT": str(port)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: _healthy(port), timeout=60), "service did not start"
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_killed_mid_task_then_restarted(tiny_sdxl_checkpoint: Path, tmp_path: Path) -> None:
    models, outputs = tmp_path / "models", tmp_path / "outputs"
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / TINY).symlink_to(tiny_sdxl_checkpoint)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    slow = fast(async_process=True, aspect_ratios_selection="128*128", overwrite_step=400)
    quick = fast(async_process=True, image_seed=11)
    # The first request waits for the engine to be built (torch and diffusers imports).
    with service(models, outputs, port) as process, httpx.Client(base_url=base, timeout=60) as c:
        running = c.post("/v1/engine/generate", json=slow).json()["task_id"]
        pending = c.post("/v1/engine/generate", json=quick).json()["task_id"]
        assert wait_until(lambda: c.get(f"/tasks/{running}").json()["task_status"] == "running")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    with service(models, outputs, port), httpx.Client(base_url=base, timeout=60) as c:
        failed = c.get(f"/tasks/{running}").json()
        assert failed["task_status"] == "failed"
        assert failed["error"]
        assert wait_until(lambda: c.get(f"/tasks/{pending}").json()["task_status"] == "finished")
        finished = c.get(f"/tasks/{pending}").json()
        assert finished["seeds"] == [11]
        assert c.get(finished["result"][0]).status_code == 200
