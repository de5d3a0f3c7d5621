"""The task lifecycle: bounded queue, dispatch to the GPU thread, progress fan-out, records.

A task lives independently of HTTP connections: it is recorded in SQLite when accepted, runs
when its turn comes, and is written again at start and at the end. Progress and previews live
in memory and are fanned out to every subscriber as SSE-ready events, each with a per-task
sequence number (the SSE ``id``), so a client can resume with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from fooocus_api.schemas import RecordResponse, TaskEvent
from fooocus_api.settings import Settings
from fooocus_api.store import StoredTask, TaskStore
from fooocus_api.webhooks import WebhookSender
from fooocus_api.worker import EngineLike, GpuWorker
from fooocus_core import CancelToken, GenerationResult, GenerationTask

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"finished", "stop", "failed"})
RESTART_REASON = "the service stopped while this task was running"
CANCELED_MESSAGE = "canceled before it started"

_encode = msgspec.json.encode


def now_ms() -> int:
    return int(time.time() * 1000)


def new_task_id() -> str:
    """A fresh task id: uuid4 hex, as FooocusAPI."""
    return uuid.uuid4().hex


class QueueFull(Exception):
    """The queue holds ``--queue-size`` tasks already."""


@dataclass(eq=False)
class Job:
    """One accepted task while it is in memory."""

    task_id: str
    task: GenerationTask
    req_params: dict[str, Any]
    preset_name: str | None
    webhook_url: str | None
    url_base: str | None
    in_queue_mills: int
    row_id: int = -1
    start_mills: int | None = None
    finish_mills: int | None = None
    status: str = "pending"
    progress: float = 0.0
    message: str = "Waiting in queue ..."
    preview: str | None = None
    files: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    error: str | None = None
    messages: list[str] = field(default_factory=list)
    cancel: CancelToken = field(default_factory=CancelToken)
    stop_requested: bool = False
    #: ``[seq, event, encoded or None]``; only the latest event keeps its preview.
    events: list[list[Any]] = field(default_factory=list)
    subscribers: set[asyncio.Queue[tuple[int, bytes, bool]]] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)


def output_url(base: str, rel: str) -> str:
    """Result URL of an output file (``rel`` = ``YYYY-MM-DD/name.ext``)."""
    return f"{base.rstrip('/')}/outputs/{rel}"


class TaskManager:
    """Owns the queue, the running task, the in-memory events and the store writes."""

    def __init__(
        self,
        settings: Settings,
        store: TaskStore,
        worker: GpuWorker,
        webhooks: WebhookSender,
        prepare_in_thread: Callable[[EngineLike, Job, Callable[[str], None]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.worker = worker
        self.webhooks = webhooks
        self._prepare = prepare_in_thread
        self.pending: OrderedDict[str, Job] = OrderedDict()
        self.current: Job | None = None
        #: Recently finished jobs, kept for late SSE subscribers.
        self.recent: OrderedDict[str, Job] = OrderedDict()
        self._reserved = 0
        #: Run times (ms) of recent tasks, for Retry-After.
        self._durations: deque[int] = deque(maxlen=20)
        self._wakeup = asyncio.Event()
        self._closing = False
        self._dispatcher: asyncio.Task[None] | None = None
        self.output_root = Path(settings.engine.output_dir).resolve()

    # --- start / stop -----------------------------------------------------------------------

    async def start(self) -> list[str]:
        """Recover from a previous run (running → failed, pending → queued) and start
        dispatching. Returns the ids of the tasks marked failed."""
        failed = await self.store.fail_interrupted(RESTART_REASON, now_ms())
        for stored in await self.store.by_status("pending"):
            job = self._job_from_record(stored)
            if job is None:
                continue
            self.pending[job.task_id] = job
            self._emit(job, self._event(job))
        self._dispatcher = asyncio.create_task(self._dispatch(), name="dispatcher")
        if self.pending:
            self._wakeup.set()
        return failed

    def _job_from_record(self, stored: StoredTask) -> Job | None:
        from fooocus_api.mapping import build_task
        from fooocus_api.schemas import CommonRequest
        from fooocus_core import Preset

        try:
            request = msgspec.convert(stored.req_params, CommonRequest, strict=False)
            task = build_task(request, Preset(), single_image=False)
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            logger.warning("cannot resume task %s: %s", stored.task_id, exc)
            return None
        return Job(
            task_id=stored.task_id,
            task=task,
            req_params=stored.req_params,
            preset_name=None,
            webhook_url=stored.webhook_url,
            url_base=stored.url_base,
            in_queue_mills=stored.in_queue_mills,
            row_id=stored.id,
        )

    async def close(self, timeout: float = 30.0) -> None:
        """Stop taking tasks, stop the running one, wait for it to be recorded."""
        self._closing = True
        self._wakeup.set()
        current = self.current
        if current is not None:
            current.stop_requested = True
            current.cancel.stop()
            try:
                await asyncio.wait_for(current.done.wait(), timeout)
            except TimeoutError:
                logger.warning("task %s did not stop within %.0f s", current.task_id, timeout)
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher

    # --- submitting -------------------------------------------------------------------------

    def reserve(self) -> None:
        """Claim a queue slot before recording a task; raises :class:`QueueFull`."""
        if self._closing or len(self.pending) + self._reserved >= self.settings.queue_size:
            raise QueueFull
        self._reserved += 1

    async def submit(self, job: Job) -> None:
        """Record ``job`` (slot claimed with :meth:`reserve`) and queue it."""
        try:
            job.row_id = await self.store.insert(
                job.task_id, job.req_params, job.in_queue_mills, job.webhook_url, job.url_base
            )
        finally:
            self._reserved -= 1
        self.pending[job.task_id] = job
        self._emit(job, self._event(job))
        self._wakeup.set()

    def retry_after_s(self) -> int:
        """Seconds until a queue slot is likely free (one average task, at least 1)."""
        if not self._durations:
            return 5
        return max(1, round(sum(self._durations) / len(self._durations) / 1000))

    def queue_position(self, job: Job) -> int | None:
        if job.status != "pending":
            return None
        for index, task_id in enumerate(self.pending):
            if task_id == job.task_id:
                return index
        return None

    def find(self, task_id: str) -> Job | None:
        """The in-memory job (pending, running or recently finished)."""
        if self.current is not None and self.current.task_id == task_id:
            return self.current
        return self.pending.get(task_id) or self.recent.get(task_id)

    # --- control ----------------------------------------------------------------------------

    async def cancel_pending(self, job: Job) -> None:
        """Remove a pending job from the queue and record it as stopped."""
        if self.pending.pop(job.task_id, None) is None:
            return
        job.messages.append(CANCELED_MESSAGE)
        await self._finish(job, "stop", None)
        self._positions_changed()

    def interrupt(self, job: Job, action: str) -> None:
        """Stop or skip the running job."""
        if action == "stop":
            job.stop_requested = True
            job.cancel.stop()
        else:
            job.cancel.skip()

    # --- dispatch ---------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self.pending and not self._closing:
                _task_id, job = self.pending.popitem(last=False)
                self._positions_changed()
                await self._run(job)

    def _positions_changed(self) -> None:
        for job in self.pending.values():
            if job.subscribers:
                self._emit(job, self._event(job))

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        self.current = job
        job.status = "running"
        job.start_mills = now_ms()
        job.message = "Starting ..."
        self._emit(job, self._event(job))
        error: str | None = None
        result: GenerationResult | None = None
        try:
            await self.store.mark_running(job.task_id, job.start_mills)
            engine = await self.worker.engine()
            prepare = self._prepare

            def before(say: Callable[[str], None]) -> None:
                if prepare is not None:
                    prepare(engine, job, say)

            result = await self.worker.run(
                lambda: self.worker.generate_blocking(
                    engine,
                    job.task,
                    lambda pct, msg, url: self._on_progress(job, pct, msg, url),
                    loop,
                    job.cancel,
                    before,
                )
            )
        except Exception as exc:  # the engine's errors end the task as failed
            logger.info("task %s failed: %s", job.task_id, exc, exc_info=not _expected(exc))
            error = str(exc) or type(exc).__name__
        if result is not None:
            job.files = [self._relative(image.path) for image in result.images]
            job.seeds = [image.seed for image in result.images]
            job.messages.extend(result.messages)
            status = "stop" if (result.stopped or job.stop_requested) else "finished"
        else:
            status = "failed"
        await self._finish(job, status, error)

    def _relative(self, path: str) -> str:
        real = Path(os.path.realpath(path))
        try:
            return real.relative_to(self.output_root).as_posix()
        except ValueError:
            return Path(path).name

    def _on_progress(self, job: Job, percent: int, message: str, preview: str | None) -> None:
        """On the loop: record progress of the running job and fan it out."""
        if job.status != "running":
            return
        if percent > 0:
            job.progress = float(percent)
        job.message = message
        job.preview = preview
        self._emit(job, self._event(job))

    async def _finish(self, job: Job, status: str, error: str | None) -> None:
        job.status = status
        job.error = error
        job.finish_mills = now_ms()
        job.preview = None
        if status == "finished":
            job.progress = 100.0
        job.message = {"finished": "Finished", "stop": "Stopped", "failed": error or "Failed"}[
            status
        ]
        try:
            await self.store.finish(
                job.task_id,
                status=status,
                finish_mills=job.finish_mills,
                progress=job.progress,
                result=job.files,
                seeds=job.seeds,
                error=error,
                messages=job.messages,
            )
        except Exception:
            logger.exception("could not record the end of task %s", job.task_id)
        if self.current is job:
            self.current = None
        if job.start_mills is not None:
            self._durations.append(job.finish_mills - job.start_mills)
        self.recent[job.task_id] = job
        while len(self.recent) > self.settings.event_history_tasks:
            self.recent.popitem(last=False)
        self._emit(job, self._event(job), terminal=True)
        job.done.set()
        target = job.webhook_url
        if target:
            body = _encode(self.record_of(job, self.base_for(job.url_base)))
            trusted = target == self.settings.webhook_url
            self.webhooks.send(target, job.task_id, body, trusted=trusted)

    # --- views ------------------------------------------------------------------------------

    def base_for(self, request_base: str | None) -> str:
        """The URL prefix for result URLs: ``--base-url`` if set, else the request's."""
        base = self.settings.base_url
        if base:
            if "://" not in base:
                base = f"http://{base}:{self.settings.port}"
            return base.rstrip("/")
        return (request_base or f"http://127.0.0.1:{self.settings.port}").rstrip("/")

    def _urls(self, files: list[str], base: str) -> list[str]:
        return [output_url(base, rel) for rel in files]

    def _event(self, job: Job) -> TaskEvent:
        base = self.base_for(job.url_base)
        return TaskEvent(
            task_id=job.task_id,
            status=job.status,  # type: ignore[arg-type]
            progress=job.progress,
            preview=job.preview,
            message=job.message,
            images=self._urls(job.files, base),
            seeds=job.seeds,
            error=job.error,
            queue_position=self.queue_position(job),
        )

    def _emit(self, job: Job, event: TaskEvent, terminal: bool = False) -> None:
        seq = len(job.events) + 1
        data = _encode(event)
        if event.preview is not None:
            for entry in reversed(job.events):
                if entry[1].preview is not None:
                    entry[1].preview = None
                    entry[2] = None
                    break
        job.events.append([seq, event, data])
        dead = []
        for queue in job.subscribers:
            if queue.qsize() > 10_000:
                dead.append(queue)
                continue
            queue.put_nowait((seq, data, terminal))
        for queue in dead:
            job.subscribers.discard(queue)

    def record_of(self, job: Job, base: str) -> RecordResponse:
        """The record of an in-memory job; ``preview`` is base64 without the data: prefix."""
        preview = job.preview.split(",", 1)[1] if job.preview else None
        return RecordResponse(
            id=job.row_id,
            task_id=job.task_id,
            req_params=job.req_params,
            in_queue_mills=job.in_queue_mills,
            start_mills=job.start_mills,
            finish_mills=job.finish_mills,
            task_status=job.status,  # type: ignore[arg-type]
            progress=job.progress,
            preview=preview,
            webhook_url=job.webhook_url,
            result=self._urls(job.files, base),
            seeds=job.seeds,
            error=job.error,
            messages=job.messages,
            queue_position=self.queue_position(job),
        )

    def record_of_stored(self, stored: StoredTask, base: str) -> RecordResponse:
        return RecordResponse(
            id=stored.id,
            task_id=stored.task_id,
            req_params=stored.req_params,
            in_queue_mills=stored.in_queue_mills,
            start_mills=stored.start_mills,
            finish_mills=stored.finish_mills,
            task_status=stored.task_status,  # type: ignore[arg-type]
            progress=stored.progress,
            preview=None,
            webhook_url=stored.webhook_url,
            result=self._urls(stored.result, base),
            seeds=stored.seeds,
            error=stored.error,
            messages=stored.messages,
        )

    async def record(self, task_id: str, base: str) -> RecordResponse | None:
        """The record of any task: live state if active, else the database row."""
        job = self.find(task_id)
        if job is not None and job.status not in TERMINAL:
            return self.record_of(job, base)
        stored = await self.store.get(task_id)
        if stored is not None:
            return self.record_of_stored(stored, base)
        return None

    # --- subscriptions ----------------------------------------------------------------------

    async def subscribe(
        self, task_id: str, last_event_id: int = 0
    ) -> AsyncIterator[tuple[int, bytes]] | None:
        """Events of a task after ``last_event_id``, ending with its terminal event; None if
        the task is unknown. A finished task no longer in memory yields its final event."""
        job = self.find(task_id)
        if job is None:
            stored = await self.store.get(task_id)
            if stored is None:
                return None
            record = self.record_of_stored(stored, self.base_for(stored.url_base))
            event = TaskEvent(
                task_id=task_id,
                status=record.task_status,
                progress=record.progress,
                message=_final_message(record.task_status, record.error),
                images=record.result,
                seeds=record.seeds,
                error=record.error,
            )
            return _single(max(last_event_id, 0) + 1, _encode(event))
        return self._stream(job, last_event_id)

    async def _stream(self, job: Job, last_event_id: int) -> AsyncIterator[tuple[int, bytes]]:
        queue: asyncio.Queue[tuple[int, bytes, bool]] = asyncio.Queue()
        backlog = [entry for entry in job.events if entry[0] > last_event_id]
        terminal_seen = job.status in TERMINAL
        if not terminal_seen:
            job.subscribers.add(queue)
        try:
            for seq, event, data in backlog:
                yield seq, data if data is not None else _encode(event)
            if terminal_seen:
                if not backlog:  # resumed after the end: repeat the terminal event
                    seq, event, data = job.events[-1]
                    yield seq, data if data is not None else _encode(event)
                return
            while True:
                seq, data, terminal = await queue.get()
                if seq <= last_event_id:
                    continue
                yield seq, data
                if terminal:
                    return
        finally:
            job.subscribers.discard(queue)


async def _single(seq: int, data: bytes) -> AsyncIterator[tuple[int, bytes]]:
    yield seq, data


def _final_message(status: str, error: str | None) -> str:
    return {"finished": "Finished", "stop": "Stopped", "failed": error or "Failed"}.get(
        status, status
    )


def _expected(exc: Exception) -> bool:
    from fooocus_core import EngineError

    return isinstance(exc, EngineError | FileNotFoundError)
