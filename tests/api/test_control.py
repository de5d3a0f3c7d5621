"""Stop and skip mid-run, cancel a pending task, the bounded queue (429)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Server, fast, make_settings, sse_events
from tests.api.helpers import wait_until


def _run_until_sampling(client: httpx.Client, body: dict, action: str, at_image: int = 1) -> dict:
    """Stream a task, send ``action`` once image ``at_image`` is sampling; return final."""
    sent = False
    final: dict = {}
    with client.stream("POST", "/v1/engine/generate/", json=body) as r:
        for _, event in sse_events(r):
            if not sent and f"image {at_image}/" in event["message"]:
                msg = client.post("/v1/engine/control", params={"action": action}).json()
                assert msg == {"message": f"task {action}ed"}  # FooocusAPI's wording
                sent = True
            final = event
    assert sent
    return final


def test_stop_mid_run(client: httpx.Client) -> None:
    final = _run_until_sampling(
        client, fast(stream_output=True, image_number=3, overwrite_step=40), "stop"
    )
    assert final["status"] == "stop" and final["images"] == []
    rec = client.get(f"/tasks/{final['task_id']}").json()
    assert rec["task_status"] == "stop" and rec["result"] == [] and rec["error"] is None


def test_skip_mid_run(client: httpx.Client) -> None:
    final = _run_until_sampling(
        client, fast(stream_output=True, image_number=2, overwrite_step=30), "skip"
    )
    assert final["status"] == "finished"
    assert len(final["images"]) == 1 and final["seeds"] == [1235]  # image 1 skipped
    rec = client.get(f"/tasks/{final['task_id']}").json()
    assert any("skipped" in m for m in rec["messages"])


def test_control_messages(client: httpx.Client) -> None:
    assert client.post("/v1/engine/control", params={"action": "stop"}).json() == {
        "message": "No task running"
    }
    assert client.post("/v1/engine/control", params={"action": "jump"}).json() == {
        "message": "Invalid control action"
    }
    missing = client.post("/v1/engine/control")
    assert missing.status_code == 422 and missing.json()["field"] == "action"
    unknown = client.post("/v1/engine/control", json={"action": "stop", "task_id": "f" * 32})
    assert unknown.status_code == 404


def test_cancel_pending_by_id(client: httpx.Client) -> None:
    first = client.post("/v1/engine/generate/", json=fast(async_process=True, overwrite_step=60))
    second = client.post("/v1/engine/generate/", json=fast(async_process=True))
    first_id, second_id = first.json()["task_id"], second.json()["task_id"]
    assert second.json()["task_status"] == "pending" and second.json()["queue_position"] == 0
    pending = client.get("/tasks", params={"query": "pending"}).json()["pending"]
    assert [t["task_id"] for t in pending] == [second_id]
    r = client.post("/v1/engine/control", json={"action": "stop", "task_id": second_id})
    assert r.json() == {"message": "task canceled"}
    rec = client.get(f"/tasks/{second_id}").json()
    assert rec["task_status"] == "stop" and rec["start_mills"] is None
    assert "canceled before it started" in rec["messages"]
    assert client.get("/tasks", params={"query": "pending"}).json()["pending"] == []
    client.post("/v1/engine/control", json={"action": "stop", "task_id": first_id})
    assert wait_until(lambda: client.get(f"/tasks/{first_id}").json()["task_status"] == "stop")
    # the canceled task never ran: its SSE stream is just the final state
    with client.stream("GET", f"/tasks/{second_id}/events") as s:
        events = [e for _, e in sse_events(s)]
    assert events[-1]["status"] == "stop"
    assert not any(e["status"] == "running" for e in events)


@pytest.fixture(scope="module")
def small_queue(
    tiny_sdxl_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    settings = make_settings(tmp_path_factory.mktemp("q"), tiny_sdxl_checkpoint, queue_size=2)
    with Server(settings) as srv:
        yield srv


def test_queue_full_is_429_and_not_recorded(small_queue: Server) -> None:
    with small_queue.client() as c:
        running = c.post("/v1/engine/generate/", json=fast(async_process=True, overwrite_step=80))
        assert wait_until(lambda: c.get("/readyz").json()["running_task"] is not None)
        accepted = [
            c.post("/v1/engine/generate/", json=fast(async_process=True)).json()["task_id"]
            for _ in range(2)
        ]
        full = c.post("/v1/engine/generate/", json=fast(async_process=True, prompt="rejected"))
        assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1
        assert "queue is full" in full.json()["detail"]
        tasks = c.get("/tasks", params={"page_size": 100}).json()
        listed = [t["req_params"]["prompt"] for group in tasks.values() for t in group]
        assert "rejected" not in listed and len(listed) == 3
        pending = c.get("/tasks", params={"query": "pending"}).json()["pending"]
        assert [t["queue_position"] for t in pending] == [0, 1]
        c.post("/v1/engine/control", params={"action": "stop"})
        ids = [running.json()["task_id"], *accepted]
        # nothing accepted is lost: the queued ones still run to the end
        assert wait_until(
            lambda: (
                [c.get(f"/tasks/{i}").json()["task_status"] for i in ids]
                == ["stop", "finished", "finished"]
            )
        )
