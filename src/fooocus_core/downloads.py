"""Model downloads: fetch a file into a model folder once, resuming partial downloads.

Synchronous on purpose (urllib, no event loop): it runs at start-up or in the GPU worker thread.
A download goes to ``<file>.part`` and is renamed when complete. An existing ``.part`` is resumed
with an HTTP ``Range`` request; a server that answers 200 instead of 206 restarts it from zero.
A connection cut mid-file is retried (resuming) a few times. Any failure ends in
:class:`DownloadError`, whose message names the file, the URL and the folder to put it in by hand.
"""

from __future__ import annotations

import http.client
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from fooocus_core.config import EngineConfig
from fooocus_core.errors import EngineError
from fooocus_core.presets import Preset

#: ``progress(bytes_done, total_bytes_or_None)``.
ProgressCallback = Callable[[int, int | None], None]

HF_PREFIX = "https://huggingface.co"
USER_AGENT = "fooocus-api/0.1 (+urllib)"
_CHUNK = 1 << 20
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_CONTENT_RANGE_UNSATISFIED_RE = re.compile(r"bytes\s+\*/(\d+)")

#: Preset download keys and the model folder each fills.
PRESET_DOWNLOAD_FOLDERS: dict[str, str] = {
    "checkpoint_downloads": "checkpoints",
    "lora_downloads": "loras",
    "embeddings_downloads": "embeddings",
    "vae_downloads": "vae",
}


class DownloadError(EngineError, RuntimeError):
    """A file could not be downloaded; the message says what to fetch by hand and where to."""

    def __init__(self, file_name: str, url: str, folder: Path, reason: str) -> None:
        self.file_name = file_name
        self.url = url
        self.folder = folder
        self.reason = reason
        super().__init__(
            f"could not download {file_name!r} from {url} ({reason}); download it by hand "
            f"and put it in {str(folder)!r}"
        )


class _Retryable(Exception):
    """A transient failure (cut connection, short body, 5xx): try again, resuming."""


def apply_hf_mirror(url: str, hf_mirror: str | None) -> str:
    """Replace the ``https://huggingface.co`` prefix of ``url`` by ``hf_mirror`` (if given).

    A mirror given without a scheme (``hf-mirror.com``) gets ``https://``.
    """
    if not hf_mirror or not url.startswith(HF_PREFIX):
        return url
    rest = url[len(HF_PREFIX) :]
    if rest and not rest.startswith("/"):
        return url  # e.g. https://huggingface.com... is another host
    mirror = hf_mirror.strip().rstrip("/")
    if "://" not in mirror:
        mirror = "https://" + mirror
    return mirror + rest


def probe_url(url: str, *, timeout: float = 5.0) -> str | None:
    """Whether ``url`` answers a HEAD request within ``timeout`` seconds, redirects followed:
    None when it does (status below 400), else why not, in words.

    Runs in a daemon thread so that a stalled name lookup (which ignores socket timeouts)
    cannot hold the caller longer than ``timeout``.
    """
    answer: list[str | None] = []

    def ask() -> None:
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                answer.append(None)
        except urllib.error.HTTPError as exc:
            exc.close()
            answer.append(f"HTTP {exc.code}")
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            answer.append(f"no connection: {getattr(exc, 'reason', exc)}")

    thread = threading.Thread(target=ask, name="probe-url", daemon=True)
    thread.start()
    thread.join(timeout)
    return answer[0] if answer else f"no answer within {timeout:g} s"


def _check_file_name(file_name: str) -> None:
    if (
        not file_name
        or file_name in {".", ".."}
        or "/" in file_name
        or "\\" in file_name
        or "\x00" in file_name
    ):
        raise ValueError(f"invalid file name {file_name!r}: must be a plain file name")


