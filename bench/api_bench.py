"""API benchmarks: request rates, the time the service adds per task and per progress event,
and SSE delivery delay. Runs a real uvicorn server in-process on an ephemeral port.

    .venv/bin/python bench/api_bench.py [--quick]

The overhead numbers use an instant fake engine (so only the service is timed); the record
lookups and submissions go through the full HTTP stack. Results print as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.api.conftest import FAST, Server, make_settings, sse_events

from fooocus_core.task import GeneratedImage, GenerationResult, Progress


class InstantEngine:
    """Validates like the real engine but 'generates' instantly, emitting ``events`` progress
    reports that carry their send time (perf_counter) in the message."""

    events = 0

    def __init__(self, config: Any) -> None:
        from fooocus_core.engine import Engine

        self._inner = Engine(config)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def generate(self, task: Any, on_progress: Any = None, cancel: Any = None) -> GenerationResult:
        for i in range(self.events):
            if on_progress is not None:
                on_progress(Progress(percent=5 + i % 90, message=f"t={time.perf_counter():.9f}"))
        return GenerationResult(
            images=[GeneratedImage(path="/nonexistent.png", seed=1, width=64, height=64)]
        )


def direct_cost(engine: InstantEngine, task: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        engine.generate(task, lambda p: None, None)
    return (time.perf_counter() - start) / n


async def rate(
    client: httpx.AsyncClient, method: str, url: str, n: int, conc: int, body: Any = None
) -> float:
    sem = asyncio.Semaphore(conc)

    async def one() -> None:
        async with sem:
            r = await client.request(method, url, json=body)
            assert r.status_code == 200, r.text

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 300 if args.quick else 2000
    from fooocus_core.models.tiny import write_tiny_checkpoint

    root = Path(tempfile.mkdtemp(prefix="fooocus-bench-"))
    ckpt = write_tiny_checkpoint(root / "tiny_src.safetensors")
    settings = make_settings(root, ckpt, queue_size=100_000)
    rows: list[tuple[str, str]] = []
    with Server(settings, engine_factory=InstantEngine) as srv:
        sync_client = srv.client()
        rec = sync_client.post("/v1/engine/generate/", json=FAST).json()

        async def rates() -> tuple[float, float, float]:
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
                get = await rate(c, "GET", f"/tasks/{rec['task_id']}", n, 16)
                health = await rate(c, "GET", "/healthz", n, 16)
                submit = await rate(
                    c, "POST", "/v1/engine/generate/", n // 2, 16, {**FAST, "async_process": True}
                )
                return get, health, submit

        get_rps, health_rps, submit_rps = asyncio.run(rates())
        rows += [
            ("GET /tasks/{id} (16 concurrent)", f"{get_rps:.0f} req/s"),
            ("GET /healthz (16 concurrent)", f"{health_rps:.0f} req/s"),
            ("POST generate async_process (16 concurrent)", f"{submit_rps:.0f} req/s"),
        ]
        time.sleep(2)  # let the queue drain

        # service time per task and per progress event (sync mode, sequential)
        engine = InstantEngine(settings.engine)
        from fooocus_api.mapping import build_task
        from fooocus_api.schemas import CommonRequest
        from fooocus_core.presets import Preset

        task = build_task(msgspec.convert(FAST, CommonRequest), Preset(), single_image=False)
        per: dict[int, float] = {}
        reps = 30 if args.quick else 100
        for events in (0, 200):
            InstantEngine.events = events
            engine.events = events
            direct = direct_cost(engine, task, reps)
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                r = sync_client.post("/v1/engine/generate/", json=FAST)
                times.append(time.perf_counter() - t0)
                assert r.status_code == 200
            per[events] = statistics.median(times) - direct
        per_event = (per[200] - per[0]) / 200
        rows += [
            (
                "service time per task (sync round trip minus engine, median)",
                f"{per[0] * 1000:.2f} ms",
            ),
            ("service time per progress event", f"{per_event * 1000:.3f} ms"),
        ]

        # SSE delay: GPU-thread send time → client receipt (same clock)
        InstantEngine.events = 100
        delays = []
        with sync_client.stream(
            "POST", "/v1/engine/generate/", json={**FAST, "stream_output": True}
        ) as r:
            for _, event in sse_events(r):
                now = time.perf_counter()
                if event["message"].startswith("t="):
                    delays.append(now - float(event["message"][2:]))
        delays.sort()
        rows += [
            ("SSE delay GPU thread → client, median", f"{statistics.median(delays) * 1000:.2f} ms"),
            ("SSE delay, p95", f"{delays[int(len(delays) * 0.95)] * 1000:.2f} ms"),
        ]
        sync_client.close()
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
