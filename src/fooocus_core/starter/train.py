"""Train the starter model and export it as an SDXL single-file checkpoint.

Stages, all seeded: (1) train the VAE on drawn scenes (reconstruction + a tiny KL weight),
(2) rescale its latent layers exactly so that latents x ``scaling_factor`` have zero mean and unit
spread per channel, (3) encode drawn scenes once and cache their latents, (4) train the UNet with
the epsilon-prediction loss on the SDXL schedule, SDXL time ids and frozen seeded random text
encoders whose prompts are encoded by the engine's own :class:`PromptEncoder`, with prompt
dropout, EMA and gradient clipping, (5) export fp16 in the original SDXL key layout with the
architecture (``fooocus_core.configs``) and the command and settings (``fooocus_core.starter``)
in the safetensors metadata.

Run ``fooocus-train-starter --help`` (or ``python -m fooocus_core.starter.train``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from fooocus_core.config import SHIPPED_CONFIG_DIR
from fooocus_core.models import keys as K
from fooocus_core.models.loader import CONFIG_METADATA_KEY, keymap_for
from fooocus_core.models.tiny import TINY_CONFIGS, tiny_configs
from fooocus_core.prompts.encode import PromptEncoder
from fooocus_core.prompts.tokenize import PromptTokenizer
from fooocus_core.sampling.schedules import DiscreteSchedule
from fooocus_core.starter.data import all_prompts, draw_batch
from fooocus_core.starter.measure import Rates, score

#: Safetensors metadata key holding the command and settings that made the file (JSON).
SETTINGS_METADATA_KEY = "fooocus_core.starter"
#: Fooocus' default clip skip: the penultimate hidden states, as diffusers' SDXL pipeline uses.
CLIP_SKIP = 2


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the trained model (recorded in the checkpoint's metadata)."""

    seed: int = 0
    image_size: int = 64
    vae_steps: int = 1500
    vae_batch: int = 16
    vae_lr: float = 1e-3
    kl_weight: float = 1e-7
    #: Multiplier on the posterior's spread when sampling latents in VAE training (0: the mean).
    vae_noise: float = 1.0
    vae_bf16: bool = True
    #: Drawn images whose latents set the latent rescale.
    rescale_images: int = 512
    cache_images: int = 16384
    unet_steps: int = 3600
    unet_batch: int = 128
    unet_lr: float = 1e-3
    warmup_steps: int = 100
    ema: float = 0.998
    grad_clip: float = 1.0
    prompt_dropout: float = 0.1
    #: Offset noise: a per-sample, per-channel constant of this spread added to the noise, so
    #: that the UNet learns to set an image's mean colour (plain noise leaves the mean to
    #: chance: white backgrounds come out gray, blue ones dark).
    offset_noise: float = 0.1
    #: SDXL "original size" values drawn per sample (Fooocus scales the positive branch's by
    #: 1.5 and the negative's by 0.8), as fractions of ``image_size``.
    original_size_factors: tuple[float, ...] = (0.8, 1.0, 1.5)
    threads: int = 0
    log_every: int = 50


Log = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# Models


def build_vae(settings: TrainSettings) -> AutoencoderKL:
    """A fresh VAE of the tiny SDXL architecture, initialised by diffusers under a fixed seed."""
    torch.manual_seed(settings.seed + 1)
    return AutoencoderKL.from_config(tiny_configs("base")["vae"])


def build_models(settings: TrainSettings) -> dict[str, nn.Module]:
    """Fresh models of the tiny SDXL architecture (``fooocus_core.models.tiny`` configs) with the
    libraries' own initialisation under fixed seeds; text encoders frozen, with fp16 values.
    """
    configs = tiny_configs("base")
    torch.manual_seed(settings.seed)
    unet = UNet2DConditionModel.from_config(configs["unet"])
    vae = build_vae(settings)
    torch.manual_seed(settings.seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(configs["text_encoder"]))
    torch.manual_seed(settings.seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(
        CLIPTextConfig.from_dict(configs["text_encoder_2"])
    )
    for encoder in (text_encoder, text_encoder_2):
        encoder.requires_grad_(False)
        encoder.eval()
        # Round to fp16 now, so training sees the prompt encodings the exported file gives.
        with torch.no_grad():
            for param in encoder.parameters():
                param.copy_(param.half().float())
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
    }


