"""The ASGI application: hand-written routing over Starlette requests and responses.

:func:`create_app` takes the settings and an engine factory and returns the ASGI callable
(wrapped in CORS, as FooocusAPI allows every origin). Start-up opens the task database,
starts the GPU thread (which creates the engine) and resumes queued tasks; the port opens
without waiting for any model.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from fooocus_api import features, files, openapi
from fooocus_api.auth import Tickets, check_api_key
from fooocus_api.default_model import DefaultModels
from fooocus_api.http import JSON, RequestError, accept_image, parse_multipart, validation_error
from fooocus_api.inputs import BadImage, ImageFetcher, check_url_host, image_fields, is_empty
from fooocus_api.mapping import NO_PRESET
from fooocus_api.prepare import ensure_task_files, prepare_request
from fooocus_api.schemas import (
    AllModelsResponse,
    CommonRequest,
    ControlRequest,
    DescribeImageRequest,
    HealthResponse,
    MessageResponse,
    ReadinessResponse,
    RecordResponse,
    TasksResponse,
    TicketResponse,
)
from fooocus_api.settings import Settings
from fooocus_api.store import TaskStore
from fooocus_api.tasks import TERMINAL, Job, QueueFull, TaskManager, new_task_id, now_ms
from fooocus_api.webhooks import WebhookSender
from fooocus_api.worker import EngineFactory, EngineLike, GpuWorker, default_engine_factory
from fooocus_core import MODEL_FOLDERS, STARTER_PRESET, PresetError

logger = logging.getLogger("fooocus_api")

Handler = Callable[..., Awaitable[Response]]

#: Describe-image models (the feature comes in a later issue).
DESCRIBE_MODELS = {
    "Photo": "model_base_caption_capfilt_large.pth",
    "Anime": "wd-v1-4-moat-tagger-v2.onnx",
}


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool = True


class Service:
    """Holds the parts of a running service and answers its routes."""

    def __init__(self, settings: Settings, engine_factory: EngineFactory) -> None:
        self.settings = settings
        self.worker = GpuWorker(settings.engine, engine_factory)
        self.webhooks = WebhookSender(
            settings.webhook_secret,
            settings.webhook_attempts,
            settings.webhook_backoff_s,
            settings.webhook_timeout_s,
            settings.allow_private_urls,
        )
        self.fetcher = ImageFetcher(
            settings.allow_private_urls, settings.max_input_bytes, settings.input_fetch_timeout_s
        )
        self.tickets = Tickets()
        self.default_models = DefaultModels(settings.engine)
        self.store: TaskStore | None = None
        self.manager: TaskManager | None = None
        self.shutdown_event = anyio.Event()
        self.output_root = Path(settings.engine.output_dir)
        self.routes = self._routes()
        self._background: set[asyncio.Task[None]] = set()

    # --- lifecycle --------------------------------------------------------------------------

    async def startup(self) -> None:
        await asyncio.to_thread(self._make_folders)
        self.store = await TaskStore.open(self.settings.database_path)
        self.worker.start()
        config = self.settings.engine
        models = self.default_models

        def prepare(engine: EngineLike, job: Job, say: Callable[[str], None]) -> None:
            ensure_task_files(engine, config, job.preset_name, job.task, say, models)

        self.manager = TaskManager(self.settings, self.store, self.worker, self.webhooks, prepare)
        failed = await self.manager.start()
        if failed:
            logger.warning("marked %d task(s) interrupted by a restart as failed", len(failed))
        if self.manager.pending:
            logger.info("resuming %d pending task(s)", len(self.manager.pending))
        self._background.add(asyncio.create_task(self._check_default_model()))
        if self.settings.preload:
            self._background.add(asyncio.create_task(self._preload()))

    def _make_folders(self) -> None:
        """Create the outputs folder and every model folder, so users see where files go."""
        self.output_root.mkdir(parents=True, exist_ok=True)
        for kind in MODEL_FOLDERS:
            self.settings.engine.folder(kind).mkdir(parents=True, exist_ok=True)

    async def _check_default_model(self) -> None:
        """Say in the log which model requests that name none will run with."""
        try:
            engine = await self.worker.engine()
            status = await asyncio.to_thread(self.default_models.status, engine)
        except Exception as exc:
            logger.warning("could not check the default model: %s", exc)
            return
        if status.notice:
            logger.warning("%s", status.notice)
        else:
            logger.info("default model: %s", status.model)

    async def _preload(self) -> None:
        try:
            engine = await self.worker.engine()
            preset = await asyncio.to_thread(engine.preset, None)
            choice = await asyncio.to_thread(self.default_models.choose, engine, preset)
            if choice.starter:
                preset = await asyncio.to_thread(self.default_models.starter_preset, engine)
            await self.worker.run(lambda: engine.load(choice.model, preset.default_vae))
            self.worker.loaded_model = choice.model
        except Exception as exc:
            logger.warning("--preload failed: %s", exc)

    async def shutdown(self) -> None:
        self.shutdown_event.set()
        for task in self._background:
            task.cancel()
        if self.manager is not None:
            await self.manager.close()
        await self.worker.close()
        await self.webhooks.close()
        await self.fetcher.close()
        if self.store is not None:
            await self.store.close()

    # --- routing ----------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        def r(method: str, path: str, handler: Handler, auth: bool = True) -> Route:
            return Route(method, re.compile(f"^{path}$"), handler, auth)

        tid = r"(?P<task_id>[0-9A-Za-z_-]{1,64})"
        return [
            r("GET", "/", self.root, auth=False),
            r("GET", "/docs", self.docs, auth=False),
            r("GET", "/openapi.json", self.openapi_json, auth=False),
            r("GET", "/healthz", self.healthz, auth=False),
            r("GET", "/readyz", self.readyz),
            r("POST", "/v1/engine/generate/?", self.generate),
            r("POST", "/v1/engine/control/?", self.control),
            r("GET", "/tasks/?", self.list_tasks),
            r("GET", f"/tasks/{tid}", self.get_task),
            r("DELETE", f"/tasks/{tid}", self.delete_task),
            r("GET", f"/tasks/{tid}/events", self.task_events, auth=False),
            r("POST", f"/tasks/{tid}/events/ticket", self.events_ticket),
            r("GET", "/v1/engines/all-models", self.all_models),
            r("GET", "/v1/engines/styles", self.styles),
            r("GET", "/v1/engines/features", self.features),
            r("GET", r"/v1/engines/presets/(?P<name>[^/]{1,128})", self.preset),
            r("GET", r"/outputs/(?P<folder>[^/]+)/(?P<name>[^/]+)", self.output, auth=False),
            r("POST", "/v1/tools/describe-image", self.describe_image),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            response = await self._dispatch(request)
        except RequestError as exc:
            response = exc.response()
        except Exception:
            logger.exception("unhandled error on %s %s", request.method, request.url.path)
            response = JSON({"detail": "internal server error"}, status_code=500)
        await response(scope, receive, send)

    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path
        allowed: list[str] = []
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            if route.method != request.method and not (
                route.method == "GET" and request.method == "HEAD"
            ):
                allowed.append(route.method)
                continue
            if route.auth:
                check_api_key(self.settings.apikey, request.headers.get("x-api-key"))
            return await route.handler(request, **match.groupdict())
        if allowed:
            raise RequestError(405, "method not allowed", headers={"Allow": ", ".join(allowed)})
        raise RequestError(404, "not found")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    @property
    def tasks(self) -> TaskManager:
        if self.manager is None:
            raise RequestError(503, "the service is starting")
        return self.manager

    async def _engine(self) -> EngineLike:
        try:
            return await self.worker.engine()
        except Exception as exc:
            raise RequestError(503, f"the engine could not be started: {exc}") from None

    def _base(self, request: Request) -> str:
        """Result URL prefix: ``--base-url`` if set, else the request's scheme and host."""
        return self.tasks.base_for(f"{request.url.scheme}://{request.url.netloc}")

    # --- meta -------------------------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        return RedirectResponse("/docs", status_code=307)

    async def docs(self, request: Request) -> Response:
        return Response(openapi.DOCS_HTML, media_type="text/html")

    async def openapi_json(self, request: Request) -> Response:
        return Response(openapi.document(), media_type="application/json")

    async def healthz(self, request: Request) -> Response:
        return JSON(HealthResponse(status="ok"))

    async def readyz(self, request: Request) -> Response:
        manager = self.manager
        alive = self.worker.alive and manager is not None
        current = manager.current if manager else None
        body = ReadinessResponse(
            ready=alive,
            engine_loaded=self.worker.loaded_model is not None,
            worker_alive=self.worker.alive,
            loaded_model=self.worker.loaded_model,
            queue_length=len(manager.pending) if manager else 0,
            running_task=current.task_id if current else None,
        )
        return JSON(body, status_code=200 if alive else 503)

    # --- generate ---------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        binary = accept_image(request.headers.get("accept"))
        body = await request.body()
        try:
            params = msgspec.json.decode(body or b"{}", type=CommonRequest, strict=False)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise validation_error(exc) from None
        engine = await self._engine()
        prepared = await asyncio.to_thread(
            prepare_request,
            engine,
            self.settings.engine,
            params,
            self.default_models,
            single_image=binary is not None,
        )
        await self._check_images(params)
        webhook = params.webhook_url or self.settings.webhook_url or None
        if params.webhook_url:
            try:
                await check_url_host(params.webhook_url, self.settings.allow_private_urls)
            except ValueError as exc:
                raise RequestError(422, str(exc), "webhook_url") from None
        manager = self.tasks
        try:
            manager.reserve()
        except QueueFull:
            raise RequestError(
                429,
                f"the queue is full ({self.settings.queue_size} tasks waiting); retry later",
                headers={"Retry-After": str(manager.retry_after_s())},
            ) from None
        job = Job(
            task_id=new_task_id(),
            task=prepared.task,
            req_params=prepared.req_params,
            preset_name=prepared.preset_name,
            webhook_url=webhook,
            url_base=f"{request.url.scheme}://{request.url.netloc}",
            in_queue_mills=now_ms(),
            messages=list(prepared.notes),
        )
        await manager.submit(job)
        base = self._base(request)
        if binary is not None:
            return await self._binary_result(job, binary)
        if params.stream_output:
            return self._event_stream(manager, job.task_id, 0)
        if params.async_process:
            return JSON(manager.record_of(job, base))
        await job.done.wait()
        record = manager.record_of(job, base)
        return JSON(record, status_code=500 if job.status == "failed" else 200)

    async def _check_images(self, params: CommonRequest) -> None:
        """Decode every input image (400 naming the field if bad); image modes are not
        implemented yet, so a request that would use one gets 501."""
        present: list[str] = []
        for field, value, mask in image_fields(params):
            if is_empty(value):
                continue
            try:
                await self.fetcher.load(field, value, mask=mask)
            except BadImage as exc:
                raise RequestError(400, exc.message, field) from None
            present.append(field)
        active = _active_image_mode(params, present)
        if active is not None:
            raise RequestError(
                501,
                f"{active[1]} is not supported by this server yet; send the request without "
                "input images",
                active[0],
                kind="not_implemented",
            )

    async def _binary_result(self, job: Job, subtype: str) -> Response:
        await job.done.wait()
        headers = {"X-Task-Id": job.task_id, "X-Task-Status": job.status}
        if job.status == "failed":
            return JSON({"detail": job.error, "task_id": job.task_id}, 500, headers=headers)
        if not job.files:
            return Response(status_code=204, headers=headers)
        path = self.output_root / job.files[0]
        headers["X-Seed"] = str(job.seeds[0])
        data = await asyncio.to_thread(files.convert, path, subtype)
        return Response(data, media_type=files.IMAGE_TYPES[subtype][1], headers=headers)

    def _event_stream(self, manager: TaskManager, task_id: str, last_id: int) -> Response:
        async def events() -> Any:
            stream = await manager.subscribe(task_id, last_id)
            if stream is None:
                return
            async for seq, data in stream:
                yield ServerSentEvent(data=data.decode(), id=str(seq))

        return EventSourceResponse(
            events(),
            ping=self.settings.sse_ping_s,
            shutdown_event=self.shutdown_event,
            headers={"X-Task-Id": task_id},
        )

    # --- control ----------------------------------------------------------------------------

    async def control(self, request: Request) -> Response:
        action = request.query_params.get("action")
        task_id = request.query_params.get("task_id")
        body = await request.body()
        if body.strip():
            try:
                parsed = msgspec.json.decode(body, type=ControlRequest, strict=False)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise validation_error(exc) from None
            action = action or parsed.action
            task_id = task_id or parsed.task_id
        if not action:
            raise RequestError(422, "action is required (stop or skip)", "action", "missing")
        if action not in ("stop", "skip"):
            return JSON(MessageResponse(message="Invalid control action"))
        manager = self.tasks
        if task_id:
            job = manager.find(task_id)
            if job is None:
                if await manager.store.get(task_id) is None:
                    raise RequestError(404, f"task {task_id} not found")
                return JSON(MessageResponse(message="Task already finished"))
            if job.status == "pending":
                await manager.cancel_pending(job)
                return JSON(MessageResponse(message="task canceled"))
            if job.status in TERMINAL:
                return JSON(MessageResponse(message="Task already finished"))
        else:
            job = manager.current
            if job is None:
                return JSON(MessageResponse(message="No task running"))
        manager.interrupt(job, action)
        # FooocusAPI's wording, spelling included ("task stoped", "task skiped").
        return JSON(MessageResponse(message=f"task {action}ed"))

    # --- queries ----------------------------------------------------------------------------

    async def list_tasks(self, request: Request) -> Response:
        q = request.query_params
        query = q.get("query", "all")
        if query not in ("all", "history", "current", "pending"):
            raise RequestError(422, "query must be one of all, history, current, pending", "query")
        page = _int_param(q.get("page"), "page", 0, 0)
        page_size = _int_param(q.get("page_size"), "page_size", 10, 1, 1000)
        start = _time_param(q.get("start_at"), "start_at")
        end = _time_param(q.get("end_at"), "end_at")
        manager = self.tasks
        if q.get("action") == "delete":
            if start is None:
                raise RequestError(422, "action=delete needs start_at", "start_at")
            await self._delete_range(start, end if end is not None else now_ms())
            return JSON(None)
        base = self._base(request)
        history: list[RecordResponse] = []
        current: list[RecordResponse] = []
        pending: list[RecordResponse] = []
        if query in ("all", "history"):
            rows = await manager.store.history(
                page=page,
                page_size=page_size,
                start_mills=start,
                end_mills=end if end is not None else (now_ms() if start is not None else None),
            )
            history = [manager.record_of_stored(row, base) for row in rows]
        if query in ("all", "current") and manager.current is not None:
            current = [manager.record_of(manager.current, base)]
        if query in ("all", "pending"):
            jobs = list(manager.pending.values())[page * page_size : (page + 1) * page_size]
            pending = [manager.record_of(job, base) for job in jobs]
        return JSON(TasksResponse(history=history, current=current, pending=pending))

    async def _delete_range(self, start: int, end: int) -> None:
        manager = self.tasks
        doomed = []
        page = 0
        while True:
            rows = await manager.store.history(
                page=page, page_size=500, start_mills=start, end_mills=end
            )
            doomed.extend(rows)
            if len(rows) < 500:
                break
            page += 1
        await manager.store.delete([row.task_id for row in doomed])
        outputs = [rel for row in doomed for rel in row.result]
        await asyncio.to_thread(files.delete_outputs, self.output_root, outputs)

    async def get_task(self, request: Request, task_id: str) -> Response:
        record = await self.tasks.record(task_id, self._base(request))
        if record is None:
            raise RequestError(404, f"task {task_id} not found")
        return JSON(record)

    async def delete_task(self, request: Request, task_id: str) -> Response:
        manager = self.tasks
        job = manager.find(task_id)
        if job is not None and job.status not in TERMINAL:
            raise RequestError(
                409,
                f"task {task_id} is {job.status}; stop or cancel it first (POST "
                "/v1/engine/control)",
            )
        stored = await manager.store.get(task_id)
        if stored is None:
            raise RequestError(404, f"task {task_id} not found")
        await manager.store.delete([task_id])
        manager.recent.pop(task_id, None)
        removed = await asyncio.to_thread(files.delete_outputs, self.output_root, stored.result)
        return JSON({"message": "deleted", "task_id": task_id, "files_deleted": removed})

    async def task_events(self, request: Request, task_id: str) -> Response:
        ticket = request.query_params.get("ticket")
        if not (ticket and self.tickets.redeem(ticket, task_id)):
            check_api_key(self.settings.apikey, request.headers.get("x-api-key"))
        raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        last_id = _int_param(raw, "Last-Event-ID", 0, 0)
        manager = self.tasks
        if manager.find(task_id) is None and await manager.store.get(task_id) is None:
            raise RequestError(404, f"task {task_id} not found")
        return self._event_stream(manager, task_id, last_id)

    async def events_ticket(self, request: Request, task_id: str) -> Response:
        return JSON(TicketResponse(ticket=self.tickets.issue(task_id), expires_in=60))

    async def all_models(self, request: Request) -> Response:
        engine = await self._engine()

        def listing() -> AllModelsResponse:
            status = self.default_models.status(engine)
            return AllModelsResponse(
                model_filenames=engine.list_models(),
                lora_filenames=engine.list_loras(),
                vae_filenames=engine.list_vaes(),
                presets=engine.list_presets(),
                default_model=status.model,
                starter_fallback=status.starter_fallback,
                notice=status.notice,
            )

        return JSON(await asyncio.to_thread(listing))

    async def styles(self, request: Request) -> Response:
        engine = await self._engine()
        return JSON(await asyncio.to_thread(engine.list_styles))

    async def features(self, request: Request) -> Response:
        return JSON(features.features())

    async def preset(self, request: Request, name: str) -> Response:
        engine = await self._engine()
        chosen: str | None = name
        if name in NO_PRESET:
            status = await asyncio.to_thread(self.default_models.status, engine)
            chosen = STARTER_PRESET if status.starter_fallback else None
        try:
            preset = await asyncio.to_thread(engine.preset, chosen)
        except PresetError as exc:
            raise RequestError(404, str(exc)) from None
        enabled = not self.settings.engine.disable_preset_download
        return JSON(features.preset_defaults(preset, enabled))

    async def output(self, request: Request, folder: str, name: str) -> Response:
        path = await asyncio.to_thread(files.output_file, self.output_root, folder, name)
        if path is None:
            raise RequestError(404, "not found")
        headers = {"Cache-Control": "public, max-age=31536000, immutable"}
        subtype = accept_image(request.headers.get("accept"))
        if subtype is None or files.same_format(path, subtype):
            return FileResponse(path, media_type=files.media_type(path), headers=headers)
        data = await asyncio.to_thread(files.convert, path, subtype)
        return Response(data, media_type=files.IMAGE_TYPES[subtype][1], headers=headers)

    async def describe_image(self, request: Request) -> Response:
        ctype = request.headers.get("content-type", "")
        body = await request.body()
        image_type = request.query_params.get("image_type", "Photo")
        if ctype.startswith("multipart/form-data"):
            form = parse_multipart(body, ctype)
            part = form.get("image") or form.get("file")
            if part is None:
                raise RequestError(422, "an image file is required", "image", "missing")
            if "image_type" in form:
                image_type = form["image_type"][0].decode("utf-8", "replace")
            try:
                await asyncio.to_thread(_decode_bytes, "image", part[0])
            except BadImage as exc:
                raise RequestError(400, exc.message, "image") from None
        else:
            try:
                parsed = msgspec.json.decode(body, type=DescribeImageRequest, strict=False)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise validation_error(exc) from None
            image_type = parsed.image_type
            try:
                await self.fetcher.load("image", parsed.image)
            except BadImage as exc:
                raise RequestError(400, exc.message, "image") from None
        if image_type not in DESCRIBE_MODELS:
            raise RequestError(422, "image_type must be Photo or Anime", "image_type")
        model = DESCRIBE_MODELS[image_type]
        folder = self.settings.engine.folder("clip_vision")
        raise RequestError(
            501,
            f"describe-image ({image_type}) is not available yet: it needs the model file "
            f"{model!r} in the folder {str(folder)!r} and its implementation, which come in a "
            "later release",
        )


