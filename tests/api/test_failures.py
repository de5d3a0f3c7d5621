"""An engine error ends the task as failed with its message, in every mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fooocus_api.worker import default_engine_factory
from tests.api.conftest import Server, fast, make_settings, sse_events


class ExplodingEngine:
    """The real engine, except that prompt "explode" fails mid-run."""

    def __init__(self, config: Any) -> None:
        self._inner = default_engine_factory(config)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def generate(self, task: Any, on_progress: Any = None, cancel: Any = None) -> Any:
        if task.prompt == "explode":
            if on_progress is not None:
                from fooocus_core.task import Progress

                on_progress(Progress(percent=1, message="Loading models ..."))
            raise RuntimeError("CUDA out of memory (simulated)")
        return self._inner.generate(task, on_progress, cancel)


@pytest.fixture(scope="module")
def exploding(
    tiny_sdxl_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    settings = make_settings(tmp_path_factory.mktemp("boom"), tiny_sdxl_checkpoint)
    with Server(settings, engine_factory=ExplodingEngine) as srv:
        yield srv


def test_engine_error_is_failed_not_finished(exploding: Server) -> None:
    with exploding.client() as c:
        sync = c.post("/v1/engine/generate/", json=fast(prompt="explode"))
        assert sync.status_code == 500
        rec = sync.json()
        assert rec["task_status"] == "failed" and "out of memory" in rec["error"]
        assert c.get(f"/tasks/{rec['task_id']}").json()["task_status"] == "failed"

        binary = c.post(
            "/v1/engine/generate/", json=fast(prompt="explode"), headers={"Accept": "image/png"}
        )
        assert binary.status_code == 500 and "out of memory" in binary.json()["detail"]

        with c.stream(
            "POST", "/v1/engine/generate/", json=fast(prompt="explode", stream_output=True)
        ) as r:
            events = [e for _, e in sse_events(r)]
        assert events[-1]["status"] == "failed" and "out of memory" in events[-1]["error"]

        # the worker survives: the next task runs
        ok = c.post("/v1/engine/generate/", json=fast())
        assert ok.status_code == 200 and ok.json()["task_status"] == "finished"