def to_pixels(images: np.ndarray) -> Tensor:
    """uint8 ``[N, H, W, 3]`` -> float ``[N, 3, H, W]`` in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# --------------------------------------------------------------------------------------------
# VAE


def train_vae(vae: AutoencoderKL, settings: TrainSettings, log: Log) -> None:
    """Reconstruction (MSE) + ``kl_weight`` x KL on freshly drawn scenes."""
    vae.train()
    vae.requires_grad_(True)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(settings.seed + 10)
    started, running = time.perf_counter(), 0.0
    for step in range(settings.vae_steps):
        images, _ = draw_batch(
            settings.seed * 1_000_003 + 1_000 + step, settings.vae_batch, settings.image_size
        )
        x = to_pixels(images)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.vae_bf16):
            posterior = vae.encode(x).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=generator)
            z = posterior.mean + settings.vae_noise * posterior.std * noise
            recon = vae.decode(z).sample
        loss_rec = F.mse_loss(recon.float(), x)
        loss = loss_rec + settings.kl_weight * posterior.kl().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(vae.parameters(), settings.grad_clip)
        optimiser.step()
        running += loss_rec.item()
        _progress(log, "vae", step, settings.vae_steps, settings.log_every, started, running)
        if _logged(step, settings.vae_steps, settings.log_every):
            running = 0.0
    vae.requires_grad_(False)
    vae.eval()


@torch.no_grad()
def rescale_latents(vae: AutoencoderKL, settings: TrainSettings, log: Log) -> None:
    """Change ``quant_conv`` (the encoder's last conv) and ``post_quant_conv`` (the decoder's
    first) so that the posterior mean x ``scaling_factor`` has zero mean and unit spread per
    channel; the decoder undoes the change, so reconstructions stay the same.
    """
    images, _ = draw_batch(
        settings.seed * 1_000_003 + 7, settings.rescale_images, settings.image_size
    )
    chunks = np.array_split(images, max(1, len(images) // 64))
    means = torch.cat([vae.encode(to_pixels(chunk)).latent_dist.mean for chunk in chunks])
    mu = means.mean(dim=(0, 2, 3)).double()
    sd = means.std(dim=(0, 2, 3)).double()
    scale = 1.0 / (sd * float(vae.config.scaling_factor))
    shift = -mu * scale
    c = means.shape[1]
    quant, post = vae.quant_conv, vae.post_quant_conv
    w, b = quant.weight.double(), quant.bias.double()  # [2C, 2C, 1, 1]: mean rows, then logvar
    w[:c] *= scale.view(c, 1, 1, 1)
    b[:c] = b[:c] * scale + shift
    b[c:] += 2.0 * torch.log(scale)
    quant.weight.copy_(w.float())
    quant.bias.copy_(b.float())
    pw, pb = post.weight.double(), post.bias.double()  # [C, C, 1, 1], input z = (z' - shift)/scale
    pb -= (pw[:, :, 0, 0] * (shift / scale).view(1, c)).sum(dim=1)
    pw /= scale.view(1, c, 1, 1)
    post.weight.copy_(pw.float())
    post.bias.copy_(pb.float())
    log(f"vae: latent rescale mean {mu.tolist()} std {sd.tolist()} -> unit spread")


@torch.no_grad()
def check_vae(vae: AutoencoderKL, settings: TrainSettings, log: Log, count: int = 256) -> Rates:
    """Measure reconstructions of freshly drawn scenes (the UNet cannot do better than this)."""
    images, scenes = draw_batch(settings.seed * 1_000_003 + 11, count, settings.image_size)
    decoded = vae.decode(vae.encode(to_pixels(images)).latent_dist.mean).sample
    pixels = ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    rates = score(list(pixels), scenes)
    log(
        f"vae: reconstructions right: colour {rates.colour:.0%}, background "
        f"{rates.background:.0%}, shape {rates.shape:.0%}, all three {rates.all_three:.0%}"
    )
    return rates


@torch.no_grad()
def cache_latents(
    vae: AutoencoderKL, settings: TrainSettings, prompts: list[str], log: Log
) -> tuple[Tensor, Tensor]:
    """Scaled latents (posterior mean x ``scaling_factor``) of ``cache_images`` drawn scenes and
    the index of each scene's prompt in ``prompts``.
    """
    started = time.perf_counter()
    index = {p: i for i, p in enumerate(prompts)}
    latents: list[Tensor] = []
    labels: list[int] = []
    chunk = 256
    for start in range(0, settings.cache_images, chunk):
        count = min(chunk, settings.cache_images - start)
        images, scenes = draw_batch(
            settings.seed * 1_000_003 + 500_000 + start, count, settings.image_size
        )
        latents.append(
            vae.encode(to_pixels(images)).latent_dist.mean * float(vae.config.scaling_factor)
        )
        labels.extend(index[s.prompt] for s in scenes)
    out = torch.cat(latents)
    log(
        f"cache: {len(out)} latents {tuple(out.shape[1:])}, mean {float(out.mean()):.3f} "
        f"std {float(out.std()):.3f} ({time.perf_counter() - started:.0f} s)"
    )
    return out, torch.tensor(labels, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Prompts and UNet


@torch.no_grad()
def encode_prompts(
    text_encoder: nn.Module, text_encoder_2: nn.Module, prompts: Sequence[str]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each prompt and the empty prompt through the engine's own PromptEncoder (clip skip 2):
    ``cond [P, 77, 96]``, ``pooled [P, 32]``, ``empty_cond [77, 96]``, ``empty_pooled [32]``.
    """
    tokenizer = PromptTokenizer.from_dir(SHIPPED_CONFIG_DIR / "clip_tokenizer")
    encoder = PromptEncoder(tokenizer, text_encoder, text_encoder_2)
    parts = [encoder.encode_text(p, CLIP_SKIP) for p in prompts]
    empty = encoder.encode_text("", CLIP_SKIP)
    return (
        torch.cat([p.cond for p in parts]),
        torch.cat([p.pooled for p in parts]),
        empty.cond[0],
        empty.pooled[0],
    )


