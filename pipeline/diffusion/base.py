"""The diffusion base model: one code path for the tiny base and Stable Diffusion v1.5.

Both are a folder in the standard diffusers layout (model_index.json, vae/, unet/, text_encoder/,
tokenizer/, scheduler/) and load with `StableDiffusionPipeline.from_pretrained`; the scheduler is
swapped for UniPC (the paper's sampler). The tiny base has SD's classes and tokenizer, only smaller:

    VAE      AutoencoderKL, 4 levels (factor 8), 128² -> 4x16x16 latents           ~3.9 M params
    UNet     UNet2DConditionModel, (64, 128, 256) channels, cross-attention       ~12.5 M params
    text     CLIPTextModel, 3 layers, width 64, SD's 49 408-token vocabulary        ~3.3 M params

In-channel images (R = G = ultrasound, B = filled mask) go in and come out as ordinary RGB images.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..config import PROMPT_TEMPLATE, get_profile
from ..masks import TRIMESTERS
from ..validate import check_trimester

TINY_RESOLUTION = 128

# the architectures, as plain dicts so the rebuild recipe is readable and saved beside the weights
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 64, 128, 128),
                layers_per_block=1, latent_channels=4, sample_size=TINY_RESOLUTION, norm_num_groups=32,
                # no attention in the mid-block: fully convolutional, so it trains on crops
                mid_block_add_attention=False)
TINY_UNET = dict(sample_size=TINY_RESOLUTION // 8, in_channels=4, out_channels=4,
                 block_out_channels=(64, 128, 256), layers_per_block=1,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                 cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32)
TINY_TEXT = dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                 num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406,
                 eos_token_id=49407, pad_token_id=49407, projection_dim=64)
# SD v1.5's noise schedule, so the tiny base and SD share every scheduler setting
SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                    beta_schedule="scaled_linear", prediction_type="epsilon", steps_offset=1,
                    clip_sample=False)


def prompt_for(trimester: str) -> str:
    check_trimester(trimester)
    return PROMPT_TEMPLATE.format(trimester=trimester)


# an even smaller variant (32², factor 2) for plumbing tests, where the weights do not matter
TEST_VAE = dict(TINY_VAE, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                block_out_channels=(16, 32), sample_size=32, norm_num_groups=8)
TEST_UNET = dict(TINY_UNET, sample_size=16, block_out_channels=(32, 64), norm_num_groups=8,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32)
TEST_TEXT = dict(TINY_TEXT, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 projection_dim=32)


def build_tiny_components(seed: int = 0, size: str = "tiny", latent_channels: int = 4) -> dict:
    """Fresh (random-weight) components; only pretraining and plumbing tests start from these.
    size: "tiny" (the shipped architecture, 128²) or "test" (32², for fast plumbing tests).
    latent_channels: SD's 4, or more (a 16² latent with more channels keeps more texture, at the UNet's
    cost of two wider convolutions only)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .tokenizer import build_clip_tokenizer
    torch.manual_seed(seed)
    vae, unet, text = (TINY_VAE, TINY_UNET, TINY_TEXT) if size == "tiny" else (TEST_VAE, TEST_UNET, TEST_TEXT)
    if int(latent_channels) < 1:
        raise ValueError(f"latent_channels must be at least 1, not {latent_channels}")
    vae = dict(vae, latent_channels=int(latent_channels))
    unet = dict(unet, in_channels=int(latent_channels), out_channels=int(latent_channels))
    return dict(vae=AutoencoderKL(**vae), unet=UNet2DConditionModel(**unet),
                text_encoder=CLIPTextModel(CLIPTextConfig(**text)),
                tokenizer=build_clip_tokenizer(), scheduler=DDPMScheduler(**SD_SCHEDULER))


