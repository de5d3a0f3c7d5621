"""Which checkpoint runs when a request names none, and the starter-model fallback.

A request that leaves ``base_model_name`` out (or names its preset's default model) gets the
preset's default model. When that file is missing, the first of these wins: an older name of
it (``previous_default_models``); the file itself, when its download URL answers (it is fetched
before the task runs); the first real checkpoint in the checkpoints folder; and last the
built-in starter model, run with the ``starter`` preset's settings for every field the request
leaves out (its native 64x64 size, sampler, steps, guidance). Each substitution is said in the
task's messages. A request that names some other missing file is still refused.

Whether a download URL answers is asked once and remembered for a while (:class:`DefaultModels`),
so an offline machine pays for the question once, at start-up.
"""

from __future__ import annotations

import threading
import time

import msgspec

from fooocus_api.worker import EngineLike
from fooocus_core import STARTER_MODEL, STARTER_PRESET, EngineConfig, Preset

#: Seconds a download probe's answer is trusted.
PROBE_TTL_S = 300.0
#: Seconds one download probe may take.
PROBE_TIMEOUT_S = 5.0


class ModelChoice(msgspec.Struct, frozen=True):
    """The checkpoint a task without an explicit model runs with, and why."""

    #: File name in the checkpoints listing.
    model: str
    #: True when it is the built-in starter model standing in for a missing default model.
    starter: bool = False
    #: What was substituted and why (None when the preset's own model runs).
    note: str | None = None


class DefaultModelStatus(msgspec.Struct, frozen=True):
    """What ``/v1/engines/all-models`` says about the configured default model."""

    #: The global preset's default model.
    configured: str
    #: The checkpoint requests that name none run with.
    model: str
    starter_fallback: bool
    #: A sentence for people (the log, the WebUI banner); None when all is as configured.
    notice: str | None


def starter_notice(configured: str, problem: str, folder: str) -> str:
    """The sentence that says the starter model stands in for ``configured``."""
    return (
        f"The default model {configured!r} is missing and cannot be downloaded ({problem}). "
        f"Using the built-in starter model {STARTER_MODEL!r}: a tiny SDXL-architecture model "
        "trained by this project that draws 64x64 pictures of simple shapes (circle, square, "
        "triangle; red, green, blue, yellow, purple, orange; on a black, white, gray or blue "
        f"background). To get real pictures, put an SDXL checkpoint (.safetensors) in {folder!r} "
        "(or set --models-dir), or allow the preset's download, and restart."
    )


class DefaultModels:
    """Chooses the checkpoint for tasks that name none; remembers download probes.

    Thread-safe: requests are prepared in worker threads.
    """

    def __init__(self, config: EngineConfig, *, probe_timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.config = config
        self.probe_timeout_s = probe_timeout_s
        self._lock = threading.Lock()
        self._problems: dict[str, tuple[float, str | None]] = {}

    def fetch_problem(self, engine: EngineLike, name: str) -> str | None:
        """Why checkpoint ``name`` can be neither used nor downloaded (None: it can), cached."""
        with self._lock:
            cached = self._problems.get(name)
            if cached is not None and time.monotonic() - cached[0] < PROBE_TTL_S:
                return cached[1]
            problem = engine.fetch_problem("checkpoints", name, self.probe_timeout_s)
            self._problems[name] = (time.monotonic(), problem)
            return problem

    def mark_failed(self, name: str, problem: str) -> None:
        """Remember that fetching ``name`` just failed (later tasks then fall back at once)."""
        with self._lock:
            self._problems[name] = (time.monotonic(), problem)

    def choose(self, engine: EngineLike, preset: Preset) -> ModelChoice:
        """The checkpoint for a task that runs ``preset``'s default model."""
        wanted = preset.default_model
        installed = engine.list_models()
        if wanted in installed:
            return ModelChoice(wanted)
        older = next((m for m in preset.previous_default_models if m in installed), None)
        if older is not None:
            return ModelChoice(older, note=f"preset model {wanted!r} is missing; using {older!r}")
        problem = self.fetch_problem(engine, wanted)
        if problem is None:
            return ModelChoice(wanted)
        real = engine.list_models(builtin=False)
        if not real and STARTER_MODEL not in installed:
            return ModelChoice(wanted, note=f"preset model {wanted!r} is missing ({problem})")
        if real:
            return ModelChoice(
                real[0],
                note=f"preset model {wanted!r} is missing and cannot be downloaded ({problem}); "
                f"using {real[0]!r}",
            )
        notice = starter_notice(wanted, problem, str(self.config.folder("checkpoints")))
        return ModelChoice(STARTER_MODEL, starter=True, note=notice)

    def status(self, engine: EngineLike) -> DefaultModelStatus:
        """The configured default model and what runs in its place, if anything."""
        preset = engine.preset(None)
        choice = self.choose(engine, preset)
        return DefaultModelStatus(
            configured=preset.default_model,
            model=choice.model,
            starter_fallback=choice.starter,
            notice=choice.note,
        )

    def starter_preset(self, engine: EngineLike) -> Preset:
        """The preset whose settings the starter model runs with."""
        return engine.preset(STARTER_PRESET)
