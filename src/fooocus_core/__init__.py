"""fooocus_core: the image-generation engine (SDXL, Fooocus-compatible), with no HTTP.

The public surface is what this module exports: :class:`Engine` (imported on first use, since
it pulls in torch and diffusers), its configuration, the task and result types, the cancel
token and the errors. Callers such as the HTTP service use nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fooocus_core.config import MODEL_FOLDERS, EngineConfig, load_engine_config
from fooocus_core.errors import EngineError, InvalidTask
from fooocus_core.models.folders import STARTER_MODEL
from fooocus_core.pipeline.cancel import CancelToken
from fooocus_core.presets import Preset, PresetError
from fooocus_core.sampling.names import SAMPLER_NAMES, SCHEDULER_NAMES
from fooocus_core.task import (
    PERFORMANCE_STEPS,
    GeneratedImage,
    GenerationResult,
    GenerationTask,
    LoraSpec,
    Progress,
)

#: The preset that runs the starter model at its native size with settings that suit it.
STARTER_PRESET = "starter"

if TYPE_CHECKING:
    from fooocus_core.engine import Engine

__all__ = [
    "MODEL_FOLDERS",
    "PERFORMANCE_STEPS",
    "SAMPLER_NAMES",
    "SCHEDULER_NAMES",
    "STARTER_MODEL",
    "STARTER_PRESET",
    "CancelToken",
    "Engine",
    "EngineConfig",
    "EngineError",
    "GeneratedImage",
    "GenerationResult",
    "GenerationTask",
    "InvalidTask",
    "LoraSpec",
    "Preset",
    "PresetError",
    "Progress",
    "load_engine_config",
]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from fooocus_core.engine import Engine

        return Engine
    raise AttributeError(f"module 'fooocus_core' has no attribute {name!r}")
