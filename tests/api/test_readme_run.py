"""The README's run command on a machine with no models and no way to download them serves a
generate request with an image drawn by the built-in starter model."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image

from fooocus_core import STARTER_MODEL
from tests.api.conftest import closed_port
from tests.api.helpers import wait_until
from tests.api.test_crash import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_run_without_models_draws_with_the_starter_model(tmp_path: Path) -> None:
    models, outputs, log = tmp_path / "models", tmp_path / "outputs", tmp_path / "service.log"
    api_port, ui_port = free_port(), free_port()
    env = {
        **os.environ,
        "API_PORT": str(api_port),
        # No network here either way; a closed local port makes "cannot download" certain.
        "HF_MIRROR": f"http://127.0.0.1:{closed_port()}",
    }
    args = f"--port {ui_port} --models-dir {models} --output-path {outputs}"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"ARGS={args}"],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{api_port}"
    try:
        assert wait_until(lambda: _answers(f"{base}/healthz"), timeout=120), log.read_text()
        with httpx.Client(base_url=base, timeout=120) as c:
            models_listing = c.get("/v1/engines/all-models").json()
            assert models_listing["starter_fallback"] is True
            response = c.post(
                "/v1/engine/generate/",
                json={"prompt": "a yellow circle on a black background", "image_seed": 3},
                headers={"Accept": "image/png"},
            )
            assert response.status_code == 200, response.text
            image = Image.open(io.BytesIO(response.content))
            assert image.format == "PNG" and image.size == (64, 64)
            # the file as saved, with its metadata: drawn by the starter model
            metadata = json.loads(image.info["parameters"])
            assert metadata["base_model"] == Path(STARTER_MODEL).stem
        page = httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert wait_until(lambda: "starter model" in log.read_text(), timeout=30)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
