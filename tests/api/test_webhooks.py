"""Webhook delivery to a local receiver: plain JSON record, retry after a 500, HMAC signature."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from fooocus_api.webhooks import sign
from tests.api.conftest import Server, fast, make_settings
from tests.api.helpers import Receiver


@pytest.fixture(scope="module")
def hooked(
    tiny_sdxl_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    settings = make_settings(
        tmp_path_factory.mktemp("hook"),
        tiny_sdxl_checkpoint,
        allow_private_urls=True,
        webhook_secret="whsec",
        base_url="https://images.example.com/api",
    )
    with Server(settings) as srv:
        yield srv


def test_webhook_retries_after_500_and_is_signed(hooked: Server) -> None:
    with Receiver(statuses=[500, 503]) as rx, hooked.client() as c:
        rec = c.post("/v1/engine/generate/", json=fast(async_process=True, webhook_url=rx.url))
        assert rec.status_code == 200
        assert rx.got.wait(30)
        assert len(rx.requests) == 3  # two failures, then delivered
        headers, body = rx.requests[-1]
        payload = msgspec.json.decode(body)  # decoded once: not a JSON string in a string
        assert isinstance(payload, dict) and payload["task_id"] == rec.json()["task_id"]
        assert payload["task_status"] == "finished" and len(payload["result"]) == 1
        assert payload["result"][0].startswith("https://images.example.com/api/outputs/")
        assert headers["x-fooocus-signature"] == sign("whsec", headers["x-fooocus-timestamp"], body)
        assert {h["x-fooocus-task-id"] for h, _ in rx.requests} == {payload["task_id"]}
        # the record says where the webhook went
        assert c.get(f"/tasks/{payload['task_id']}").json()["webhook_url"] == rx.url


def test_default_webhook_from_settings(
    tiny_sdxl_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with Receiver() as rx:
        settings = make_settings(
            tmp_path_factory.mktemp("hook2"), tiny_sdxl_checkpoint, webhook_url=rx.url
        )
        with Server(settings) as srv, srv.client() as c:
            rec = c.post("/v1/engine/generate/", json=fast()).json()
            assert rx.got.wait(30)
            headers, body = rx.requests[0]
            assert msgspec.json.decode(body)["task_id"] == rec["task_id"]
            assert "x-fooocus-signature" not in headers  # no secret, no signature


def test_caller_webhook_host_is_resolved_again_at_delivery() -> None:
    """A caller's URL whose name now resolves to loopback is not delivered; the operator's is."""
    import asyncio

    from fooocus_api.webhooks import WebhookSender

    async def deliver(url: str, trusted: bool) -> bool:
        sender = WebhookSender(attempts=1, backoff_s=0.0, timeout_s=5.0)
        try:
            return await sender.send(url, "t" * 32, b"{}", trusted=trusted)
        finally:
            await sender.close()

    with Receiver() as rx:
        by_name = rx.url.replace("127.0.0.1", "localhost")
        assert asyncio.run(deliver(by_name, trusted=False)) is False
        assert rx.requests == []
        assert asyncio.run(deliver(by_name, trusted=True)) is True
        assert len(rx.requests) == 1
