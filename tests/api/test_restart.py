"""Restart recovery: tasks left pending run, tasks left running are marked failed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fooocus_api.mapping import build_task, record_params
from fooocus_api.schemas import CommonRequest
from fooocus_api.store import TaskStore
from fooocus_core.presets import Preset
from tests.api.conftest import Server, fast, make_settings
from tests.api.helpers import wait_until


async def _seed(db: str) -> None:
    """Rows as a crashed process leaves them: one running, two pending."""
    store = await TaskStore.open(db)
    request = CommonRequest(**fast(image_seed=5))
    params = record_params(request, build_task(request, Preset(), single_image=False))
    now = int(time.time() * 1000)
    await store.insert("a" * 32, params, now - 3, None, "http://old-host:1")
    await store.mark_running("a" * 32, now - 2)
    await store.insert("b" * 32, params, now - 1, None, "http://old-host:1")
    await store.insert("c" * 32, {**params, "image_number": 2}, now, None, None)
    await store.close()


def test_restart_recovers(tiny_sdxl_checkpoint: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tiny_sdxl_checkpoint)
    asyncio.run(_seed(settings.database_path))
    with Server(settings) as srv, srv.client() as c:
        failed = c.get(f"/tasks/{'a' * 32}").json()
        assert failed["task_status"] == "failed"
        assert "stopped while this task was running" in failed["error"]
        assert wait_until(
            lambda: (
                [c.get(f"/tasks/{x * 32}").json()["task_status"] for x in "bc"]
                == ["finished", "finished"]
            )
        )
        b, cc = (c.get(f"/tasks/{x * 32}").json() for x in "bc")
        assert b["seeds"] == [5] and cc["seeds"] == [5, 6]
        assert c.get(b["result"][0]).status_code == 200
    # and a normal shutdown then start keeps the history
    with Server(settings) as srv, srv.client() as c:
        history = c.get("/tasks", params={"query": "history"}).json()["history"]
        assert {t["task_id"] for t in history} == {x * 32 for x in "abc"}


def test_schema_version(tmp_path: Path) -> None:
    async def run() -> int:
        store = await TaskStore.open(str(tmp_path / "db.sqlite3"))
        version = await store.schema_version()
        await store.close()
        again = await TaskStore.open(str(tmp_path / "db.sqlite3"))  # re-applying is a no-op
        await again.close()
        return version

    assert asyncio.run(run()) >= 1
