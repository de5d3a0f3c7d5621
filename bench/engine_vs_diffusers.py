"""Time per sampling step: our engine against diffusers' StableDiffusionXLPipeline, in one run.

Both sides run the same tiny SDXL checkpoint (``write_tiny_checkpoint(seed=0)``) with the settings
of ``tests/test_engine_fidelity.py``, so they do the same math: Fooocus' extras neutral
(sharpness 0, adaptive CFG above the CFG scale, ADM scalers 1.0, no styles), a non-empty
negative prompt (CFG, UNet batch 2), our ``euler`` + ``simple`` against diffusers' Euler with
"trailing" spacing, and the same initial noise (``torch.manual_seed(seed)`` + CPU ``randn``).

Each configuration runs in its own worker process (so peak RSS is per side):

* ``diffusers``: ``StableDiffusionXLPipeline.from_single_file`` + ``pipe(...)``;
* ``ours``: ``Engine.generate`` with ``disable_preview=True``;
* ``ours+preview``: previews on (the default) without a VAE-approx file: linear latent-to-RGB map;
* ``ours+approx``: previews on with ``vae_approx/xlvaeapp.pth`` present (random weights of the
  real architecture): the VAE-approx network runs every step, as in Fooocus.

The parent interleaves the workers at the granularity of one segment (one sampling step, or
the start/end of a call): it lets one worker run one segment while the others wait blocked on
their stdin, then the next, rotating the order every round (A B C, B C A, C A B, ...). Machine
noise therefore hits every side alike, step by step. Workers time their own segments with
``time.perf_counter`` and never count the time they spend waiting.

Run from the repository root: ``.venv/bin/python bench/engine_vs_diffusers.py`` (see
``bench/README.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO

import torch

if TYPE_CHECKING:  # side-specific imports stay lazy, so each worker's RSS holds only its side
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline
    from PIL import Image

    from fooocus_core.engine import Engine
    from fooocus_core.prompts.encode import PromptEncoder
    from fooocus_core.task import GenerationTask

REPO_ROOT = Path(__file__).resolve().parents[1]

PROMPT = "a red circle on a blue background"
NEGATIVE = "blurry, low quality"
SEED = 1234
CFG = 5.0
CHECKPOINT_NAME = "tiny.safetensors"

SIDES: tuple[str, ...] = ("diffusers", "ours", "ours+preview", "ours+approx")
#: Our sides and their previews: none, the linear latent map, the VAE-approx network.
PREVIEWS: dict[str, str] = {"ours": "off", "ours+preview": "linear", "ours+approx": "approx"}
REFERENCE = "diffusers"
TARGET_RATIO = 1.05
#: Above this spread of the reference's step times ((p75 - p25) / median) wall-time ratios are
#: too noisy for a 5% verdict, and the verdict uses the same-UNet estimate instead.
NOISE_LIMIT = 0.10
#: Step samples per side that the time budget cannot cut short.
MIN_STEP_SAMPLES = 10
#: Sides that also time prompt encoding and VAE decode on their own.
COMPONENT_SIDES: frozenset[str] = frozenset({"diffusers", "ours"})
#: The issue's settings, and the smoke run's (``--quick``); flags given explicitly win.
DEFAULTS: dict[str, int] = {"size": 512, "steps": 20, "repeats": 3, "warmup_steps": 2}
QUICK: dict[str, int] = {"size": 128, "steps": 4, "repeats": 1, "warmup_steps": 1}


# --- shared helpers ---------------------------------------------------------------------------


def prompts(call: int) -> tuple[str, str]:
    """The prompt pair of the ``call``-th call of a worker (the same on every side).

    Every call gets new texts: our prompt encoder caches encodings per text, diffusers' does
    not, and a benchmark that repeats one prompt would time our cache instead of CLIP.
    """
    return f"{PROMPT}, take {call}", f"{NEGATIVE}, take {call}"


def status_kib(name: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``); 0 where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) of this process (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --- worker -----------------------------------------------------------------------------------


class UNetClock:
    """Wall and main-thread CPU time spent inside the UNet's forward, via module hooks."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self._entered = (0.0, 0.0)

    def attach(self, unet: torch.nn.Module) -> None:
        unet.register_forward_pre_hook(self._enter)
        unet.register_forward_hook(self._leave)

    def _enter(self, *_args: Any) -> None:
        self._entered = (time.perf_counter(), time.thread_time())

    def _leave(self, *_args: Any) -> None:
        self.wall += time.perf_counter() - self._entered[0]
        self.cpu += time.thread_time() - self._entered[1]