def assemble_pipeline(components: dict):
    """A StableDiffusionPipeline from components, with the UniPC sampler and no safety checker."""
    from diffusers import StableDiffusionPipeline, UniPCMultistepScheduler
    pipe = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def resolve_base(base: str | os.PathLike | None = None) -> str:
    """The base model's folder or hub id: the profile's (tiny: assets/tiny-base) when none is given."""
    base = str(base) if base else get_profile().diffusion_base
    p = Path(base).expanduser()
    if p.exists():
        if not (p / "model_index.json").is_file():
            raise FileNotFoundError(f"{p} is not a diffusers model folder (no model_index.json)")
        return str(p.resolve())
    if base.count("/") == 1 and not base.startswith((".", "/")):
        return base  # a hub id (paper profile, online machines)
    raise FileNotFoundError(f"diffusion base not found: {base}. The tiny base ships in assets/tiny-base; "
                            f"rebuild it with `python -m pipeline pretrain-base --out assets/tiny-base`")


# a base's own sampling settings, measured for it (written by hand from a measurement): settings only, e.g.
# {"guidance": 2.0}; where each number comes from sits beside it in the base's README.md. A base without the
# file is sampled with GenerationDefaults
SAMPLING_FILE = "sonosynth_sampling.json"
_UNREAD = object()  # `record=` not given: read the base's sampling file (a caller that read it passes its record)


def _found(base, record):
    return sampling_record(base) if record is _UNREAD else record


def sampling_record(base: str | os.PathLike | None = None) -> tuple[Path, dict] | None:
    """(path, record) of a base folder's SAMPLING_FILE, or None for a hub id or a folder without one; a file
    that is not a JSON object is refused with its path (guidance and latent calibration both read it here)."""
    import json
    try:
        p = Path(resolve_base(base))
    except FileNotFoundError:
        return None
    f = p / SAMPLING_FILE
    if not f.is_file():
        return None
    try:
        rec = json.loads(f.read_text())
    except ValueError as exc:
        raise ValueError(f"{f} is not a readable sampling file ({exc}); fix or delete it") from None
    if not isinstance(rec, dict):
        raise ValueError(f"{f} is not a readable sampling file (a JSON object is needed); fix or delete it")
    return f, rec


def base_guidance(base: str | os.PathLike | None = None, asked: float | None = None, record=_UNREAD) -> float:
    """`asked` when given, else the classifier-free guidance a base is sampled with: the value measured for it
    in its folder's SAMPLING_FILE, else GenerationDefaults.guidance (7.5: Stable Diffusion's default; the
    paper names no guidance). A hub id (no local folder) gets the default."""
    from ..config import GenerationDefaults
    from ..validate import check_float
    if asked is not None:
        return float(asked)
    default = GenerationDefaults().guidance
    found = _found(base, record)
    if found is None or "guidance" not in found[1]:
        return default
    f, rec = found
    return check_float(rec["guidance"], f"{f}: guidance", 0, 50)  # the same range GenerateConfig accepts


def base_guidance_until(base: str | os.PathLike | None = None, asked: float | None = None,
                        record=_UNREAD) -> float:
    """`asked` when given, else the share of the steps a base is sampled with classifier-free guidance
    (guidance_interval.py): its SAMPLING_FILE's "guidance_until", measured for it, else 1 (every step: the
    paper's and Stable Diffusion's sampling)."""
    from .guidance_interval import check_guidance_until
    if asked is not None:
        return check_guidance_until(asked)
    found = _found(base, record)
    if found is None or found[1].get("guidance_until") is None:
        return 1.0
    f, rec = found
    return check_guidance_until(rec["guidance_until"], f"{f}: guidance_until")


def base_latent_calibration(base: str | os.PathLike | None = None, record=_UNREAD):
    """The calibration (calibration.LatentCalibration) recorded in a base folder's sampling file, or None (a
    hub id, no file, no entry). Here beside the other readers of the sampling file, so calibration.py needs
    nothing from this module."""
    from .calibration import KEY, LatentCalibration
    found = _found(base, record)
    if found is None or found[1].get(KEY) is None:
        return None
    f, rec = found
    return LatentCalibration.from_dict(rec[KEY], f"{f}: {KEY}")


