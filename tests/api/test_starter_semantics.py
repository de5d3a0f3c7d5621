"""The starter model draws what its prompts ask for, measured through the API.

A service without models falls back to the starter model; for every prompt of the starter data
(69 shape/colour/background combinations) and two seeds each (the seeds and settings of
``bench/starter_quality.py``, so the rates are the ones recorded in ``docs/BENCHMARKS.md``), the
image's background, foreground colour and shape are read back from its pixels
(``fooocus_core.starter.measure``, the method of ``starter-model.md``) and compared with the
prompt. Chance is 17% (colour), 25% (background), 33% (shape) and about 1.4% (all three). The
floors sit far above chance and safely below the committed model's rates, so the test fails if
the model, its loading or the sampling path stops following prompts.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from fooocus_core.starter.data import combinations, prompt_for
from fooocus_core.starter.measure import Target, score
from tests.api.conftest import LogRecords, Server

COMBINATIONS = combinations()
#: The first of two seeds per prompt (the second is the next seed, as Fooocus increments them).
SEED = 1000
#: Minimum shares of right answers (chance: 0.17, 0.25, 0.33, 0.014).
FLOORS = {"colour": 0.85, "background": 0.85, "shape": 0.8, "all_three": 0.7}


def test_starter_images_follow_their_prompts(offline: tuple[Server, LogRecords]) -> None:
    server, _ = offline
    images: list[np.ndarray] = []
    targets: list[Target] = []
    with server.client() as c:
        for shape, colour, background in COMBINATIONS:
            body = {
                "prompt": prompt_for(shape, colour, background),
                "image_seed": SEED,
                "image_number": 2,
            }
            record = c.post("/v1/engine/generate/", json=body).json()
            assert record["task_status"] == "finished", record
            assert len(record["result"]) == 2
            for url in record["result"]:
                png = Image.open(io.BytesIO(c.get(url).content)).convert("RGB")
                assert png.size == (64, 64)
                images.append(np.asarray(png))
                targets.append(Target(shape, colour, background))
    rates = score(images, targets)
    print(
        f"starter model over the API, {rates.count} images: colour {rates.colour:.0%}, "
        f"background {rates.background:.0%}, shape {rates.shape:.0%}, "
        f"all three {rates.all_three:.0%}"
    )
    for name, floor in FLOORS.items():
        assert getattr(rates, name) >= floor, (name, rates)
