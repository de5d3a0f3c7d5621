"""Cooperative cancellation of a running generation: stop the task or skip the current image."""

from __future__ import annotations

import threading


class Interrupted(Exception):
    """Raised inside the sampler loop when the current image must end early."""

    def __init__(self, stop: bool) -> None:
        super().__init__("stopped" if stop else "skipped")
        self.stop = stop


class CancelToken:
    """Set from any thread, checked by the engine at every sampling step."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = False
        self._skip = False

    def stop(self) -> None:
        """End the whole task; images already finished are kept."""
        with self._lock:
            self._stop = True

    def skip(self) -> None:
        """End the current image only and go on with the next one."""
        with self._lock:
            self._skip = True

    @property
    def stopped(self) -> bool:
        return self._stop

    def check(self) -> None:
        """Raise :class:`Interrupted` if a stop or skip is pending (a skip is consumed)."""
        with self._lock:
            if self._stop:
                raise Interrupted(stop=True)
            if self._skip:
                self._skip = False
                raise Interrupted(stop=False)
