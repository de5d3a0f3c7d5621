"""Model files named by presets are fetched by the engine when missing, or refused clearly."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fooocus_core import STARTER_MODEL
from fooocus_core.config import SHIPPED_CONFIG_DIR, EngineConfig
from fooocus_core.engine import Engine
from fooocus_core.errors import InvalidTask
from fooocus_core.task import GenerationTask, Progress
from tests.api.conftest import closed_port


@pytest.fixture(scope="module")
def server(tiny_sdxl_checkpoint: Path) -> Iterator[str]:
    """A local HTTP server publishing the tiny checkpoint as ``/tiny.safetensors``."""
    root = tiny_sdxl_checkpoint.parent
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{tiny_sdxl_checkpoint.name}"
    httpd.shutdown()


def config_with_preset(tmp_path: Path, url: str, **options: object) -> EngineConfig:
    config_dir = tmp_path / "config"
    shutil.copytree(SHIPPED_CONFIG_DIR, config_dir)
    preset = {
        "default_model": "fetched.safetensors",
        "checkpoint_downloads": {"fetched.safetensors": url},
        "lora_downloads": {},
    }
    (config_dir / "presets" / "fetchtest.json").write_text(json.dumps(preset))
    return EngineConfig(
        models_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "outputs"),
        config_dir=str(config_dir),
        device="cpu",
        **options,
    )


def small_task() -> GenerationTask:
    return GenerationTask(
        prompt="a square",
        styles=[],
        base_model="fetched.safetensors",
        aspect_ratio="64*64",
        overwrite_step=2,
        sampler="euler",
        scheduler="karras",
    )


def test_missing_preset_model_is_downloaded_then_used(tmp_path: Path, server: str) -> None:
    engine = Engine(config_with_preset(tmp_path, server))
    engine.validate(small_task())  # missing but downloadable: accepted
    reports: list[Progress] = []
    result = engine.generate(small_task(), on_progress=reports.append)
    assert (tmp_path / "models" / "checkpoints" / "fetched.safetensors").is_file()
    assert len(result.images) == 1
    assert any(r.message.startswith("Downloading fetched.safetensors") for r in reports)


def test_disabled_downloads_name_file_url_and_folder(tmp_path: Path, server: str) -> None:
    engine = Engine(config_with_preset(tmp_path, server, disable_preset_download=True))
    with pytest.raises(InvalidTask) as error:
        engine.validate(small_task())
    message = str(error.value)
    assert error.value.field == "base_model"
    assert "fetched.safetensors" in message and server in message
    assert str(tmp_path / "models" / "checkpoints") in message


def test_prepare_preset_fetches_its_files(tmp_path: Path, server: str) -> None:
    engine = Engine(config_with_preset(tmp_path, server))
    done = engine.prepare_preset("fetchtest")
    assert done.downloaded == [str(tmp_path / "models" / "checkpoints" / "fetched.safetensors")]
    assert engine.prepare_preset("fetchtest").present  # second time: nothing to fetch


def test_fetch_problem_says_why_a_model_cannot_be_had(server: str, tmp_path: Path) -> None:
    engine = Engine(config_with_preset(tmp_path / "ok", server))
    assert engine.fetch_problem("checkpoints", "fetched.safetensors") is None  # its URL answers
    assert engine.fetch_problem("checkpoints", STARTER_MODEL) is None  # built in
    problem = engine.fetch_problem("checkpoints", "nobody.safetensors")
    assert problem is not None and "no preset names a download" in problem
    assert "'..' is not allowed" in (engine.fetch_problem("checkpoints", "../x.safetensors") or "")

    disabled = Engine(config_with_preset(tmp_path / "off", server, disable_preset_download=True))
    assert disabled.fetch_problem("checkpoints", "fetched.safetensors") == (
        "preset downloads are disabled"
    )

    gone_url = f"http://127.0.0.1:{closed_port()}/fetched.safetensors"
    gone = Engine(config_with_preset(tmp_path / "gone", gone_url))
    problem = gone.fetch_problem("checkpoints", "fetched.safetensors", timeout=5)
    assert problem is not None and gone_url in problem and "cannot be reached" in problem

    missing = Engine(config_with_preset(tmp_path / "404", server + ".missing"))
    problem = missing.fetch_problem("checkpoints", "fetched.safetensors")
    assert problem is not None and "HTTP 404" in problem
    assert not (tmp_path / "ok" / "models" / "checkpoints" / "fetched.safetensors").exists()
