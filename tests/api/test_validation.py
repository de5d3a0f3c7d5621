"""Bad input is refused with a precise 4xx before anything is recorded; auth; traversal."""

from __future__ import annotations

import base64
import io
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.api.conftest import Server, fast, make_settings
from tests.api.helpers import Receiver


def _count(client: httpx.Client) -> int:
    tasks = client.get("/tasks", params={"page_size": 1000}).json()
    return sum(len(v) for v in tasks.values())


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"image_number": "many"}, "image_number", 422),
        ({"image_number": 33}, "image_number", 422),
        ({"guidance_scale": 31}, "guidance_scale", 422),
        ({"sharpness": -1}, "sharpness", 422),
        ({"prompt": 5}, "prompt", 422),
        ({"loras": [{"model_name": "x.safetensors", "weight": 3}]}, "loras[0].weight", 422),
        ({"performance_selection": "Turbo"}, "performance_selection", 422),
        ({"output_format": "gif"}, "output_format", 422),
        ({"controlnet_image": [{"cn_weight": 5}]}, "controlnet_image[0].cn_weight", 422),
        ({"sampler_name": "nope"}, "sampler_name", 422),
        ({"scheduler_name": "nope"}, "scheduler_name", 422),
        ({"style_selections": ["No Such Style"]}, "style_selections", 422),
        ({"base_model_name": "missing.safetensors"}, "base_model_name", 422),
        ({"vae_name": "missing.safetensors"}, "vae_name", 422),
        ({"loras": [{"model_name": "nolora.safetensors"}]}, "loras[0].model_name", 422),
        ({"preset": "nosuchpreset"}, "preset", 422),
        ({"save_name": "../escape"}, "save_name", 422),
        (
            {"uov_input_image": "%%%not base64%%%", "uov_method": "Vary (Subtle)"},
            "uov_input_image",
            400,
        ),
        (
            {"inpaint_input_image": base64.b64encode(b"not an image").decode()},
            "inpaint_input_image",
            400,
        ),
        (
            {"controlnet_image": [{"cn_img": "data:text/plain;base64,aGVsbG8="}]},
            "controlnet_image[0].cn_img",
            400,
        ),
    ],
)
def test_bad_fields_are_named_and_not_recorded(
    client: httpx.Client, body: dict, field: str, status: int
) -> None:
    before = _count(client)
    r = client.post("/v1/engine/generate/", json=fast(**body))
    assert r.status_code == status, r.text
    err = r.json()
    assert err["field"] == field
    assert err["detail"][0]["loc"][0] == "body" and err["detail"][0]["msg"]
    assert _count(client) == before


def test_missing_model_error_names_file_and_folder(client: httpx.Client, server: Server) -> None:
    r = client.post("/v1/engine/generate/", json=fast(base_model_name="juggernaut.safetensors"))
    msg = r.json()["detail"][0]["msg"]
    assert r.status_code == 422 and "juggernaut.safetensors" in msg
    assert str(server.settings.engine.folder("checkpoints")) in msg


