"""How well the starter model draws what its prompts ask for.

Generates every prompt of the starter data (69 shape/colour/background combinations) with
``--seeds`` seeds each through the engine (``Engine.generate``, the path the service uses),
reads the saved PNGs back and measures them with ``fooocus_core.starter.measure`` (the method
of ``starter-model.md``). Prints, per setting, the share of images whose colour, background,
shape and all three are right, next to chance.

    python bench/starter_quality.py     # the shipped model, the starter preset's settings
    python bench/starter_quality.py --setting euler,normal,30,5 --setting euler,karras,20,3
    python bench/starter_quality.py --checkpoint /tmp/starter.safetensors --seeds 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fooocus_core import STARTER_MODEL, STARTER_PRESET
from fooocus_core.config import load_engine_config
from fooocus_core.engine import Engine
from fooocus_core.starter.data import BACKGROUNDS, COLOURS, SHAPES, combinations, prompt_for
from fooocus_core.starter.measure import Rates, Target, score
from fooocus_core.task import GenerationTask


@dataclass(frozen=True)
class Setting:
    sampler: str
    scheduler: str
    steps: int
    cfg: float

    @classmethod
    def parse(cls, text: str) -> Setting:
        sampler, scheduler, steps, cfg = text.split(",")
        return cls(sampler, scheduler, int(steps), float(cfg))

    def __str__(self) -> str:
        return f"{self.sampler}/{self.scheduler}, {self.steps} steps, cfg {self.cfg:g}"


def chance() -> Rates:
    """Rates of guessing uniformly (colour 1/6, background 1/4, shape 1/3)."""
    c, b, s = 1 / len(COLOURS), 1 / len(BACKGROUNDS), 1 / len(SHAPES)
    return Rates(c, b, s, c * b * s, 0)


def run_setting(engine: Engine, setting: Setting, seeds: int, first_seed: int) -> Rates:
    """Every combination x ``seeds`` seeds with one setting; the measured rates."""
    preset = engine.preset(STARTER_PRESET)
    images: list[np.ndarray] = []
    targets: list[Target] = []
    for shape, colour, background in combinations():
        task = GenerationTask(
            prompt=prompt_for(shape, colour, background),
            negative_prompt="",
            styles=[],
            base_model=STARTER_MODEL,
            aspect_ratio=preset.default_aspect_ratio,
            sampler=setting.sampler,
            scheduler=setting.scheduler,
            overwrite_step=setting.steps,
            guidance_scale=setting.cfg,
            sharpness=preset.default_sample_sharpness,
            loras=[],
            seed=first_seed,
            image_number=seeds,
            disable_preview=True,
        )
        for image in engine.generate(task).images:
            with Image.open(image.path) as png:
                images.append(np.asarray(png.convert("RGB")))
            targets.append(Target(shape, colour, background))
    return score(images, targets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a starter checkpoint (default: shipped)")
    parser.add_argument(
        "--setting",
        action="append",
        type=Setting.parse,
        default=[],
        help="sampler,scheduler,steps,cfg (repeatable; default: the preset's)",
    )
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        (models / "checkpoints").mkdir(parents=True)
        if args.checkpoint is not None:
            (models / "checkpoints" / STARTER_MODEL).symlink_to(args.checkpoint.resolve())
        config = load_engine_config(
            None,
            {},
            {"models_dir": str(models), "output_dir": str(Path(tmp) / "outputs"), "device": "cpu"},
        )
        engine = Engine(config)
        preset = engine.preset(STARTER_PRESET)
        settings = args.setting or [
            Setting(
                preset.default_sampler,
                preset.default_scheduler,
                preset.default_overwrite_step,
                preset.default_cfg_scale,
            )
        ]
        base = chance()
        print(
            f"{len(combinations())} prompts x {args.seeds} seeds; chance: colour "
            f"{base.colour:.0%}, background {base.background:.0%}, shape {base.shape:.0%}, "
            f"all three {base.all_three:.1%}"
        )
        print("| setting | colour | background | shape | all three | seconds |")
        print("|---|---|---|---|---|---|")
        results = []
        for setting in settings:
            started = time.perf_counter()
            rates = run_setting(engine, setting, args.seeds, args.first_seed)
            seconds = time.perf_counter() - started
            print(
                f"| {setting} | {rates.colour:.0%} | {rates.background:.0%} | "
                f"{rates.shape:.0%} | {rates.all_three:.0%} | {seconds:.0f} |",
                flush=True,
            )
            results.append({"setting": asdict(setting), "rates": asdict(rates), "seconds": seconds})
    if args.json is not None:
        args.json.write_text(json.dumps({"seeds": args.seeds, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
