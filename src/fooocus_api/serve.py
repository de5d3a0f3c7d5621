"""Serving: the API server and, unless ``--nowebui``, the WebUI server, in one process.

Both are uvicorn servers on one event loop. The API server owns the lifespan (database, GPU
thread) and the signal handlers; the WebUI server only serves static files and stops when the
API server stops. Sockets are bound before serving, so the WebUI knows the API's real port
(port 0 picks a free one, as the tests do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from fooocus_api.settings import Settings
from fooocus_api.webui import create_webui_app

logger = logging.getLogger("fooocus_api")


class _CompanionServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the main (API) server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def webui_api_url(settings: Settings) -> str | None:
    """The API URL the WebUI should use when ``--base-url`` names it, else None (the page
    then uses its own host name with the API port)."""
    base = settings.base_url
    if not base:
        return None
    return (base if "://" in base else f"http://{base}:{settings.port}").rstrip("/")


class Servers:
    """The API server and the optional WebUI server, bound on creation, served by :meth:`run`."""

    def __init__(
        self, settings: Settings, app: ASGIApp | None = None, **uvicorn_options: Any
    ) -> None:
        if app is None:
            from fooocus_api.app import create_app

            app = create_app(settings)
        self.settings = settings
        self.app = app
        common: dict[str, Any] = {
            "host": settings.host,
            "log_level": settings.log_level,
            **uvicorn_options,
        }
        api_config = uvicorn.Config(
            app, port=settings.port, lifespan="on", timeout_graceful_shutdown=10, **common
        )
        self.api = uvicorn.Server(api_config)
        self.api_socket = api_config.bind_socket()
        self.api_port: int = self.api_socket.getsockname()[1]
        self._loop_factory = api_config.get_loop_factory()
        self.webui: uvicorn.Server | None = None
        self.webui_socket: socket.socket | None = None
        self.webui_port: int | None = None
        if settings.webui_port is not None:
            page = create_webui_app(self.api_port, webui_api_url(settings))
            ui_config = uvicorn.Config(
                page, port=settings.webui_port, lifespan="off", access_log=False, **common
            )
            self.webui = _CompanionServer(ui_config)
            try:
                self.webui_socket = ui_config.bind_socket()
            except BaseException:
                self.api_socket.close()
                raise
            self.webui_port = self.webui_socket.getsockname()[1]

    @property
    def started(self) -> bool:
        return self.api.started and (self.webui is None or self.webui.started)

    def stop(self) -> None:
        """Ask both servers to shut down (the API first; the WebUI follows)."""
        self.api.should_exit = True

    async def serve(self) -> None:
        """Serve until the API server stops (a signal or :meth:`stop`)."""
        ui_task: asyncio.Task[None] | None = None
        if self.webui is not None and self.webui_socket is not None:
            ui_task = asyncio.create_task(self.webui.serve(sockets=[self.webui_socket]))
        try:
            await self.api.serve(sockets=[self.api_socket])
        finally:
            if ui_task is not None and self.webui is not None:
                self.webui.should_exit = True
                await ui_task

    def log_urls(self) -> None:
        host = self.settings.host
        logger.info("API: %s (docs at /docs)", _url(host, self.api_port))
        if self.webui_port is not None:
            logger.info("WebUI: %s", _url(host, self.webui_port))
        else:
            logger.info("WebUI: off (--nowebui)")

    def run(self) -> None:
        """Serve in a new event loop (uvicorn's loop choice) until stopped."""
        self.log_urls()
        with asyncio.Runner(loop_factory=self._loop_factory) as runner:
            runner.run(self.serve())
