"""Serving the WebUI (no browser): ports, ``--nowebui``, assets, CORS for the page's origin."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import httpx
import pytest

from fooocus_api.cli import parse_settings
from fooocus_api.webui import STATIC_DIR
from fooocus_api.webui.app import CONFIG_MARK
from tests.webui.conftest import Service


def _free_pair() -> int:
    """A port p with p and p + 1 both free (the WebUI port and the API port)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two free ports")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_port_flags() -> None:
    s = parse_settings([], {})
    assert (s.webui_port, s.port) == (7865, 7866)
    s = parse_settings(["--port", "9000"], {})
    assert (s.webui_port, s.port) == (9000, 9001)
    s = parse_settings(["--nowebui"], {"API_PORT": "8888"})
    assert (s.webui_port, s.port) == (None, 8888)
    s = parse_settings([], {"GRADIO_SERVER_PORT": "7000"})
    assert (s.webui_port, s.port) == (7000, 7866)
    with pytest.raises(SystemExit, match="both use port 7865"):
        parse_settings([], {"API_PORT": "7865"})


def _settings(args: list[str], root: Path) -> object:
    models = root / "models"
    (models / "checkpoints").mkdir(parents=True, exist_ok=True)
    return parse_settings(
        [
            *args,
            "--models-dir",
            str(models),
            "--output-path",
            str(root / "outputs"),
            "--disable-preset-download",
            "--log-level",
            "warning",
        ],
        {},
    )


def test_nowebui_opens_only_the_api_port(tmp_path: Path) -> None:
    port = _free_pair()
    settings = _settings(["--nowebui", "--port", str(port)], tmp_path)
    with Service(settings) as svc:  # type: ignore[arg-type]
        assert svc.servers.api_port == port + 1 and svc.servers.webui is None
        assert httpx.get(f"http://127.0.0.1:{port + 1}/healthz").json() == {"status": "ok"}
        assert not _listening(port)
    port = _free_pair()
    settings = _settings(["--port", str(port)], tmp_path)
    with Service(settings) as svc:  # type: ignore[arg-type]
        assert (svc.servers.webui_port, svc.servers.api_port) == (port, port + 1)
        page = httpx.get(f"http://127.0.0.1:{port}/")
        assert page.status_code == 200 and "<title>Fooocus API</title>" in page.text
        assert httpx.get(f"http://127.0.0.1:{port + 1}/healthz").status_code == 200


def test_page_config_assets_and_headers(service: Service) -> None:
    page = httpx.get(service.webui_url + "/")
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    config = re.search(r'id="webui-config">(.*?)</script>', page.text)
    assert config is not None and CONFIG_MARK not in page.text
    assert json.loads(config.group(1)) == {"api_port": service.servers.api_port, "api_url": None}
    again = httpx.get(service.webui_url + "/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304
    js = httpx.get(service.webui_url + "/js/main.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert (
        httpx.get(service.webui_url + "/css/app.css").headers["content-type"].startswith("text/css")
    )
    assert httpx.get(service.webui_url + "/nope.js").status_code == 404
    assert httpx.get(service.webui_url + "/../pyproject.toml").status_code == 404
    assert httpx.post(service.webui_url + "/").status_code == 405
    head = httpx.head(service.webui_url + "/js/api.js")
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"])


def test_every_asset_is_local_and_present() -> None:
    """No CDN, no build step: every referenced file ships in the package."""
    files = {p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()}
    html = (STATIC_DIR / "index.html").read_text("utf-8")
    refs = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert refs
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref
        assert ref.lstrip("/") in files, ref
    for script in (STATIC_DIR / "js").glob("*.js"):
        text = script.read_text("utf-8")
        for module in re.findall(r"from '(\./[^']+)'", text):
            assert (script.parent / module).resolve().is_file(), (script.name, module)
        assert not re.search(r"https?://\w", text), script  # no remote script, style or font
    css = (STATIC_DIR / "css" / "app.css").read_text("utf-8")
    assert "@import" not in css and "url(http" not in css


def test_api_port_keeps_its_routes_and_allows_the_page_origin(service: Service) -> None:
    with service.client() as client:
        assert client.get("/", follow_redirects=False).headers["location"] == "/docs"
        preflight = client.options(
            "/v1/engine/generate/",
            headers={
                "Origin": service.webui_url,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-api-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] in ("*", service.webui_url)
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        simple = client.get("/v1/engines/features", headers={"Origin": service.webui_url})
        assert simple.headers["access-control-allow-origin"] in ("*", service.webui_url)
