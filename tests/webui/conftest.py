"""Fixtures for the WebUI tests: the real service (API port + WebUI port, one process) with the
tiny checkpoint and a ``tiny`` preset, and headless Chromium driven by Playwright.

Chromium is Debian's (``/usr/bin/chromium``, or ``$CHROMIUM_PATH``); ``make test`` installs it
when it is missing and the user is root. Without it the tests skip, except under CI (``CI`` set),
where they fail: the browser tests must run there.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from fooocus_api.serve import Servers
from fooocus_api.settings import Settings
from fooocus_core.config import SHIPPED_CONFIG_DIR
from tests.api.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "webui"

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

#: The preset the WebUI starts from: tiny model, 64x64, 2 steps, no styles, no LoRAs.
TINY_PRESET: dict[str, Any] = {
    "default_model": "tiny.safetensors",
    "previous_default_models": [],
    "default_refiner": "None",
    "default_loras": [[True, "None", 1.0], [True, "None", 1.0], [True, "None", 1.0]],
    "default_cfg_scale": 4.0,
    "default_sampler": "euler",
    "default_scheduler": "simple",
    "default_performance": "Speed",
    "default_styles": [],
    "default_aspect_ratio": "64*64",
    "default_overwrite_step": 2,
    "checkpoint_downloads": {},
    "lora_downloads": {},
    "available_aspect_ratios": ["64*64", "64*96", "96*64"],
}


def chromium_path() -> str | None:
    candidates = [os.environ.get("CHROMIUM_PATH"), "/usr/bin/chromium", shutil.which("chromium")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests must run in CI: {reason}")
    pytest.skip(reason)


def tiny_config_dir(root: Path) -> Path:
    """The shipped config folder (linked) with a ``tiny`` preset added."""
    target = root / "config"
    target.mkdir(parents=True, exist_ok=True)
    for entry in SHIPPED_CONFIG_DIR.iterdir():
        if entry.name != "presets":
            (target / entry.name).symlink_to(entry)
    presets = target / "presets"
    presets.mkdir()
    for preset in (SHIPPED_CONFIG_DIR / "presets").glob("*.json"):
        (presets / preset.name).symlink_to(preset)
    (presets / "tiny.json").write_text(json.dumps(TINY_PRESET), "utf-8")
    return target


def webui_settings(root: Path, checkpoint: Path, **changes: Any) -> Settings:
    """Settings for a service with the WebUI on a free port and the ``tiny`` preset."""
    settings = make_settings(root, checkpoint, webui_port=0, **changes)
    engine = msgspec.structs.replace(
        settings.engine, config_dir=str(tiny_config_dir(root)), preset="tiny"
    )
    return msgspec.structs.replace(settings, engine=engine)


class Service:
    """:class:`Servers` (API + WebUI) in a background thread, as ``fooocus-api`` runs them."""

    def __init__(self, settings: Settings) -> None:
        self.servers = Servers(settings, log_level="warning")
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.servers.serve())

    def __enter__(self) -> Service:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.servers.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("service did not start")
            time.sleep(0.01)
        self.api_url = f"http://127.0.0.1:{self.servers.api_port}"
        self.webui_url = f"http://127.0.0.1:{self.servers.webui_port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.servers.stop()
        self.thread.join(timeout=60)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=60, **kwargs)


@pytest.fixture(scope="session")
def service(
    tiny_sdxl_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The service with the WebUI, no API key."""
    root = tmp_path_factory.mktemp("webui")
    with Service(webui_settings(root, tiny_sdxl_checkpoint)) as svc:
        yield svc


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. Not for the session: Playwright's sync API keeps an event
    loop running in the main thread while it is open, which breaks later ``asyncio.run`` calls."""
    path = chromium_path()
    if path is None:
        _unavailable("Chromium not found (apt-get install chromium, or set CHROMIUM_PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


class Page:
    """A page in a fresh browser context, recording uncaught errors and requested URLs."""

    def __init__(self, browser: Any, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.context.set_default_timeout(20_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on(
            "console",
            lambda msg: (
                self.errors.append(msg.text)
                if msg.type == "error" and "Failed to load resource" not in msg.text
                else None
            ),
        )
        self.page.on("request", lambda req: self.urls.append(req.url))

    def open(self, url: str) -> Any:
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready='true']")
        return self.page

    def screenshot(self, name: str, **kwargs: Any) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), **kwargs)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page_factory(browser: Any) -> Iterator[Any]:
    pages: list[Page] = []

    def make(**context: Any) -> Page:
        context.setdefault("viewport", {"width": 1360, "height": 900})
        page = Page(browser, **context)
        pages.append(page)
        return page

    yield make
    for page in pages:
        errors = list(page.errors)
        page.close()
        assert not errors, f"errors in the page: {errors}"
