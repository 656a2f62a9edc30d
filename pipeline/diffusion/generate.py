"""Mask-guided generation: trimester prompt -> in-channel image -> Ellipse Extractor -> SAM QC -> dataset.

    python -m pipeline generate --lora LORA_DIR --trimester second --n 32 --seed 0 --min-qc 0.8 --out DIR

Each sample: UniPC (20 steps), LoRA scale 0.9 via set_adapters, the base's guidance (SD: 7.5; the tiny
base: its measured value, base.base_guidance), one seeded generator per
image (so a seed gives the same image whatever the batch it is in). Then split channels -> gray image
(mean of R and G) + B channel -> the Ellipse Extractor (threshold 127) -> filled mask + verdict. The QC
score is the Dice between SAM's mask, prompted with the extracted mask's box, and the extracted mask:
a pair whose mask does not sit on the skull in the image gets a low score without a person looking.

The synthetic dataset these samples are filed into (layout, accept / reject, the fill loop, counts) is
pipeline/diffusion/dataset.py.
"""
from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..config import GenerationDefaults, add_profile_argument
from ..masks import TRIMESTERS, Ellipse, Extraction, extract_ellipse, mask_bbox, overlay, split_channels
from ..validate import check_trimester

_G = GenerationDefaults()
PRECISIONS = ("auto", "bf16", "weights")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX tiles or AVX512-BF16): there, bf16 autocast makes the
    batched UNet ~1.6x and the VAE decoder ~2.6x faster (measured on the 2-core Xeon here)."""
    import torch
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # older torch: no probe, no autocast
        return False


def resolve_precision(precision: str, device) -> str:
    """'bf16' (CPU autocast) or the weights' dtype name ('float32', 'float16') for a pipeline's device."""
    import torch
    dev = torch.device(device).type
    if dev == "cpu" and (precision == "bf16" or (precision == "auto" and cpu_has_fast_bf16())):
        return "bf16"
    return "float16" if dev == "cuda" else "float32"  # load_pipeline: fp16 weights on CUDA, else fp32


def run_pipeline(pipe, prompt: str, seeds: list[int], steps: int, sampling, precision: str = "auto",
                 size: int | None = None):
    """One pipeline call for a batch of seeds (one seeded generator per image, so a seed gives the same
    image whatever batch it is in) -> (N, H, W, 3) floats in [0, 1]. `sampling`: a base.BaseSampling (the
    guidance, its interval, ellipse guidance and the latent calibration; BaseSampling.of(base) is the base's
    own). `size`: a square size other than the base's own (the benchmark's cost of a larger working size)."""
    import contextlib

    import torch
    mode = resolve_precision(precision, pipe.device)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    extra = sampling.pipe_kwargs()
    if size is not None:
        extra.update(height=int(size), width=int(size))
    with torch.no_grad(), ctx:
        return pipe([prompt] * len(seeds), num_inference_steps=int(steps), generator=gens, output_type="np",
                    **extra).images


def run_detail(pipe, prompt: str, seeds: list[int], images: np.ndarray, size: int, strength: float, steps: int,
               guidance: float, precision: str = "auto", calibration=None) -> np.ndarray:
    """The detail pass: base-size samples (N, h, w, 3 floats in [0, 1]) upscaled (bicubic) to size², noised
    back `strength` of the schedule and denoised by `pipe` (its LoRA trained at size²) -> (N, size, size, 3).
    The layout (one head, its place and size) is the base-size sample's; only the last `strength` of the
    steps run at size², where a base trained smaller would draw several heads. One seeded generator per
    image, as run_pipeline: a seed gives the same image whatever batch it is in."""
    import contextlib

    import cv2
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline
    i2i = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)  # shares the modules
    i2i.set_progress_bar_config(disable=True)
    up = np.stack([cv2.resize(np.asarray(im, np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
                   for im in images]).clip(0, 1)
    mode = resolve_precision(precision, pipe.device)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    extra = {} if calibration is None else {"callback_on_step_end": calibration.on_step_end()}
    with torch.no_grad(), ctx:
        return i2i([prompt] * len(seeds), image=up, strength=float(strength), num_inference_steps=int(steps),
                   guidance_scale=float(guidance), generator=gens, output_type="np", **extra).images


def lora_working_size(lora: str | Path | None) -> int | None:
    """The square size a LoRA trained at (lora_config.json's working_size, else its resolution setting);
    None when unknown (a LoRA saved before sizes were recorded, or a bare .safetensors file)."""
    if not lora:
        return None
    w = lora_weights_path(lora)
    try:
        rec = json.loads((w.parent / "lora_config.json").read_text())
    except (OSError, ValueError):
        return None
    size = rec.get("working_size") or rec.get("resolution")
    return int(size) if isinstance(size, (int, float)) and size > 0 else None


def check_sizes(cfg: "GenerateConfig", base_size: int, sizes: list[int] | None = None) -> tuple[int | None, int | None]:
    """Refuse a LoRA used at a size it was not trained for, with what to do instead. Returns (the size the
    main pass draws at when it is not the base's own, else None; the detail size or None). `sizes`: the sizes
    the base's UNet knows (base.base_sizes); a LoRA trained at one of them is sampled there."""
    sizes = sorted(set(sizes or []) | {base_size})
    own = lora_working_size(cfg.lora)
    main = base_size
    if own is not None and own != base_size:
        if own not in sizes:
            known = "" if len(sizes) == 1 else f" (its UNet was trained at {', '.join(f'{v}²' for v in sizes)})"
            raise ValueError(f"{cfg.lora} was trained at {own}², the base samples at {base_size}²{known}: "
                             + ("use it as the detail LoRA (--detail-lora) beside a LoRA trained at the base's "
                                "size, or a base pretrained at that size too (pretrain-base --extra-resolutions)"
                                if own > base_size else "train it again at the base's size (--resolution 0)"))
        main = own
    if not cfg.detail_lora:
        return (main if main != base_size else None), None
    size = lora_working_size(cfg.detail_lora)
    if size is None or size <= main:
        raise ValueError(f"the detail LoRA {cfg.detail_lora} must be trained above the {main}² the first pass "
                         f"draws at (train-lora --resolution {2 * main}); "
                         + ("its size is not recorded" if size is None else f"it was trained at {size}²"))
    return (main if main != base_size else None), size


@dataclass
class GenerateConfig:
    trimester: str = "second"
    n: int = 8
    lora: str | None = None  # a LoRA folder (or .safetensors); None: the base alone
    base: str | None = None  # a diffusers folder or hub id; None: the tiny base (see for_profile)
    seed: int | None = 0  # sample i gets seed + i; None: a random first seed (recorded)
    steps: int = _G.steps
    lora_scale: float = _G.lora_scale
    guidance: float | None = None  # None: the base's own (base_guidance: measured for assets/tiny-base)
    batch_size: int = 8
    threshold: int = _G.extractor_threshold
    qc: bool = True  # SAM QC score per sample
    calibrate: bool = True  # the base's latent calibration (calibration.py); False: decode the latents as drawn
    sam: str | None = None  # SAM back-end (or profile name) for QC; None: tiny's (see for_profile)
    sam_weights: str | None = None  # SAM base weights for QC (None: the back-end's default)
    # "auto": bf16 autocast on a CPU with native bf16 (AMX / AVX512-BF16), else the weights' dtype;
    # "bf16": autocast anyway; "weights": compute in the weights' dtype (fp32 on CPU, fp16 on CUDA)
    precision: str = "auto"
    # the detail pass (not in the paper): a LoRA trained above the base's size (train-lora --resolution 256)
    # re-draws each base-size sample at its size from `detail_strength` of the way back (img2img, the "hires
    # fix"): one head where the base put it, texture at the larger size. None: samples at the base's size
    detail_lora: str | None = None
    detail_strength: float = 0.5
    # write accepted pairs at this width/height (1.48: HC18's 800x540), as SAM sees a real scan: letterboxed,
    # not stretched to a square; 0 keeps the generated square (the paper). The raw sample stays square
    restore_aspect: float = 0.0
    # the pair's size (its short side, px): a sample smaller than this is upsampled (bicubic) and its in-channel
    # mask re-drawn from the Ellipse Extractor's ellipse at this size, so pairs are made at the segmenter's input
    # size (SAM's 256², issue 32) at the cost of a resize. 0: the sample's own size (128² on the tiny base)
    out_size: int = _G.out_size
    # ellipse guidance (not in the paper; ellipse_guidance.py): part-way through sampling the in-channel mask
    # of the current estimate is made the ellipse of its largest blob, so image and mask finish around one
    # ellipse. None: the base's own (its sampling file; SD v1.5 has none: the paper's sampling); "off"; or
    # fractions of the schedule such as "0.2, 0.4, 0.6". It shapes the base-size pass, not the detail pass
    ellipse_guidance: str | None = None
    # classifier-free guidance for this share of the steps only (guidance_interval.py, not in the paper): the
    # last steps refine texture at half the UNet's cost. None: the base's own (SD v1.5 has none: 1, every step)
    guidance_until: float | None = None

    @classmethod
    def for_profile(cls, profile, **settings) -> "GenerateConfig":
        """A config that generates with the profile's diffusion base and scores QC with its SAM (back-end and
        base weights): the one way the dashboard and the CLI make one, so QC never runs another profile's SAM."""
        sam, weights = profile.sam_model(settings.get("sam"))
        return cls(**{"base": profile.diffusion(), "sam": sam, "sam_weights": weights, **settings})

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        check_trimester(self.trimester)
        from ..validate import check_float, check_int
        # every numeric setting has a checked range, refused with the field's name (NaN / inf included)
        self.n = check_int(self.n, "count (n)", 1, 10_000)
        self.steps = check_int(self.steps, "steps", 1, 1000)
        self.batch_size = check_int(self.batch_size, "batch_size", 1, 256)
        self.threshold = check_int(self.threshold, "the extractor threshold (a gray level)", 0, 255)
        self.lora_scale = check_float(self.lora_scale, "LoRA scale", 0, 4)
        if self.guidance is not None:
            self.guidance = check_float(self.guidance, "guidance", 0, 50)
        if self.seed is not None:
            self.seed = check_int(self.seed, "seed", 0, 2**32 - 1)
        self.detail_strength = check_float(self.detail_strength, "detail strength", 0, 1, lo_open=True)
        self.restore_aspect = check_float(self.restore_aspect, "restore aspect (width/height; 0 = square)", 0, 4)
        self.out_size = check_int(self.out_size, "pair size (out_size, px; 0 = the sample's own)", 0, 2048)
        if self.ellipse_guidance is not None and str(self.ellipse_guidance).strip():
            from .ellipse_guidance import parse_ellipse_guidance
            parse_ellipse_guidance(self.ellipse_guidance)  # refused here, before any model loads
        if self.guidance_until is not None:
            from .guidance_interval import check_guidance_until
            self.guidance_until = check_guidance_until(self.guidance_until)
        if 0 < self.restore_aspect < 0.25:
            raise ValueError(f"restore aspect must be 0 (square) or a width/height from 0.25 to 4, "
                             f"got {self.restore_aspect:g}")


@dataclass
class GeneratedSample:
    name: str
    seed: int
    rgb: np.ndarray  # raw generated in-channel image (H, W, 3) uint8
    gray: np.ndarray  # mean of R and G
    blue: np.ndarray  # the mask channel
    extraction: Extraction
    qc: float | None
    params: dict = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.extraction.valid

    def picture(self) -> np.ndarray:
        """The gray image with the extracted mask tinted and its ellipse drawn (for galleries)."""
        return overlay(self.gray, self.extraction.mask, 0.25, ellipse=self.extraction.ellipse)

    def caption(self) -> str:
        qc = "QC n/a" if self.qc is None else f"QC {self.qc:.2f}"
        return f"{self.name} · {'valid' if self.valid else 'refused: ' + self.extraction.reason} · {qc}"

    def meta(self, mask: np.ndarray | None = None, edited: bool = False, verdict: str | None = None,
             reason: str | None = None) -> dict:
        m = self.extraction.mask if mask is None else mask
        ex = self.extraction
        e = ex.ellipse
        return {**self.params, "name": self.name, "seed": self.seed, "synthetic": True,
                "verdict": verdict or ("valid" if ex.valid else "invalid"),
                "reason": reason or ex.reason, "qc": None if self.qc is None else round(float(self.qc), 4),
                "edited": bool(edited), "ellipse": None if e is None else e.as_dict(),
                "perimeter_px": None if e is None else round(e.perimeter_px(), 2),
                "fit_iou": None if ex.fit_iou is None else round(ex.fit_iou, 4),
                "mask_area_px": int(np.asarray(m).astype(bool).sum()), "pixel_size_mm": None, "hc_mm": None}


# ----------------------------------------------------------------------------- the pipeline, cached
_LOCK = threading.RLock()
_PIPES: dict[str, object] = {}
_ADAPTERS: dict[str, dict[str, str]] = {}
_FUSED: dict[str, tuple[str, float] | None] = {}  # base -> (LoRA key, scale) merged into its weights
_ORIGINAL: dict[str, dict[str, dict]] = {}  # base -> exact copies of the weights a LoRA wraps
_LORA_COMPONENTS = ("unet", "text_encoder")


def lora_weights_path(lora: str | Path) -> Path:
    """A LoRA folder (with pytorch_lora_weights.safetensors) or the .safetensors file itself."""
    from .lora import WEIGHTS
    p = Path(lora).expanduser()
    if p.is_dir():
        p = p / WEIGHTS
    if not p.is_file():
        raise FileNotFoundError(f"no LoRA weights at {lora} (expected a folder with {WEIGHTS})")
    if p.suffix != ".safetensors":
        raise ValueError(f"{p.name}: LoRA weights must be a .safetensors file")
    return p


def get_pipeline(base: str | None = None, lora: str | None = None, scale: float = _G.lora_scale):
    """The base pipeline (loaded once per base) with `lora` at `scale` (set_adapters) FUSED into its weights,
    or with no LoRA. Fused (peft's merge), a rank-128 LoRA on the tiny base samples 1.1-1.3x faster than in
    peft's layers (`python -m pipeline bench diffusion`: gen_fused_speedup; 2026-11-26, 2 cores). Switching
    LoRA or scale puts the exact base weights back first, so no rounding drift builds up over many switches."""
    from .base import load_pipeline, resolve_base
    key = resolve_base(base)
    with _LOCK:
        pipe = _PIPES.get(key)
        if pipe is None:
            pipe = _PIPES[key] = load_pipeline(key)
            _ADAPTERS[key] = {}
        loaded = _ADAPTERS[key]
        if lora:
            w = lora_weights_path(lora)
            # a retrained LoRA in the same folder is a new adapter: key by path + modification time
            lkey = f"{w.resolve()}:{w.stat().st_mtime_ns}"
            want = (lkey, float(scale))
            if _FUSED.get(key) == want:
                return pipe
            _unfuse(key, pipe)
            if lkey not in loaded:
                name = f"lora{len(loaded)}"
                try:
                    pipe.load_lora_weights(str(w.parent), weight_name=w.name, adapter_name=name)
                except (ValueError, KeyError, RuntimeError) as exc:
                    raise ValueError(f"{w} is not a LoRA for this base model: {exc}") from None
                loaded[lkey] = name
            pipe.enable_lora()
            pipe.set_adapters([loaded[lkey]], adapter_weights=[float(scale)])
            _fuse(key, pipe, loaded[lkey])
            _FUSED[key] = want
        elif loaded:
            _unfuse(key, pipe)
            pipe.disable_lora()
        return pipe


def _tuner_layers(pipe):
    from peft.tuners.tuners_utils import BaseTunerLayer
    for comp in _LORA_COMPONENTS:
        model = getattr(pipe, comp, None)
        if model is not None:
            for name, module in model.named_modules():
                if isinstance(module, BaseTunerLayer):
                    yield f"{comp}.{name}", module


def _fuse(key: str, pipe, adapter: str) -> None:
    """Merge `adapter` (at the scale set_adapters gave it) into the weights, keeping exact copies of every
    weight a LoRA wraps first (taken while unfused: _unfuse always runs before)."""
    saved = _ORIGINAL.setdefault(key, {})
    for name, module in _tuner_layers(pipe):
        base = module.get_base_layer()
        if name not in saved:
            saved[name] = {k: v.detach().clone() for k, v in base.state_dict().items()}
    pipe.fuse_lora(components=list(_LORA_COMPONENTS), lora_scale=1.0, adapter_names=[adapter])


def _unfuse(key: str, pipe) -> None:
    """Take the fused LoRA out: peft's unmerge (its bookkeeping), then the saved base weights back."""
    if not _FUSED.get(key):
        return
    import torch
    pipe.unfuse_lora(components=list(_LORA_COMPONENTS))
    saved = _ORIGINAL.get(key, {})
    with torch.no_grad():
        for name, module in _tuner_layers(pipe):
            if name in saved:
                for k, v in module.get_base_layer().state_dict(keep_vars=True).items():
                    v.copy_(saved[name][k])
    _FUSED[key] = None


def clear_pipelines() -> None:
    with _LOCK:
        _PIPES.clear()
        _ADAPTERS.clear()
        _FUSED.clear()
        _ORIGINAL.clear()


# ----------------------------------------------------------------------------- QC
def qc_score(predictor, gray: np.ndarray, mask: np.ndarray) -> float | None:
    """Dice of SAM's mask (prompted with the box of `mask`) against `mask`; None for an empty mask."""
    box = mask_bbox(mask)
    if box is None or predictor is None:
        return None
    from ..metrics import dice
    predictor.set_image(gray)
    return dice(predictor.predict(box=box), mask)


_QC_LOCK = threading.Lock()
_QC_PRED: dict[str, object] = {}


def qc_predictor(sam: str | None = None, weights: str | None = None):
    """The SAM predictor for QC scores (loaded once per back-end and weights)."""
    from ..sam import load_predictor
    key = f"{sam or ''}|{weights or ''}"
    with _QC_LOCK:
        if key not in _QC_PRED:
            _QC_PRED[key] = load_predictor(sam, weights)
        return _QC_PRED[key]


# ----------------------------------------------------------------------------- generation
def sample_name(trimester: str, seed: int, lora: str | None) -> str:
    tag = Path(lora).name if lora else "base"
    if tag.endswith(".safetensors"):
        tag = Path(tag).stem
    tag = "".join(c if c.isalnum() or c in "-_" else "-" for c in tag)[:40]
    return f"syn_{trimester}_{tag}_s{seed}"


def generate(cfg: GenerateConfig, stop: Callable[[], bool] | None = None, pipe=None,
             predictor=None) -> Iterator[dict]:
    """Generator: {"kind": "start", seeds}, one {"kind": "sample", sample, index, total} per image as its
    batch finishes, then {"kind": "done"} (or "stopped")."""
    from .base import BaseSampling, base_resolution, base_sizes, prompt_for, resolve_base, sampling_record
    cfg.validate()
    record = sampling_record(cfg.base)  # the base's sampling file, read once for this request
    sampling = BaseSampling.of(cfg.base, cfg.guidance, cfg.guidance_until, cfg.ellipse_guidance, cfg.calibrate,
                               record=record)
    first = int(cfg.seed) if cfg.seed is not None else secrets.randbelow(2 ** 31)
    seeds = [(first + i) % 2 ** 32 for i in range(int(cfg.n))]
    pipe_given = pipe
    if cfg.detail_lora and pipe_given is not None:  # it swaps LoRAs on the cached pipeline between the passes
        raise ValueError("the detail pass runs on the cached pipelines: call generate() without pipe=")
    if pipe is None:
        pipe = get_pipeline(cfg.base, cfg.lora, cfg.lora_scale)
    main_size = detail_size = None
    if cfg.detail_lora or lora_working_size(cfg.lora) is not None:
        own = base_resolution(pipe)
        main_size, detail_size = check_sizes(cfg, own, base_sizes(cfg.base, own, record))
    if cfg.qc and predictor is None:
        predictor = qc_predictor(cfg.sam, cfg.sam_weights)
    prompt = prompt_for(cfg.trimester)
    params = {"prompt": prompt, "trimester": cfg.trimester, "steps": int(cfg.steps),
              "scale": float(cfg.lora_scale) if cfg.lora else 0.0,
              "scheduler": type(pipe.scheduler).__name__, "base": _describe_base(cfg.base, resolve_base),
              "lora": str(Path(cfg.lora).resolve()) if cfg.lora else None, "threshold": int(cfg.threshold),
              "precision": resolve_precision(cfg.precision, pipe.device),
              "detail_lora": str(Path(cfg.detail_lora).resolve()) if cfg.detail_lora else None,
              "detail_strength": float(cfg.detail_strength) if cfg.detail_lora else None,
              "size": main_size, "detail_size": detail_size, "restore_aspect": float(cfg.restore_aspect) or None,
              "out_size": int(cfg.out_size) or None, **sampling.record()}
    yield {"kind": "start", "seeds": seeds, "total": len(seeds), "params": params}
    done = 0
    for b in range(0, len(seeds), int(cfg.batch_size)):
        if stop is not None and stop():
            yield {"kind": "stopped", "done": done}
            return
        batch = seeds[b:b + int(cfg.batch_size)]
        with _LOCK:  # this request's LoRA and scale (a grid or another tab may have switched them since)
            pipe = get_pipeline(cfg.base, cfg.lora, cfg.lora_scale) if pipe_given is None else pipe
            images = run_pipeline(pipe, prompt, batch, cfg.steps, sampling, cfg.precision, main_size)
            if detail_size:  # the same scale as the base-size LoRA: the paper's 0.9 by default
                images = run_detail(get_pipeline(cfg.base, cfg.detail_lora, cfg.lora_scale), prompt, batch,
                                    images, detail_size, cfg.detail_strength, cfg.steps, sampling.guidance,
                                    cfg.precision, sampling.calibration)
        for s, im in zip(batch, images):
            rgb = (np.clip(im, 0, 1) * 255).round().astype(np.uint8)
            smp = make_sample(rgb, s, params, cfg.threshold, predictor, cfg.lora, cfg.out_size)
            done += 1
            yield {"kind": "sample", "sample": smp, "index": done - 1, "total": len(seeds)}
    yield {"kind": "done", "done": done}


def make_sample(rgb: np.ndarray, seed: int, params: dict, threshold: int = 127, predictor=None,
                lora: str | None = None, out_size: int = 0) -> GeneratedSample:
    gray, blue = split_channels(rgb)
    ex = extract_ellipse(blue, threshold=threshold)
    if out_size and min(gray.shape) < out_size:
        gray, ex = upsample_pair(gray, ex, out_size)
    qc = qc_score(predictor, gray, ex.mask) if ex.ellipse is not None else None
    return GeneratedSample(sample_name(params.get("trimester", "x"), seed, lora), seed, rgb, gray, blue, ex, qc,
                           dict(params))


def upsample_pair(gray: np.ndarray, ex: Extraction, out_size: int) -> tuple[np.ndarray, Extraction]:
    """A sample and its extraction at `out_size` on the short side: the image bicubic-upsampled, the mask the
    extractor's ellipse scaled to the new pixel grid and filled there (clipped to the frame), so its edge is
    smooth at the new size instead of the old pixels' staircase; the verdict is the extractor's own."""
    h, w = gray.shape
    k = out_size / min(h, w)
    H, W = round(h * k), round(w * k)
    big = np.clip(cv2.resize(gray.astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC), 0, 255)
    big = big.round().astype(np.uint8)
    e = ex.ellipse
    if e is None:
        return big, Extraction(np.zeros((H, W), bool), None, ex.valid, ex.reason, ex.fit_iou)
    # pixel centres: x at the old size is (x + 0.5) * k - 0.5 at the new one
    e2 = Ellipse((e.cx + 0.5) * W / w - 0.5, (e.cy + 0.5) * H / h - 0.5, e.width * W / w, e.height * H / h, e.angle)
    return big, Extraction(e2.fill((H, W)), e2, ex.valid, ex.reason, ex.fit_iou)


def _describe_base(base, resolve) -> str:
    r = resolve(base)
    p = Path(r)
    try:
        from ..config import ROOT
        return str(p.relative_to(ROOT)) if p.is_absolute() else r
    except ValueError:
        return r


def summarize(samples: list[GeneratedSample]) -> dict:
    n = len(samples)
    valid = [s for s in samples if s.valid]
    per = [s.extraction.ellipse.perimeter_px() for s in valid]
    qcs = [s.qc for s in samples if s.qc is not None]
    return {"n": n, "valid": len(valid), "valid_frac": len(valid) / n if n else None,
            "mean_perimeter_px": float(np.mean(per)) if per else None,
            "mean_qc": float(np.mean(qcs)) if qcs else None}


# ----------------------------------------------------------------------------- CLI
def add_generate_arguments(p) -> None:
    d = GenerateConfig()
    p.add_argument("--trimester", required=True, choices=TRIMESTERS, help="the trimester named in the prompt")
    p.add_argument("--n", type=int, default=d.n, help="how many samples")
    p.add_argument("--out", required=True, help="dataset folder (folder: layout)")
    p.add_argument("--lora", default=None, help="LoRA folder from train-lora (default: the base alone)")
    p.add_argument("--base", default=None, help="diffusers folder or hub id (default: the profile's base)")
    p.add_argument("--seed", type=int, default=d.seed, help="first seed; -1 for a random one (recorded)")
    p.add_argument("--steps", type=int, default=d.steps, help="UniPC sampler steps (UniPC: a fast diffusion sampler)")
    p.add_argument("--scale", type=float, default=d.lora_scale, help="LoRA scale")
    p.add_argument("--guidance", type=float, default=d.guidance,
                   help="classifier-free guidance: how strongly the prompt is followed (default: the base's "
                        "own, measured for it: 2 for assets/tiny-base; 7.5 for Stable Diffusion v1.5)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per sampler call")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="auto: bf16 autocast on CPUs with native bf16, else the weights' dtype")
    p.add_argument("--detail-lora", default=None,
                   help="a LoRA trained at 2x the base's size (train-lora --resolution 256 on the tiny base): "
                        "re-draws each sample at its size (img2img from the base-size sample)")
    p.add_argument("--detail-strength", type=float, default=d.detail_strength,
                   help="how far back the detail pass starts: share of the sampler's steps run at its size")
    p.add_argument("--out-size", type=int, default=d.out_size,
                   help=f"write pairs with this short side (px), upsampling smaller samples and re-drawing the "
                        f"mask from the fitted ellipse at that size (default {d.out_size}: SAM's input size; "
                        f"0 = the sample's own size)")
    p.add_argument("--restore-aspect", type=float, default=d.restore_aspect,
                   help="write accepted pairs at this width/height (1.48 = HC18's 800x540); 0 keeps the square")
    p.add_argument("--ellipse-guidance", default=d.ellipse_guidance, metavar="off|F,F,...",
                   help="not in the paper: at these fractions of the schedule make the in-channel mask of the "
                        "sampler's estimate an ellipse, so image and mask finish around one head (default: the "
                        "base's own: 0.2,0.4,0.6 for assets/tiny-base; off for Stable Diffusion v1.5)")
    p.add_argument("--guidance-until", type=float, default=d.guidance_until, metavar="F",
                   help="not in the paper: classifier-free guidance for this share of the steps only, the rest "
                        "at half the cost (default: the base's own; 1 = every step, as Stable Diffusion v1.5)")
    p.add_argument("--threshold", type=int, default=d.threshold, help="Ellipse Extractor threshold")
    p.add_argument("--min-qc", type=float, default=None, help="refuse valid pairs whose QC Dice is below this")
    p.add_argument("--no-qc", action="store_true", help="skip the SAM QC score")
    p.add_argument("--no-calibration", action="store_true",
                   help="decode the sampler's latents as drawn, without the base's latent calibration (for A/B)")
    add_profile_argument(p)

