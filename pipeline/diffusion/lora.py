"""Per-trimester LoRA training on a few real image+mask pairs (the paper's recipe, every value changeable).

    python -m pipeline train-lora --data hc18:../shared/data/hc18 --trimester second --steps 300 --out DIR

In-channel images (R = G = image, B = filled mask) at the base's resolution; rank 128, alpha 128,
Gaussian init, LoRA on the UNet's to_k/to_q/to_v/to_out.0 only (VAE and text encoder frozen), AdamW,
lr 1e-4 constant, batch 4, gradient clipping 1.0, 20 images chosen by the seeded per-trimester selection.
Runs through `accelerate` (mixed precision / several GPUs when present).

Because the VAE and the text encoder are frozen and the set is tiny, each image's latent distribution
(mean, std — and its mirror image's) and the prompt embedding are computed ONCE; every step draws
z = mean + std * eps, which is exactly what re-encoding would give. `cached=False` is the benchmark's
reference: every step does what diffusers' train_text_to_image_lora.py does — its dataset decodes each
stored image, transforms it (resize, crop, flip, to tensor, normalise) and tokenizes its caption on every
fetch, then the step VAE-encodes the batch and runs the text encoder.

Output folder: pytorch_lora_weights.safetensors (diffusers format), lora_config.json, loss.csv,
previews/step_NNNNNN.png, train_state.pt (optimizer + step, for resume). Everything is written
atomically; a stop saves the LoRA of the last completed step.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..config import LoraDefaults, add_profile_argument, resolve_profile
from ..fileio import atomic_save_png, atomic_write, atomic_write_json, atomic_write_text
from ..masks import TRIMESTERS
from ..validate import check_trimester
from .timestep_bias import STRATEGIES, UNBIASED, base_timestep_bias

_D = LoraDefaults()
WEIGHTS = "pytorch_lora_weights.safetensors"


@dataclass
class LoraTrainConfig:
    data: str = "phantom:24"
    trimester: str = "second"
    n: int = _D.n_per_trimester
    selection_seed: int = 0
    # "all": choose among every image of the source; "train": only among the train part of the seeded
    # split (split, split_seed) that SAM fine-tuning and the Experiments sweep use, so a LoRA never sees
    # an image the experiments validate or test on
    pool: str = "all"
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    steps: int = 300
    rank: int = _D.rank
    alpha: int = _D.alpha
    lr: float = _D.lr
    batch_size: int = _D.batch_size
    grad_clip: float = _D.grad_clip
    target_modules: tuple[str, ...] = _D.target_modules
    base: str | None = None  # a diffusers folder or hub id; None: the tiny base (the CLI and tab pass the profile's)
    seed: int = 0
    hflip: bool = True  # mirror images: heads face either way
    # caption dropout (not in the paper: 0 = the paper's recipe): train this share of each batch on the empty
    # prompt too, so the unconditional branch that guidance extrapolates from also learns the real images
    empty_prompt_prob: float = 0.0
    # mask-weighted loss (not in the paper: 0 = its plain MSE): the noise-prediction error on the head (the
    # in-channel mask, dilated 2 px, at the latent grid) counts 1 + this many times (mask_loss_weights)
    mask_loss_weight: float = 0.0
    # timestep bias (not in the paper: none = uniform timesteps; timestep_bias.py): None = the run's own on a
    # resume, else the base's own at resolution 0 (the tiny base has none), uniform at another resolution
    # (a detail LoRA); diffusers' SDXL script's three settings
    timestep_bias_strategy: str | None = None
    timestep_bias_portion: float | None = None
    timestep_bias_multiplier: float | None = None
    cached: bool = True  # encode latents + prompt once (False: re-encode every step, the reference)
    reference_decodes: bool = True  # the reference also decodes/transforms/tokenizes each step (the script)
    mixed_precision: str = "auto"  # auto: fp16 on CUDA, none on CPU
    save_every: int = 50
    preview_every: int = 100
    preview_seeds: tuple[int, ...] = (0, 1, 2, 3)
    preview_scale: float = 0.9
    # the square size the images are squashed to; 0: the base's own (the size it was pretrained at). A LoRA at
    # 2x the base's size serves as the detail pass of generation (generate.py: detail_lora), not alone: a base
    # sampled above its own size draws several heads (2026-11-27: 21 of 32 "two heads" at 256² on the 128² base)
    resolution: int = 0
    names: list[str] = field(default_factory=list)  # filled in: the training images chosen
    working_size: int = 0  # filled in: the square size it trained at (generation reads it)

    @classmethod
    def from_dict(cls, d: dict) -> "LoraTrainConfig":
        known = {f.name for f in fields(cls)}
        d = {k: (tuple(v) if k in ("target_modules", "preview_seeds", "split") else v) for k, v in d.items() if k in known}
        return cls(**d)

    def validate(self) -> None:
        from ..validate import check_float, check_int, check_seed
        check_trimester(self.trimester)
        # every numeric setting has a checked range, refused with the field's name (never clamped): lr 1e30
        # once trained to NaN weights and reported "saved"; grad_clip NaN or -1 silently disabled clipping
        self.n = check_int(self.n, "images per trimester (n)", 1, 10_000)
        self.steps = check_int(self.steps, "steps", 1, 1_000_000)
        self.rank = check_int(self.rank, "rank", 1, 1024)
        self.alpha = check_int(self.alpha, "alpha", 1, 4096)
        self.batch_size = check_int(self.batch_size, "batch_size", 1, 256)
        self.lr = check_float(self.lr, "learning rate (lr)", 0, 1, lo_open=True, hi_open=True)
        self.grad_clip = check_float(self.grad_clip, "gradient clipping (grad_clip; 0 = off)", 0, 1e6)
        self.seed = check_seed(self.seed, "seed")
        self.selection_seed = check_seed(self.selection_seed, "selection seed")
        self.split_seed = check_seed(self.split_seed, "split_seed")
        self.save_every = check_int(self.save_every, "save_every", 1, 1_000_000)
        self.preview_every = check_int(self.preview_every, "preview_every (0 = none)", 0, 1_000_000)
        self.preview_scale = check_float(self.preview_scale, "preview LoRA scale (preview_scale)", 0, 4)  # as generation's
        self.empty_prompt_prob = check_float(self.empty_prompt_prob, "empty-prompt share (empty_prompt_prob)",
                                             0, 0.95)
        self.resolution = check_int(self.resolution, "resolution (0 = the base's own)", 0, 2048)
        self.mask_loss_weight = check_float(self.mask_loss_weight, "mask loss weight (0 = the paper's plain loss)",
                                            0, 100)
        from .timestep_bias import check_asked_timestep_bias  # unset (None) stays unset: resolved when training starts
        self.timestep_bias_strategy, self.timestep_bias_portion, self.timestep_bias_multiplier = (
            check_asked_timestep_bias(self.timestep_bias_strategy, self.timestep_bias_portion,
                                      self.timestep_bias_multiplier))
        if self.resolution and (self.resolution % 8 or self.resolution < 32):
            from ..data import DataError
            raise DataError(f"resolution must be 0 (the base's own) or a multiple of 8 from 32 to 2048, "
                            f"got {self.resolution}")


# ----------------------------------------------------------------------------- data
def mask_loss_weights(x, latent_hw: tuple[int, int], weight: float):
    """Per-image loss weights at the latent grid, (N, 1, h, w): 1 + weight × the share of each latent cell
    covered by the head mask (the B channel of the in-channel images x, (N, 3, H, W) in [-1, 1]) dilated by
    2 px, so the skull echo just outside the mask counts with it. Why (2026-11-27, docs/lab/2026-11-pretraining.md): the
    tiny base's first-trimester LoRAs draw samples whose head the UNet erases part-way; weighing the head's
    error more is meant to teach the LoRA the head more firmly."""
    import torch
    m = (x[:, 2:3] > 0).float()
    m = torch.nn.functional.max_pool2d(m, 5, stride=1, padding=2)
    return 1.0 + float(weight) * torch.nn.functional.adaptive_avg_pool2d(m, tuple(latent_hw))


def training_images(cfg: LoraTrainConfig, resolution: int, allowed_roots=None) -> tuple[np.ndarray, list[str]]:
    """The seeded choice of n images of the trimester, as (n, R, R, 3) uint8 in-channel images."""
    from ..data import DataError, open_source, select_per_trimester, split_indices
    from .base import to_model_size
    src = open_source(cfg.data, allowed_roots)
    if cfg.pool not in ("all", "train"):
        raise DataError(f"pool must be 'all' or 'train', got {cfg.pool!r}")
    pool = split_indices(src.metas, cfg.split, cfg.split_seed)["train"] if cfg.pool == "train" else None
    sel = select_per_trimester(src.metas, cfg.n, cfg.selection_seed, pool=pool,
                               trimesters=[cfg.trimester])[cfg.trimester]
    rgb, names = [], []
    for i in sel:
        s = src[i]
        if s.mask is None:
            raise DataError(f"{s.name} has no mask: LoRA training needs image + mask pairs")
        rgb.append(to_model_size(s.image, s.mask, resolution))
        names.append(s.name)
    return np.stack(rgb), names


def lora_config(cfg: LoraTrainConfig):
    from peft import LoraConfig
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights="gaussian",
                      target_modules=list(cfg.target_modules))


def save_lora(unet, out_dir: Path) -> Path:
    """The UNet's LoRA in the diffusers format (save_lora_weights, safetensors), replaced atomically."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    tmp = Path(tempfile.mkdtemp(prefix=".lora-", dir=out_dir))
    try:
        StableDiffusionPipeline.save_lora_weights(
            str(tmp), unet_lora_layers=layers, safe_serialization=True,
            unet_lora_adapter_metadata=unet.peft_config["default"].to_dict())
        os.replace(tmp / WEIGHTS, out_dir / WEIGHTS)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / WEIGHTS


