"""Resolve a task's user-facing parameters into the numbers the sampler loop uses."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from fooocus_core.errors import InvalidTask
from fooocus_core.task import MAX_SEED, PERFORMANCE_STEPS, GenerationTask

_SIZE = re.compile(r"^\s*(\d+)\s*[*×xX]\s*(\d+)")


@dataclass(frozen=True)
class SamplingPlan:
    """Sizes, steps and seeds of one task."""

    width: int
    height: int
    steps: int
    switch: int
    seeds: tuple[int, ...]


def parse_aspect_ratio(text: str) -> tuple[int, int]:
    """``"1152*896"``, ``"1152×896"`` or ``"1152×896 ∣ 9:7"`` → (width, height)."""
    match = _SIZE.match(text)
    if not match:
        raise InvalidTask("aspect_ratio", f"expected 'W*H' (e.g. '1152*896'), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def image_seeds(
    seed: int, count: int, disable_increment: bool, rng: random.Random
) -> tuple[int, ...]:
    """One seed per image: (seed + i) mod 2^63, or the same seed for all; -1 draws one."""
    if seed < 0 or seed >= MAX_SEED:
        seed = rng.randint(0, MAX_SEED - 1)
    if disable_increment:
        return (seed,) * count
    return tuple((seed + i) % MAX_SEED for i in range(count))


def make_plan(task: GenerationTask, rng: random.Random | None = None) -> SamplingPlan:
    """Resolve size, steps, refiner switch step and per-image seeds of ``task``."""
    width, height = parse_aspect_ratio(task.aspect_ratio)
    if task.overwrite_width > 0:
        width = task.overwrite_width
    if task.overwrite_height > 0:
        height = task.overwrite_height
    width, height = width // 8 * 8, height // 8 * 8
    if width < 64 or height < 64:
        raise InvalidTask("aspect_ratio", f"size {width}x{height} is too small (at least 64x64)")
    steps = task.overwrite_step if task.overwrite_step > 0 else PERFORMANCE_STEPS[task.performance]
    if task.overwrite_switch > 0:
        switch = task.overwrite_switch
    else:
        switch = round(steps * task.refiner_switch)
    if task.image_number < 1:
        raise InvalidTask("image_number", "must be at least 1")
    seeds = image_seeds(
        task.seed, task.image_number, task.disable_seed_increment, rng or random.Random()
    )
    return SamplingPlan(width=width, height=height, steps=steps, switch=switch, seeds=seeds)
