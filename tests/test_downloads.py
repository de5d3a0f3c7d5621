"""Downloads against a local HTTP server: resume, restart, failures, mirror, preset files."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fooocus_core.config import EngineConfig
from fooocus_core.downloads import (
    DownloadError,
    PresetFilesMissing,
    apply_hf_mirror,
    download_preset_files,
    ensure_file,
)
from fooocus_core.presets import Preset

DATA = os.urandom(300_000)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {"/file.bin": DATA, "/x/y/model.bin": DATA}
        self.requests: list[dict[str, str]] = []
        self.cut_first_after: int | None = None  # cut the first response after N bytes
        self.support_range = True

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        server.requests.append({"path": self.path, **dict(self.headers.items())})
        body = server.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        range_header = self.headers.get("Range")
        if range_header and server.support_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if server.cut_first_after is not None:
            cut, server.cut_first_after = server.cut_first_after, None
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_plain_download_and_progress(server: _Server, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    path = ensure_file(
        f"{server.base}/file.bin",
        tmp_path / "m",
        "f.bin",
        progress=lambda d, t: seen.append((d, t)),
    )
    assert path == tmp_path / "m" / "f.bin"
    assert path.read_bytes() == DATA
    assert not (tmp_path / "m" / "f.bin.part").exists()
    assert seen[-1] == (len(DATA), len(DATA))
    assert "Range" not in server.requests[0]


def test_existing_file_untouched(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"mine")
    assert ensure_file(f"{server.base}/file.bin", tmp_path, "f.bin").read_bytes() == b"mine"
    assert server.requests == []


def test_resume_existing_part(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "f.bin.part").write_bytes(DATA[:1000])
    path = ensure_file(f"{server.base}/file.bin", tmp_path, "f.bin")
    assert path.read_bytes() == DATA
    assert server.requests[0]["Range"] == "bytes=1000-"


def test_cut_connection_resumes(server: _Server, tmp_path: Path) -> None:
    server.cut_first_after = 123_456
    path = ensure_file(f"{server.base}/file.bin", tmp_path, "f.bin", retry_delay=0)
    assert path.read_bytes() == DATA
    assert len(server.requests) == 2
    assert "Range" not in server.requests[0]
    assert server.requests[1]["Range"] == "bytes=123456-"


def test_server_without_range_restarts(server: _Server, tmp_path: Path) -> None:
    server.support_range = False
    (tmp_path / "f.bin.part").write_bytes(b"garbage-prefix")
    path = ensure_file(f"{server.base}/file.bin", tmp_path, "f.bin")
    assert path.read_bytes() == DATA
    assert server.requests[0]["Range"] == "bytes=14-"


def test_complete_part_is_finished(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "f.bin.part").write_bytes(DATA)  # crashed before the rename
    assert ensure_file(f"{server.base}/file.bin", tmp_path, "f.bin").read_bytes() == DATA


def test_404_names_file_url_folder(server: _Server, tmp_path: Path) -> None:
    url = f"{server.base}/missing.bin"
    with pytest.raises(DownloadError) as info:
        ensure_file(url, tmp_path / "loras", "missing.bin", retry_delay=0)
    message = str(info.value)
    assert "missing.bin" in message and url in message and str(tmp_path / "loras") in message
    assert "404" in message
    assert len(server.requests) == 1  # a 404 is not retried
    assert not (tmp_path / "loras" / "missing.bin").exists()


def test_unreachable_names_file_url_folder(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/file.bin"
    with pytest.raises(DownloadError) as info:
        ensure_file(url, tmp_path, "f.bin", retries=2, retry_delay=0, timeout=5)
    err = info.value
    assert (err.file_name, err.url, err.folder) == ("f.bin", url, tmp_path)
    assert "f.bin" in str(err) and url in str(err) and str(tmp_path) in str(err)


def test_hf_mirror(server: _Server, tmp_path: Path) -> None:
    url = "https://huggingface.co/x/y/model.bin"
    assert apply_hf_mirror(url, None) == url
    assert apply_hf_mirror(url, "https://hf-mirror.com/") == "https://hf-mirror.com/x/y/model.bin"
    assert apply_hf_mirror(url, "hf-mirror.com") == "https://hf-mirror.com/x/y/model.bin"
    assert apply_hf_mirror("https://example.com/a", "https://m") == "https://example.com/a"
    assert apply_hf_mirror("https://huggingface.com/a", "https://m") == "https://huggingface.com/a"
    path = ensure_file(url, tmp_path, "model.bin", hf_mirror=server.base)
    assert path.read_bytes() == DATA
    assert server.requests[0]["path"] == "/x/y/model.bin"


def test_bad_file_name(tmp_path: Path) -> None:
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(ValueError):
            ensure_file("http://127.0.0.1:1/x", tmp_path, bad)


def _preset(base: str) -> Preset:
    return Preset(
        default_model="new.safetensors",
        previous_default_models=["old.safetensors"],
        checkpoint_downloads={"new.safetensors": f"{base}/file.bin"},
        lora_downloads={"l.safetensors": f"{base}/file.bin"},
        vae_downloads={"v.safetensors": f"{base}/file.bin"},
        embeddings_downloads={"e.safetensors": f"{base}/file.bin"},
    )


def test_download_preset_files(server: _Server, tmp_path: Path) -> None:
    config = EngineConfig(models_dir=str(tmp_path))
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "v.safetensors").write_bytes(b"have")
    names: set[str] = set()
    result = download_preset_files(
        config, _preset(server.base), allow=True, progress=lambda n, d, t: names.add(n)
    )
    assert sorted(Path(p).relative_to(tmp_path).as_posix() for p in result.downloaded) == [
        "checkpoints/new.safetensors",
        "embeddings/e.safetensors",
        "loras/l.safetensors",
    ]
    assert result.present == [str(tmp_path / "vae" / "v.safetensors")]
    assert result.default_model == "new.safetensors"
    assert names == {"new.safetensors", "l.safetensors", "e.safetensors"}
    assert (tmp_path / "loras" / "l.safetensors").read_bytes() == DATA


def test_download_preset_files_disabled(tmp_path: Path) -> None:
    config = EngineConfig(models_dir=str(tmp_path), hf_mirror="https://mirror")
    preset = _preset("https://huggingface.co/r")
    result = download_preset_files(config, preset, allow=False)
    assert result.downloaded == []
    assert {(m.kind, m.file_name) for m in result.missing} == {
        ("checkpoints", "new.safetensors"),
        ("loras", "l.safetensors"),
        ("vae", "v.safetensors"),
        ("embeddings", "e.safetensors"),
    }
    lora = next(m for m in result.missing if m.kind == "loras")
    assert lora.url == "https://mirror/r/file.bin"
    assert "l.safetensors" in lora.message and str(tmp_path / "loras") in lora.message
    with pytest.raises(PresetFilesMissing, match=r"l\.safetensors"):
        result.raise_for_missing()


def test_previous_default_model_used(tmp_path: Path) -> None:
    config = EngineConfig(models_dir=str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "old.safetensors").write_bytes(b"old")
    result = download_preset_files(config, _preset("https://x"), allow=False)
    assert result.default_model == "old.safetensors"
    assert "checkpoints" not in {m.kind for m in result.missing}
    forced = download_preset_files(
        config, _preset("https://x"), allow=False, always_download_new_model=True
    )
    assert forced.default_model == "new.safetensors"
    assert "checkpoints" in {m.kind for m in forced.missing}


def test_download_failure_raises(tmp_path: Path) -> None:
    config = EngineConfig(models_dir=str(tmp_path))
    preset = _preset(f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(DownloadError, match=r"new\.safetensors"):
        download_preset_files(config, preset, allow=True, retries=0, retry_delay=0, timeout=5)
