"""Task parameters resolved into sizes, steps, switch step and seeds (spec 1.0, 3.5, 3.8, 14)."""

from __future__ import annotations

import random

import pytest

from fooocus_core.errors import InvalidTask
from fooocus_core.pipeline.plan import make_plan, parse_aspect_ratio
from fooocus_core.task import GenerationTask


@pytest.mark.parametrize(
    ("performance", "switch", "expected_steps", "expected_switch"),
    [("Speed", 0.5, 30, 15), ("Speed", 0.8, 30, 24), ("Quality", 0.75, 60, 45)],
)
def test_refiner_switch_step(
    performance: str, switch: float, expected_steps: int, expected_switch: int
) -> None:
    plan = make_plan(GenerationTask(performance=performance, refiner_switch=switch, seed=1))
    assert (plan.steps, plan.switch) == (expected_steps, expected_switch)


@pytest.mark.parametrize(
    ("performance", "steps"),
    [("Quality", 60), ("Speed", 30), ("Extreme Speed", 8), ("Lightning", 4), ("Hyper-SD", 4)],
)
def test_performance_steps(performance: str, steps: int) -> None:
    assert make_plan(GenerationTask(performance=performance, seed=1)).steps == steps


def test_overwrites_win() -> None:
    task = GenerationTask(
        overwrite_step=12, overwrite_switch=5, overwrite_width=640, overwrite_height=512, seed=1
    )
    plan = make_plan(task)
    assert (plan.steps, plan.switch, plan.width, plan.height) == (12, 5, 640, 512)


@pytest.mark.parametrize("text", ["1152*896", "1152×896", "1152×896 ∣ 9:7", " 1152 * 896 "])
def test_aspect_ratio_forms(text: str) -> None:
    assert parse_aspect_ratio(text) == (1152, 896)


def test_bad_aspect_ratio_names_the_field() -> None:
    with pytest.raises(InvalidTask) as error:
        parse_aspect_ratio("square")
    assert error.value.field == "aspect_ratio"


def test_seeds_increment_wrap_and_random() -> None:
    assert make_plan(GenerationTask(seed=5, image_number=3)).seeds == (5, 6, 7)
    assert make_plan(GenerationTask(seed=2**63 - 1, image_number=2)).seeds == (2**63 - 1, 0)
    same = make_plan(GenerationTask(seed=5, image_number=2, disable_seed_increment=True))
    assert same.seeds == (5, 5)
    drawn = make_plan(GenerationTask(seed=-1, image_number=2), random.Random(3)).seeds
    assert drawn[1] == drawn[0] + 1 and 0 <= drawn[0] < 2**63
