"""The service's settings: one frozen struct built from the command line and the environment.

Nothing below this module reads flags or environment variables; the settings object is handed
down to every part that needs it.
"""

from __future__ import annotations

import msgspec

from fooocus_core import EngineConfig


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Everything the HTTP service needs to know, plus the engine's own configuration."""

    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    #: Bind address of the API server.
    host: str = "127.0.0.1"
    #: API port (0 = any free port, used by tests).
    port: int = 7866
    #: WebUI port (0 = any free port); None = no WebUI (``--nowebui``, and the default here:
    #: the command line turns it on).
    webui_port: int | None = None
    #: X-API-KEY value; empty = authentication off.
    apikey: str = ""
    #: Default webhook target for tasks that do not name one.
    webhook_url: str = ""
    #: When set, webhooks carry an HMAC-SHA256 signature made with this secret.
    webhook_secret: str = ""
    #: Attempts per webhook delivery (first try included) and the first backoff delay.
    webhook_attempts: int = 5
    webhook_backoff_s: float = 1.0
    webhook_timeout_s: float = 10.0
    #: Prefix for result URLs (``https://host/prefix`` or a bare host); None = the request's host.
    base_url: str | None = None
    #: Most tasks waiting in the queue (the running one not counted).
    queue_size: int = 100
    #: Load the default model at start (in the GPU thread) instead of on first use.
    preload: bool = False
    #: Task database file; None = ``<output_dir>/db.sqlite3``.
    db_path: str | None = None
    #: Input image URLs (and per-request webhooks) may point at private/loopback addresses.
    allow_private_urls: bool = False
    #: Largest input image (bytes, after base64 decoding / download).
    max_input_bytes: int = 32 * 1024 * 1024
    #: Timeout for fetching one input image URL (all redirects together).
    input_fetch_timeout_s: float = 20.0
    #: Finished tasks whose event history stays in memory for late SSE subscribers.
    event_history_tasks: int = 64
    #: Seconds between SSE keep-alive comments.
    sse_ping_s: float = 15.0
    log_level: str = "info"

    @property
    def database_path(self) -> str:
        """Where the task database lives."""
        if self.db_path:
            return self.db_path
        return f"{self.engine.output_dir.rstrip('/')}/db.sqlite3"