class StopMeasuring(Exception):
    """The parent ended the measurement (time budget spent); raised out of the current call."""


class Gate:
    """Segment timing and hand-over: ``mark`` reports the segment just run, then waits for "go".

    A segment's report holds its wall time, the main thread's CPU time, and the wall and CPU
    time inside the UNet. Inactive during set-up and warm-up (``mark`` does nothing then).
    """

    def __init__(self, commands: TextIO, replies: IO[str]) -> None:
        self.commands = commands
        self.replies = replies
        self.unet = UNetClock()
        self.active = False
        self.repeat = 0
        self._start = (0.0, 0.0, 0.0, 0.0)

    def send(self, message: dict[str, Any]) -> None:
        self.replies.write(json.dumps(message) + "\n")
        self.replies.flush()

    def wait(self) -> None:
        """Block until the parent says "go" (run the next segment) or "stop" (end: raises)."""
        line = self.commands.readline().strip()
        if line == "stop":
            raise StopMeasuring
        if line != "go":
            raise SystemExit(f"worker: expected 'go' or 'stop', got {line!r}")
        self._start = (time.perf_counter(), time.thread_time(), self.unet.wall, self.unet.cpu)

    def mark(self, segment: str) -> None:
        if not self.active:
            return
        wall, cpu = time.perf_counter(), time.thread_time()
        start_wall, start_cpu, start_unet_wall, start_unet_cpu = self._start
        self.send(
            {
                "segment": segment,
                "repeat": self.repeat,
                "wall": wall - start_wall,
                "cpu": cpu - start_cpu,
                "unet_wall": self.unet.wall - start_unet_wall,
                "unet_cpu": self.unet.cpu - start_unet_cpu,
            }
        )
        self.wait()


@dataclass
class WorkerArgs:
    side: str
    workdir: Path
    size: int
    steps: int
    warmup_steps: int
    repeats: int
    threads: int


class Side:
    """One configuration under test: load, one full call, and the two components."""

    def load(self, clock: UNetClock) -> None:
        """Load the models; attach ``clock`` to the UNet."""
        raise NotImplementedError

    def call(self, call: int, steps: int, gate: Gate) -> None:
        """One full generate call; ``gate.mark`` after every step and at the end."""
        raise NotImplementedError

    def last_image(self) -> Path | None:
        """The last finished call's image as a file (written here if need be), if any."""
        raise NotImplementedError

    def encode(self, call: int) -> None:
        raise NotImplementedError

    def decode(self) -> None:
        raise NotImplementedError


