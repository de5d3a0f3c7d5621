"""The task database: SQLite (WAL) through aiosqlite, schema from versioned SQL files.

Migrations are ``migrations/NNNN_name.sql`` files; ``PRAGMA user_version`` holds the last one
applied, and each newer file runs in its own transaction at start-up. aiosqlite runs every
statement in its own thread, so the event loop never waits on disk.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_MIGRATION_RE = re.compile(r"^(\d{4})_[\w-]+\.sql$")

_json_encode = msgspec.json.encode
_json_decode = msgspec.json.decode


class StoredTask(msgspec.Struct, kw_only=True):
    """One row of ``generate_record``."""

    id: int
    task_id: str
    req_params: dict[str, Any]
    in_queue_mills: int
    start_mills: int | None
    finish_mills: int | None
    task_status: str
    progress: float
    webhook_url: str | None
    result: list[str]
    seeds: list[int]
    error: str | None
    messages: list[str]
    url_base: str | None


_COLUMNS = (
    "id, task_id, req_params, in_queue_mills, start_mills, finish_mills, task_status, "
    "progress, webhook_url, result, seeds, error, messages, url_base"
)


def _row(row: aiosqlite.Row | tuple[Any, ...]) -> StoredTask:
    return StoredTask(
        id=row[0],
        task_id=row[1],
        req_params=_json_decode(row[2]),
        in_queue_mills=row[3],
        start_mills=row[4],
        finish_mills=row[5],
        task_status=row[6],
        progress=row[7],
        webhook_url=row[8],
        result=_json_decode(row[9]),
        seeds=_json_decode(row[10]),
        error=row[11],
        messages=_json_decode(row[12]),
        url_base=row[13],
    )


def migration_files(folder: Path = MIGRATIONS_DIR) -> list[tuple[int, Path]]:
    """``(version, path)`` of every migration file, in order."""
    found: list[tuple[int, Path]] = []
    for path in folder.iterdir():
        match = _MIGRATION_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    found.sort()
    return found


class TaskStore:
    """Async access to the task records; one connection, serialised by aiosqlite."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: str, migrations: Path = MIGRATIONS_DIR) -> TaskStore:
        """Open (creating) the database, switch to WAL and apply pending migrations."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=5000")
        store = cls(db)
        await store._migrate(migrations)
        return store

    async def _migrate(self, folder: Path) -> None:
        async with self._db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        for version, path in migration_files(folder):
            if version <= current:
                continue
            script = path.read_text("utf-8")
            await self._db.executescript(
                f"BEGIN;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;"
            )

    async def close(self) -> None:
        await self._db.close()

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def insert(
        self,
        task_id: str,
        req_params: dict[str, Any],
        in_queue_mills: int,
        webhook_url: str | None,
        url_base: str | None,
    ) -> int:
        """Record a newly accepted (pending) task; returns its row id."""
        cursor = await self._db.execute(
            "INSERT INTO generate_record (task_id, req_params, in_queue_mills, task_status, "
            "progress, webhook_url, url_base) VALUES (?, ?, ?, 'pending', 0, ?, ?)",
            (task_id, _json_encode(req_params).decode(), in_queue_mills, webhook_url, url_base),
        )
        row_id = cursor.lastrowid
        await cursor.close()
        return int(row_id or 0)

    async def mark_running(self, task_id: str, start_mills: int) -> None:
        await self._db.execute(
            "UPDATE generate_record SET task_status='running', start_mills=? WHERE task_id=?",
            (start_mills, task_id),
        )

    async def finish(
        self,
        task_id: str,
        *,
        status: str,
        finish_mills: int,
        progress: float,
        result: list[str],
        seeds: list[int],
        error: str | None,
        messages: list[str],
    ) -> None:
        """Write a task's end state."""
        await self._db.execute(
            "UPDATE generate_record SET task_status=?, finish_mills=?, progress=?, result=?, "
            "seeds=?, error=?, messages=? WHERE task_id=?",
            (
                status,
                finish_mills,
                progress,
                _json_encode(result).decode(),
                _json_encode(seeds).decode(),
                error,
                _json_encode(messages).decode(),
                task_id,
            ),
        )

    async def get(self, task_id: str) -> StoredTask | None:
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM generate_record WHERE task_id=?", (task_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return _row(row) if row else None

    async def history(
        self,
        *,
        page: int,
        page_size: int,
        start_mills: int | None,
        end_mills: int | None,
        statuses: tuple[str, ...] = ("finished", "stop", "failed"),
    ) -> list[StoredTask]:
        """Finished tasks, newest first, optionally within ``[start, end]`` of queue time."""
        where = [f"task_status IN ({', '.join('?' for _ in statuses)})"]
        args: list[Any] = list(statuses)
        if start_mills is not None:
            where.append("in_queue_mills >= ?")
            args.append(start_mills)
        if end_mills is not None:
            where.append("in_queue_mills <= ?")
            args.append(end_mills)
        args += [page_size, page * page_size]
        sql = (
            f"SELECT {_COLUMNS} FROM generate_record WHERE {' AND '.join(where)} "
            "ORDER BY id DESC LIMIT ? OFFSET ?"
        )
        async with self._db.execute(sql, args) as cursor:
            rows = await cursor.fetchall()
        return [_row(row) for row in rows]

    async def by_status(self, status: str) -> list[StoredTask]:
        """All tasks with ``status``, oldest first."""
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM generate_record WHERE task_status=? ORDER BY id", (status,)
        ) as cursor:
            rows = await cursor.fetchall()
        return [_row(row) for row in rows]

    async def delete(self, task_ids: list[str]) -> None:
        """Remove the records of ``task_ids``."""
        if not task_ids:
            return
        await self._db.executemany(
            "DELETE FROM generate_record WHERE task_id=?", [(task_id,) for task_id in task_ids]
        )

    async def fail_interrupted(self, reason: str, finish_mills: int) -> list[str]:
        """Mark tasks left ``running`` by a previous process as failed; returns their ids."""
        running = await self.by_status("running")
        await self._db.execute(
            "UPDATE generate_record SET task_status='failed', error=?, finish_mills=? "
            "WHERE task_status='running'",
            (reason, finish_mills),
        )
        return [task.task_id for task in running]
