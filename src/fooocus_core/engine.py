"""The engine's public entry point: one object, built from a config, that turns tasks into images.

The API (or any other caller) uses only :class:`Engine`: :meth:`Engine.generate` plus the
listings. Generation runs synchronously in the caller's thread (the service's GPU thread).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fooocus_core.config import EngineConfig
from fooocus_core.downloads import (
    PresetDownloads,
)
from fooocus_core.errors import InvalidTask
from fooocus_core.metadata import ImageParameters, LoraInfo, render_metadata
from fooocus_core.model_files import ModelFiles
from fooocus_core.models.checkpoint import (
    CheckpointError,
    CheckpointKind,
    UnsupportedCheckpoint,
)
from fooocus_core.models.folders import ModelFileMissing, list_models
from fooocus_core.models.loader import SDXLModels
from fooocus_core.models.lora import LoraFile, LoraPatchers
from fooocus_core.models.lora_keys import LoraError
from fooocus_core.models.manager import ModelManager
from fooocus_core.models.safety import SafetyChecker, SafetyCheckerMissing, find_safety_checker
from fooocus_core.models.vae_approx import SDXL_VAE_APPROX_FILE, load_vae_approx
from fooocus_core.outputs import sanitize_save_name, save_image
from fooocus_core.pipeline.cancel import CancelToken, Interrupted
from fooocus_core.pipeline.freeu import FreeUParams
from fooocus_core.pipeline.generate import ImageJob, decode, sample_latent
from fooocus_core.pipeline.guidance import is_unit_cfg
from fooocus_core.pipeline.loras import select_loras
from fooocus_core.pipeline.performance import (
    apply_performance,
    performance_lora,
    performance_mode,
)
from fooocus_core.pipeline.plan import SamplingPlan, make_plan
from fooocus_core.pipeline.preview import Previewer
from fooocus_core.pipeline.refiner import SWAP_METHODS, Refiner, RefinerMismatch
from fooocus_core.presets import Preset, list_presets, load_preset
from fooocus_core.prompts.encode import PromptEncoder
from fooocus_core.prompts.expansion import ExpansionUnavailable, PromptExpander
from fooocus_core.prompts.styles import StyleLibrary
from fooocus_core.prompts.tokenize import PromptTokenizer
from fooocus_core.prompts.wildcards import WildcardLibrary
from fooocus_core.prompts.workloads import (
    ParsedPrompt,
    PromptWorkloads,
    build_workloads,
    parse_prompt,
    with_expansion,
)
from fooocus_core.sampling.samplers import SAMPLER_NAMES
from fooocus_core.sampling.schedules import SCHEDULER_NAMES, DiscreteSchedule
from fooocus_core.task import GeneratedImage, GenerationResult, GenerationTask, LoraSpec, Progress

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]

#: Share of the progress bar used before sampling starts (loading, prompts).
_PREPARATION_PERCENT = 5
DEFAULT_VAE = "Default (model)"
NO_REFINER = "None"


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sampling_percent(done_steps: int, total_steps: int) -> int:
    """Progress after ``done_steps`` of all sampling steps (below 100 until the task ends)."""
    span = 100 - _PREPARATION_PERCENT
    return min(99, _PREPARATION_PERCENT + span * done_steps // max(1, total_steps))


class Engine:
    """Loads models on demand and generates images for :class:`GenerationTask` objects."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.schedule = DiscreteSchedule()
        self._models = ModelManager(config, self.device)
        self.files = ModelFiles(config)
        self._styles: StyleLibrary | None = None
        self._wildcards: WildcardLibrary | None = None
        self._tokenizer: PromptTokenizer | None = None
        self._encoder: PromptEncoder | None = None
        self._encoder_owner: object | None = None
        self._previewer: Previewer | None = None
        self._patchers = LoraPatchers()
        self._expander: PromptExpander | None = None
        self._safety: SafetyChecker | None = None

    # --- listings ---------------------------------------------------------------------------

    def list_models(self, *, builtin: bool = True) -> list[str]:
        """Checkpoint file names under the checkpoints folder, then the built-in starter model
        (unless ``builtin`` is false, or a file of its name is in the folder)."""
        return list_models(self.config, "checkpoints", builtin=builtin)

    def fetch_problem(self, kind: str, name: str, timeout: float = 5.0) -> str | None:
        """Why a model file can be neither used nor downloaded now (None: it is installed, or
        the URL a preset names for it answers within ``timeout`` seconds)."""
        return self.files.fetch_problem(kind, name, timeout)

    def list_loras(self) -> list[str]:
        """LoRA file names under the loras folder."""
        return list_models(self.config, "loras")

    def list_vaes(self) -> list[str]:
        """VAE file names under the vae folder."""
        return list_models(self.config, "vae")

    def list_styles(self) -> list[str]:
        """Style names in Fooocus' order, with the "Fooocus V2" and "Random Style" choices."""
        return self.styles.legal_names()

    def list_presets(self) -> list[str]:
        """Names of the presets in the config folder."""
        return list_presets(self.config)

    def preset(self, name: str | None = None) -> Preset:
        """A preset merged over ``default`` (the configured global preset when no name)."""
        return load_preset(self.config, name or self.config.preset)

    @property
    def styles(self) -> StyleLibrary:
        if self._styles is None:
            self._styles = StyleLibrary.from_dirs(
                self.config.config_path / "styles", self.config.user_styles_dir
            )
        return self._styles

    @property
    def wildcards(self) -> WildcardLibrary:
        if self._wildcards is None:
            dirs = [self.config.config_path / "wildcards"]
            if self.config.wildcards_dir:
                dirs.append(Path(self.config.wildcards_dir))
            self._wildcards = WildcardLibrary(dirs)
        return self._wildcards

    # --- validation -------------------------------------------------------------------------

    def validate(self, task: GenerationTask) -> None:
        """Raise :class:`InvalidTask` naming the field if ``task`` cannot run here."""
        mode = performance_mode(task)
        task = apply_performance(task)
        if task.sampler not in SAMPLER_NAMES:
            raise InvalidTask(
                "sampler", f"unknown sampler {task.sampler!r}; valid: {', '.join(SAMPLER_NAMES)}"
            )
        if task.scheduler not in SCHEDULER_NAMES:
            raise InvalidTask(
                "scheduler",
                f"unknown scheduler {task.scheduler!r}; valid: {', '.join(SCHEDULER_NAMES)}",
            )
        try:
            self.styles.validate(task.styles)
        except ValueError as exc:
            raise InvalidTask("styles", str(exc)) from None
        self.files.check("base_model", "checkpoints", task.base_model)
        if task.vae != DEFAULT_VAE:
            self.files.check("vae", "vae", task.vae)
        if task.refiner_swap_method not in SWAP_METHODS:
            raise InvalidTask(
                "refiner_swap_method",
                f"unknown swap method {task.refiner_swap_method!r}; "
                f"valid: {', '.join(SWAP_METHODS)}",
            )
        refiner = self._refiner_name(task)
        if refiner is not None:
            self._check_refiner_file(refiner)
        for index, lora in enumerate(task.loras):
            if lora.enabled and lora.model_name != "None":
                self.files.check(f"loras[{index}].model_name", "loras", lora.model_name)
        if mode is not None:
            self.files.check("performance", "loras", mode.lora)
        if task.black_out_nsfw:
            try:
                find_safety_checker(self.config.folder("safety_checker"))
            except SafetyCheckerMissing as exc:
                raise InvalidTask("black_out_nsfw", str(exc)) from None
        checks = (
            ("image_number", 1 <= task.image_number <= 32, "must be between 1 and 32"),
            ("guidance_scale", 1.0 <= task.guidance_scale <= 30.0, "must be between 1 and 30"),
            ("sharpness", 0.0 <= task.sharpness <= 30.0, "must be between 0 and 30"),
            ("clip_skip", 1 <= task.clip_skip <= 12, "must be between 1 and 12"),
            ("adaptive_cfg", 1.0 <= task.adaptive_cfg <= 30.0, "must be between 1 and 30"),
        )
        for field, ok, message in checks:
            if not ok:
                raise InvalidTask(field, message)
        if task.save_name is not None:
            try:
                sanitize_save_name(task.save_name)
            except ValueError as exc:
                raise InvalidTask("save_name", str(exc)) from None
        make_plan(task)

    def _refiner_name(self, task: GenerationTask) -> str | None:
        """The refiner file name, or None when off: "None", or the base model's own file."""
        name = task.refiner_model
        if not name or name == NO_REFINER or name == task.base_model:
            return None
        try:
            base = self.files.path("checkpoints", task.base_model)
            refiner = self.files.path("checkpoints", name)
        except (ModelFileMissing, ValueError):
            return name
        return None if os.path.samefile(base, refiner) else name

    def _check_refiner_file(self, name: str) -> None:
        """The refiner must exist (or be downloadable) and be an SDXL refiner or SDXL base."""
        self.files.check("refiner_model", "checkpoints", name)
        try:
            path = self.files.path("checkpoints", name)
        except ModelFileMissing:
            return  # a preset's download; checked when loaded
        try:
            kind = self.files.checkpoint_kind(path)
        except CheckpointError as exc:
            raise InvalidTask("refiner_model", str(exc)) from None
        _refuse_refiner_kind(name, kind)

    def prepare_preset(
        self, name: str | None = None, on_progress: ProgressCallback | None = None
    ) -> PresetDownloads:
        """Download the files a preset names (unless downloads are disabled); say what happened.

        With downloads disabled the missing files are listed in the result, not raised.
        """
        return self.files.fetch_preset(self.preset(name), on_progress)

    # --- generation -------------------------------------------------------------------------

    def load(self, base_model: str, vae: str = DEFAULT_VAE) -> None:
        """Load (or keep) a base model now, e.g. at start-up, fetching it if a preset names it."""
        self.files.check("base_model", "checkpoints", base_model)
        self.files.fetch_if_missing("checkpoints", base_model)
        if vae != DEFAULT_VAE:
            self.files.check("vae", "vae", vae)
            self.files.fetch_if_missing("vae", vae)
        self._encoder_for(self._models.get_base(base_model, vae))

    def generate(
        self,
        task: GenerationTask,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult:
        """Generate and save ``task.image_number`` images; stop/skip through ``cancel``."""
        self.validate(task)
        extra_lora = performance_lora(task)
        task = apply_performance(task)
        report = on_progress or (lambda _progress: None)
        cancel = cancel or CancelToken()
        plan = make_plan(task, random.Random())
        messages: list[str] = []

        report(Progress(percent=1, message="Loading models ..."))
        total_steps = plan.steps * len(plan.seeds)
        self.files.fetch_if_missing("checkpoints", task.base_model, report)
        if task.vae != DEFAULT_VAE:
            self.files.fetch_if_missing("vae", task.vae, report)
        models = self._models.get_base(task.base_model, task.vae)
        refiner = self._load_refiner(task, models, report)
        encoder = self._encoder_for(models)
        styles = self.styles.validate(task.styles)
        parsed = parse_prompt(task.prompt, task.negative_prompt, styles)
        loras, notes = self._apply_loras(task, parsed, extra_lora, models, refiner, encoder, report)
        messages += notes
        run = _Run(task, plan, models, refiner, encoder, loras, report, cancel, messages)
        expander = self._expander_for(parsed, models, messages)
        if task.black_out_nsfw and self._safety is None:
            self._safety = SafetyChecker.from_config(self.config, self.device)

        images: list[GeneratedImage] = []
        stopped = False
        count = len(plan.seeds)
        for index, seed in enumerate(plan.seeds):
            report(
                Progress(
                    percent=sampling_percent(index * plan.steps, total_steps),
                    message=f"Preparing task {index + 1}/{count} ...",
                )
            )
            workloads = build_workloads(
                parsed, seed, index, task.read_wildcards_in_order, self.styles, self.wildcards
            )
            if expander is not None:
                report(Progress(percent=3, message="Preparing Fooocus text ..."))
                workloads = with_expansion(workloads, expander(workloads.task_prompt, seed))
            try:
                image = self._one_image(run, workloads, index)
            except Interrupted as interrupt:
                if interrupt.stop:
                    stopped = True
                    break
                messages.append(f"Image {index + 1}/{count} skipped.")
                continue
            images.append(image)
        report(Progress(percent=100, message="Finished"))
        return GenerationResult(images=images, stopped=stopped, messages=messages)

    @property
    def previewer(self) -> Previewer:
        """Preview maker: the VAE-approx net if its file is in vae_approx, else a linear map."""
        if self._previewer is None:
            path = self.config.folder("vae_approx") / SDXL_VAE_APPROX_FILE
            approx = load_vae_approx(path, self.device) if path.is_file() else None
            self._previewer = Previewer(approx)
        return self._previewer

    def _apply_loras(
        self,
        task: GenerationTask,
        parsed: ParsedPrompt,
        extra: LoraSpec | None,
        models: SDXLModels,
        refiner: Refiner | None,
        encoder: PromptEncoder,
        report: ProgressCallback,
    ) -> tuple[list[LoraSpec], list[str]]:
        """Patch the task's LoRAs into the base (and refiner) weights, or restore the plain ones
        when it has none; returns the LoRAs applied and notes for the user.
        """
        chosen, notes = select_loras(task.loras, parsed.loras, self.list_loras(), extra)
        files: list[tuple[LoraFile, float]] = []
        for lora in chosen:
            self.files.fetch_if_missing("loras", lora.model_name, report)
            path = self.files.path("loras", lora.model_name)
            files.append((LoraFile.from_path(path, lora.model_name), lora.weight))
        try:
            update = self._patchers.for_models(models).set_loras(models, files)
            if refiner is not None:
                notes += self._patchers.for_models(refiner).set_loras(refiner, files).messages
        except LoraError as exc:
            raise InvalidTask("loras", str(exc)) from None
        if update.text_encoders_changed:
            encoder.clear_cache()
        return chosen, notes + update.messages

    def _expander_for(
        self, parsed: ParsedPrompt, models: SDXLModels, messages: list[str]
    ) -> PromptExpander | None:
        """The Fooocus V2 expander when the task asks for it and its files are installed."""
        if not parsed.use_expansion:
            return None
        if self._expander is None:
            try:
                device = models.text_encoder.device
                self._expander = PromptExpander.from_config(self.config, device)
            except (ExpansionUnavailable, CheckpointError) as exc:
                messages.append(f"Fooocus V2 skipped: {exc}")
                return None
        return self._expander

    def _load_refiner(
        self, task: GenerationTask, models: SDXLModels, report: ProgressCallback
    ) -> Refiner | None:
        """Load (or keep) the task's refiner, conditioned through the base model's encoders;
        free a cached one when the task has none.
        """
        name = self._refiner_name(task)
        if name is None:
            self._models.unload_refiner()
            return None
        self.files.fetch_if_missing("checkpoints", name, report)
        try:
            loaded = self._models.get_refiner(name)
        except UnsupportedCheckpoint as exc:
            _refuse_refiner_kind(name, exc.kind)
            raise
        except CheckpointError as exc:
            raise InvalidTask("refiner_model", f"{exc}{_REFINER_HINT}") from None
        _refuse_refiner_kind(name, loaded.kind)
        clip_l, clip_g = models.text_encoder.config, models.text_encoder_2.config
        refiner = Refiner.of_kind(loaded.unet, loaded.kind, int(clip_g.hidden_size))
        try:
            refiner.check_fits(
                int(clip_l.hidden_size) + int(clip_g.hidden_size), int(clip_g.projection_dim)
            )
        except RefinerMismatch as exc:
            raise InvalidTask("refiner_model", f"{name!r}: {exc}") from None
        return refiner

    def _encoder_for(self, models: object) -> PromptEncoder:
        if self._encoder is None or self._encoder_owner is not models:
            if self._tokenizer is None:
                self._tokenizer = PromptTokenizer.from_dir(
                    self.config.config_path / "clip_tokenizer",
                    embeddings_dir=self.config.folder("embeddings"),
                )
            self._encoder = PromptEncoder(
                self._tokenizer, models.text_encoder, models.text_encoder_2
            )
            self._encoder_owner = models
        return self._encoder

    def _one_image(self, run: _Run, workloads: PromptWorkloads, index: int) -> GeneratedImage:
        task, plan, models, encoder = run.task, run.plan, run.models, run.encoder
        report, cancel, messages = run.report, run.cancel, run.messages
        seed = plan.seeds[index]
        count = len(plan.seeds)
        positive = encoder.encode(workloads.positive, workloads.positive_top_k, task.clip_skip)
        negative = None
        if not is_unit_cfg(task.guidance_scale):
            negative = encoder.encode(workloads.negative, workloads.negative_top_k, task.clip_skip)
        for cond in (positive, negative):
            for warning in cond.warnings if cond is not None else ():
                if warning not in messages:
                    messages.append(warning)
        job = ImageJob(
            seed=seed,
            width=plan.width,
            height=plan.height,
            steps=plan.steps,
            sampler=task.sampler,
            scheduler=task.scheduler,
            cfg=task.guidance_scale,
            adaptive_cfg=task.adaptive_cfg,
            sharpness=task.sharpness,
            adm_scaler_positive=task.adm_scaler_positive,
            adm_scaler_negative=task.adm_scaler_negative,
            adm_scaler_end=task.adm_scaler_end,
            switch=plan.switch,
            refiner_swap_method=task.refiner_swap_method,
            freeu=_freeu_params(task),
        )
        total_steps = plan.steps * count

        def on_step(step: int, steps: int, denoised: torch.Tensor) -> None:
            cancel.check()
            hidden = task.disable_preview or task.black_out_nsfw
            preview = None if hidden else self.previewer(denoised)
            report(
                Progress(
                    percent=sampling_percent(index * steps + step + 1, total_steps),
                    message=f"Sampling step {step + 1}/{steps}, image {index + 1}/{count} ...",
                    preview=preview,
                    step=step + 1,
                    total_steps=steps,
                    image_index=index,
                    image_count=count,
                )
            )

        latent = sample_latent(
            models.unet, self.schedule, positive, negative, job, on_step, refiner=run.refiner
        )
        cancel.check()
        image = decode(models.vae, latent)
        if task.black_out_nsfw and self._safety is not None:
            image = self._safety.censor([image])[0]
        report(
            Progress(
                percent=sampling_percent((index + 1) * plan.steps, total_steps),
                message=f"Saving image {index + 1}/{count} ...",
            )
        )
        params = self._image_parameters(run, workloads, seed)
        path = save_image(
            image,
            self.config.output_dir,
            task.output_format,
            render_metadata(params) if task.save_metadata_to_images else None,
            task.metadata_scheme,
            save_name=task.save_name,
            index=index,
        )
        return GeneratedImage(
            path=str(path),
            seed=seed,
            width=image.width,
            height=image.height,
            metadata=params.to_fooocus_dict(),
        )

    def _image_parameters(
        self, run: _Run, workloads: PromptWorkloads, seed: int
    ) -> ImageParameters:
        task, plan = run.task, run.plan
        base_hash = refiner_hash = ""
        loras = [LoraInfo(lora.model_name, lora.weight) for lora in run.loras]
        refiner = self._refiner_name(task)
        if task.save_metadata_to_images:
            base_hash = self.files.short_hash("checkpoints", task.base_model)
            if refiner is not None:
                refiner_hash = self.files.short_hash("checkpoints", refiner)
            loras = [
                LoraInfo(info.name, info.weight, self.files.short_hash("loras", info.name))
                for info in loras
            ]
        freeu = _freeu_params(task)
        return ImageParameters(
            prompt=workloads.log_positive_prompt,
            negative_prompt=workloads.log_negative_prompt,
            prompt_expansion=workloads.expansion,
            styles=task.styles,
            performance=task.performance,
            steps=plan.steps,
            width=plan.width,
            height=plan.height,
            guidance_scale=task.guidance_scale,
            sharpness=task.sharpness,
            adm_guidance=(task.adm_scaler_positive, task.adm_scaler_negative, task.adm_scaler_end),
            base_model=task.base_model,
            base_model_hash=base_hash,
            refiner_model=refiner or NO_REFINER,
            refiner_model_hash=refiner_hash,
            refiner_switch=task.refiner_switch,
            overwrite_switch=task.overwrite_switch,
            refiner_swap_method=task.refiner_swap_method,
            freeu=freeu.as_tuple() if freeu is not None else None,
            sampler=task.sampler,
            scheduler=task.scheduler,
            vae=task.vae,
            seed=seed,
            full_prompt=list(workloads.positive),
            full_negative_prompt=list(workloads.negative),
            clip_skip=task.clip_skip,
            adaptive_cfg=task.adaptive_cfg,
            metadata_scheme=task.metadata_scheme,
            loras=loras,
        )


@dataclass
class _Run:
    """One task's state while it generates."""

    task: GenerationTask
    plan: SamplingPlan
    models: SDXLModels
    refiner: Refiner | None
    encoder: PromptEncoder
    loras: list[LoraSpec]
    report: ProgressCallback
    cancel: CancelToken
    messages: list[str]


_REFINER_HINT = "; use an SDXL refiner or an SDXL base model as refiner, or 'None'"


def _refuse_refiner_kind(name: str, kind: CheckpointKind) -> None:
    """InvalidTask unless ``kind`` can refine an SDXL base here (SDXL refiner or SDXL base)."""
    if kind in (CheckpointKind.SDXL_REFINER, CheckpointKind.SDXL_BASE):
        return
    if kind in (CheckpointKind.SD15, CheckpointKind.SD2):
        reason = "SD 1.5 / SD 2 refiners are not supported"
    elif kind is CheckpointKind.PLAYGROUND_V25:
        reason = "Playground v2.5 models (EDM schedule, own latent scale) cannot refine here"
    else:
        reason = "it cannot be used as refiner"
    raise InvalidTask("refiner_model", f"{name!r} is {kind.description}: {reason}{_REFINER_HINT}")


def _freeu_params(task: GenerationTask) -> FreeUParams | None:
    """The task's FreeU V2 factors, or None when FreeU is off."""
    if not task.freeu_enabled:
        return None
    return FreeUParams(task.freeu_b1, task.freeu_b2, task.freeu_s1, task.freeu_s2)
