"""Model files on disk: whether a named file is there or can be fetched, fetching it, what a
checkpoint holds, and file hashes for metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fooocus_core.config import EngineConfig
from fooocus_core.downloads import (
    PRESET_DOWNLOAD_FOLDERS,
    PresetDownloads,
    apply_hf_mirror,
    download_preset_files,
    ensure_file,
    probe_url,
)
from fooocus_core.errors import InvalidTask
from fooocus_core.hashing import hash_cache_for
from fooocus_core.models.checkpoint import CheckpointKind, detect_kind, list_keys
from fooocus_core.models.folders import ModelFileMissing, resolve_model
from fooocus_core.pipeline.performance import PERFORMANCE_MODES
from fooocus_core.presets import Preset, list_presets, load_preset
from fooocus_core.task import Progress

ProgressCallback = Callable[[Progress], None]


def download_reporter(
    report: ProgressCallback, percent: int
) -> Callable[[str, int, int | None], None]:
    """A download progress callback that reports each whole percent (or 100 MB) once."""
    shown: dict[str, int] = {}

    def progress(file_name: str, done: int, total: int | None) -> None:
        mark = done * 100 // total if total else done // (100 * 2**20)
        if shown.get(file_name) == mark:
            return
        shown[file_name] = mark
        size = f"{mark}%" if total else f"{done / 2**20:.0f} MB"
        report(Progress(percent=percent, message=f"Downloading {file_name}: {size} ..."))

    return progress


def _ignore(_progress: Progress) -> None:
    pass


class ModelFiles:
    """The model folders of one configuration, with the download URLs presets name."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._hashes = hash_cache_for(config)
        self._urls: dict[tuple[str, str], str] | None = None
        self._kinds: dict[tuple[str, int, int], CheckpointKind] = {}

    def path(self, kind: str, name: str) -> Path:
        """The installed file (``ModelFileMissing`` / ``ValueError`` otherwise)."""
        return resolve_model(self.config, kind, name)

    def check(self, field: str, kind: str, name: str) -> None:
        """:class:`InvalidTask` on ``field`` unless the file is installed or can be fetched."""
        try:
            resolve_model(self.config, kind, name)
        except ModelFileMissing as exc:
            url = self.download_urls().get((kind, name))
            if url is None:
                raise InvalidTask(field, str(exc)) from None
            if self.config.disable_preset_download:
                raise InvalidTask(
                    field,
                    f"{exc}; preset downloads are disabled: download it from "
                    f"{apply_hf_mirror(url, self.config.hf_mirror)}",
                ) from None
        except ValueError as exc:
            raise InvalidTask(field, str(exc)) from None

    def download_urls(self) -> dict[tuple[str, str], str]:
        """Every (folder kind, file name) → URL that a preset or performance mode names."""
        if self._urls is None:
            urls: dict[tuple[str, str], str] = {}
            for name in list_presets(self.config):
                preset = load_preset(self.config, name)
                for key, kind in PRESET_DOWNLOAD_FOLDERS.items():
                    for file_name, url in getattr(preset, key).items():
                        urls.setdefault((kind, file_name), url)
            for mode in PERFORMANCE_MODES.values():
                urls.setdefault(("loras", mode.lora), mode.url)
            self._urls = urls
        return self._urls

    def fetch_problem(self, kind: str, name: str, timeout: float = 5.0) -> str | None:
        """Why model ``name`` of ``kind`` can be neither used nor fetched now, in words; None
        when it is installed or its download URL answers (asked once per call, within
        ``timeout`` seconds).
        """
        try:
            resolve_model(self.config, kind, name)
            return None
        except ModelFileMissing:
            pass
        except ValueError as exc:
            return str(exc)
        url = self.download_urls().get((kind, name))
        if url is None:
            return "no preset names a download for it"
        if self.config.disable_preset_download:
            return "preset downloads are disabled"
        mirrored = apply_hf_mirror(url, self.config.hf_mirror)
        problem = probe_url(mirrored, timeout=timeout)
        return None if problem is None else f"{mirrored} cannot be reached: {problem}"

    def fetch_if_missing(
        self, kind: str, name: str, report: ProgressCallback | None = None
    ) -> None:
        """Download a missing file from the URL a preset names for it (no-op when installed)."""
        url = self.download_urls().get((kind, name))
        if url is None or (self.config.folder(kind) / name).is_file():
            return
        named = download_reporter(report or _ignore, percent=1)
        ensure_file(
            url,
            self.config.folder(kind),
            name,
            hf_mirror=self.config.hf_mirror,
            progress=lambda done, total: named(name, done, total),
        )

    def fetch_preset(
        self, preset: Preset, report: ProgressCallback | None = None
    ) -> PresetDownloads:
        """Download a preset's files (unless downloads are disabled: then listed as missing)."""
        return download_preset_files(
            self.config,
            preset,
            allow=not self.config.disable_preset_download,
            progress=download_reporter(report or _ignore, percent=0),
        )

    def checkpoint_kind(self, path: Path) -> CheckpointKind:
        """What a checkpoint file holds, from its key names (cached per file version; cheap for
        safetensors, which only need their header).
        """
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        kind = self._kinds.get(key)
        if kind is None:
            kind = detect_kind(set(list_keys(path)))
            self._kinds[key] = kind
        return kind

    def short_hash(self, kind: str, name: str) -> str:
        """A1111's short hash (10 hex digits of the SHA-256) of an installed file, cached."""
        return self._hashes.short_hash(self.path(kind, name))
