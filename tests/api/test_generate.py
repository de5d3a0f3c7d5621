"""Generate in every response mode, over real HTTP against uvicorn with the tiny checkpoint."""

from __future__ import annotations

import io
import time

import httpx
import pytest
from PIL import Image

from fooocus_core import STARTER_MODEL
from tests.api.conftest import Server, fast, sse_events
from tests.api.helpers import wait_until


def test_healthz_readyz_root_docs_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["worker_alive"] is True
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/docs"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text and "<script" in docs.text
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    props = spec["components"]["schemas"]["CommonRequest"]["properties"]
    assert props["image_number"]["maximum"] == 32 and "/v1/engine/generate/" in spec["paths"]


def test_sync_generate_returns_finished_record_with_urls_and_seeds(client: httpx.Client) -> None:
    r = client.post("/v1/engine/generate/", json=fast(image_number=2, image_seed=77))
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["task_status"] == "finished" and rec["progress"] == 100
    assert len(rec["result"]) == 2 and rec["seeds"] == [77, 78]
    assert rec["req_params"]["image_seed"] == 77 and rec["req_params"]["loras"] == []
    assert rec["start_mills"] >= rec["in_queue_mills"] and rec["finish_mills"] >= rec["start_mills"]
    for url in rec["result"]:
        assert url.startswith(str(client.base_url) + "/outputs/")
        img = client.get(url)
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(img.content)).size == (64, 64)
    # the record is persisted and served by id
    again = client.get(f"/tasks/{rec['task_id']}").json()
    assert again["task_status"] == "finished" and again["result"] == rec["result"]


def test_without_trailing_slash_and_without_accept_header(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post(
            "/v1/engine/generate",
            content=httpx.Request("POST", "/", json=fast()).content,
            headers={"Content-Type": "application/json", "Accept": ""},
        )
    assert r.status_code == 200 and r.json()["task_status"] == "finished"


def test_async_then_poll(client: httpx.Client) -> None:
    r = client.post("/v1/engine/generate/", json=fast(async_process=True))
    assert r.status_code == 200
    rec = r.json()
    assert rec["task_status"] in ("pending", "running") and len(rec["task_id"]) == 32
    assert rec["result"] == []
    done: dict = {}

    def finished() -> bool:
        done.update(client.get(f"/tasks/{rec['task_id']}").json())
        return done["task_status"] == "finished"

    assert wait_until(finished)
    assert len(done["result"]) == 1 and done["seeds"] == [1234]


def test_binary_modes(client: httpx.Client) -> None:
    expected = {
        "png": ("image/png", "PNG"),
        "jpeg": ("image/jpeg", "JPEG"),
        "jpg": ("image/jpeg", "JPEG"),
        "webp": ("image/webp", "WEBP"),
    }
    for subtype, (media, pil_format) in expected.items():
        r = client.post(
            "/v1/engine/generate/",
            json=fast(image_number=3),
            headers={"Accept": f"image/{subtype}"},
        )
        assert r.status_code == 200, (subtype, r.text)
        assert r.headers["content-type"] == media
        image = Image.open(io.BytesIO(r.content))
        assert image.format == pil_format and image.size == (64, 64)
        task = client.get(f"/tasks/{r.headers['x-task-id']}").json()
        assert len(task["result"]) == 1  # binary mode makes one image


def test_sse_stream_events_have_ids_and_final_images(client: httpx.Client) -> None:
    with client.stream("POST", "/v1/engine/generate/", json=fast(stream_output=True)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(r))
    ids = [int(event_id) for event_id, _ in events]
    assert ids == list(range(1, len(ids) + 1))
    bodies = [body for _, body in events]
    assert bodies[0]["status"] == "pending" and "queue_position" in bodies[0]
    assert any(b.get("preview", "") and b["preview"].startswith("data:image/") for b in bodies)
    assert any("Sampling step" in b["message"] for b in bodies)
    final = bodies[-1]
    assert final["status"] == "finished" and final["progress"] == 100
    assert len(final["images"]) == 1 and final["images"][0].startswith(str(client.base_url))
    task_id = final["task_id"]
    assert all(b["task_id"] == task_id for b in bodies)

    # resume: only events after Last-Event-ID, ending with the final one
    with client.stream(
        "GET", f"/tasks/{task_id}/events", headers={"Last-Event-ID": str(ids[-3])}
    ) as r:
        resumed = list(sse_events(r))
    assert [int(i) for i, _ in resumed] == ids[-2:]
    assert resumed[-1][1]["images"] == final["images"]


def test_events_subscription_of_running_task(client: httpx.Client) -> None:
    task = client.post("/v1/engine/generate/", json=fast(async_process=True, overwrite_step=6))
    task_id = task.json()["task_id"]
    with client.stream("GET", f"/tasks/{task_id}/events") as r:
        bodies = [b for _, b in sse_events(r)]
    assert bodies[-1]["status"] == "finished" and bodies[-1]["task_id"] == task_id
    assert sum("Sampling step" in b["message"] for b in bodies) >= 1


def test_sync_client_disconnect_does_not_kill_task(server: Server) -> None:
    # the client gives up mid-run
    with httpx.Client(base_url=server.url, timeout=0.2) as c, pytest.raises(httpx.ReadTimeout):
        c.post("/v1/engine/generate/", json=fast(overwrite_step=80, prompt="disconnect me"))
    with server.client() as c:

        def done() -> bool:
            hist = c.get("/tasks", params={"query": "history", "page_size": 50}).json()
            return any(
                t["req_params"]["prompt"] == "disconnect me" and t["task_status"] == "finished"
                for t in hist["history"]
            )

        assert wait_until(done)


def test_models_styles_and_outputs(client: httpx.Client) -> None:
    models = client.get("/v1/engines/all-models").json()
    assert models["model_filenames"] == ["tiny.safetensors", STARTER_MODEL]
    assert models["lora_filenames"] == [] and models["starter_fallback"] is False
    assert "default" in models["presets"] and models["vae_filenames"] == []
    styles = client.get("/v1/engines/styles").json()
    assert styles[:2] == ["Fooocus V2", "Random Style"] and len(styles) > 100

    rec = client.post("/v1/engine/generate/", json=fast(save_name="mycat")).json()
    url = rec["result"][0]
    assert url.endswith("/mycat-0.png")
    for accept, fmt in (("image/jpeg", "JPEG"), ("image/webp", "WEBP"), ("image/jpg", "JPEG")):
        r = client.get(url, headers={"Accept": accept})
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).format == fmt
    raw = client.get(url, headers={"Accept": "text/html,*/*"})
    assert Image.open(io.BytesIO(raw.content)).format == "PNG"
    assert client.get("/outputs/2020-01-01/nope.png").status_code == 404


