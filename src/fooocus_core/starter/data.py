"""Procedurally drawn training scenes: one shape in one colour on a plain background.

Shapes: circle, square, upward triangle. 6 foreground colours, 4 backgrounds, never the same
colour for both (69 prompts like ``"a red circle on a blue background"``). The shape's size
(20-44 px at 64x64, scaled with the image) and position are random; edges are anti-aliased by
drawing at twice the size and averaging 2x2 blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: Foreground colours (name -> RGB).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (250, 140, 20),
}
#: Backgrounds (name -> RGB); ``blue`` is the same RGB as the foreground blue.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "blue": (30, 60, 220),
}
#: Shape side length range as a fraction of the image side (20-44 px at 64).
SIZE_RANGE: tuple[float, float] = (20 / 64, 44 / 64)


@dataclass(frozen=True)
class Scene:
    """One scene: what is drawn and where (pixel units of the final image)."""

    shape: str
    colour: str
    background: str
    size: float
    centre_x: float
    centre_y: float

    @property
    def prompt(self) -> str:
        """The scene's prompt, e.g. ``"a red circle on a blue background"``."""
        return prompt_for(self.shape, self.colour, self.background)


def prompt_for(shape: str, colour: str, background: str) -> str:
    """The prompt for a shape, colour and background."""
    return f"a {colour} {shape} on a {background} background"


def combinations() -> list[tuple[str, str, str]]:
    """All allowed (shape, colour, background) triples, in a fixed order (69 of them)."""
    return [
        (shape, colour, background)
        for shape in SHAPES
        for colour in COLOURS
        for background in BACKGROUNDS
        if COLOURS[colour] != BACKGROUNDS[background]
    ]


def all_prompts() -> list[str]:
    """The prompt of every allowed combination, in :func:`combinations` order."""
    return [prompt_for(*combo) for combo in combinations()]


def sample_scene(rng: np.random.Generator, image_size: int) -> Scene:
    """A random scene: a uniformly chosen combination, random size and position inside the image."""
    combos = combinations()
    shape, colour, background = combos[int(rng.integers(len(combos)))]
    size = float(rng.uniform(*SIZE_RANGE)) * image_size
    half = size / 2
    centre_x = float(rng.uniform(half, image_size - half))
    centre_y = float(rng.uniform(half, image_size - half))
    return Scene(shape, colour, background, size, centre_x, centre_y)


def _mask(scene: Scene, image_size: int, scale: int) -> np.ndarray:
    """Boolean coverage of the shape on a ``scale``-times finer grid (pixel centres)."""
    n = image_size * scale
    coords = (np.arange(n, dtype=np.float64) + 0.5) / scale
    x = coords[None, :] - scene.centre_x
    y = coords[:, None] - scene.centre_y
    half = scene.size / 2
    if scene.shape == "circle":
        return x * x + y * y <= half * half
    if scene.shape == "square":
        return (np.abs(x) <= half) & (np.abs(y) <= half)
    if scene.shape == "triangle":
        # Apex at the top centre, base along the bottom: |x| <= half * (y + half) / size.
        inside_y = (y >= -half) & (y <= half)
        return inside_y & (np.abs(x) <= (y + half) / 2)
    raise ValueError(f"unknown shape {scene.shape!r}")


def draw(scene: Scene, image_size: int) -> np.ndarray:
    """The scene as an ``[image_size, image_size, 3]`` uint8 RGB image, anti-aliased (2x)."""
    coverage = _mask(scene, image_size, 2).astype(np.float64)
    coverage = coverage.reshape(image_size, 2, image_size, 2).mean(axis=(1, 3))[..., None]
    fg = np.array(COLOURS[scene.colour], dtype=np.float64)
    bg = np.array(BACKGROUNDS[scene.background], dtype=np.float64)
    image = coverage * fg + (1.0 - coverage) * bg
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def draw_batch(seed: int, count: int, image_size: int) -> tuple[np.ndarray, list[Scene]]:
    """``count`` random scenes from ``seed``: images ``[count, H, W, 3]`` uint8 and the scenes."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, image_size) for _ in range(count)]
    images = (
        np.stack([draw(scene, image_size) for scene in scenes])
        if scenes
        else np.zeros((0, image_size, image_size, 3), dtype=np.uint8)
    )
    return images, scenes