def _transfer(
    url: str,
    part: Path,
    *,
    timeout: float,
    headers: Mapping[str, str],
    progress: ProgressCallback | None,
) -> None:
    """One request: append to (or restart) ``part``; returns when the file is complete.

    Raises :class:`_Retryable` for transient failures, ``urllib.error.HTTPError`` for others.
    """
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # Nothing left to send: the .part may already be whole, or be larger than the file.
            match = _CONTENT_RANGE_UNSATISFIED_RE.search(exc.headers.get("Content-Range", ""))
            exc.close()
            if match and int(match.group(1)) == offset:
                return
            part.unlink(missing_ok=True)
            raise _Retryable("server refused the resume range; restarting") from exc
        if exc.code >= 500 or exc.code == 429:
            exc.close()
            raise _Retryable(f"HTTP {exc.code}") from exc
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Retryable(f"connection failed: {reason}") from exc

    with response:
        total: int | None
        length = response.headers.get("Content-Length")
        if response.status == 206:
            match = _CONTENT_RANGE_RE.search(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise _Retryable("server sent an unexpected range; restarting")
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        else:
            offset = 0  # plain 200: the server ignores Range, start over
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        done = offset
        if progress is not None:
            progress(done, total)
        with open(part, mode) as handle:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Retryable(f"connection cut after {done} bytes: {exc!r}") from exc
                if not chunk:
                    break
                handle.write(chunk)  # disk errors propagate as OSError
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    if total is not None and done < total:
        raise _Retryable(f"connection cut after {done} of {total} bytes")
    if total is not None and done > total:
        part.unlink(missing_ok=True)
        raise _Retryable(f"received {done} bytes, more than the announced {total}; restarting")


def ensure_file(
    url: str,
    folder: str | os.PathLike[str],
    file_name: str,
    *,
    hf_mirror: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 60.0,
    retries: int = 5,
    retry_delay: float = 1.0,
    headers: Mapping[str, str] | None = None,
) -> Path:
    """Return ``folder/file_name``, downloading it from ``url`` first if it is not there.

    An existing file is returned untouched. ``retries`` bounds consecutive failed attempts (an
    attempt that made progress resets the count); ``retry_delay`` seconds times the attempt
    number is waited between attempts. ``headers`` are added to every request (e.g. an
    ``Authorization`` header). Raises :class:`DownloadError`.
    """
    _check_file_name(file_name)
    folder = Path(folder)
    target = folder / file_name
    if target.is_file():
        return target
    source = apply_hf_mirror(url, hf_mirror)
    shown = source if source == url else f"{source} (mirror of {url})"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(file_name, shown, folder, f"cannot create the folder: {exc}") from exc
    part = folder / (file_name + ".part")
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _transfer(source, part, timeout=timeout, headers=headers or {}, progress=progress)
            break
        except _Retryable as exc:
            after = part.stat().st_size if part.exists() else 0
            failures = 0 if after > before else failures + 1
            if failures > retries:
                raise DownloadError(file_name, shown, folder, str(exc)) from exc
            if retry_delay > 0:
                time.sleep(retry_delay * max(failures, 1))
        except urllib.error.HTTPError as exc:
            exc.close()
            raise DownloadError(file_name, shown, folder, f"HTTP {exc.code} {exc.reason}") from exc
        except ValueError as exc:  # malformed URL
            raise DownloadError(file_name, shown, folder, str(exc)) from exc
        except OSError as exc:  # disk errors
            raise DownloadError(file_name, shown, folder, f"cannot write: {exc}") from exc
    os.replace(part, target)
    return target


class MissingFile(msgspec.Struct, kw_only=True, frozen=True):
    """A preset file that is not in its folder (and was not downloaded)."""

    kind: str
    file_name: str
    url: str
    folder: str
    message: str


class PresetFilesMissing(EngineError, RuntimeError):
    """Preset files are missing and downloads are disabled."""

    def __init__(self, missing: list[MissingFile]) -> None:
        self.missing = missing
        super().__init__("; ".join(item.message for item in missing))


class PresetDownloads(msgspec.Struct, kw_only=True):
    """What :func:`download_preset_files` did."""

    #: Paths downloaded now.
    downloaded: list[str] = []
    #: Paths that were already there.
    present: list[str] = []
    #: Files missing because downloads are disabled.
    missing: list[MissingFile] = []
    #: The checkpoint to use as default: the preset's, or a previous default model that exists.
    default_model: str = ""

    def raise_for_missing(self) -> None:
        """Raise :class:`PresetFilesMissing` if any file is missing."""
        if self.missing:
            raise PresetFilesMissing(self.missing)


def _named_progress(
    progress: Callable[[str, int, int | None], None] | None, file_name: str
) -> ProgressCallback | None:
    if progress is None:
        return None
    report = progress

    def callback(done: int, total: int | None) -> None:
        report(file_name, done, total)

    return callback


def download_preset_files(
    config: EngineConfig,
    preset: Preset,
    *,
    allow: bool,
    progress: Callable[[str, int, int | None], None] | None = None,
    always_download_new_model: bool = False,
    timeout: float = 60.0,
    retries: int = 5,
    retry_delay: float = 1.0,
) -> PresetDownloads:
    """Make sure the files of ``preset``'s ``*_downloads`` are in their model folders.

    With ``allow=False`` (``--disable-preset-download``) nothing is fetched and the missing
    files are listed in the result (call :meth:`PresetDownloads.raise_for_missing` to fail).
    If the default model is missing but one of ``previous_default_models`` exists, that one
    becomes ``default_model`` and the new one is not fetched (unless
    ``always_download_new_model``). ``progress(file_name, done, total)`` reports downloads.
    Download failures raise :class:`DownloadError`.
    """
    result = PresetDownloads(default_model=preset.default_model)
    checkpoints = config.folder("checkpoints")
    skip: set[tuple[str, str]] = set()
    if not always_download_new_model and not (checkpoints / preset.default_model).is_file():
        for previous in preset.previous_default_models:
            if (checkpoints / previous).is_file():
                result.default_model = previous
                skip.add(("checkpoints", preset.default_model))
                break
    for key, kind in PRESET_DOWNLOAD_FOLDERS.items():
        files: dict[str, str] = getattr(preset, key)
        folder = config.folder(kind)
        for file_name, url in files.items():
            target = folder / file_name
            if target.is_file():
                result.present.append(str(target))
                continue
            if (kind, file_name) in skip:
                continue
            if not allow:
                source = apply_hf_mirror(url, config.hf_mirror)
                message = (
                    f"{kind} file {file_name!r} is missing and preset downloads are disabled; "
                    f"download it from {source} and put it in {str(folder)!r}"
                )
                result.missing.append(
                    MissingFile(
                        kind=kind,
                        file_name=file_name,
                        url=source,
                        folder=str(folder),
                        message=message,
                    )
                )
                continue
            path = ensure_file(
                url,
                folder,
                file_name,
                hf_mirror=config.hf_mirror,
                progress=_named_progress(progress, file_name),
                timeout=timeout,
                retries=retries,
                retry_delay=retry_delay,
            )
            result.downloaded.append(str(path))
    return result