def _decode_bytes(field: str, data: bytes) -> None:
    from fooocus_api.inputs import decode_image

    decode_image(field, data)


def _active_image_mode(params: CommonRequest, present: list[str]) -> tuple[str, str] | None:
    """The image feature a request would use (FooocusAPI's tab order), if any."""
    if "enhance_input_image" in present and params.enhance_checkbox:
        return "enhance_input_image", "Enhance"
    for field in present:
        if field.startswith("controlnet_image["):
            return field, "Image prompt / ControlNet"
    if "uov_input_image" in present and params.uov_method != "Disabled":
        return "uov_input_image", f"Upscale or vary ({params.uov_method})"
    if "inpaint_input_image" in present:
        return "inpaint_input_image", "Inpaint / outpaint"
    return None


def _int_param(
    raw: str | None, name: str, default: int, minimum: int, maximum: int | None = None
) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(422, f"{name} must be an integer", name) from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise RequestError(422, f"{name} must be {bound}", name)
    return value


def _time_param(raw: str | None, name: str) -> int | None:
    """ISO-8601 → epoch ms (a time without zone is local time, as FooocusAPI)."""
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise RequestError(
            422, f"{name} must be ISO-8601, e.g. 2024-06-30T17:57:07", name
        ) from None
    return int(parsed.timestamp() * 1000)


def create_app(
    settings: Settings, engine_factory: EngineFactory = default_engine_factory
) -> ASGIApp:
    """The service as an ASGI app (CORS around the hand-routed :class:`Service`)."""
    service = Service(settings, engine_factory)
    app = CORSMiddleware(
        service,
        allow_origins=["*"],
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Task-Id", "X-Seed", "X-Task-Status"],
    )
    app.service = service  # type: ignore[attr-defined]
    return app


__all__ = ["Service", "create_app"]
