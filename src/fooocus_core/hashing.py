"""Model file hashes for metadata: SHA-256 of the whole file, shown as its first 10 hex digits
(A1111's "AutoV2"), cached per (path, size, mtime) in a JSON-lines file.

The cache file (``<models_dir>/hash_cache.txt``) holds one JSON object a line:
``{"path": "/abs/file", "size": 123, "mtime_ns": 456, "sha256": "<64 hex>"}``. Later lines win;
lines that do not parse are ignored. A changed size or mtime makes the entry stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from fooocus_core.config import EngineConfig

#: Length of the short (AutoV2) hash.
SHORT_HASH_LENGTH = 10
#: Name of the cache file inside the models directory.
HASH_CACHE_NAME = "hash_cache.txt"
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str], chunk_size: int = _CHUNK) -> str:
    """Hex SHA-256 of a whole file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


class HashCache:
    """SHA-256 of files, remembered in memory and in an optional JSON-lines file.

    Thread-safe: a lock guards the table and the appends; hashing itself runs outside the lock,
    so two threads may hash the same new file once each (harmless).
    """

    def __init__(self, cache_file: str | os.PathLike[str] | None = None) -> None:
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self._entries: dict[str, tuple[int, int, str]] = {}
        self._loaded = False
        self._lock = threading.Lock()

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.cache_file is None or not self.cache_file.is_file():
            return
        with open(self.cache_file, encoding="utf-8") as handle:
            for line in handle:
                try:
                    item = json.loads(line)
                    entry = (int(item["size"]), int(item["mtime_ns"]), str(item["sha256"]))
                    self._entries[str(item["path"])] = entry
                except (ValueError, KeyError, TypeError):
                    continue

    def sha256(self, path: str | os.PathLike[str]) -> str:
        """Full hex SHA-256 of ``path``, from the cache when size and mtime still match."""
        key = os.path.abspath(path)
        stat = os.stat(key)
        with self._lock:
            self._load()
            cached = self._entries.get(key)
        if cached is not None and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            return cached[2]
        value = sha256_file(key)
        with self._lock:
            self._entries[key] = (stat.st_size, stat.st_mtime_ns, value)
            if self.cache_file is not None:
                record = {
                    "path": key,
                    "size": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns,
                    "sha256": value,
                }
                try:
                    self.cache_file.parent.mkdir(parents=True, exist_ok=True)
                    with open(self.cache_file, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(record) + "\n")
                except OSError:
                    pass  # a read-only models dir only costs re-hashing next run
        return value

    def short_hash(self, path: str | os.PathLike[str]) -> str:
        """First 10 hex digits of the file's SHA-256 (A1111 AutoV2)."""
        return self.sha256(path)[:SHORT_HASH_LENGTH]


def hash_cache_for(config: EngineConfig) -> HashCache:
    """A hash cache backed by ``hash_cache.txt`` in ``config``'s models directory."""
    return HashCache(Path(config.models_dir) / HASH_CACHE_NAME)