def base_ellipse_guidance(base: str | os.PathLike | None = None, asked: str | None = None, record=_UNREAD):
    """The ellipse guidance (ellipse_guidance.EllipseGuidance) a sample is drawn with, or None (off): `asked`
    when given ("off", or fractions of the schedule such as "0.2, 0.4, 0.6"), else the base's own, measured for
    it and kept in its SAMPLING_FILE under "ellipse_guidance" ({"at": [...]}); a base without the entry (Stable
    Diffusion v1.5, the paper's method) is sampled without it."""
    from .ellipse_guidance import EllipseGuidance, parse_ellipse_guidance
    if asked is not None and str(asked).strip():
        return parse_ellipse_guidance(asked)
    found = _found(base, record)
    if found is None or found[1].get("ellipse_guidance") is None:
        return None
    f, rec = found
    eg = rec["ellipse_guidance"]
    if not isinstance(eg, dict) or not isinstance(eg.get("at"), list):
        raise ValueError(f"{f}: ellipse_guidance must be {{\"at\": [fractions of the schedule]}}, got {eg!r:.80}")
    try:
        return EllipseGuidance(tuple(eg["at"]))
    except ValueError as exc:
        raise ValueError(f"{f}: {exc}") from None


@dataclass(frozen=True)
class BaseSampling:
    """How a base is sampled beyond prompt, seeds and steps: classifier-free guidance, the share of the steps
    it runs for, ellipse guidance and the latent calibration. Resolved once per request by `of` (the base's
    SAMPLING_FILE, each part overridable); generate(), the grid, the bench, the sweep's synthetic set and the
    LoRA previews all sample through it, so what one of them does cannot drift from the others."""
    guidance: float
    guidance_until: float = 1.0  # 1: every step (the paper)
    ellipse: Any = None  # ellipse_guidance.EllipseGuidance, or None (off: the paper)
    calibration: Any = None  # calibration.LatentCalibration, or None (latents decoded as drawn: the paper)

    @classmethod
    def of(cls, base: str | os.PathLike | None = None, guidance: float | None = None,
           guidance_until: float | None = None, ellipse_guidance: str | None = None,
           calibrate: bool = True, record=_UNREAD) -> "BaseSampling":
        """The base's own sampling; a part given here wins over the base's (each validated where it is read).
        The sampling file is read once here (`record`: a sampling_record a caller already read)."""
        rec = _found(base, record)
        return cls(base_guidance(base, guidance, rec), base_guidance_until(base, guidance_until, rec),
                   base_ellipse_guidance(base, ellipse_guidance, rec),
                   base_latent_calibration(base, rec) if calibrate else None)

    def record(self) -> dict:
        """What a sample's params record about how it was drawn."""
        return {"guidance": self.guidance,
                "latent_calibration": None if self.calibration is None else self.calibration.as_dict(),
                "ellipse_guidance": None if self.ellipse is None else list(self.ellipse.at),
                "guidance_until": self.guidance_until}

    def set_record(self) -> dict:
        """What a synthetic set keeps so it is never finished with another sampling. Parts added since sets
        were first made appear only when on, so a set begun before them still matches a base without them."""
        rec = self.record()
        if self.ellipse is None:
            del rec["ellipse_guidance"]
        if self.guidance_until >= 1:
            del rec["guidance_until"]
        return rec

    def pipe_kwargs(self) -> dict:
        """guidance_scale and the step-end callback for one diffusers pipeline call (fresh each call: ellipse
        guidance and the guidance interval keep per-call state). Per step, ellipse guidance runs first, then
        the calibration (after the last step), then the guidance interval (it drops the unconditional pass)."""
        callback = None if self.calibration is None else self.calibration.on_step_end()
        if self.ellipse is not None:
            callback = self.ellipse.on_step_end(then=callback)
        out: dict = {"guidance_scale": float(self.guidance)}
        if self.guidance_until < 1:
            from .guidance_interval import TENSOR_INPUTS, on_step_end
            callback = on_step_end(self.guidance_until, then=callback)
            out["callback_on_step_end_tensor_inputs"] = TENSOR_INPUTS
        if callback is not None:
            out["callback_on_step_end"] = callback
        return out