def train_unet(
    unet: UNet2DConditionModel,
    latents: Tensor,
    labels: Tensor,
    text: tuple[Tensor, Tensor, Tensor, Tensor],
    settings: TrainSettings,
    log: Log,
) -> UNet2DConditionModel:
    """Epsilon-prediction training on the SDXL schedule (with offset noise); returns the EMA
    copy.

    Dropped prompts (``prompt_dropout``) get, half each, all-zero embeddings (what diffusers feeds
    for an empty negative) or the encoded empty prompt (what the engine feeds).
    """
    cond_table, pooled_table, empty_cond, empty_pooled = text
    alphas_cumprod = 1.0 / (1.0 + DiscreteSchedule().train_sigmas.double() ** 2)
    sqrt_ab = alphas_cumprod.sqrt().float()
    sqrt_1mab = (1.0 - alphas_cumprod).sqrt().float()
    unet.train()
    unet.requires_grad_(True)
    ema = copy.deepcopy(unet).requires_grad_(False).eval()
    params = [p for p in unet.parameters() if p.requires_grad]
    ema_params = list(ema.parameters())
    optimiser = torch.optim.AdamW(params, lr=settings.unet_lr, weight_decay=0.0)
    total = settings.unet_steps

    def lr_at(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, total - settings.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_at)
    generator = torch.Generator().manual_seed(settings.seed + 20)
    factors = torch.tensor(settings.original_size_factors, dtype=torch.float32)
    size = float(settings.image_size)
    started, running = time.perf_counter(), 0.0
    for step in range(total):
        b = settings.unet_batch
        pick = torch.randint(len(latents), (b,), generator=generator)
        x0 = latents[pick]
        label = labels[pick]
        t = torch.randint(len(sqrt_ab), (b,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        if settings.offset_noise > 0:
            offset = torch.randn((b, x0.shape[1], 1, 1), generator=generator)
            noise = noise + settings.offset_noise * offset
        noisy = sqrt_ab[t].view(b, 1, 1, 1) * x0 + sqrt_1mab[t].view(b, 1, 1, 1) * noise
        cond, pooled = cond_table[label].clone(), pooled_table[label].clone()
        roll = torch.rand(b, generator=generator)
        zeros = roll < settings.prompt_dropout / 2
        empty = (roll >= settings.prompt_dropout / 2) & (roll < settings.prompt_dropout)
        cond[zeros], pooled[zeros] = 0.0, 0.0
        cond[empty], pooled[empty] = empty_cond, empty_pooled
        original = torch.floor(
            size * factors[torch.randint(len(factors), (b,), generator=generator)]
        )
        time_ids = torch.stack(
            [
                original,
                original,
                torch.zeros(b),
                torch.zeros(b),
                torch.full((b,), size),
                torch.full((b,), size),
            ],
            dim=1,
        )
        prediction = unet(
            noisy,
            t,
            encoder_hidden_states=cond,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
        ).sample
        loss = F.mse_loss(prediction, noise)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimiser.step()
        scheduler.step()
        decay = min(settings.ema, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - decay)
        running += loss.item()
        _progress(log, "unet", step, total, settings.log_every, started, running)
        if _logged(step, total, settings.log_every):
            running = 0.0
    unet.requires_grad_(False)
    unet.eval()
    return ema


# --------------------------------------------------------------------------------------------
# Export


def export_checkpoint(path: Path, models: dict[str, nn.Module], metadata: dict[str, str]) -> Path:
    """Write fp16 tensors in the original SDXL single-file layout (the key maps of
    :mod:`fooocus_core.models.keys`, as :mod:`fooocus_core.models.tiny` writes them), with the
    tiny architecture in ``fooocus_core.configs`` plus ``metadata``.
    """
    prefixes = {
        "unet": K.UNET_PREFIX,
        "vae": K.VAE_PREFIX,
        "text_encoder": K.CLIP_L_PREFIX,
        "text_encoder_2": K.CLIP_G_PREFIX,
    }
    tensors: dict[str, Tensor] = {}
    for component, model in models.items():
        keymap = keymap_for(component, model, prefixes[component])
        original = keymap.to_original(model.state_dict())
        tensors.update(
            {
                k: (v.half() if v.is_floating_point() else v).contiguous().clone()
                for k, v in original.items()
            }
        )
    meta = {CONFIG_METADATA_KEY: json.dumps(TINY_CONFIGS, sort_keys=True), **metadata}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


# --------------------------------------------------------------------------------------------
# Driver


def _logged(step: int, total: int, every: int) -> bool:
    return (step + 1) % max(1, every) == 0 or step + 1 == total


def _progress(
    log: Log, stage: str, step: int, total: int, every: int, started: float, running: float
) -> None:
    if not _logged(step, total, every):
        return
    done = step + 1
    count = (step % max(1, every)) + 1
    elapsed = time.perf_counter() - started
    per_step = elapsed / done
    log(
        f"{stage}: step {done}/{total} loss {running / count:.4f} "
        f"{per_step:.3f} s/step, {elapsed:.0f} s, eta {per_step * (total - done):.0f} s"
    )


def train(
    settings: TrainSettings, out: Path, *, command: str | None = None, log: Log = print
) -> Path:
    """Run all stages and write the checkpoint to ``out``; returns its path."""
    threads_before = torch.get_num_threads()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    try:
        return _train(settings, out, command, log)
    finally:
        torch.set_num_threads(threads_before)


def _train(settings: TrainSettings, out: Path, command: str | None, log: Log) -> Path:
    started = time.perf_counter()
    models = build_models(settings)
    prompts = all_prompts()
    log(
        f"starter: {len(prompts)} prompts, image size {settings.image_size}, "
        f"torch threads {torch.get_num_threads()}"
    )
    train_vae(models["vae"], settings, log)  # type: ignore[arg-type]
    rescale_latents(models["vae"], settings, log)  # type: ignore[arg-type]
    check_vae(models["vae"], settings, log)  # type: ignore[arg-type]
    latents, labels = cache_latents(models["vae"], settings, prompts, log)  # type: ignore[arg-type]
    text = encode_prompts(models["text_encoder"], models["text_encoder_2"], prompts)
    models["unet"] = train_unet(models["unet"], latents, labels, text, settings, log)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    record: dict[str, Any] = {
        "command": command if command is not None else "fooocus_core.starter.train.train()",
        "settings": asdict(settings),
        "train_seconds": round(elapsed),
        "torch": torch.__version__,
    }
    path = export_checkpoint(out, models, {SETTINGS_METADATA_KEY: json.dumps(record)})
    log(f"starter: wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) in {elapsed:.0f} s")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fooocus-train-starter",
        description="Train the starter model (tiny SDXL architecture) on drawn scenes and write "
        "an fp16 SDXL single-file checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("starter_sdxl_tiny.safetensors"),
        help="checkpoint to write",
    )
    defaults = TrainSettings()
    for f in fields(TrainSettings):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        elif isinstance(value, tuple):
            parser.add_argument(flag, type=float, nargs="+", default=list(value))
        else:
            parser.add_argument(flag, type=type(value), default=value)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``fooocus-train-starter [flags]``."""
    args = _parser().parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in fields(TrainSettings)}
    values["original_size_factors"] = tuple(values["original_size_factors"])
    settings = TrainSettings(**values)
    shown = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["fooocus-train-starter", *shown])
    train(settings, args.out, command=command, log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
