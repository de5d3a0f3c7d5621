"""Errors the engine raises for bad tasks, so callers can answer with a precise message."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of the engine's own errors."""


class InvalidTask(EngineError, ValueError):
    """A task parameter is wrong; ``field`` names the GenerationTask field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
