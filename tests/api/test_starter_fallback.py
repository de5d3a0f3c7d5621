"""The starter-model fallback: a service whose default model is missing and cannot be
downloaded still draws, with the built-in starter model, and says so everywhere."""

from __future__ import annotations

import io
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

from fooocus_core import STARTER_MODEL
from tests.api.conftest import (
    TINY,
    LogRecords,
    Server,
    closed_port,
    fast,
    make_settings,
    offline_settings,
)
from tests.api.helpers import wait_until

DEFAULT_MODEL = "juggernautXL_v8Rundiffusion.safetensors"


def test_all_models_says_the_starter_model_stands_in(
    offline: tuple[Server, LogRecords],
) -> None:
    server, _ = offline
    with server.client() as c:
        models = c.get("/v1/engines/all-models").json()
    assert models["model_filenames"] == [STARTER_MODEL]
    assert models["starter_fallback"] is True
    assert models["default_model"] == STARTER_MODEL
    notice = models["notice"]
    assert DEFAULT_MODEL in notice and "starter" in notice
    assert str(server.settings.engine.folder("checkpoints")) in notice  # where to put a real one
    assert "cannot be reached" in notice


def test_start_up_log_names_the_fallback(offline: tuple[Server, LogRecords]) -> None:
    _, records = offline
    assert wait_until(lambda: STARTER_MODEL in records.text(), timeout=30)
    warning = next(r for r in records.records if STARTER_MODEL in r.getMessage())
    assert warning.levelno == logging.WARNING and DEFAULT_MODEL in warning.getMessage()


def test_generate_without_a_model_uses_the_starter_model(
    offline: tuple[Server, LogRecords],
) -> None:
    server, _ = offline
    with server.client() as c:
        response = c.post(
            "/v1/engine/generate/",
            json={"prompt": "a red circle on a blue background", "image_seed": 7},
        )
        assert response.status_code == 200, response.text
        record = response.json()
        assert record["task_status"] == "finished"
        params = record["req_params"]
        # The starter preset's settings for everything the request left out.
        assert params["base_model_name"] == STARTER_MODEL
        assert params["aspect_ratios_selection"] == "64*64"
        assert params["style_selections"] == []
        assert any("starter model" in m and DEFAULT_MODEL in m for m in record["messages"])
        image = Image.open(io.BytesIO(c.get(record["result"][0]).content))
        assert image.size == (64, 64)
        stored = c.get(f"/tasks/{record['task_id']}").json()
        assert any("starter model" in m for m in stored["messages"])


def test_request_naming_the_default_model_gets_the_fallback(
    offline: tuple[Server, LogRecords],
) -> None:
    server, _ = offline
    with server.client() as c:
        body = {"prompt": "a green square on a white background", "base_model_name": DEFAULT_MODEL}
        record = c.post("/v1/engine/generate/", json=body).json()
    assert record["task_status"] == "finished"
    assert record["req_params"]["base_model_name"] == STARTER_MODEL


def test_request_naming_a_missing_model_is_refused(offline: tuple[Server, LogRecords]) -> None:
    server, _ = offline
    with server.client() as c:
        response = c.post(
            "/v1/engine/generate/",
            json={"prompt": "a cat", "base_model_name": "not_here.safetensors"},
        )
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"][-1] == "base_model_name" and "not_here.safetensors" in detail["msg"]


def test_initial_preset_is_the_starter_preset(offline: tuple[Server, LogRecords]) -> None:
    server, _ = offline
    with server.client() as c:
        preset = c.get("/v1/engines/presets/initial").json()
        named = c.get("/v1/engines/presets/starter").json()
    assert preset == named
    assert preset["base_model_name"] == STARTER_MODEL
    assert preset["aspect_ratios_selection"] == "64*64"


def test_a_real_checkpoint_is_preferred(tiny_sdxl_checkpoint: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tiny_sdxl_checkpoint)  # downloads disabled, tiny present
    with Server(settings) as server, server.client() as c:
        models = c.get("/v1/engines/all-models").json()
        assert models["model_filenames"] == [TINY, STARTER_MODEL]
        assert models["starter_fallback"] is False and models["default_model"] == TINY
        assert "preset downloads are disabled" in models["notice"]
        body = fast()
        del body["base_model_name"]
        record = c.post("/v1/engine/generate/", json=body).json()
        assert record["task_status"] == "finished"
        assert record["req_params"]["base_model_name"] == TINY
        assert any(TINY in m for m in record["messages"])


def test_a_file_named_like_the_starter_model_wins(
    tiny_sdxl_checkpoint: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models" / "checkpoints"
    models.mkdir(parents=True)
    (models / STARTER_MODEL).symlink_to(tiny_sdxl_checkpoint)
    settings = offline_settings(tmp_path, f"http://127.0.0.1:{closed_port()}")
    with Server(settings) as server, server.client() as c:
        listing = c.get("/v1/engines/all-models").json()
        assert listing["model_filenames"] == [STARTER_MODEL]
        # the folder's file is a real checkpoint: used, not the built-in one
        assert listing["starter_fallback"] is False


class _HeadOnly(BaseHTTPRequestHandler):
    """Answers HEAD with 200 (the probe passes) and every GET with 404 (the download fails)."""

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "10")
        self.end_headers()

    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_failed_download_switches_later_tasks_to_the_starter_model(tmp_path: Path) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _HeadOnly)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        mirror = f"http://127.0.0.1:{httpd.server_address[1]}"
        with Server(offline_settings(tmp_path, mirror)) as server, server.client() as c:
            listing = c.get("/v1/engines/all-models").json()
            assert listing["starter_fallback"] is False  # its URL answered
            body = {"prompt": "a blue triangle on a gray background"}
            first = c.post("/v1/engine/generate/", json=body).json()
            assert first["task_status"] == "failed" and DEFAULT_MODEL in first["error"]
            second = c.post("/v1/engine/generate/", json=body).json()
            assert second["task_status"] == "finished"
            assert second["req_params"]["base_model_name"] == STARTER_MODEL
            assert c.get("/v1/engines/all-models").json()["starter_fallback"] is True
    finally:
        httpd.shutdown()


def test_naming_the_starter_model_brings_its_settings(
    offline: tuple[Server, LogRecords],
) -> None:
    server, _ = offline
    with server.client() as c:
        body = {"prompt": "a orange circle on a gray background", "base_model_name": STARTER_MODEL}
        record = c.post("/v1/engine/generate/", json=body).json()
        assert record["task_status"] == "finished"
        params = record["req_params"]
        assert params["aspect_ratios_selection"] == "64*64" and params["style_selections"] == []
        assert params["sampler_name"] == "euler" and params["guidance_scale"] == 5.0
        assert not record["messages"] or all("starter model" not in m for m in record["messages"])
        # fields the request sets still win
        body["aspect_ratios_selection"] = "96*64"
        record = c.post("/v1/engine/generate/", json=body).json()
        assert Image.open(io.BytesIO(c.get(record["result"][0]).content)).size == (96, 64)