class OursSide(Side):
    def __init__(self, args: WorkerArgs, preview: str) -> None:
        self.args = args
        self.preview = preview
        self._engine: Engine | None = None
        self._encoder: PromptEncoder | None = None
        self._vae: AutoencoderKL | None = None
        self.image: Path | None = None

    def load(self, clock: UNetClock) -> None:
        from fooocus_core.config import EngineConfig
        from fooocus_core.engine import Engine
        from fooocus_core.prompts.encode import PromptEncoder
        from fooocus_core.prompts.tokenize import PromptTokenizer

        workdir = self.args.workdir
        # Only the ours+approx worker sees the VAE-approx file; the others get an empty folder.
        approx = "vae_approx" if self.preview == "approx" else "vae_approx-none"
        self._engine = Engine(
            EngineConfig(
                models_dir=str(workdir / "models"),
                model_folders={"vae_approx": str(workdir / approx)},
                output_dir=str(workdir / f"outputs-{self.args.side}"),
                device="cpu",
            )
        )
        self._engine.load(CHECKPOINT_NAME)
        # The components reach the loaded models through the engine's model cache (the same
        # objects generate uses; the engine has no public accessor for them).
        models = self._engine._models.base
        assert models is not None
        tokenizer = PromptTokenizer.from_dir(self._engine.config.config_path / "clip_tokenizer")
        self._encoder = PromptEncoder(tokenizer, models.text_encoder, models.text_encoder_2)
        self._vae = models.vae
        clock.attach(models.unet)

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "load() first"
        return self._engine

    @property
    def encoder(self) -> PromptEncoder:
        assert self._encoder is not None, "load() first"
        return self._encoder

    @property
    def vae(self) -> AutoencoderKL:
        assert self._vae is not None, "load() first"
        return self._vae

    def task(self, call: int, steps: int) -> GenerationTask:
        """The fidelity test's neutral task, at the bench's size and step count."""
        from fooocus_core.task import GenerationTask

        prompt, negative = prompts(call)
        size = self.args.size
        return GenerationTask(
            prompt=prompt,
            negative_prompt=negative,
            styles=[],
            base_model=CHECKPOINT_NAME,
            aspect_ratio=f"{size}*{size}",
            overwrite_step=steps,
            seed=SEED,
            guidance_scale=CFG,
            adaptive_cfg=30.0,
            sharpness=0.0,
            adm_scaler_positive=1.0,
            adm_scaler_negative=1.0,
            adm_scaler_end=0.0,
            sampler="euler",
            scheduler="simple",
            save_metadata_to_images=False,
            disable_preview=self.preview == "off",
        )

    def call(self, call: int, steps: int, gate: Gate) -> None:
        from fooocus_core.task import Progress

        seen = 0

        def on_progress(progress: Progress) -> None:
            nonlocal seen
            if progress.step > 0:
                gate.mark("first" if seen == 0 else "step")
                seen += 1

        result = self.engine.generate(self.task(call, steps), on_progress=on_progress)
        gate.mark("finish")
        self.image = Path(result.images[0].path)

    def last_image(self) -> Path | None:
        return self.image

    def encode(self, call: int) -> None:
        prompt, negative = prompts(call)
        self.encoder.encode([prompt], 1, 2)
        self.encoder.encode([negative], 1, 2)

    def decode(self) -> None:
        from fooocus_core.pipeline.generate import decode

        decode(self.vae, decode_latent(self.args.size))


