"""The WebUI's ASGI app: the files of ``static/`` from memory, ``index.html`` at ``/``.

The page finds the API from a JSON block injected into ``index.html``: the API port (the
page uses its own host name with that port, so ``--listen`` on a LAN works) and, when
``--base-url`` is set, the API's public URL. A user can override both in the page's settings
(stored in the browser), e.g. behind a reverse proxy.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"

#: Where ``index.html`` receives the page's configuration.
CONFIG_MARK = "<!--WEBUI-CONFIG-->"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".webmanifest": "application/manifest+json",
}

#: The page loads scripts, styles and fonts only from itself; it fetches from the API (any
#: origin the user points it at) and shows images from it (result URLs, data-URL previews).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob: http: https:; connect-src 'self' http: https:; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _asset(body: bytes, name: str) -> Asset:
    media_type = _TYPES.get(Path(name).suffix) or (
        mimetypes.guess_type(name)[0] or "application/octet-stream"
    )
    return Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def page_config(api_port: int, api_url: str | None) -> str:
    """The JSON block ``index.html`` carries (``<`` escaped so it cannot close the tag)."""
    data = json.dumps({"api_port": api_port, "api_url": api_url or None})
    return (
        '<script type="application/json" id="webui-config">'
        + data.replace("<", "\\u003c")
        + "</script>"
    )


def load_assets(api_port: int, api_url: str | None, root: Path = STATIC_DIR) -> dict[str, Asset]:
    """URL path → asset, for every file below ``root``; ``/`` is ``index.html`` configured."""
    assets: dict[str, Asset] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        rel = path.relative_to(root).as_posix()
        body = path.read_bytes()
        if rel == "index.html":
            text = body.decode("utf-8").replace(CONFIG_MARK, page_config(api_port, api_url))
            assets["/"] = _asset(text.encode("utf-8"), rel)
            continue
        assets["/" + rel] = _asset(body, rel)
    return assets


class WebUI:
    """Serves the WebUI's files (GET and HEAD only)."""

    def __init__(self, assets: dict[str, Asset]) -> None:
        self.assets = assets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = self.respond(request)
        await response(scope, receive, send)

    def respond(self, request: Request) -> Response:
        path = request.url.path
        if path == "/index.html":
            path = "/"
        asset = self.assets.get(path)
        if asset is None:
            return PlainTextResponse("not found", status_code=404, headers=_HEADERS)
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse(
                "method not allowed", status_code=405, headers={**_HEADERS, "Allow": "GET, HEAD"}
            )
        headers = {**_HEADERS, "ETag": asset.etag}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        body = b"" if request.method == "HEAD" else asset.body
        response = Response(body, media_type=asset.media_type, headers=headers)
        if request.method == "HEAD":
            response.headers["Content-Length"] = str(len(asset.body))
        return response


def create_webui_app(api_port: int, api_url: str | None = None) -> ASGIApp:
    """The WebUI app for an API listening on ``api_port`` (or reachable at ``api_url``)."""
    return WebUI(load_assets(api_port, api_url))