def _script_transforms(res: int):
    """train_text_to_image_lora.py's train_transforms (center crop; the flip is the image's index here)."""
    from torchvision import transforms
    return transforms.Compose([transforms.Resize(res, interpolation=transforms.InterpolationMode.BILINEAR),
                               transforms.CenterCrop(res), transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])


def _script_batch(pngs: list[bytes], idx, tfm, tok, prompt: str, empty: list[bool] | None = None):
    """One batch the way the example script's dataset builds it on every fetch: decode the stored image
    (index >= len(pngs): its mirror), transform it, tokenize the caption. Same pixels as rgb_to_tensor."""
    import torch
    from PIL import Image
    pix = []
    for i in idx.tolist():
        im = Image.open(io.BytesIO(pngs[i % len(pngs)])).convert("RGB")
        pix.append(tfm(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i >= len(pngs) else im))
    captions = ["" if e else prompt for e in (empty or [False] * len(pix))]
    ids = tok(captions, max_length=tok.model_max_length, padding="max_length", truncation=True,
              return_tensors="pt").input_ids
    return torch.stack(pix), ids


def _grid(images: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(images, axis=1) if images else np.zeros((8, 8, 3), np.uint8)


# ----------------------------------------------------------------------------- training
def train_lora(cfg: LoraTrainConfig, out_dir: str | Path, resume: bool = True,
               stop: Callable[[], bool] | None = None, pipe=None, allowed_roots=None,
               images: np.ndarray | None = None) -> Iterator[dict]:
    """Generator of progress events: start, step (loss), preview (images), saved, stopped, done.

    `pipe`: an already-loaded base pipeline to train on (tests, benchmark); by default the base is loaded.
    `images`: in-channel training images to use instead of the data source (benchmark, tests).
    """
    import torch
    from accelerate import Accelerator

    from .base import base_resolution, load_pipeline, prompt_for, rgb_to_tensor
    cfg.validate()
    out = Path(out_dir)
    # before anything is loaded or written: the resume rule of every run (runs.RunDir.start) refuses a changed
    # setting by name, and never silently starts an existing LoRA over (resume=False with a saved state)
    _remove_leftovers(out)
    run = lora_run(out)
    state = run.resume_state() if run.state_path.is_file() else None
    saved = state.get("config", {}) if state is not None else (run.config() if run.exists() else None)
    # resolved before the resume rule compares: an unset bias is the run's own on a resume, else the base's
    # (at the base's own size: resolution 0)
    from .timestep_bias import TimestepBias, resolve_timestep_bias
    for k, v in resolve_timestep_bias(asdict(cfg), cfg.base, saved, base_size=not cfg.resolution).items():
        setattr(cfg, k, v)
    bias = TimestepBias(cfg.timestep_bias_strategy, cfg.timestep_bias_portion, cfg.timestep_bias_multiplier)
    run.start(_resume_view(asdict(cfg)), resume, write=False,
              saved=None if saved is None else _resume_view(saved), **_RESUME_RULE)
    mp = cfg.mixed_precision
    if mp == "auto":
        mp = "fp16" if torch.cuda.is_available() else "no"
    accelerator = Accelerator(mixed_precision=mp)
    device = accelerator.device
    if pipe is None:
        pipe = load_pipeline(cfg.base, device=str(device), dtype=torch.float32)
    # given images (benchmark, tests) bring their own size: `bench diffusion --resolution` times a larger one
    res = (cfg.resolution or base_resolution(pipe)) if images is None else int(np.asarray(images).shape[1])
    cfg.working_size = res
    if images is None:
        images, names = training_images(cfg, res, allowed_roots)
        cfg.names = names
    elif not cfg.names:
        cfg.names = [f"image_{i}" for i in range(len(images))]
    unet, vae, te, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    vae.requires_grad_(False); te.requires_grad_(False); unet.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # the Gaussian init of lora_A is seeded: runs repeat exactly
        torch.manual_seed(cfg.seed)
        unet.add_adapter(lora_config(cfg))
    sched = _noise_scheduler(pipe)

    step, losses, rng_state, opt_state = 0, [], None, None
    if state is not None:
        from peft.utils import set_peft_model_state_dict
        sd = state.get("lora")  # the weights of the saved step, inside the state (its commit point)
        if sd is None:  # a state saved before the weights moved into it: the weights file beside it
            from diffusers.utils import convert_unet_state_dict_to_peft
            from safetensors.torch import load_file
            sd = convert_unet_state_dict_to_peft(
                {k.removeprefix("unet."): v for k, v in load_file(out / WEIGHTS).items()})
        set_peft_model_state_dict(unet, sd, adapter_name="default")
        opt_state = state["opt"]
        step = int(state["step"])
        losses = list(state["losses"]) if "losses" in state else _read_losses(out / "loss.csv")[:step]
        rng_state = state.get("rng")
    # the optimizer is made AFTER loading a resumed LoRA: loading may replace the parameter tensors
    params = [p for p in unet.parameters() if p.requires_grad]
    # fused: one kernel for all LoRA tensors instead of a loop of small ops (7.6 -> 2.3 ms per step on CPU)
    opt = torch.optim.AdamW(params, lr=cfg.lr, fused=True)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    unet, opt = accelerator.prepare(unet, opt)
    P = accelerator.num_processes
    if P > 1 and min(cfg.batch_size, len(images) * (2 if cfg.hflip else 1)) < P:
        from ..data import DataError
        raise DataError(f"batch_size {cfg.batch_size} is smaller than the {P} processes: each needs a share")
    x = rgb_to_tensor(images).to(device)
    if cfg.hflip:
        x = torch.cat([x, x.flip(3)])
    mask_w = mask_loss_weights(x, _latent_shape(pipe, res)[-2:], cfg.mask_loss_weight) if cfg.mask_loss_weight else None
    ids, ids_empty = tok([prompt_for(cfg.trimester), ""], padding="max_length", max_length=tok.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(device)[:, None]
    sf = vae.config.scaling_factor
    if cfg.cached:  # encode once: latent distributions of every image (and its mirror) + the prompt
        with torch.no_grad():
            dist = [vae.encode(x[i:i + 16]).latent_dist for i in range(0, len(x), 16)]
            lat_mean = torch.cat([d.mean for d in dist]); lat_std = torch.cat([d.std for d in dist])
            emb, emb_empty = te(torch.cat([ids, ids_empty]))[0][:, None]
    else:  # the reference keeps the images as stored files (PNG bytes), as a dataset on disk would
        import cv2
        pngs = [cv2.imencode(".png", np.ascontiguousarray(im[..., ::-1]))[1].tobytes() for im in images]
        tfm = _script_transforms(res)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    if rng_state is not None:  # resume continues the same random stream: same result as one run
        g.set_state(rng_state)
    if step:  # a kill may have come between the state and the files made from it: bring them in step
        _write_outputs(accelerator, unet, out, cfg, pipe, step, losses, "training")
    if accelerator.is_main_process:  # one writer: other processes train, never write
        # a finished LoRA run again (a resume with nothing left to do) stays "done"
        atomic_write_json(out / "lora_config.json",
                          _config_record(cfg, pipe, step, "done" if step >= cfg.steps else "training"))
    yield {"kind": "start", "step": step, "total": cfg.steps, "n_images": len(images), "names": cfg.names,
           "losses": list(losses), "timestep_bias": bias.describe()}
    t0 = time.time()
    unet.train()
    saved_step = step  # the step whose LoRA is on disk
    try:
        while step < cfg.steps:
            if stop is not None and stop():
                _save_all(accelerator, unet, opt, out, cfg, pipe, step, losses, "stopped", g)
                saved_step = step
                yield {"kind": "stopped", "step": step, "path": str(out)}
                return
            idx = torch.randint(len(x), (min(cfg.batch_size, len(x)),), generator=g)
            eps_lat = torch.randn((len(idx), *(_latent_shape(pipe, res))), generator=g).to(device)
            # which batch items see the empty prompt (drawn only when asked: the paper's runs keep their stream)
            empty = (torch.rand(len(idx), generator=g) < cfg.empty_prompt_prob if cfg.empty_prompt_prob > 0
                     else torch.zeros(len(idx), dtype=torch.bool)).to(device)
            noise = torch.randn(eps_lat.shape, generator=g).to(device)  # z's shape; the same draw order as ever
            t = bias.sample(sched.config.num_train_timesteps, len(idx), g).to(device)
            if P > 1:  # several processes: each trains its share of the one batch, DDP averages the gradients
                part = slice(accelerator.process_index, None, P)
                idx, eps_lat, empty, noise, t = idx[part], eps_lat[part], empty[part], noise[part], t[part]
            if cfg.cached:
                z = (lat_mean[idx] + lat_std[idx] * eps_lat) * sf
                cond = torch.where(empty[:, None, None], emb_empty, emb)
            else:  # the reference: data pipeline, VAE and text encoder every step, as diffusers' example script
                if cfg.reference_decodes:
                    pix, batch_ids = _script_batch(pngs, idx, tfm, tok, prompt_for(cfg.trimester), empty.tolist())
                else:  # VAE + text encoder only (the benchmark's breakdown)
                    pix, batch_ids = x[idx], torch.where(empty[:, None], ids_empty, ids)
                with torch.no_grad():
                    d = vae.encode(pix.to(device)).latent_dist
                    z = (d.mean + d.std * eps_lat) * sf
                    cond = te(batch_ids.to(device))[0]
            noisy = sched.add_noise(z, noise, t)
            with accelerator.autocast():
                pred = unet(noisy, t, encoder_hidden_states=cond).sample
            if mask_w is None:  # the paper's loss
                loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
            else:  # a weighted mean: the same scale as the plain loss where the weights are all 1
                w = mask_w[idx]
                loss = ((pred.float() - noise.float()) ** 2 * w).sum() / (w.sum() * pred.shape[1])
            if not torch.isfinite(loss):  # stop: a diverged LoRA must never be saved or reported as saved
                _diverged(out, cfg, pipe, step, saved_step, f"the loss is {float(loss)}")
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            lv = float(loss.detach())
            losses.append(lv)
            yield {"kind": "step", "step": step, "total": cfg.steps, "loss": lv, "elapsed_s": time.time() - t0}
            if step % cfg.save_every == 0 or step == cfg.steps:
                if not all(bool(torch.isfinite(p).all()) for p in params):
                    _diverged(out, cfg, pipe, step, saved_step, "a LoRA weight is not finite")
                saved_step = step
                _save_all(accelerator, unet, opt, out, cfg, pipe, step, losses,
                          "done" if step == cfg.steps else "training", g)
                yield {"kind": "saved", "step": step, "path": str(out / WEIGHTS)}
            if cfg.preview_every and accelerator.is_main_process and (step % cfg.preview_every == 0
                                                                      or step == cfg.steps):
                unet.eval()
                imgs = preview(pipe, cfg)
                unet.train()
                path = atomic_save_png(out / "previews" / f"step_{step:06d}.png", _grid(imgs))
                yield {"kind": "preview", "step": step, "images": imgs, "path": str(path)}
    except GeneratorExit:  # the client went away (closed stream): keep the last completed step, as Stop does
        if step > saved_step:
            _save_all(accelerator, unet, opt, out, cfg, pipe, step, losses, "stopped", g)
        raise
    unet.eval()
    yield {"kind": "done", "step": step, "path": str(out), "losses": list(losses)}


def preview(pipe, cfg: LoraTrainConfig, steps: int = 20) -> list[np.ndarray]:
    """Samples at fixed seeds with the LoRA being trained (scale via cross_attention_kwargs)."""
    import torch

    from .base import BaseSampling, prompt_for
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in cfg.preview_seeds]
    with torch.no_grad():  # sampled as generation will sample them: the base's own sampling
        out = pipe([prompt_for(cfg.trimester)] * len(gens), num_inference_steps=steps, generator=gens,
                   output_type="np", cross_attention_kwargs={"scale": cfg.preview_scale},
                   **BaseSampling.of(cfg.base).pipe_kwargs())
    return [(im * 255).round().astype(np.uint8) for im in out.images]


def _latent_shape(pipe, res: int) -> tuple[int, int, int]:
    f = pipe.vae_scale_factor
    return (pipe.vae.config.latent_channels, res // f, res // f)


def _noise_scheduler(pipe):
    from diffusers import DDPMScheduler
    return DDPMScheduler.from_config(pipe.scheduler.config)


def _config_record(cfg: LoraTrainConfig, pipe, step: int, status: str) -> dict:
    from .base import prompt_for
    return {**asdict(cfg), "prompt": prompt_for(cfg.trimester), "steps_done": step, "status": status,
            "base_resolved": str(getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path", "")),
            "weights": WEIGHTS, "format": "diffusers LoRA (save_lora_weights), UNet only"}


# settings that may differ between a run and its resume: they do not change the LoRA of a given step
RESUMABLE_CHANGES = {"steps", "save_every", "preview_every", "preview_seeds", "preview_scale", "mixed_precision",
                     "names", "working_size"}
# runs.refuse_changed's rule for a LoRA: its settings are LoraTrainConfig's fields (lora_config.json also
# records steps_done, status, ...); a field a run saved before it existed has its default, and the timestep
# bias the uniform draw such a run trained with
_RESUME_RULE = dict(may_change=RESUMABLE_CHANGES, only=[f.name for f in fields(LoraTrainConfig)],
                    defaults={**{f.name: f.default for f in fields(LoraTrainConfig) if f.default is not MISSING},
                              **UNBIASED})


def lora_run(out_dir: str | Path):
    """A LoRA folder as a run folder: settings in lora_config.json, the resume state (the commit point)
    in train_state.pt."""
    from ..runs import RunDir
    return RunDir(out_dir, config_name="lora_config.json", state_name="train_state.pt", what="LoRA")


def _resume_view(settings: dict) -> dict:
    """The settings as a resume compares them: base None means the tiny base (what resolve_base(None)
    loads), so a LoRA started before the CLI named the profile's base resumes under its name."""
    from ..config import get_profile
    return {**settings, "base": settings.get("base") or get_profile("tiny").diffusion_base}


def _diverged(out: Path, cfg, pipe, step: int, saved_step: int, why: str):
    from ..data import DataError
    msg = (f"LoRA training stopped at step {step + 1}: {why} (learning rate {cfg.lr:g} too high?). Nothing "
           f"from this step on is saved" + (f"; the LoRA of step {saved_step} is kept" if saved_step else ""))
    if saved_step:
        atomic_write_json(out / "lora_config.json", {**_config_record(cfg, pipe, saved_step, "failed"),
                                                     "failure": msg})
    raise DataError(msg)


def _save_all(accelerator, unet, opt, out: Path, cfg, pipe, step, losses, status, g) -> None:
    """train_state.pt is the commit point and holds everything a resume needs (LoRA weights, optimizer, RNG,
    losses); the weights file, loss.csv and lora_config.json are made from it afterwards, and a resume
    re-makes them, so a kill between two of these writes cannot leave them out of step."""
    import torch
    from peft.utils import get_peft_model_state_dict
    if not accelerator.is_main_process:  # one writer (several processes hold the same weights)
        return
    u = accelerator.unwrap_model(unet)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "step": step, "config": asdict(cfg), "rng": g.get_state(),
                "lora": {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(u).items()},
                "losses": list(losses)}, buf)
    atomic_write(lora_run(out).state_path, lambda tmp: open(tmp, "wb").write(buf.getvalue()), suffix=".pt")
    _write_outputs(accelerator, unet, out, cfg, pipe, step, losses, status)


def _remove_leftovers(out: Path) -> None:
    """Temporary files and folders a killed save left behind (.lora-XXXX/, .loss.csv.XXXX, ...): the
    finished files are always whole (written atomically), these half-written ones are never read."""
    if not out.is_dir():
        return
    names = (WEIGHTS, "train_state.pt", "loss.csv", "lora_config.json")
    for p in out.iterdir():
        if p.is_dir() and p.name.startswith(".lora-"):
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file() and any(p.name.startswith(f".{n}.") for n in names):
            p.unlink(missing_ok=True)


def _write_outputs(accelerator, unet, out: Path, cfg, pipe, step, losses, status) -> None:
    if not accelerator.is_main_process:
        return
    save_lora(accelerator.unwrap_model(unet), out)
    s = io.StringIO()
    w = csv.writer(s)
    w.writerow(["step", "loss"])
    w.writerows((i + 1, f"{v:.6f}") for i, v in enumerate(losses))
    atomic_write_text(out / "loss.csv", s.getvalue())
    atomic_write_json(out / "lora_config.json", _config_record(cfg, pipe, step, status))


def _read_losses(path: Path) -> list[float]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def list_loras(root: str | Path) -> list[dict]:
    """LoRA folders under root (each with weights + lora_config.json), newest first."""
    import json
    root = Path(root)
    out = []
    if not root.is_dir():
        return out
    for d in root.iterdir():
        cfgp = d / "lora_config.json"
        if (d / WEIGHTS).is_file() and cfgp.is_file():
            try:
                info = json.loads(cfgp.read_text())
            except ValueError:
                continue
            out.append({"name": d.name, "path": str(d), "trimester": info.get("trimester"),
                        "steps_done": info.get("steps_done"), "status": info.get("status"),
                        "mtime": (d / WEIGHTS).stat().st_mtime})
    return sorted(out, key=lambda r: -r["mtime"])


# ----------------------------------------------------------------------------- CLI
def add_lora_arguments(p) -> None:
    d = LoraTrainConfig()
    p.add_argument("--data", required=True, help="data source: hc18:PATH, folder:PATH or phantom[:N[:SEED]]")
    p.add_argument("--trimester", required=True, choices=TRIMESTERS, help="the trimester this LoRA learns")
    p.add_argument("--out", required=True, help="LoRA folder (rerunning resumes from it)")
    p.add_argument("--n", type=int, default=d.n, help="images per trimester (paper: 20)")
    p.add_argument("--steps", type=int, default=d.steps, help="training steps (one batch each)")
    p.add_argument("--rank", type=int, default=d.rank,
                   help="LoRA rank: size of the low-rank update per attention layer (paper: 128)")
    p.add_argument("--alpha", type=int, default=d.alpha,
                   help="LoRA alpha: the update is scaled by alpha/rank (paper: 128)")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate, constant")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="image+mask pairs per step")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="gradient norm clipping")
    p.add_argument("--empty-prompt-prob", type=float, default=d.empty_prompt_prob,
                   help="caption dropout: share of training items on the empty prompt (0 = the paper's recipe)")
    p.add_argument("--mask-loss-weight", type=float, default=d.mask_loss_weight,
                   help="weigh the loss on the head (mask dilated 2 px) 1 + this many times (0 = the paper's "
                        "plain loss)")
    tiny = base_timestep_bias(None)  # the shipped base's own, named in the help
    p.add_argument("--timestep-bias-strategy", choices=STRATEGIES, default=None,
                   help="draw the training timesteps with a bias, as diffusers' SDXL script does: later = the noisy "
                        "end, earlier = the clean end, none = uniform (the paper) (default: the base's own for a "
                        f"LoRA at its own size, else none; the tiny base's: {tiny.describe()})")
    p.add_argument("--timestep-bias-portion", type=float, default=None,
                   help="share of the timesteps the bias favours (default: the base's own, else diffusers' 0.25)")
    p.add_argument("--timestep-bias-multiplier", type=float, default=None,
                   help="how many times as often those timesteps are drawn (default: the base's own, else 1)")
    p.add_argument("--base", default=None, help="diffusers folder or hub id (default: the profile's base)")
    p.add_argument("--resolution", type=int, default=d.resolution,
                   help="square training size; 0 = the base's own. 2x the base's (256 on the tiny base) makes a "
                        "LoRA for generate's --detail-lora pass")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the LoRA init, noise and batch order")
    p.add_argument("--selection-seed", type=int, default=d.selection_seed,
                   help="seed of the draw of the training images")
    p.add_argument("--pool", choices=["all", "train"], default=d.pool,
                   help="choose the images among all of the source, or only its train split (as the sweep does)")
    p.add_argument("--save-every", type=int, default=d.save_every, help="checkpoint every N steps (resume point)")
    p.add_argument("--preview-every", type=int, default=d.preview_every, help="0: no previews")
    p.add_argument("--mixed-precision", default=d.mixed_precision, choices=["auto", "no", "fp16", "bf16"],
                   help="accelerate's mixed precision (auto: fp32 on CPU, fp16 on a GPU)")
    p.add_argument("--no-resume", action="store_true", help="refuse to continue an existing LoRA")
    add_profile_argument(p)


def run_cli(args) -> int:
    import sys

    from tqdm import tqdm
    cfg = LoraTrainConfig(data=args.data, trimester=args.trimester, n=args.n, steps=args.steps, rank=args.rank,
                          alpha=args.alpha, lr=args.lr, batch_size=args.batch_size, grad_clip=args.grad_clip,
                          base=resolve_profile(args.profile).diffusion(args.base), seed=args.seed, selection_seed=args.selection_seed, pool=args.pool,
                          save_every=args.save_every, preview_every=args.preview_every,
                          mixed_precision=args.mixed_precision, empty_prompt_prob=args.empty_prompt_prob,
                          resolution=args.resolution, mask_loss_weight=args.mask_loss_weight,
                          timestep_bias_strategy=args.timestep_bias_strategy,
                          timestep_bias_portion=args.timestep_bias_portion,
                          timestep_bias_multiplier=args.timestep_bias_multiplier)
    bar = None
    for ev in train_lora(cfg, args.out, resume=not args.no_resume):
        if ev["kind"] == "start":
            print(f"LoRA for the {cfg.trimester} trimester on {ev['n_images']} images from {cfg.data}; timesteps: "
                  f"{ev['timestep_bias']}", flush=True)
            bar = tqdm(total=ev["total"], initial=ev["step"], desc="train-lora", file=sys.stdout, mininterval=2)
        elif ev["kind"] == "step":
            bar.update(1)
            bar.set_postfix(loss=f"{ev['loss']:.4f}", refresh=False)
        elif ev["kind"] == "preview":
            bar.write(f"preview: {ev['path']}")
        elif ev["kind"] == "done":
            bar.close()
            print(f"saved {Path(ev['path']) / WEIGHTS}")
    return 0
