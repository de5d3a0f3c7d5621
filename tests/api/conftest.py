"""Fixtures for the API tests: a real uvicorn server on an ephemeral port, tiny checkpoint."""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn

from fooocus_api.app import create_app
from fooocus_api.settings import Settings
from fooocus_core.config import load_engine_config

TINY = "tiny.safetensors"

#: A fast request on the tiny model (64x64, 2 steps, no styles, no LoRAs).
FAST: dict[str, Any] = {
    "prompt": "a red cube",
    "style_selections": [],
    "performance_selection": "Speed",
    "aspect_ratios_selection": "64*64",
    "overwrite_step": 2,
    "sampler_name": "euler",
    "scheduler_name": "simple",
    "base_model_name": TINY,
    "loras": [],
    "image_seed": 1234,
}


def fast(**changes: Any) -> dict[str, Any]:
    """:data:`FAST` with ``changes``."""
    return {**FAST, **changes}


class Server:
    """uvicorn serving the app in a background thread."""

    def __init__(self, settings: Settings, engine_factory: Any = None) -> None:
        self.settings = settings
        kwargs = {} if engine_factory is None else {"engine_factory": engine_factory}
        self.app = create_app(settings, **kwargs)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    @property
    def service(self) -> Any:
        return self.app.service  # type: ignore[attr-defined]

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


def make_settings(root: Path, checkpoint: Path, **changes: Any) -> Settings:
    """Settings with a models folder holding the tiny checkpoint, outputs under ``root``."""
    models = root / "models"
    target = models / "checkpoints" / TINY
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.hardlink_to(checkpoint)
        except OSError:
            shutil.copy(checkpoint, target)
    engine = load_engine_config(
        None,
        {},
        {
            "models_dir": str(models),
            "output_dir": str(root / "outputs"),
            "disable_preset_download": True,
        },
    )
    base = Settings(engine=engine, port=0, webhook_backoff_s=0.05, sse_ping_s=5)
    return msgspec.structs.replace(base, **changes)


@pytest.fixture(scope="session")
def server(
    tiny_sdxl_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One shared server (no API key, private URLs allowed for local test receivers)."""
    root = tmp_path_factory.mktemp("api")
    with Server(make_settings(root, tiny_sdxl_checkpoint, allow_private_urls=True)) as srv:
        yield srv


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def sse_events(response: httpx.Response) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """Parse ``id:``/``data:`` SSE events from a streaming httpx response."""
    event_id: str | None = None
    data: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield event_id, msgspec.json.decode("\n".join(data))
            event_id, data = None, []
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LogRecords(logging.Handler):
    """Keeps the records of the ``fooocus_api`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)


def offline_settings(root: Path, mirror: str, **changes: Any) -> Settings:
    """No models folder, preset downloads allowed but every download URL goes to ``mirror``."""
    engine = load_engine_config(
        None,
        {},
        {
            "models_dir": str(root / "models"),
            "output_dir": str(root / "outputs"),
            "hf_mirror": mirror,
        },
    )
    return Settings(engine=engine, port=0, sse_ping_s=5, **changes)


@pytest.fixture(scope="session")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, LogRecords]]:
    logger = logging.getLogger("fooocus_api")
    records = LogRecords()
    logger.addHandler(records)
    level = logger.level
    logger.setLevel(logging.INFO)
    root = tmp_path_factory.mktemp("offline")
    try:
        with Server(offline_settings(root, f"http://127.0.0.1:{closed_port()}")) as srv:
            yield srv, records
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
