"""History paging, time filters, delete (by id and by range), 404s."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import httpx

from tests.api.conftest import Server, fast


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).isoformat()


def test_history_paging_time_filter_and_delete(client: httpx.Client, server: Server) -> None:
    t0 = int(time.time() * 1000)
    ids = []
    for i in range(3):
        ids.append(client.post("/v1/engine/generate/", json=fast(prompt=f"hist {i}")).json())
        time.sleep(0.01)
    t1 = int(time.time() * 1000)
    page0 = client.get("/tasks", params={"query": "history", "page": 0, "page_size": 2}).json()
    page1 = client.get("/tasks", params={"query": "history", "page": 1, "page_size": 2}).json()
    assert [t["task_id"] for t in page0["history"]] == [ids[2]["task_id"], ids[1]["task_id"]]
    assert page1["history"][0]["task_id"] == ids[0]["task_id"]
    assert page0["current"] == [] and page0["pending"] == []

    # time filter; end_at defaults to now (not to the server's start time)
    ranged = client.get(
        "/tasks", params={"query": "history", "start_at": _iso(t0), "page_size": 50}
    ).json()["history"]
    assert {t["task_id"] for t in ranged} == {r["task_id"] for r in ids}
    before = client.get(
        "/tasks", params={"query": "history", "end_at": _iso(t0 - 1), "page_size": 1000}
    ).json()["history"]
    assert not {t["task_id"] for t in before} & {r["task_id"] for r in ids}
    assert client.get("/tasks", params={"start_at": "yesterday"}).status_code == 422
    assert client.get("/tasks", params={"query": "bogus"}).status_code == 422

    # delete one by id: record and file go
    outputs = Path(server.settings.engine.output_dir)
    doomed = ids[0]
    rel = doomed["result"][0].split("/outputs/", 1)[1]
    assert (outputs / rel).is_file()
    r = client.delete(f"/tasks/{doomed['task_id']}")
    assert r.status_code == 200 and r.json()["files_deleted"] == 1
    assert not (outputs / rel).exists()
    assert client.get(f"/tasks/{doomed['task_id']}").status_code == 404
    assert client.delete(f"/tasks/{doomed['task_id']}").status_code == 404

    # FooocusAPI's range delete: GET /tasks?action=delete&start_at=..&end_at=..
    r = client.get("/tasks", params={"action": "delete", "start_at": _iso(t0), "end_at": _iso(t1)})
    assert r.status_code == 200 and r.json() is None
    for rec in ids[1:]:
        assert client.get(f"/tasks/{rec['task_id']}").status_code == 404
        assert not (outputs / rec["result"][0].split("/outputs/", 1)[1]).exists()


def test_unknown_task_404_and_running_task_not_deletable(client: httpx.Client) -> None:
    r = client.get("/tasks/" + "0" * 32)
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    assert client.get(f"/tasks/{'0' * 32}/events").status_code == 404
    rec = client.post("/v1/engine/generate/", json=fast(async_process=True, overwrite_step=60))
    task_id = rec.json()["task_id"]
    assert client.delete(f"/tasks/{task_id}").status_code == 409
    client.post("/v1/engine/control", json={"action": "stop", "task_id": task_id})
