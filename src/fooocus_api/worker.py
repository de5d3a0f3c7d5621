"""The GPU thread: one dedicated thread that owns the engine and runs every generation.

The engine is created in that thread when the service starts (importing torch there, so the
port opens at once); models load on first need. Progress reports are marshalled back to the
event loop with ``loop.call_soon_threadsafe``; previews are base64-encoded here, off the loop.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from fooocus_core import EngineConfig, GenerationResult, GenerationTask, Progress

if TYPE_CHECKING:
    from fooocus_core import CancelToken, Preset

logger = logging.getLogger(__name__)

T = TypeVar("T")


class EngineLike(Protocol):
    """What the service uses of :class:`fooocus_core.engine.Engine`."""

    def validate(self, task: GenerationTask) -> None: ...
    def generate(
        self,
        task: GenerationTask,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult: ...
    def list_models(self, *, builtin: bool = ...) -> list[str]: ...
    def fetch_problem(self, kind: str, name: str, timeout: float = ...) -> str | None: ...
    def list_loras(self) -> list[str]: ...
    def list_vaes(self) -> list[str]: ...
    def list_styles(self) -> list[str]: ...
    def list_presets(self) -> list[str]: ...
    def preset(self, name: str | None = None) -> Preset: ...
    def prepare_preset(
        self, name: str | None = None, on_progress: Callable[[Progress], None] | None = None
    ) -> object: ...
    def load(self, base_model: str, vae: str = ...) -> None: ...


EngineFactory = Callable[[EngineConfig], EngineLike]

#: ``(percent, message, preview data URL or None, raw progress)`` on the event loop.
ProgressSink = Callable[[int, str, str | None], None]


def default_engine_factory(config: EngineConfig) -> EngineLike:
    """Build the real engine (imports torch; call it in the GPU thread)."""
    from fooocus_core import Engine

    return Engine(config)


def preview_data_url(preview: bytes | None) -> str | None:
    """JPEG bytes → ``data:image/jpeg;base64,...``."""
    if not preview:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(preview).decode("ascii")


class GpuWorker:
    """Owns the single GPU thread and the engine living in it."""

    def __init__(self, config: EngineConfig, factory: EngineFactory) -> None:
        self.config = config
        self._factory = factory
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu")
        self._engine: EngineLike | None = None
        self._engine_lock = threading.Lock()
        self._ready: asyncio.Future[EngineLike] | None = None
        self.loaded_model: str | None = None
        self.busy = False
        self._closed = False

    def start(self) -> None:
        """Create the engine in the GPU thread (returns at once)."""
        loop = asyncio.get_running_loop()
        self._ready = asyncio.ensure_future(loop.run_in_executor(self._executor, self._create))

    def _create(self) -> EngineLike:
        with self._engine_lock:
            if self._engine is None:
                self._engine = self._factory(self.config)
            return self._engine

    async def engine(self) -> EngineLike:
        """The engine, once created (raises what its creation raised)."""
        if self._ready is None:
            self.start()
        assert self._ready is not None
        return await asyncio.shield(self._ready)

    @property
    def alive(self) -> bool:
        """False once closed or when the engine could not be created."""
        if self._closed:
            return False
        ready = self._ready
        return ready is None or not ready.done() or ready.exception() is None

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the GPU thread and wait for it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    def generate_blocking(
        self,
        engine: EngineLike,
        task: GenerationTask,
        sink: ProgressSink,
        loop: asyncio.AbstractEventLoop,
        cancel: CancelToken,
        before: Callable[[Callable[[str], None]], Any] | None = None,
    ) -> GenerationResult:
        """In the GPU thread: optional preparation (downloads), then ``engine.generate``."""

        def report(progress: Progress) -> None:
            url = None if task.disable_preview else preview_data_url(progress.preview)
            loop.call_soon_threadsafe(sink, progress.percent, progress.message, url)

        def say(message: str) -> None:
            loop.call_soon_threadsafe(sink, 0, message, None)

        self.busy = True
        try:
            if before is not None:
                before(say)
            result = engine.generate(task, report, cancel)
            self.loaded_model = task.base_model
            return result
        finally:
            self.busy = False

    async def close(self, timeout: float = 30.0) -> None:
        """Let the current job end (the caller stops it first) and release the thread."""
        self._closed = True
        loop = asyncio.get_running_loop()
        waiter = loop.run_in_executor(None, self._executor.shutdown, True)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            logger.warning("the GPU thread did not finish within %.0f s", timeout)
