"""Cost of Fooocus' guidance extras per sampling step, relative to plain CFG.

Plain CFG: sharpness 0, adaptive CFG above the CFG scale, ADM scalers 1.0. Fooocus' extras:
sharpness 2 (the joint bilateral filter on the positive noise), adaptive CFG 7 under CFG 10, ADM
scalers 1.5 / 0.8 / 0.3. Both run the same UNet (the tiny SDXL checkpoint) on the same latent,
alternating call by call so machine noise hits both alike; the filter alone is timed too, at the
latent sizes of 512 px and 1024 px images.

Usage: .venv/bin/python bench/guidance_cost.py [--size 512] [--calls 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fooocus_core.config import SHIPPED_CONFIG_DIR
from fooocus_core.models.loader import load_sdxl
from fooocus_core.models.tiny import write_tiny_checkpoint
from fooocus_core.pipeline.denoiser import GuidanceSettings, UNetDenoiser
from fooocus_core.pipeline.generate import branch
from fooocus_core.pipeline.guidance import joint_bilateral_blur
from fooocus_core.prompts.encode import PromptEncoder
from fooocus_core.prompts.tokenize import PromptTokenizer
from fooocus_core.sampling.schedules import DiscreteSchedule

PLAIN = {"cfg": 10.0, "adaptive_cfg": 30.0, "sharpness": 0.0, "adm": (1.0, 1.0, 0.0)}
FOOOCUS = {"cfg": 10.0, "adaptive_cfg": 7.0, "sharpness": 2.0, "adm": (1.5, 0.8, 0.3)}


def make_denoiser(
    models: object, encoder: PromptEncoder, size: int, settings: dict
) -> UNetDenoiser:
    positive = encoder.encode(["a red circle on a blue background"], 1)
    negative = encoder.encode(["blurry"], 1)
    s_pos, s_neg, end = settings["adm"]
    return UNetDenoiser(
        models.unet,
        DiscreteSchedule(),
        branch(positive, size, size, s_pos),
        branch(negative, size, size, s_neg),
        GuidanceSettings(settings["cfg"], settings["adaptive_cfg"], settings["sharpness"], end),
    )


def time_call(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_tiny_checkpoint(Path(tmp) / "tiny.safetensors")
        models = load_sdxl(checkpoint, SHIPPED_CONFIG_DIR)
    tokenizer = PromptTokenizer.from_dir(SHIPPED_CONFIG_DIR / "clip_tokenizer")
    encoder = PromptEncoder(tokenizer, models.text_encoder, models.text_encoder_2)
    plain = make_denoiser(models, encoder, args.size, PLAIN)
    fooocus = make_denoiser(models, encoder, args.size, FOOOCUS)
    latent = torch.randn(1, 4, args.size // 8, args.size // 8, generator=torch.manual_seed(0))
    sigma = torch.tensor(1.0)  # mid-schedule: progress > 0, so the filter and adaptive CFG run
    x = latent * sigma
    plain(x, sigma), fooocus(x, sigma)  # warm-up

    times: dict[str, list[float]] = {"plain": [], "fooocus": []}
    for _ in range(args.calls):
        times["plain"].append(time_call(plain, x, sigma))
        times["fooocus"].append(time_call(fooocus, x, sigma))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"denoiser call at {args.size}x{args.size}, tiny UNet, CFG batch 2, {args.calls} calls")
    for name, value in median.items():
        print(f"  {name:8s} median {value * 1000:7.1f} ms")
    print(f"  ratio fooocus / plain: {median['fooocus'] / median['plain']:.3f}")

    for pixels in (512, 1024):
        n = pixels // 8
        values, guide = torch.randn(1, 4, n, n), torch.randn(1, 4, n, n)
        joint_bilateral_blur(values, guide)
        filt = statistics.median(time_call(joint_bilateral_blur, values, guide) for _ in range(10))
        print(f"  sharpness filter alone, {pixels}px image ({n}x{n} latent): {filt * 1000:.1f} ms")


if __name__ == "__main__":
    main()
