"""Time per sampling step: our engine against diffusers' StableDiffusionXLPipeline, in one run.

Both sides run the same tiny SDXL checkpoint (``write_tiny_checkpoint(seed=0)``) with the settings
of ``tests/test_engine_fidelity.py``, so they do the same math: Fooocus' extras neutral
(sharpness 0, adaptive CFG above the CFG scale, ADM scalers 1.0, no styles), a non-empty
negative prompt (CFG, UNet batch 2), our ``euler`` + ``simple`` against diffusers' Euler with
"trailing" spacing, and the same initial noise (``torch.manual_seed(seed)`` + CPU ``randn``).

Each configuration runs in its own worker process (so peak RSS is per side):

* ``diffusers``: ``StableDiffusionXLPipeline.from_single_file`` + ``pipe(...)``;
* ``ours``: ``Engine.generate`` with ``disable_preview=True``;
* ``ours+preview``: ``Engine.generate`` with previews on (the default).

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
from typing import IO, Any, TextIO

REPO_ROOT = Path(__file__).resolve().parents[1]

PROMPT = "a red circle on a blue background"
NEGATIVE = "blurry, low quality"
SEED = 1234
CFG = 5.0
CHECKPOINT_NAME = "tiny.safetensors"

SIDES: tuple[str, ...] = ("diffusers", "ours", "ours+preview")
REFERENCE = "diffusers"
TARGET_RATIO = 1.05
#: Sides that also time prompt encoding and VAE decode on their own.
COMPONENT_SIDES: frozenset[str] = frozenset({"diffusers", "ours"})


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


class Gate:
    """Segment timing and hand-over: ``mark`` reports the segment just run, then waits for "go".

    Inactive during set-up and warm-up (``mark`` does nothing then).
    """

    def __init__(self, commands: TextIO, replies: IO[str]) -> None:
        self.commands = commands
        self.replies = replies
        self.active = False
        self.repeat = 0
        self._start = 0.0

    def send(self, message: dict[str, Any]) -> None:
        self.replies.write(json.dumps(message) + "\n")
        self.replies.flush()

    def wait(self) -> None:
        line = self.commands.readline()
        if line.strip() != "go":
            raise SystemExit(f"worker: expected 'go', got {line!r}")
        self._start = time.perf_counter()

    def mark(self, segment: str) -> None:
        if not self.active:
            return
        elapsed = time.perf_counter() - self._start
        self.send({"segment": segment, "seconds": elapsed, "repeat": self.repeat})
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

    def load(self) -> None:
        raise NotImplementedError

    def call(self, call: int, steps: int, gate: Gate) -> Path | None:
        """One full generate call; ``gate.mark`` after every step and at the end."""
        raise NotImplementedError

    def encode(self, call: int) -> None:
        raise NotImplementedError

    def decode(self) -> None:
        raise NotImplementedError


class OursSide(Side):
    def __init__(self, args: WorkerArgs, preview: bool) -> None:
        self.args = args
        self.preview = preview
        self.engine: Any = None
        self.encoder: Any = None
        self.vae: Any = None

    def load(self) -> None:
        from fooocus_core.config import EngineConfig
        from fooocus_core.engine import Engine
        from fooocus_core.prompts.encode import PromptEncoder
        from fooocus_core.prompts.tokenize import PromptTokenizer

        workdir = self.args.workdir
        self.engine = Engine(
            EngineConfig(
                models_dir=str(workdir / "models"),
                output_dir=str(workdir / f"outputs-{self.args.side}"),
                device="cpu",
            )
        )
        # The engine loads on the first generate; the bench loads up front (same cached
        # ModelManager entry the engine then uses) so that loading is timed on its own.
        models = self.engine._models.get_base(CHECKPOINT_NAME)
        tokenizer = PromptTokenizer.from_dir(self.engine.config.config_path / "clip_tokenizer")
        self.encoder = PromptEncoder(tokenizer, models.text_encoder, models.text_encoder_2)
        self.vae = models.vae

    def task(self, call: int, steps: int) -> Any:
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
            disable_preview=not self.preview,
        )

    def call(self, call: int, steps: int, gate: Gate) -> Path | None:
        from fooocus_core.task import Progress

        seen = 0

        def on_progress(progress: Progress) -> None:
            nonlocal seen
            if progress.step > 0:
                gate.mark("first" if seen == 0 else "step")
                seen += 1

        result = self.engine.generate(self.task(call, steps), on_progress=on_progress)
        gate.mark("finish")
        return Path(result.images[0].path)

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
        self.pipe: Any = None

    def load(self) -> None:
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
        self.pipe = pipe

    def latents(self) -> Any:
        """Fooocus' noise, pre-scaled as in the fidelity test (Euler's ``init_noise_sigma``)."""
        import math

        import torch

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

    def call(self, call: int, steps: int, gate: Gate) -> Path | None:
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
        # Saved outside the timed segments, only for the image check.
        path = self.args.workdir / f"diffusers-{call}.png"
        image.save(path)
        return path

    def encode(self, call: int) -> None:
        import torch

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
        import torch

        vae = self.pipe.vae
        latent = decode_latent(self.args.size) / vae.config.scaling_factor
        with torch.inference_mode():
            pixels = vae.decode(latent, return_dict=False)[0]
        self.pipe.image_processor.postprocess(pixels, output_type="pil")


def decode_latent(size: int) -> Any:
    """The latent both sides decode in the VAE component (sampler space, seeded)."""
    import torch

    generator = torch.Generator("cpu").manual_seed(SEED + 1)
    return torch.randn((1, 4, size // 8, size // 8), generator=generator)


def run_worker(args: WorkerArgs) -> None:
    """Worker process: set up on the first "go", then one segment per "go"."""
    # Protocol on a private copy of stdout; anything else printed goes to stderr.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    gate = Gate(sys.stdin, replies)

    import torch

    torch.set_num_threads(args.threads)
    side: Side = (
        DiffusersSide(args)
        if args.side == "diffusers"
        else OursSide(args, preview=args.side == "ours+preview")
    )
    components = args.side in COMPONENT_SIDES

    gate.wait()  # set-up is serialised by the parent too
    rss_before_load = status_kib("VmRSS")
    start = time.perf_counter()
    side.load()
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
    gate.wait()
    image: Path | None = None
    for repeat in range(args.repeats):
        gate.repeat = repeat
        image = side.call(call, args.steps, gate)
        if components:
            side.encode(call + 1)
            gate.mark("encode")
            side.decode()
            gate.mark("decode")
        call += 2
    gate.send(
        {
            "done": True,
            "image": str(image) if image else None,
            "peak_kib": status_kib("VmHWM"),
            "rss_kib": status_kib("VmRSS"),
            "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
    )


# --- parent -----------------------------------------------------------------------------------


@dataclass
class Worker:
    side: str
    process: subprocess.Popen[str]
    samples: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)

    def exchange(self) -> dict[str, Any]:
        """Let the worker run one segment; its report."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.side!r} exited (code {self.process.wait()})")
        return dict(json.loads(line))


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
    """The tiny checkpoint (seed 0) and the diffusers config folder, shared by the workers."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests.oracle import diffusers_config_dir

    from fooocus_core.models.tiny import write_tiny_checkpoint

    checkpoints = workdir / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    write_tiny_checkpoint(checkpoints / CHECKPOINT_NAME, seed=0)
    diffusers_config_dir(workdir / "diffusers-config")


def interleave(workers: list[Worker]) -> None:
    """Run every worker's segments, one segment each per round, rotating the order."""
    active = list(workers)
    round_index = 0
    while active:
        shift = round_index % len(active)
        for worker in active[shift:] + active[:shift]:
            message = worker.exchange()
            if message.get("done"):
                worker.final = message
                continue
            worker.samples.setdefault(message["segment"], []).append(
                (int(message["repeat"]), float(message["seconds"]))
            )
        active = [worker for worker in active if not worker.final]
        round_index += 1


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Stat:
    """Median, quartiles and the range of per-repeat medians of one measured quantity."""

    median: float
    p25: float
    p75: float
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
            repeat_min=min(medians),
            repeat_max=max(medians),
            n=len(values),
        )

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def call_totals(worker: Worker) -> list[tuple[int, float]]:
    """Whole-call time per repeat: first segment + steps + finish."""
    totals: dict[int, float] = {}
    for segment in ("first", "step", "finish"):
        for repeat, seconds in worker.samples.get(segment, []):
            totals[repeat] = totals.get(repeat, 0.0) + seconds
    return sorted(totals.items())


