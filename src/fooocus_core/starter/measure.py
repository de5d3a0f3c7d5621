"""Read a starter image's background, foreground colour and shape back from its pixels.

The method of ``starter-model.md``: background = median colour of a 2-pixel border, nearest of
the 4 backgrounds; foreground mask = pixels more than 60 (Euclidean, 0-255 RGB) from that colour,
fewer than 20 pixels meaning no shape; colour = median of the mask, nearest of the 6; shape from
the mask's fill ratio in its robust bounding box (0.5-99.5 percentiles of its coordinates): under
0.69 triangle, under 0.90 circle, else square.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fooocus_core.starter.data import BACKGROUNDS, COLOURS

BORDER = 2
FOREGROUND_DISTANCE = 60.0
MIN_FOREGROUND_PIXELS = 20
TRIANGLE_BELOW = 0.69
CIRCLE_BELOW = 0.90


class Labelled(Protocol):
    """What an image should show (a drawn :class:`~fooocus_core.starter.data.Scene`, or a
    prompt's :class:`Target`)."""

    @property
    def shape(self) -> str: ...
    @property
    def colour(self) -> str: ...
    @property
    def background(self) -> str: ...


@dataclass(frozen=True)
class Target:
    """The shape, colour and background a prompt asks for."""

    shape: str
    colour: str
    background: str


@dataclass(frozen=True)
class Measurement:
    """What an image shows; ``colour`` and ``shape`` are None when no shape was found."""

    background: str
    colour: str | None
    shape: str | None


def _nearest(rgb: np.ndarray, palette: Mapping[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    table = np.array([palette[n] for n in names], dtype=np.float64)
    return names[int(np.argmin(np.linalg.norm(table - rgb, axis=1)))]


def measure(image: np.ndarray) -> Measurement:
    """Measure one ``[H, W, 3]`` RGB image (uint8 or 0-255 floats)."""
    pixels = np.asarray(image, dtype=np.float64)[..., :3]
    border = np.concatenate(
        [
            pixels[:BORDER].reshape(-1, 3),
            pixels[-BORDER:].reshape(-1, 3),
            pixels[BORDER:-BORDER, :BORDER].reshape(-1, 3),
            pixels[BORDER:-BORDER, -BORDER:].reshape(-1, 3),
        ]
    )
    bg_rgb = np.median(border, axis=0)
    background = _nearest(bg_rgb, BACKGROUNDS)
    mask = np.linalg.norm(pixels - bg_rgb, axis=-1) > FOREGROUND_DISTANCE
    if int(mask.sum()) < MIN_FOREGROUND_PIXELS:
        return Measurement(background, None, None)
    colour = _nearest(np.median(pixels[mask], axis=0), COLOURS)
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = np.rint(
        np.concatenate([np.percentile(xs, [0.5, 99.5]), np.percentile(ys, [0.5, 99.5])])
    ).astype(int)
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    fill = float(mask[y0 : y1 + 1, x0 : x1 + 1].sum()) / area
    shape = "triangle" if fill < TRIANGLE_BELOW else "circle" if fill < CIRCLE_BELOW else "square"
    return Measurement(background, colour, shape)


@dataclass(frozen=True)
class Rates:
    """Fractions of images whose colour, background, shape and all three were right."""

    colour: float
    background: float
    shape: float
    all_three: float
    count: int


def score(images: Sequence[np.ndarray], scenes: Sequence[Labelled]) -> Rates:
    """Measure every image and compare it with the scene (prompt) it should show."""
    if len(images) != len(scenes) or not scenes:
        raise ValueError("need as many images as scenes, at least one")
    hits = np.zeros((len(scenes), 3), dtype=bool)
    for row, (image, scene) in enumerate(zip(images, scenes, strict=True)):
        m = measure(image)
        hits[row] = (
            m.colour == scene.colour,
            m.background == scene.background,
            m.shape == scene.shape,
        )
    rates = hits.mean(axis=0)
    return Rates(
        float(rates[0]),
        float(rates[1]),
        float(rates[2]),
        float(hits.all(axis=1).mean()),
        len(scenes),
    )