def test_invalid_json_and_unknown_fields(client: httpx.Client) -> None:
    r = client.post(
        "/v1/engine/generate/", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["field"] == "body"
    ok = client.post(
        "/v1/engine/generate/",
        json=fast(advanced_params={"x": 1}, save_extension="png", input_image="ignored"),
    )
    assert ok.status_code == 200 and ok.json()["task_status"] == "finished"
    assert "advanced_params" not in ok.json()["req_params"]


def test_image_inputs_decode_then_501(client: httpx.Client) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(_png()).decode()
    r = client.post(
        "/v1/engine/generate/", json=fast(uov_input_image=data_url, uov_method="Vary (Strong)")
    )
    assert r.status_code == 501 and r.json()["field"] == "uov_input_image"
    # an image whose mode is off (uov_method Disabled) is only checked, then ignored
    ok = client.post("/v1/engine/generate/", json=fast(uov_input_image=data_url))
    assert ok.status_code == 200
    assert ok.json()["req_params"]["uov_input_image"].startswith("<image:")


def test_url_inputs(client: httpx.Client) -> None:
    pages = {
        "/page.html": (200, "text/html", b"<html>hi</html>", {}),
        "/img.png": (200, "image/png", _png(), {}),
        "/redirect": (302, "text/plain", b"", {"Location": "/page.html"}),
        "/fake.png": (200, "image/png", b"GIF89a-not-really", {}),
    }
    with Receiver(pages=pages) as site:

        def send(path: str) -> httpx.Response:
            return client.post(
                "/v1/engine/generate/",
                json=fast(inpaint_input_image=site.url + path),
            )

        html = send("/page.html")
        assert html.status_code == 400 and "not an image" in html.json()["detail"][0]["msg"]
        redirected = send("/redirect")
        assert redirected.status_code == 400 and "not an image" in redirected.text
        assert send("/fake.png").status_code == 400
        missing = send("/nothing.png")
        assert missing.status_code == 400 and "HTTP 404" in missing.text
        assert send("/img.png").status_code == 501  # fetched and decoded; inpaint comes later


@pytest.fixture(scope="module")
def locked(
    tiny_sdxl_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    settings = make_settings(
        tmp_path_factory.mktemp("locked"), tiny_sdxl_checkpoint, apikey="s3cret-key"
    )
    with Server(settings) as srv:
        yield srv


def test_api_key(locked: Server) -> None:
    with locked.client() as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/docs").status_code == 200 and c.get("/openapi.json").status_code == 200
        assert c.get("/", follow_redirects=False).status_code == 307
        for method, path in (
            ("GET", "/tasks"),
            ("GET", "/v1/engines/all-models"),
            ("GET", "/v1/engines/styles"),
            ("POST", "/v1/engine/generate/"),
            ("POST", "/v1/engine/control"),
            ("GET", "/tasks/abc/events"),
        ):
            missing = c.request(method, path)
            assert missing.status_code == 401 and "X-API-KEY" in missing.json()["detail"]
            wrong = c.request(method, path, headers={"X-API-KEY": "s3cret-kez"})
            assert wrong.status_code == 403
        key = {"X-API-KEY": "s3cret-key"}
        rec = c.post("/v1/engine/generate/", json=fast(), headers=key)
        assert rec.status_code == 200
        # output files need no key (usable in <img>), names are unguessable
        url = rec.json()["result"][0]
        assert c.get(url).status_code == 200
        assert len(url.rsplit("_", 1)[-1].split(".")[0]) == 16
        # EventSource path: a single-use ticket instead of the key
        task_id = rec.json()["task_id"]
        ticket = c.post(f"/tasks/{task_id}/events/ticket", headers=key).json()["ticket"]
        with c.stream("GET", f"/tasks/{task_id}/events", params={"ticket": ticket}) as r:
            assert r.status_code == 200
            assert b'"finished"' in r.read()
        reused = c.get(f"/tasks/{task_id}/events", params={"ticket": ticket})
        assert reused.status_code == 401


def test_private_url_refused_by_default(locked: Server) -> None:
    key = {"X-API-KEY": "s3cret-key"}
    with locked.client(headers=key) as c:
        for url in (
            "http://127.0.0.1:9/a.png",
            "http://10.1.2.3/a.png",
            "http://[::1]/a.png",
            "http://localhost/a.png",
            "ftp://example.com/a.png",
        ):
            r = c.post("/v1/engine/generate/", json=fast(uov_input_image=url))
            assert r.status_code == 400, url
            assert r.json()["field"] == "uov_input_image"
        hook = c.post("/v1/engine/generate/", json=fast(webhook_url="http://127.0.0.1:9/h"))
        assert hook.status_code == 422 and hook.json()["field"] == "webhook_url"


def test_output_path_traversal_refused(server: Server, tmp_path: Path) -> None:
    outputs = Path(server.settings.engine.output_dir)
    secret = outputs.parent / "secret.png"
    Image.new("RGB", (4, 4)).save(secret)
    (outputs / "2020-01-01").mkdir(parents=True, exist_ok=True)
    (outputs / "2020-01-01" / "link.png").symlink_to(secret)
    host, port = server.url.removeprefix("http://").split(":")
    for raw in (
        "/outputs/../secret.png",
        "/outputs/..%2Fsecret.png/x",
        "/outputs/%2E%2E/secret.png",
        "/outputs/2020-01-01/..%2F..%2Fsecret.png",
        "/outputs/2020-01-01/link.png",
        "/outputs/..db.sqlite3/x.png",
    ):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        status = int(reply.split(b" ", 2)[1])
        assert status in (404, 400), (raw, reply[:200])
    with server.client() as c:
        assert c.get("/outputs/x/db.sqlite3").status_code == 404