class DiffusersSide(Side):
    def __init__(self, args: WorkerArgs) -> None:
        self.args = args
        self._pipe: StableDiffusionXLPipeline | None = None
        self.image: Image.Image | None = None

    def load(self, clock: UNetClock) -> None:
        from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

        workdir = self.args.workdir
        pipe = StableDiffusionXLPipeline.from_single_file(
            str(workdir / "models" / "checkpoints" / CHECKPOINT_NAME),
            config=str(workdir / "diffusers-config"),
            local_files_only=True,
        )
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = EulerDiscreteScheduler.from_config(
            dict(pipe.scheduler.config), timestep_spacing="trailing"
        )
        self._pipe = pipe
        clock.attach(pipe.unet)

    @property
    def pipe(self) -> StableDiffusionXLPipeline:
        assert self._pipe is not None, "load() first"
        return self._pipe

    def latents(self) -> torch.Tensor:
        """Fooocus' noise, pre-scaled as in the fidelity test (Euler's ``init_noise_sigma``)."""
        import math

        from fooocus_core.sampling.schedules import DiscreteSchedule

        size = self.args.size
        noise = torch.randn(
            (1, 4, size // 8, size // 8),
            generator=torch.Generator("cpu").manual_seed(SEED),
            dtype=torch.float32,
        )
        sigma_max = DiscreteSchedule().sigma_max
        init_sigma = float(self.pipe.scheduler.init_noise_sigma)
        scale = 1.0 if init_sigma == 1.0 else math.sqrt(1.0 + sigma_max**2) / init_sigma
        return noise * scale

    def call(self, call: int, steps: int, gate: Gate) -> None:
        prompt, negative = prompts(call)

        def on_step_end(_pipe: Any, index: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            gate.mark("first" if index == 0 else "step")
            return kwargs

        size = self.args.size
        image = self.pipe(
            prompt=prompt,
            negative_prompt=negative,
            guidance_scale=CFG,
            num_inference_steps=steps,
            height=size,
            width=size,
            latents=self.latents(),
            output_type="pil",
            callback_on_step_end=on_step_end,
        ).images[0]
        gate.mark("finish")
        self.image = image

    def last_image(self) -> Path | None:
        if self.image is None:
            return None
        path = self.args.workdir / "diffusers-last.png"
        self.image.save(path)
        return path

    def encode(self, call: int) -> None:
        prompt, negative = prompts(call)
        with torch.inference_mode():
            self.pipe.encode_prompt(
                prompt,
                device=torch.device("cpu"),
                num_images_per_prompt=1,
                do_classifier_free_guidance=True,
                negative_prompt=negative,
            )

    def decode(self) -> None:
        vae = self.pipe.vae
        latent = decode_latent(self.args.size) / vae.config.scaling_factor
        with torch.inference_mode():
            pixels = vae.decode(latent, return_dict=False)[0]
        self.pipe.image_processor.postprocess(pixels, output_type="pil")


def decode_latent(size: int) -> torch.Tensor:
    """The latent both sides decode in the VAE component (sampler space, seeded)."""
    generator = torch.Generator("cpu").manual_seed(SEED + 1)
    return torch.randn((1, 4, size // 8, size // 8), generator=generator)


def run_worker(args: WorkerArgs) -> None:
    """Worker process: set up on the first "go", then one segment per "go"."""
    # Protocol on a private copy of stdout; anything else printed goes to stderr.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    gate = Gate(sys.stdin, replies)
    torch.set_num_threads(args.threads)
    side: Side = (
        DiffusersSide(args)
        if args.side == "diffusers"
        else OursSide(args, preview=PREVIEWS[args.side])
    )
    components = args.side in COMPONENT_SIDES

    gate.wait()  # set-up is serialised by the parent too
    rss_before_load = status_kib("VmRSS")
    start = time.perf_counter()
    side.load(gate.unet)
    load_seconds = time.perf_counter() - start
    rss_after_load = status_kib("VmRSS")
    load_peak = status_kib("VmHWM")
    peak_reset = reset_peak_rss()

    # Call numbers pick the prompts; every side counts the same way (an encode takes a number
    # even where it is not run), so the k-th call has the same prompts on every side.
    call = 0
    side.call(call, args.warmup_steps, gate)  # warm-up: full size, gate inactive
    if components:
        side.encode(call + 1)
        side.decode()
    call += 2
    gate.send(
        {
            "ready": True,
            "load_seconds": load_seconds,
            "rss_before_load_kib": rss_before_load,
            "rss_after_load_kib": rss_after_load,
            "load_peak_kib": load_peak,
            "peak_reset": peak_reset,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
    )

    gate.active = True
    try:
        gate.wait()
        for repeat in range(args.repeats):
            gate.repeat = repeat
            side.call(call, args.steps, gate)
            if components:
                side.encode(call + 1)
                gate.mark("encode")
                side.decode()
                gate.mark("decode")
            else:  # empty segments keep every worker's k-th segment in the same round
                gate.mark("idle")
                gate.mark("idle")
            call += 2
    except StopMeasuring:  # raised out of the call in progress, if any
        pass
    memory = {
        "peak_kib": status_kib("VmHWM"),
        "rss_kib": status_kib("VmRSS"),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    image = side.last_image()  # after the memory readings: diffusers' side writes a PNG
    gate.send({"done": True, **memory, "image": str(image) if image else None})


# --- parent -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One timed segment of one worker."""

    repeat: int
    wall: float
    cpu: float  # main thread only
    unet_wall: float
    unet_cpu: float

    @classmethod
    def of(cls, message: dict[str, Any]) -> Sample:
        return cls(
            repeat=int(message["repeat"]),
            wall=float(message["wall"]),
            cpu=float(message["cpu"]),
            unet_wall=float(message["unet_wall"]),
            unet_cpu=float(message["unet_cpu"]),
        )


@dataclass
class Worker:
    side: str
    process: subprocess.Popen[str]
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)

    def exchange(self, command: str = "go") -> dict[str, Any]:
        """Let the worker run one segment ("go"), or end it ("stop"); its report."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{command}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.side!r} exited (code {self.process.wait()})")
        return dict(json.loads(line))

    def series(self) -> dict[str, list[tuple[int, float]]]:
        """Every reported quantity as ``(repeat, seconds)`` samples, in run order."""
        steps = self.samples.get("step", [])
        result: dict[str, list[tuple[int, float]]] = {
            "step": [(s.repeat, s.wall) for s in steps],
            "step_unet": [(s.repeat, s.unet_wall) for s in steps],
            "step_outside_wall": [(s.repeat, s.wall - s.unet_wall) for s in steps],
            "step_outside_cpu": [(s.repeat, s.cpu - s.unet_cpu) for s in steps],
        }
        for segment in ("first", "finish", "encode", "decode"):
            result[segment] = [(s.repeat, s.wall) for s in self.samples.get(segment, [])]
        finished = {sample.repeat for sample in self.samples.get("finish", [])}
        totals: dict[int, float] = {}
        for segment in ("first", "step", "finish"):
            for sample in self.samples.get(segment, []):
                if sample.repeat in finished:
                    totals[sample.repeat] = totals.get(sample.repeat, 0.0) + sample.wall
        result["total"] = sorted(totals.items())
        return {key: values for key, values in result.items() if values}


def spawn(side: str, args: argparse.Namespace, workdir: Path, log: IO[str]) -> Worker:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(args.threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        side,
        "--workdir",
        str(workdir),
        "--size",
        str(args.size),
        "--steps",
        str(args.steps),
        "--warmup-steps",
        str(args.warmup_steps),
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
    ]
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )
    return Worker(side, process)


def prepare(workdir: Path) -> None:
    """The files the workers share: the tiny checkpoint (seed 0), the diffusers config folder,
    and a VAE-approx preview model (the real architecture, seeded random weights).
    """
    sys.path.insert(0, str(REPO_ROOT))
    from tests.oracle import diffusers_config_dir

    from fooocus_core.models.tiny import write_tiny_checkpoint
    from fooocus_core.models.vae_approx import SDXL_VAE_APPROX_FILE, VAEApprox

    checkpoints = workdir / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    write_tiny_checkpoint(checkpoints / CHECKPOINT_NAME, seed=0)
    diffusers_config_dir(workdir / "diffusers-config")
    (workdir / "vae_approx").mkdir()
    (workdir / "vae_approx-none").mkdir()
    torch.manual_seed(0)
    torch.save(VAEApprox().state_dict(), workdir / "vae_approx" / SDXL_VAE_APPROX_FILE)


def interleave(workers: list[Worker], deadline: float) -> None:
    """Run every worker's segments, one segment each per round, rotating the order.

    All workers have the same segment sequence, so their k-th segments share a round. Once
    ``deadline`` (a ``time.perf_counter`` value) has passed and every worker has timed at least
    :data:`MIN_STEP_SAMPLES` steps, all of them are stopped in the same round, mid-call if need
    be (the steps timed so far count; the whole-call figures use finished calls only).
    """
    active = list(workers)
    round_index = 0
    while active:
        measured = min(len(w.samples.get("step", [])) for w in active)
        stop = time.perf_counter() > deadline and measured >= MIN_STEP_SAMPLES
        shift = round_index % len(active)
        for worker in active[shift:] + active[:shift]:
            message = worker.exchange("stop" if stop else "go")
            if message.get("done"):
                worker.final = message
                continue
            if message["segment"] != "idle":
                worker.samples.setdefault(message["segment"], []).append(Sample.of(message))
        active = [worker for worker in active if not worker.final]
        round_index += 1


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Stat:
    """Median, quartiles, minimum and the range of per-repeat medians of one quantity."""

    median: float
    p25: float
    p75: float
    min: float
    repeat_min: float
    repeat_max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[tuple[int, float]]) -> Stat:
        values = [value for _, value in samples]
        by_repeat: dict[int, list[float]] = {}
        for repeat, value in samples:
            by_repeat.setdefault(repeat, []).append(value)
        medians = [statistics.median(v) for v in by_repeat.values()]
        return cls(
            median=statistics.median(values),
            p25=quantile(values, 0.25),
            p75=quantile(values, 0.75),
            min=min(values),
            repeat_min=min(medians),
            repeat_max=max(medians),
            n=len(values),
        )

    def line(self, scale: float = 1000.0) -> str:
        def f(value: float) -> str:
            return f"{value * scale:.2f}" if value * scale < 10 else f"{value * scale:.1f}"

        return (
            f"{f(self.median):>9} [{f(self.p25)} .. {f(self.p75)}] min {f(self.min)}"
            f" (repeats {f(self.repeat_min)} .. {f(self.repeat_max)}) n={self.n}"
        )


def paired_ratios(ours: Worker, reference: Worker) -> list[float]:
    """Ratios of the k-th sampling step on each side (the two ran back to back)."""
    a = ours.samples.get("step", [])
    b = reference.samples.get("step", [])
    return [x.wall / y.wall for x, y in zip(a, b, strict=False) if y.wall > 0]


def max_pixel_difference(a: Path, b: Path) -> int:
    import numpy as np
    from PIL import Image

    first = np.asarray(Image.open(a).convert("RGB")).astype(np.int16)
    second = np.asarray(Image.open(b).convert("RGB")).astype(np.int16)
    if first.shape != second.shape:
        return -1
    return int(np.abs(first - second).max())


ROWS: tuple[tuple[str, str], ...] = (
    ("step", "time per sampling step (steps 2..N), wall"),
    ("step_unet", "  of which inside the UNet forward, wall"),
    ("step_outside_wall", "  outside the UNet (sampler, guidance, callbacks, previews), wall"),
    ("step_outside_cpu", "  outside the UNet, main-thread CPU time (insensitive to contention)"),
    ("first", "call start -> end of step 1 (prompt encoding, set-up, one step)"),
    ("finish", "end of step N -> return (VAE decode, to PIL; ours also writes the PNG)"),
    ("total", "whole generate call"),
    ("encode", "prompt encoding, positive + negative (component)"),
    ("decode", "VAE decode to a PIL image (component)"),
)


def finished_calls(workers: dict[str, Worker]) -> int:
    return min(len(w.samples.get("finish", [])) for w in workers.values())


def same_unet_estimate(mine: dict[str, Stat], reference: dict[str, Stat]) -> float:
    """Step-time ratio if both sides' UNet forwards cost the same (it is the same module).

    The reference's step plus our extra main-thread CPU time outside the UNet, over the
    reference's step; all from the fastest samples, which other load cannot make faster.
    """
    extra = mine["step_outside_cpu"].min - reference["step_outside_cpu"].min
    return (reference["step"].min + extra) / reference["step"].min


def typical_call(stats: dict[str, Stat], steps: int) -> float:
    """A whole call built from the segment medians: robust to a few steps hit by other load."""
    return stats["first"].median + (steps - 1) * stats["step"].median + stats["finish"].median


def report(
    args: argparse.Namespace,
    workers: dict[str, Worker],
    machine: dict[str, Any],
    wall: float,
) -> dict[str, Any]:
    """Print the results; return them as a JSON-able dict."""
    lines: list[str] = []
    out = lines.append
    ref = workers[REFERENCE]
    out(
        f"engine vs diffusers: {args.size}x{args.size}, {args.steps} steps, CFG {CFG} (UNet batch"
        f" 2), euler+simple vs Euler trailing, {finished_calls(workers)} of {args.repeats}"
        f" calls per side finished within the {args.budget:.0f} s budget, warm-up"
        f" {args.warmup_steps} steps"
    )
    out(
        f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']},"
        f" diffusers {machine['diffusers']}, {args.threads} torch threads per worker,"
        f" load average {machine['load_before']:.2f} -> {machine['load_after']:.2f},"
        f" run {wall:.0f} s"
    )
    out("")
    out("times in ms: median [p25 .. p75] min (range of per-repeat medians) n=samples")
    stats = {
        side: {key: Stat.of(values) for key, values in worker.series().items()}
        for side, worker in workers.items()
    }
    for key, title in ROWS:
        out(title)
        for side in workers:
            if key in stats[side]:
                out(f"  {side:<13}{stats[side][key].line()}")
    typical = {
        side: typical_call(stats[side], args.steps)
        for side in workers
        if all(key in stats[side] for key in ("first", "step", "finish"))
    }
    if len(typical) == len(workers):
        out("whole generate call from the medians: first + (steps - 1) x step + finish")
        for side, seconds in typical.items():
            out(f"  {side:<13}{seconds * 1000:9.1f}")
    out("")
    out("memory (MiB): RSS after load | peak while loading | peak while generating | ru_maxrss")
    for side, worker in workers.items():
        setup, final = worker.setup, worker.final
        generating = final["peak_kib"] if setup.get("peak_reset") else final["ru_maxrss_kib"]
        out(
            f"  {side:<13}{setup['rss_after_load_kib'] / 1024:6.0f} |"
            f" {setup['load_peak_kib'] / 1024:6.0f} | {generating / 1024:6.0f} |"
            f" {final['ru_maxrss_kib'] / 1024:6.0f}   (load {setup['load_seconds']:.2f} s,"
            f" {setup['threads']} threads)"
        )
    out("")
    out(
        f"ratios against {REFERENCE}, same run. Target: time per step <= {TARGET_RATIO}x, judged"
        " on the median of paired step ratios, or on the same-UNet estimate when the run is noisy:"
    )
    ratios: dict[str, dict[str, float]] = {}
    ref_stats = stats[REFERENCE]
    ref_step = ref_stats["step"]
    spread = (ref_step.p75 - ref_step.p25) / ref_step.median
    noisy = spread > NOISE_LIMIT
    if noisy:
        out(
            f"  (noisy run: the quartiles of {REFERENCE}' step time are {spread * 100:.0f}% of its"
            f" median, over {NOISE_LIMIT * 100:.0f}%; the verdicts use the same-UNet estimate)"
        )
    for side, worker in workers.items():
        if side == REFERENCE:
            continue
        mine = stats[side]
        paired = paired_ratios(worker, ref)
        extra = mine["step_outside_cpu"].median - ref_stats["step_outside_cpu"].median
        ratio = {
            "step_paired_median": statistics.median(paired),
            "step_paired_p25": quantile(paired, 0.25),
            "step_paired_p75": quantile(paired, 0.75),
            "step_medians": mine["step"].median / ref_stats["step"].median,
            "step_minimums": mine["step"].min / ref_stats["step"].min,
            "unet_minimums": mine["step_unet"].min / ref_stats["step_unet"].min,
            "extra_outside_cpu_ms": extra * 1000.0,
            "extra_outside_cpu_share": extra / ref_stats["step"].min,
            "same_unet_estimate": same_unet_estimate(mine, ref_stats),
        }
        if side in typical and REFERENCE in typical:
            ratio["total_from_medians"] = typical[side] / typical[REFERENCE]
        for key in ("total", "first", "finish", "encode", "decode"):
            if key in mine and key in ref_stats:
                ratio[key] = mine[key].median / ref_stats[key].median
        ratios[side] = ratio
        judged = ratio["same_unet_estimate"] if noisy else ratio["step_paired_median"]
        verdict = "met" if judged <= TARGET_RATIO else "NOT met"
        if args.quick:
            verdict += " (smoke run: too few samples to judge)"
        out(
            f"  {side}: time per step {ratio['step_paired_median']:.3f}"
            f" (paired; IQR {ratio['step_paired_p25']:.3f} .. {ratio['step_paired_p75']:.3f}),"
            f" same-UNet estimate {ratio['same_unet_estimate']:.3f} -> target {verdict}"
        )
        out(
            f"    ratio of medians {ratio['step_medians']:.3f}, of fastest steps"
            f" {ratio['step_minimums']:.3f}, of fastest UNet forwards {ratio['unet_minimums']:.3f}"
        )
        out(
            f"    extra CPU outside the UNet: {ratio['extra_outside_cpu_ms']:+.2f} ms per step"
            f" = {ratio['extra_outside_cpu_share'] * 100:+.2f}% of {REFERENCE}' fastest step"
        )
        others = ", ".join(
            f"{key} {ratio[key]:.3f}"
            for key in ("total", "total_from_medians", "first", "finish", "encode", "decode")
            if key in ratio
        )
        out(f"    {others}")
    out("")
    differences: dict[str, int] = {}
    reference_image = ref.final.get("image")
    for side, worker in workers.items():
        image = worker.final.get("image")
        if side == REFERENCE or not image or not reference_image:
            continue
        differences[side] = max_pixel_difference(Path(image), Path(reference_image))
        out(
            f"image check, last call: {side} vs {REFERENCE} max pixel difference"
            f" {differences[side]}/255"
        )
    print("\n".join(lines), flush=True)
    return {
        "settings": {
            "size": args.size,
            "steps": args.steps,
            "repeats": args.repeats,
            "warmup_steps": args.warmup_steps,
            "threads": args.threads,
            "cfg": CFG,
        },
        "machine": machine,
        "wall_seconds": wall,
        "stats": {side: {k: v.__dict__ for k, v in s.items()} for side, s in stats.items()},
        "ratios": ratios,
        "memory": {side: {"setup": w.setup, "final": w.final} for side, w in workers.items()},
        "max_pixel_difference": differences,
        "samples": {
            side: {seg: [x.__dict__ for x in v] for seg, v in w.samples.items()}
            for side, w in workers.items()
        },
    }


def run_parent(args: argparse.Namespace) -> int:
    import diffusers

    start = time.perf_counter()
    machine: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "load_before": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        workdir = Path(tmp)
        prepare(workdir)
        log_path = workdir / "workers.log"
        with log_path.open("w") as log:
            workers: dict[str, Worker] = {}
            try:
                for side in SIDES:
                    workers[side] = spawn(side, args, workdir, log)
                for side, worker in workers.items():  # set-up and warm-up, one at a time
                    print(f"setting up {side} ...", file=sys.stderr, flush=True)
                    worker.setup = worker.exchange()
                print("measuring (interleaved) ...", file=sys.stderr, flush=True)
                interleave(list(workers.values()), start + args.budget)
                for worker in workers.values():
                    worker.process.wait(timeout=60)
            except Exception:
                log.flush()
                print(log_path.read_text()[-4000:], file=sys.stderr)
                raise
            finally:
                for worker in workers.values():
                    if worker.process.poll() is None:
                        worker.process.kill()
            machine["load_after"] = os.getloadavg()[0]
            results = report(args, workers, machine, time.perf_counter() - start)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time per sampling step of our engine against diffusers' SDXL pipeline."
    )
    parser.add_argument("--size", type=int, help="image width and height (512; quick: 128)")
    parser.add_argument("--steps", type=int, help="sampling steps (20; quick: 4)")
    parser.add_argument("--repeats", type=int, help="measured calls per side (3; quick: 1)")
    parser.add_argument(
        "--warmup-steps", type=int, help="steps of the untimed warm-up call per side (2; quick: 1)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker (2)")
    parser.add_argument(
        "--budget",
        type=float,
        default=270.0,
        help="seconds for the whole run; measuring stops when they are spent (270)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: smaller defaults (128x128, 4 steps, 1 repeat, 1 warm-up step)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write all results and samples here")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.size % 8 or args.size < 64:
        parser.error("--size must be a multiple of 8, at least 64")
    if args.steps < 2 or args.repeats < 1 or args.warmup_steps < 1 or args.threads < 1:
        parser.error("--steps >= 2, --repeats >= 1, --warmup-steps >= 1, --threads >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_worker(
            WorkerArgs(
                side=args.worker,
                workdir=args.workdir,
                size=args.size,
                steps=args.steps,
                warmup_steps=args.warmup_steps,
                repeats=args.repeats,
                threads=args.threads,
            )
        )
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
