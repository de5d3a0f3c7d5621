"""diffusers as an independent oracle: a diffusers-layout config folder for tiny checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fooocus_core.config import SHIPPED_CONFIG_DIR
from fooocus_core.models.tiny import tiny_configs


def diffusers_config_dir(root: Path, kind: str = "base") -> Path:
    """What ``save_pretrained`` writes minus the weights, with our tiny configs.

    The second tokenizer pads with "!" (id 0), as in Stability's SDXL repository.
    """
    root.mkdir(parents=True, exist_ok=True)
    for component, config in tiny_configs(kind).items():
        (root / component).mkdir()
        (root / component / "config.json").write_text(json.dumps(config))
    tokenizers = ["tokenizer", "tokenizer_2"] if kind == "base" else ["tokenizer_2"]
    for name in tokenizers:
        shutil.copytree(SHIPPED_CONFIG_DIR / "clip_tokenizer", root / name)
    for special in ("special_tokens_map.json", "tokenizer_config.json"):
        path = root / "tokenizer_2" / special
        data = json.loads(path.read_text())
        data["pad_token"] = "!"
        path.write_text(json.dumps(data))
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(
            {
                "_class_name": "EulerDiscreteScheduler",
                "beta_schedule": "scaled_linear",
                "beta_start": 0.00085,
                "beta_end": 0.012,
                "num_train_timesteps": 1000,
                "prediction_type": "epsilon",
                "steps_offset": 1,
                "timestep_spacing": "leading",
            }
        )
    )
    base = kind == "base"
    index = {
        "_class_name": "StableDiffusionXLPipeline" if base else "StableDiffusionXLImg2ImgPipeline",
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"] if base else [None, None],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"] if base else [None, None],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (root / "model_index.json").write_text(json.dumps(index))
    return root