def load_pipeline(base: str | os.PathLike | None = None, device: str | None = None, dtype=None):
    """Load a base (tiny folder, SD v1.5 folder or hub id) as a StableDiffusionPipeline with UniPC.

    A fresh pipeline each call (LoRA adapters are attached to it); weights are read from disk, which for
    the tiny base is ~40 MB and ~0.3 s.
    """
    import torch
    from diffusers import StableDiffusionPipeline, UniPCMultistepScheduler

    from ..gpu import best_device
    device = device or best_device()
    dtype = dtype or (torch.float16 if device == "cuda" else torch.float32)
    src = resolve_base(base)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(src, dtype=dtype, safety_checker=None,
                                                       feature_extractor=None, requires_safety_checker=False)
    except OSError as exc:
        raise FileNotFoundError(f"cannot load diffusion base {src!r}: {exc}") from None
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    if device == "cpu":
        # the VAE's full-size convolutions run faster channels-last on CPU (oneDNN): at 128² on 2 cores, encoding
        # 16 images 0.80 -> 0.44 s and decoding 8 0.88 -> 0.74 s, images equal to 5e-5 (2026-11-27, timed
        # module calls). Ellipse guidance decodes and encodes at each of its points, so it gains most. The
        # UNet works at 16² and gained nothing (0.36 s per call either way), so it stays as it is.
        pipe.vae.to(memory_format=torch.channels_last)
    return pipe.to(device)


def base_resolution(pipe) -> int:
    return int(pipe.unet.config.sample_size) * pipe.vae_scale_factor


def base_sizes(base: str | os.PathLike | None, own: int, record=_UNREAD) -> list[int]:
    """The square sizes a base's UNet was trained to draw at: its own, plus the `sizes` its SAMPLING_FILE
    lists (a base pretrained with --extra-resolutions, measured to draw one head there). A LoRA trained at
    one of them samples there directly; at any other size the UNet tiles heads (a 128²-only base sampled at
    256²: 1 of 32 valid, 2026-11-26)."""
    rec = _found(base, record)
    extra = rec[1].get("sizes", []) if rec else []
    if not isinstance(extra, list) or not all(isinstance(v, int) and v > 0 for v in extra):
        raise ValueError(f"{rec[0]}: 'sizes' must be a list of positive whole numbers, not {extra!r}")
    return sorted({int(own), *extra})


# ----------------------------------------------------------------------------- in-channel tensors
def to_model_size(image: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """Resize an image + filled mask to size² and inject the mask: (size, size, 3) uint8 in-channel."""
    from ..masks import inject_mask
    img = cv2.resize(np.asarray(image), (size, size), interpolation=cv2.INTER_AREA)
    m = cv2.resize(np.asarray(mask).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) > 0.5
    return inject_mask(img, m)


def restore_aspect(gray: np.ndarray, mask: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of to_model_size's squash: a square pair resized to width/height = aspect, the short side
    kept (128² at 1.48 -> 190x128), so SAM sees it as it sees a real scan of that shape (letterboxed), not
    stretched. Measured with real pairs in the SYN slot at 256²: test Dice 96.28 squashed, 96.65 restored
    (docs/lab/2026-11-results.md, 2026-11-26)."""
    h, w = np.asarray(gray).shape[:2]
    W, H = (round(w * aspect), h) if aspect >= 1 else (w, round(h / aspect))
    img = cv2.resize(np.asarray(gray), (W, H), interpolation=cv2.INTER_AREA if W * H < w * h else cv2.INTER_CUBIC)
    m = cv2.resize(np.asarray(mask).astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR) > 0.5
    return img, m


def rgb_to_tensor(rgb: np.ndarray):
    """(N?, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1], the VAE's input range."""
    import torch
    a = np.asarray(rgb)
    if a.ndim == 3:
        a = a[None]
    return torch.from_numpy(a).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_rgb(x) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@lru_cache(maxsize=4)
def real_head_sizes(spec: str, size: int = TINY_RESOLUTION) -> dict:
    """(mean, n, median) ellipse perimeter (px, at size²) per trimester of a real data source."""
    from ..data import open_source
    from ..masks import extract_ellipse
    src = open_source(spec)
    out: dict[str, list[float]] = {t: [] for t in TRIMESTERS}
    for i, m in enumerate(src.metas):
        if m.trimester not in out:
            continue
        s = src[i]
        rgb = to_model_size(s.image, s.mask, size)
        ex = extract_ellipse(rgb[..., 2])
        if ex.ellipse is not None:
            out[m.trimester].append(ex.ellipse.perimeter_px())
    return {t: (float(np.mean(v)) if v else None, len(v), float(np.median(v)) if v else None)
            for t, v in out.items()}
