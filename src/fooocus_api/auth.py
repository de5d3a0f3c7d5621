"""API-key checks (X-API-KEY, constant-time) and single-use tickets for EventSource clients.

A browser ``EventSource`` cannot set headers, and a key in a query string ends up in access
logs. So a client with the key asks ``POST /tasks/{task_id}/events/ticket`` for a ticket: a
random token, valid once, for one task, for a short time. Only the ticket is put in the URL.
"""

from __future__ import annotations

import hmac
import secrets
import time

from fooocus_api.http import RequestError

TICKET_TTL_S = 60


def check_api_key(configured: str, given: str | None) -> None:
    """Raise 401 (missing) or 403 (wrong) unless the key matches; no-op when auth is off."""
    if not configured:
        return
    if not given:
        raise RequestError(401, "missing X-API-KEY header", headers={"WWW-Authenticate": "API-Key"})
    if not hmac.compare_digest(given.encode("utf-8"), configured.encode("utf-8")):
        raise RequestError(403, "Forbidden")


class Tickets:
    """Issued single-use tickets: token → (task id, expiry)."""

    def __init__(self, ttl_s: int = TICKET_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._issued: dict[str, tuple[str, float]] = {}

    def issue(self, task_id: str) -> str:
        self._purge()
        token = secrets.token_urlsafe(24)
        self._issued[token] = (task_id, time.monotonic() + self.ttl_s)
        return token

    def redeem(self, token: str, task_id: str) -> bool:
        """True (and the ticket is used up) if ``token`` is valid for ``task_id``."""
        self._purge()
        entry = self._issued.get(token)
        if entry is None or not hmac.compare_digest(entry[0], task_id):
            return False
        del self._issued[token]
        return True

    def _purge(self) -> None:
        now = time.monotonic()
        for token in [t for t, (_, expiry) in self._issued.items() if expiry < now]:
            del self._issued[token]
