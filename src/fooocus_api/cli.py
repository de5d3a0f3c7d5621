"""Command line: FooocusAPI's flags (plus a few of ours) → :class:`Settings` → uvicorn.

``fooocus-api`` (the console script) and ``python launch.py`` both end here.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence

from fooocus_api.settings import Settings
from fooocus_core import load_engine_config

logger = logging.getLogger("fooocus_api")

DEFAULT_WEBUI_PORT = 7865
DEFAULT_API_PORT = 7866


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (FooocusAPI's flag names and defaults)."""
    p = argparse.ArgumentParser(
        prog="fooocus-api",
        description="FooocusAPI-compatible SDXL image generation service.",
    )
    p.add_argument(
        "--listen",
        nargs="?",
        const="0.0.0.0",
        default="127.0.0.1",
        metavar="IP",
        help="bind address (bare --listen = 0.0.0.0; default 127.0.0.1)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help="WebUI port; the API listens on API_PORT, else --port + 1, else 7866",
    )
    p.add_argument(
        "--nowebui", action="store_true", help="serve only the API, not the WebUI on --port"
    )
    p.add_argument("--apikey", default=None, help="require this X-API-KEY (env FOOOCUS_API_KEY)")
    p.add_argument("--webhook-url", default=None, help="default webhook for finished tasks")
    p.add_argument(
        "--webhook-secret",
        default=None,
        help="sign webhooks with HMAC-SHA256 (env FOOOCUS_WEBHOOK_SECRET)",
    )
    p.add_argument("--base-url", default=None, help="host or URL used in result URLs")
    p.add_argument("--preset", default=None, help="global preset (default: default)")
    p.add_argument("--output-path", default=None, help="folder for images and the task database")
    p.add_argument("--models-dir", default=None, help="model folder (default: models)")
    p.add_argument("--config", default=None, help="JSON engine config file")
    p.add_argument("--queue-size", type=int, default=100, help="most waiting tasks (default 100)")
    p.add_argument("--disable-preset-download", action="store_true")
    p.add_argument("--preload", action="store_true", help="load the default model at start")
    p.add_argument("--db-path", default=None, help="task database (default <output>/db.sqlite3)")
    p.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="let input-image URLs and per-request webhooks reach private/loopback addresses",
    )
    p.add_argument("--device", default=None, help="torch device (default: auto)")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
    )
    return p


def api_port(port: int | None, env: Mapping[str, str]) -> int:
    """API_PORT if set, else the WebUI port + 1, else 7866 (FooocusAPI's rule)."""
    if env.get("API_PORT"):
        return int(env["API_PORT"])
    if port is not None:
        return port + 1
    return DEFAULT_API_PORT


def webui_port(args: argparse.Namespace, env: Mapping[str, str]) -> int | None:
    """``--port``, else GRADIO_SERVER_PORT (as Fooocus), else 7865; None with ``--nowebui``."""
    if args.nowebui:
        return None
    if args.port is not None:
        return int(args.port)
    if env.get("GRADIO_SERVER_PORT"):
        return int(env["GRADIO_SERVER_PORT"])
    return DEFAULT_WEBUI_PORT


def settings_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Merge parsed flags and the environment into one :class:`Settings`."""
    engine = load_engine_config(
        args.config,
        env,
        {
            "models_dir": args.models_dir,
            "output_dir": args.output_path,
            "preset": args.preset,
            "disable_preset_download": True if args.disable_preset_download else None,
            "device": args.device,
        },
    )
    port = api_port(args.port, env)
    ui_port = webui_port(args, env)
    if ui_port is not None and ui_port == port:
        raise SystemExit(
            f"the WebUI and the API would both use port {port}: change --port or API_PORT, "
            "or pass --nowebui"
        )
    return Settings(
        engine=engine,
        host=args.listen,
        port=port,
        webui_port=ui_port,
        apikey=args.apikey if args.apikey is not None else env.get("FOOOCUS_API_KEY", ""),
        webhook_url=args.webhook_url or env.get("WEBHOOK_URL", ""),
        webhook_secret=args.webhook_secret or env.get("FOOOCUS_WEBHOOK_SECRET", ""),
        base_url=args.base_url,
        queue_size=args.queue_size,
        preload=args.preload,
        db_path=args.db_path,
        allow_private_urls=args.allow_private_urls,
        log_level=args.log_level,
    )


def parse_settings(argv: Sequence[str] | None, env: Mapping[str, str]) -> Settings:
    """Parse ``argv`` (unknown Fooocus flags are ignored with a warning) into settings."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        logger.warning("ignoring unsupported Fooocus flags: %s", " ".join(unknown))
    if args.queue_size < 1:
        raise SystemExit("--queue-size must be at least 1")
    return settings_from_args(args, env)


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``fooocus-api``: parse flags and serve until interrupted."""
    from fooocus_api.serve import Servers

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = parse_settings(argv, os.environ)
    logging.getLogger().setLevel(settings.log_level.upper().replace("TRACE", "DEBUG"))
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.apikey:
        logger.warning("listening on %s without --apikey: anyone can use the API", settings.host)
    servers = Servers(settings)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C: uvicorn has shut down cleanly
        servers.run()


if __name__ == "__main__":
    main()
