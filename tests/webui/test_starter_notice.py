"""The WebUI on a service without models: a visible notice about the starter model, with how
to add a real checkpoint, and a form that draws with it at once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fooocus_core import STARTER_MODEL
from tests.api.conftest import closed_port, offline_settings
from tests.webui.conftest import Service


@pytest.fixture(scope="module")
def bare_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("webui-bare")
    settings = offline_settings(root, f"http://127.0.0.1:{closed_port()}", webui_port=0)
    with Service(settings) as svc:
        yield svc


def test_starter_notice_and_generate(bare_service: Service, page_factory: Any) -> None:
    p = page_factory()
    page = p.open(bare_service.webui_url)
    page.wait_for_selector("#model-notice:not([hidden])")
    title = page.text_content("#model-notice-title") or ""
    text = page.text_content("#model-notice-text") or ""
    assert "starter model" in title
    checkpoints = bare_service.servers.settings.engine.folder("checkpoints")
    assert STARTER_MODEL in text and str(checkpoints) in text
    # the form starts from the starter preset: the model's native size
    assert page.input_value("#f-base_model_name") == STARTER_MODEL
    assert page.input_value("#f-aspect_ratios_selection") == "64*64"
    page.fill("#prompt", "a purple square on a white background")
    page.click("#generate")
    page.wait_for_selector("#stage[data-state='finished']", timeout=60_000)
    assert page.eval_on_selector("#stage-img", "img => img.naturalWidth") == 64
    p.screenshot("starter-notice")


def test_no_notice_with_a_real_model(service: Service, page_factory: Any) -> None:
    p = page_factory()
    page = p.open(service.webui_url)
    assert page.is_hidden("#model-notice")
