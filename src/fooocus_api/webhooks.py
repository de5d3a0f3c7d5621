"""Webhook delivery: POST the final task record as JSON, retried with backoff, never blocking.

The body is encoded once (plain JSON, not FooocusAPI's JSON-in-a-string). With a secret, the
request carries ``X-Fooocus-Signature: sha256=<hex>``, an HMAC-SHA256 over
``"{timestamp}.{body}"`` where timestamp is the ``X-Fooocus-Timestamp`` header (epoch seconds).
``X-Fooocus-Task-Id`` names the task and stays the same across retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time

import aiohttp

from fooocus_api.inputs import PublicOnlyResolver

logger = logging.getLogger(__name__)

USER_AGENT = "fooocus-api-webhook/0.1"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` HMAC of ``timestamp.body`` with ``secret``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookSender:
    """Sends webhooks in background tasks with one shared aiohttp session."""

    def __init__(
        self,
        secret: str = "",
        attempts: int = 5,
        backoff_s: float = 1.0,
        timeout_s: float = 10.0,
        allow_private: bool = False,
    ) -> None:
        self.secret = secret
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self._tasks: set[asyncio.Task[bool]] = set()

    def _client(self, trusted: bool) -> aiohttp.ClientSession:
        """The session for trusted (operator-configured) or caller-given webhook URLs.

        A caller's URL was checked when the task was submitted; its host is resolved again at
        every delivery and must still be public (a DNS answer can change), and redirects are not
        followed, unless private addresses are allowed.
        """
        open_ = trusted or self.allow_private
        session = self._sessions.get(open_)
        if session is None or session.closed:
            session = self._sessions[open_] = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"User-Agent": USER_AGENT},
                connector=aiohttp.TCPConnector(resolver=None if open_ else PublicOnlyResolver()),
            )
        return session

    def send(
        self, url: str, task_id: str, body: bytes, trusted: bool = False
    ) -> asyncio.Task[bool]:
        """Start delivering ``body`` to ``url`` in the background; returns the task.

        ``trusted`` marks the operator's ``--webhook-url`` (any address, redirects followed).
        """
        task = asyncio.create_task(self._deliver(url, task_id, body, trusted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, url: str, task_id: str, body: bytes, trusted: bool) -> bool:
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Fooocus-Task-Id": task_id,
                "X-Fooocus-Timestamp": timestamp,
                "X-Fooocus-Attempt": str(attempt),
            }
            if self.secret:
                headers["X-Fooocus-Signature"] = sign(self.secret, timestamp, body)
            try:
                session = self._client(trusted)
                follow = trusted or self.allow_private
                async with session.post(
                    url, data=body, headers=headers, allow_redirects=follow
                ) as response:
                    await response.read()
                    if response.status < 300:
                        return True
                    retry = response.status >= 500 or response.status in (408, 429)
                    reason = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                retry = True
                reason = f"{type(exc).__name__}: {exc}"
            if not retry or attempt == self.attempts:
                logger.warning(
                    "webhook for task %s to %s failed after %d attempt(s): %s",
                    task_id,
                    url,
                    attempt,
                    reason,
                )
                return False
            await asyncio.sleep(delay)
            delay *= 2
        return False

    async def close(self, timeout: float = 5.0) -> None:
        """Give pending deliveries ``timeout`` seconds, then cancel them and close the session."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
        for session in self._sessions.values():
            await session.close()
