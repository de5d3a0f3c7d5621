"""``/openapi.json`` built from the msgspec Structs, and an offline ``/docs`` page.

The docs page is one self-contained HTML file (no CDN): it reads ``/openapi.json`` and lists
every operation with its parameters and body schema, and can send requests (with an optional
X-API-KEY) from the browser.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from fooocus_api import schemas as s

_STRUCTS: tuple[type, ...] = (
    s.CommonRequest,
    s.ControlRequest,
    s.DescribeImageRequest,
    s.DescribeImageResponse,
    s.RecordResponse,
    s.TasksResponse,
    s.TaskEvent,
    s.AllModelsResponse,
    s.FeaturesResponse,
    s.PresetResponse,
    s.MessageResponse,
    s.ErrorResponse,
    s.HealthResponse,
    s.ReadinessResponse,
    s.TicketResponse,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
_ERRORS = {
    "401": _json("ErrorResponse", "X-API-KEY missing"),
    "403": _json("ErrorResponse", "X-API-KEY wrong"),
    "422": _json("ErrorResponse", "Invalid parameters (the field is named)"),
}


def _paths() -> dict[str, Any]:
    image_types = {
        f"image/{t}": {"schema": {"type": "string", "format": "binary"}}
        for t in ("png", "jpeg", "webp")
    }
    generate = {
        "summary": "Generate images",
        "description": (
            "Modes, first match wins: `Accept: image/png|jpeg|jpg|webp` returns the image "
            "(one image; 204 if none); `stream_output` returns Server-Sent Events; "
            "`async_process` returns the pending record at once; otherwise the call waits "
            "and returns the final record (500 with the record if the task failed)."
        ),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("CommonRequest")}},
        },
        "responses": {
            "200": {
                "description": "Record, SSE stream or image",
                "content": {
                    "application/json": {"schema": _ref("RecordResponse")},
                    "text/event-stream": {"schema": _ref("TaskEvent")},
                    **image_types,
                },
            },
            "204": {"description": "Binary mode: the task produced no image"},
            "400": _json("ErrorResponse", "An input image is unusable"),
            "429": _json("ErrorResponse", "Queue full (see Retry-After)"),
            "501": _json("ErrorResponse", "Feature not available yet"),
            **_ERRORS,
        },
    }
    return {
        "/v1/engine/generate/": {"post": generate},
        "/v1/engine/control": {
            "post": {
                "summary": "Stop or skip the running task, or cancel a pending one by id",
                "parameters": [
                    _query("action", "stop | skip", {"type": "string", "enum": ["stop", "skip"]}),
                    _query("task_id", "target task (default: the running one)"),
                ],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("ControlRequest")}},
                },
                "responses": {"200": _json("MessageResponse"), **_ERRORS},
            }
        },
        "/tasks": {
            "get": {
                "summary": "Task history, the running task and the queue",
                "parameters": [
                    _query(
                        "query",
                        "all | history | current | pending",
                        {"type": "string", "default": "all"},
                    ),
                    _query("page", "page number (0-based)", {"type": "integer", "default": 0}),
                    _query("page_size", "page size", {"type": "integer", "default": 10}),
                    _query("start_at", "ISO-8601; history queued at or after"),
                    _query("end_at", "ISO-8601 (default now); history queued at or before"),
                    _query("action", "delete: remove finished tasks in the time range"),
                ],
                "responses": {"200": _json("TasksResponse"), **_ERRORS},
            }
        },
        "/tasks/{task_id}": {
            "get": {
                "summary": "One task's record",
                "parameters": [_TASK_ID],
                "responses": {"200": _json("RecordResponse"), "404": _json("ErrorResponse")},
            },
            "delete": {
                "summary": "Delete a finished task and its images",
                "parameters": [_TASK_ID],
                "responses": {
                    "200": {"description": "Deleted"},
                    "404": _json("ErrorResponse"),
                    "409": _json("ErrorResponse", "Task still pending or running"),
                },
            },
        },
        "/tasks/{task_id}/events": {
            "get": {
                "summary": "Server-Sent Events of a task (resume with Last-Event-ID)",
                "description": "Authenticate with X-API-KEY or with `?ticket=` from "
                "POST /tasks/{task_id}/events/ticket (for browser EventSource).",
                "parameters": [_TASK_ID, _query("ticket", "single-use ticket")],
                "responses": {
                    "200": {
                        "description": "Event stream",
                        "content": {"text/event-stream": {"schema": _ref("TaskEvent")}},
                    },
                    "404": _json("ErrorResponse"),
                },
            }
        },
        "/tasks/{task_id}/events/ticket": {
            "post": {
                "summary": "A single-use, 60-second ticket for the events URL",
                "parameters": [_TASK_ID],
                "responses": {"200": _json("TicketResponse"), **_ERRORS},
            }
        },
        "/v1/engines/all-models": {
            "get": {"summary": "Model files", "responses": {"200": _json("AllModelsResponse")}}
        },
        "/v1/engines/styles": {
            "get": {
                "summary": "Style names",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": {"type": "string"}}
                            }
                        },
                    }
                },
            }
        },
        "/v1/engines/features": {
            "get": {
                "summary": "Image-input modes available here and the choices of enumerated fields",
                "responses": {"200": _json("FeaturesResponse"), **_ERRORS},
            }
        },
        "/v1/engines/presets/{name}": {
            "get": {
                "summary": "A preset's defaults under request field names (initial = global)",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json("PresetResponse"),
                    "404": _json("ErrorResponse", "No such preset"),
                    **_ERRORS,
                },
            }
        },
        "/outputs/{date}/{file_name}": {
            "get": {
                "summary": "An output image (Accept: image/png|jpeg|webp converts it)",
                "security": [],
                "parameters": [
                    {"name": "date", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "file_name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {"description": "Image", "content": image_types},
                    "404": _json("ErrorResponse"),
                },
            }
        },
        "/v1/tools/describe-image": {
            "post": {
                "summary": "Describe an image (not available yet: 501)",
                "requestBody": {
                    "content": {
                        "application/json": {"schema": _ref("DescribeImageRequest")},
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "image": {"type": "string", "format": "binary"},
                                    "image_type": {"type": "string", "enum": ["Photo", "Anime"]},
                                },
                            }
                        },
                    }
                },
                "responses": {
                    "200": _json("DescribeImageResponse"),
                    "501": _json("ErrorResponse"),
                    **_ERRORS,
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "security": [],
                "responses": {"200": _json("HealthResponse")},
            }
        },
        "/readyz": {
            "get": {"summary": "Readiness", "responses": {"200": _json("ReadinessResponse")}}
        },
    }


@functools.cache
def document() -> bytes:
    """The OpenAPI 3.1 document as JSON bytes."""
    _, components = msgspec.json.schema_components(
        _STRUCTS, ref_template="#/components/schemas/{name}"
    )
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "fooocus-api",
            "version": "0.1.0",
            "description": "FooocusAPI-compatible SDXL image generation.",
        },
        "paths": _paths(),
        "components": {
            "schemas": components,
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"}},
        },
        "security": [{"ApiKey": []}],
    }
    return msgspec.json.encode(doc)


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fooocus-api</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
details{border:1px solid #ccc;border-radius:6px;margin:.4rem 0;padding:.4rem .8rem}
summary{cursor:pointer}.m{display:inline-block;width:4.5rem;font-weight:bold}
.get{color:#0a7}.post{color:#06c}.delete{color:#c33}
pre{background:#f5f5f5;padding:.6rem;overflow:auto;max-height:30rem}
textarea{width:100%;height:10rem;font-family:monospace}
</style></head><body>
<h1>fooocus-api</h1>
<p>FooocusAPI-compatible REST interface. Schema: <a href="/openapi.json">/openapi.json</a>.</p>
<p>X-API-KEY: <input id="key" type="password" size="40"></p>
<div id="ops">Loading…</div>
<script>
const $=s=>document.querySelector(s);
function esc(t){return String(t).replace(/[&<>]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]))}
fetch('/openapi.json').then(r=>r.json()).then(doc=>{
  const ops=$('#ops');ops.innerHTML='';
  for(const [path,item] of Object.entries(doc.paths)){
    for(const [method,op] of Object.entries(item)){
      const d=document.createElement('details');
      const params=(op.parameters||[]).map(p=>
        `<li><code>${esc(p.name)}</code> (${p.in}) ${esc(p.description||'')}</li>`).join('');
      const body=op.requestBody?JSON.stringify(op.requestBody.content,null,1):'';
      d.innerHTML=`<summary><span class="m ${method}">${method.toUpperCase()}</span>
      <code>${esc(path)}</code> — ${esc(op.summary||'')}</summary>
      <p>${esc(op.description||'')}</p>${params?'<ul>'+params+'</ul>':''}
      ${body?'<p>Body:</p><pre>'+esc(body)+'</pre>':''}
      <p>Try: <input class="url" size="60" value="${esc(path)}"></p>
      ${['post','put'].includes(method)?'<textarea class="req">{}</textarea>':''}
      <button>Send</button><pre class="out"></pre>`;
      d.querySelector('button').onclick=async()=>{
        const h={'Content-Type':'application/json'};const k=$('#key').value;if(k)h['X-API-KEY']=k;
        const ta=d.querySelector('.req');
        const r=await fetch(d.querySelector('.url').value,
          {method:method.toUpperCase(),headers:h,body:ta?ta.value:undefined});
        d.querySelector('.out').textContent=r.status+' '+r.statusText+'\\n'+await r.text();
      };
      ops.appendChild(d);
    }
  }
  const sc=document.createElement('details');
  sc.innerHTML='<summary><b>Schemas</b></summary><pre>'+esc(JSON.stringify(doc.components.schemas,null,1))+'</pre>';
  ops.appendChild(sc);
});
</script></body></html>
"""