def paired_ratios(ours: Worker, reference: Worker, segment: str) -> list[float]:
    """Ratios of the k-th sample of ``segment`` on each side (run back to back)."""
    a = ours.samples.get(segment, [])
    b = reference.samples.get(segment, [])
    return [x / y for (_, x), (_, y) in zip(a, b, strict=False) if y > 0]


def max_pixel_difference(a: Path, b: Path) -> int:
    import numpy as np
    from PIL import Image

    first = np.asarray(Image.open(a).convert("RGB")).astype(np.int16)
    second = np.asarray(Image.open(b).convert("RGB")).astype(np.int16)
    if first.shape != second.shape:
        return -1
    return int(np.abs(first - second).max())


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:9.1f}"


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
        f" 2), euler+simple vs Euler trailing, {args.repeats} repeats, warm-up"
        f" {args.warmup_steps} steps"
    )
    out(
        f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']},"
        f" diffusers {machine['diffusers']}, {args.threads} torch threads per worker,"
        f" load average {machine['load_before']:.2f} -> {machine['load_after']:.2f},"
        f" run {wall:.0f} s"
    )
    out("")
    out("times in ms: median [p25 .. p75] (range of per-repeat medians) n=samples")
    rows: list[tuple[str, str]] = [
        ("step", "per sampling step (steps 2..N)"),
        ("first", "call start -> step 1 (prompts, set-up, 1 step)"),
        ("finish", "step N -> return (VAE decode, image; ours: PNG)"),
        ("total", "whole generate call"),
        ("encode", "prompt encoding, pos+neg (component)"),
        ("decode", "VAE decode to PIL (component)"),
    ]
    stats: dict[str, dict[str, Stat]] = {}
    for side, worker in workers.items():
        samples = dict(worker.samples)
        samples["total"] = call_totals(worker)
        stats[side] = {key: Stat.of(values) for key, values in samples.items() if values}
    for key, title in rows:
        out(f"{title}")
        for side in workers:
            s = stats[side].get(key)
            if s is None:
                continue
            out(
                f"  {side:<13}{fmt(s.median)} [{fmt(s.p25).strip()} .. {fmt(s.p75).strip()}]"
                f" ({fmt(s.repeat_min).strip()} .. {fmt(s.repeat_max).strip()}) n={s.n}"
            )
    out("")
    out("memory (MiB): RSS after load / peak while loading / peak while generating / ru_maxrss")
    for side, worker in workers.items():
        setup, final = worker.setup, worker.final
        generating = final["peak_kib"] if setup.get("peak_reset") else final["ru_maxrss_kib"]
        out(
            f"  {side:<13}{setup['rss_after_load_kib'] / 1024:8.0f}"
            f" {setup['load_peak_kib'] / 1024:8.0f} {generating / 1024:8.0f}"
            f" {final['ru_maxrss_kib'] / 1024:8.0f}   (load {setup['load_seconds']:.2f} s)"
        )
    out("")
    out(f"ratios against {REFERENCE} (same run; target for time per step <= {TARGET_RATIO}):")
    ratios: dict[str, dict[str, float]] = {}
    for side, worker in workers.items():
        if side == REFERENCE:
            continue
        step_ratio = stats[side]["step"].median / stats[REFERENCE]["step"].median
        paired = paired_ratios(worker, ref, "step")
        total_ratio = stats[side]["total"].median / stats[REFERENCE]["total"].median
        verdict = "met" if step_ratio <= TARGET_RATIO else "NOT met"
        ratios[side] = {
            "step": step_ratio,
            "step_paired_median": statistics.median(paired),
            "step_paired_p25": quantile(paired, 0.25),
            "step_paired_p75": quantile(paired, 0.75),
            "total": total_ratio,
        }
        out(
            f"  {side:<13}time per step {step_ratio:.3f} (paired step ratios: median"
            f" {statistics.median(paired):.3f}, IQR {quantile(paired, 0.25):.3f} .."
            f" {quantile(paired, 0.75):.3f})  whole call {total_ratio:.3f}  -> target {verdict}"
        )
        for key in ("encode", "decode"):
            if key in stats[side] and key in stats[REFERENCE]:
                ratio = stats[side][key].median / stats[REFERENCE][key].median
                ratios[side][key] = ratio
                out(f"  {'':<13}{key} {ratio:.3f}")
    out("")
    differences: dict[str, int] = {}
    reference_image = ref.final.get("image")
    for side, worker in workers.items():
        image = worker.final.get("image")
        if side == REFERENCE or not image or not reference_image:
            continue
        differences[side] = max_pixel_difference(Path(image), Path(reference_image))
        out(
            f"image check: {side} vs {REFERENCE}, last call, max pixel difference"
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
        "stats": {side: {k: v.as_dict() for k, v in s.items()} for side, s in stats.items()},
        "ratios": ratios,
        "memory": {side: {"setup": w.setup, "final": w.final} for side, w in workers.items()},
        "max_pixel_difference": differences,
        "samples": {side: w.samples for side, w in workers.items()},
    }


def run_parent(args: argparse.Namespace) -> int:
    import diffusers
    import torch

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
                interleave(list(workers.values()))
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
    parser.add_argument("--size", type=int, default=512, help="image width and height (512)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (20)")
    parser.add_argument("--repeats", type=int, default=3, help="measured calls per side (3)")
    parser.add_argument(
        "--warmup-steps", type=int, default=2, help="steps of the warm-up call per side (2)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker (2)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 128x128, 4 steps, 1 repeat, 1 warm-up"
    )
    parser.add_argument("--json", metavar="PATH", help="also write all results and samples here")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.steps, args.repeats, args.warmup_steps = 128, 4, 1, 1
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