def test_describe_image_is_501_naming_model(client: httpx.Client) -> None:
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, "PNG")
    r = client.post(
        "/v1/tools/describe-image",
        files={"image": ("a.png", png.getvalue(), "image/png")},
        data={"image_type": "Anime"},
    )
    assert r.status_code == 501 and "wd-v1-4-moat-tagger-v2.onnx" in r.json()["detail"]
    import base64

    r = client.post(
        "/v1/tools/describe-image",
        json={"image": base64.b64encode(png.getvalue()).decode(), "image_type": "Photo"},
    )
    assert r.status_code == 501 and "model_base_caption_capfilt_large.pth" in r.json()["detail"]
    assert "clip_vision" in r.json()["detail"]
    bad = client.post("/v1/tools/describe-image", json={"image": "!!notbase64!!"})
    assert bad.status_code == 400 and bad.json()["field"] == "image"


def test_preview_in_current_record(client: httpx.Client) -> None:
    rec = client.post("/v1/engine/generate/", json=fast(async_process=True, overwrite_step=40))
    task_id = rec.json()["task_id"]
    seen: dict = {}

    def has_preview() -> bool:
        current = client.get("/tasks", params={"query": "current"}).json()["current"]
        if current and current[0]["task_id"] == task_id and current[0]["preview"]:
            seen.update(current[0])
            return True
        return False

    assert wait_until(has_preview, timeout=30, step=0.01)
    assert seen["task_status"] == "running" and 0 < seen["progress"] < 100
    client.post("/v1/engine/control", params={"action": "stop", "task_id": task_id})
    assert wait_until(lambda: client.get(f"/tasks/{task_id}").json()["task_status"] == "stop")
    time.sleep(0)


def test_preset_lora_that_is_not_installed_is_skipped_with_a_note(client: httpx.Client) -> None:
    """No ``loras`` field: the default preset's offset LoRA applies, and is not installed here
    (downloads are off in the tests), so the task runs without it and says so.
    """
    body = fast()
    del body["loras"]
    r = client.post("/v1/engine/generate/", json=body)
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["task_status"] == "finished"
    assert any("sd_xl_offset_example-lora_1.0.safetensors" in m for m in rec["messages"])
