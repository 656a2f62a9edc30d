"""Pretrain the tiny diffusion base on phantoms (never on HC18: the few-shot premise stays honest).

    python -m pipeline pretrain-base --out assets/tiny-base

Three stages, each resumable from its checkpoint in the work folder:
1. data  — N phantoms from pipeline/phantom.py drawn at HC18's aspect ratio, resized to 128² like real
           images are, as in-channel images (R = G = image, B = filled mask); cached as one .npy;
2. vae   — AutoencoderKL on random 64² crops (it is fully convolutional), bf16 autocast (~3x faster on
           this CPU), loss = L1 + a Fourier-amplitude term + a local-contrast term: L1 alone averages
           speckle away (measured by the probe), the two extra terms ask for the same texture energy;
3. unet  — UNet + the tiny CLIP text encoder trained TOGETHER on cached latents, prompts = the trimester
           prompt of each phantom (10 % empty prompt for classifier-free guidance), min-SNR-5 weighted
           epsilon loss, EMA of the weights; training the text encoder is what gives the three trimester
           prompts distinct embeddings (a frozen random one maps them to cosine ~0.99).
Finally the EMA weights are saved as fp16 safetensors in the diffusers layout, plus a README.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..fileio import atomic_write, atomic_write_json, atomic_write_text
from ..masks import TRIMESTERS, trimester_from_hc


@dataclass
class PretrainConfig:
    n_phantoms: int = 3000
    phantom_size: tuple[int, int] = (288, 192)  # (W, H): HC18's ~1.48 aspect, squashed to 128² like HC18
    resolution: int = 128
    seed: int = 0
    vae_steps: int = 200
    vae_batch: int = 32
    vae_crop: int = 64
    vae_lr: float = 4e-4
    unet_steps: int = 2400  # the shipped base's settings: the plain command rebuilds it
    unet_batch: int = 16
    unet_lr: float = 3e-4
    uncond_prob: float = 0.1
    ema_decay: float = 0.998
    min_snr_gamma: float = 5.0
    bf16: bool = True
    ckpt_every: int = 100
    threads: int = 2
    extra: dict = field(default_factory=dict)


def _phantom_rgb(cfg: PretrainConfig, i: int) -> tuple[np.ndarray, str]:
    from ..phantom import PhantomSpec, make_phantom, phantom_plan
    from .base import to_model_size
    ph = make_phantom(cfg.seed * 1_000_003 + i, hc_mm=None, spec=PhantomSpec(size=tuple(cfg.phantom_size)))
    return to_model_size(ph.image, ph.mask, cfg.resolution), trimester_from_hc(ph.hc_mm)


def make_dataset(cfg: PretrainConfig, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, R, R, 3) uint8 in-channel phantoms and their trimester index (0, 1, 2); cached in work/."""
    path, tpath = work / "phantoms.npy", work / "phantom_trimesters.npy"
    if path.is_file() and tpath.is_file():
        x, t = np.load(path), np.load(tpath)
        if len(x) == cfg.n_phantoms and x.shape[1] == cfg.resolution:
            return x, t
    rgb, tri = [], []
    # the GA is drawn uniformly over 11.5-40 weeks so all three trimesters are well represented
    for i in range(cfg.n_phantoms):
        r, t = _phantom_rgb(cfg, i)
        rgb.append(r)
        tri.append(TRIMESTERS.index(t))
    x, t = np.stack(rgb), np.array(tri, np.int64)
    atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), x), suffix=".npy")
    atomic_write(tpath, lambda tmp: np.save(open(tmp, "wb"), t), suffix=".npy")
    return x, t


# ----------------------------------------------------------------------------- losses
def vae_recon_loss(rec, x):
    """L1 + Fourier amplitude (log) L1 + local-contrast L1: keeps speckle energy that plain L1 blurs."""
    import torch
    import torch.nn.functional as F
    l1 = (rec - x).abs().mean()
    fa = torch.log1p(torch.fft.rfft2(rec.float(), norm="ortho").abs())
    fb = torch.log1p(torch.fft.rfft2(x.float(), norm="ortho").abs())
    freq = (fa - fb).abs().mean()

    def local_std(z):
        mu = F.avg_pool2d(z, 5, 1, 2)
        return (F.avg_pool2d(z * z, 5, 1, 2) - mu * mu).clamp_min(1e-6).sqrt()
    contrast = (local_std(rec.float()) - local_std(x.float())).abs().mean()
    return l1 + 0.3 * freq + 0.5 * contrast


def _save_ckpt(path: Path, obj: dict) -> None:
    import torch
    atomic_write(path, lambda tmp: torch.save(obj, tmp), suffix=".pt")


def pretrain(cfg: PretrainConfig, out_dir: str | Path, work_dir: str | Path | None = None,
             stop=None) -> Iterator[dict]:
    """Generator: yields {"kind": "stage"|"step"|"done", ...}; resumes from work_dir checkpoints."""
    import torch
    from .base import build_tiny_components, prompt_for, rgb_to_tensor

    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir else out_dir.parent / f".{out_dir.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / "config.json", asdict(cfg))
    torch.set_num_threads(cfg.threads)
    amp = dict(device_type="cpu", dtype=torch.bfloat16, enabled=cfg.bf16)
    t_start = time.time()

    yield {"kind": "stage", "stage": "data", "n": cfg.n_phantoms}
    data, tri = make_dataset(cfg, work)
    comps = build_tiny_components(cfg.seed)
    vae, unet, te, tok, sched = (comps[k] for k in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"))
    g = torch.Generator().manual_seed(cfg.seed)

    # ---- stage 2: VAE
    vae_ck = work / "vae.pt"
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    step = 0
    if vae_ck.is_file():
        ck = torch.load(vae_ck, weights_only=False)
        vae.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); step = ck["step"]
        g.set_state(ck["rng"])
    yield {"kind": "stage", "stage": "vae", "step": step, "total": cfg.vae_steps}
    vae.train()
    while step < cfg.vae_steps:
        if stop is not None and stop():
            _save_ckpt(vae_ck, {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "rng": g.get_state()})
            yield {"kind": "stopped", "stage": "vae", "step": step}
            return
        idx = torch.randint(len(data), (cfg.vae_batch,), generator=g)
        c = cfg.vae_crop
        oy, ox = (int(v) for v in torch.randint(cfg.resolution - c + 1, (2,), generator=g))
        x = rgb_to_tensor(data[idx.numpy(), oy:oy + c, ox:ox + c])
        if torch.rand((), generator=g) < 0.5:
            x = x.flip(3)
        lr = cfg.vae_lr * min(1.0, (step + 1) / 50)
        for pg in opt.param_groups:
            pg["lr"] = lr
        with torch.autocast(**amp):
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample(generator=g)).sample
        rec = rec.float()
        rl = vae_recon_loss(rec, x)
        kl = post.kl().float().mean() / x[0].numel()
        loss = rl + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        yield {"kind": "step", "stage": "vae", "step": step, "total": cfg.vae_steps, "loss": float(loss.detach()),
               "l1": float((rec - x).abs().mean())}
        if step % cfg.ckpt_every == 0 or step == cfg.vae_steps:
            _save_ckpt(vae_ck, {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "rng": g.get_state()})
    vae.eval().requires_grad_(False)

    # ---- latents once (the VAE is frozen from here): posterior mean and std of every phantom
    lat_path = work / "latents.pt"
    if lat_path.is_file():
        lat = torch.load(lat_path)
    else:
        means, stds = [], []
        with torch.no_grad():
            for i in range(0, len(data), 64):
                d = vae.encode(rgb_to_tensor(data[i:i + 64])).latent_dist
                means.append(d.mean); stds.append(d.std)
        lat = {"mean": torch.cat(means), "std": torch.cat(stds)}
        _save_ckpt(lat_path, lat)
    # SD's convention: latents * scaling_factor have unit variance
    sf = float(1.0 / lat["mean"].std())
    vae.register_to_config(scaling_factor=sf)

    # ---- stage 3: UNet + text encoder
    ids = tok([prompt_for(t) for t in TRIMESTERS] + [""], padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="pt").input_ids  # 0..2 trimester prompts, 3 = empty
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]
    step = 0
    unet_ck = work / "unet.pt"
    if unet_ck.is_file():
        ck = torch.load(unet_ck, weights_only=False)
        unet.load_state_dict(ck["unet"]); te.load_state_dict(ck["te"]); opt.load_state_dict(ck["opt"])
        ema = ck["ema"]; step = ck["step"]; g.set_state(ck["rng"])
    alphas = sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    tri_t = torch.from_numpy(tri)
    yield {"kind": "stage", "stage": "unet", "step": step, "total": cfg.unet_steps, "scaling_factor": sf}
    unet.train(); te.train()

    def save_unet():
        _save_ckpt(unet_ck, {"unet": unet.state_dict(), "te": te.state_dict(), "opt": opt.state_dict(),
                             "ema": ema, "step": step, "rng": g.get_state()})
    while step < cfg.unet_steps:
        if stop is not None and stop():
            save_unet()
            yield {"kind": "stopped", "stage": "unet", "step": step}
            return
        idx = torch.randint(len(data), (cfg.unet_batch,), generator=g)
        z = lat["mean"][idx] + lat["std"][idx] * torch.randn(lat["mean"][idx].shape, generator=g)
        z = z * sf
        if torch.rand((), generator=g) < 0.5:  # heads face either way in real scans
            z = z.flip(3)
        noise = torch.randn(z.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(z),), generator=g)
        noisy = sched.add_noise(z, noise, t)
        which = tri_t[idx].clone()
        which[torch.rand(len(z), generator=g) < cfg.uncond_prob] = 3
        lr = cfg.unet_lr * min(1.0, (step + 1) / 100)
        for pg in opt.param_groups:
            pg["lr"] = lr
        with torch.autocast(**amp):
            emb = te(ids)[0]  # 4 prompts through the encoder, then gathered: cheap and trains it
            pred = unet(noisy, t, encoder_hidden_states=emb[which]).sample
        w = torch.clamp(snr[t], max=cfg.min_snr_gamma) / snr[t]  # min-SNR weighting (Hang et al. 2023)
        loss = (w * ((pred.float() - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        d = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - d)
        yield {"kind": "step", "stage": "unet", "step": step, "total": cfg.unet_steps, "loss": float(loss.detach())}
        if step % cfg.ckpt_every == 0 or step == cfg.unet_steps:
            save_unet()

    # ---- save the EMA weights, fp16, diffusers layout
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    unet.eval(); te.eval()
    comps["scheduler"] = sched
    _save_base(comps, out_dir, cfg, time.time() - t_start)
    yield {"kind": "done", "out": str(out_dir), "minutes": (time.time() - t_start) / 60}


def _save_base(comps: dict, out_dir: Path, cfg: PretrainConfig, seconds: float) -> None:
    """save_pretrained into a temp folder beside out_dir, then swap it in (never a half-written base)."""
    import torch
    from .base import assemble_pipeline
    pipe = assemble_pipeline(comps)
    pipe.to(torch.float16)
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    readme = _readme(cfg, seconds)
    atomic_write_text(tmp / "README.md", readme)
    atomic_write_json(tmp / "pretrain_config.json", asdict(cfg))
    old = out_dir.parent / f".{out_dir.name}.old"
    if out_dir.exists():
        if old.exists():
            shutil.rmtree(old)
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old.exists():
        shutil.rmtree(old)


def rebuild_command(cfg: PretrainConfig) -> str:
    d = PretrainConfig()
    parts = ["python -m pipeline pretrain-base --out assets/tiny-base"]
    for k in ("n_phantoms", "vae_steps", "unet_steps", "vae_batch", "unet_batch", "seed"):
        if getattr(cfg, k) != getattr(d, k):
            parts.append(f"--{k.replace('_', '-')} {getattr(cfg, k)}")
    return " ".join(parts)


def _took(seconds: float) -> str:
    if seconds <= 0:
        return "exported mid-run"
    return f"this build took {seconds / 60:.0f} minutes on a 2-core Xeon CPU"


def _readme(cfg: PretrainConfig, seconds: float) -> str:
    return f"""# Tiny diffusion base (SonoSynth Lab)

A small Stable-Diffusion-architecture model (diffusers `AutoencoderKL` + `UNet2DConditionModel` +
transformers `CLIPTextModel` + SD v1.5's exact CLIP tokenizer), 128², in-channel images
(R = G = ultrasound, B = filled head mask). Pretrained by our own code on {cfg.n_phantoms} **phantoms**
from `pipeline/phantom.py` — never on HC18 — so few-shot LoRA experiments on real data stay honest.
fp16 safetensors, standard diffusers layout: `StableDiffusionPipeline.from_pretrained(this_folder)`.

Rebuild exactly ({_took(seconds)}; bf16 autocast on a CPU with AMX):

    {rebuild_command(cfg)}

Recipe: VAE {cfg.vae_steps} steps (batch {cfg.vae_batch}, {cfg.vae_crop}² crops, L1 + Fourier-amplitude +
local-contrast loss), then UNet + text encoder {cfg.unet_steps} steps (batch {cfg.unet_batch}, lr {cfg.unet_lr},
min-SNR-{cfg.min_snr_gamma:g} weighting, {cfg.uncond_prob:.0%} empty prompts, EMA {cfg.ema_decay}); bf16 autocast;
seed {cfg.seed}. Full settings: pretrain_config.json.
"""


def export_checkpoint(work_dir: str | Path, out_dir: str | Path) -> Path:
    """Save the work folder's latest checkpoints (EMA UNet + text encoder) as a base folder, mid-run.

    For looking at an intermediate model while pretraining goes on; the shipped base comes from the
    end of `pretrain`."""
    import torch

    from .base import build_tiny_components
    work, out_dir = Path(work_dir), Path(out_dir)
    cfg = PretrainConfig(**{k: v for k, v in json.loads((work / "config.json").read_text()).items()
                            if k in PretrainConfig.__dataclass_fields__})
    comps = build_tiny_components(cfg.seed)
    comps["vae"].load_state_dict(torch.load(work / "vae.pt", weights_only=False)["model"])
    lat = torch.load(work / "latents.pt")
    comps["vae"].register_to_config(scaling_factor=float(1.0 / lat["mean"].std()))
    ck = torch.load(work / "unet.pt", weights_only=False)
    comps["unet"].load_state_dict(ck["unet"]); comps["text_encoder"].load_state_dict(ck["te"])
    params = list(comps["unet"].parameters()) + list(comps["text_encoder"].parameters())
    with torch.no_grad():
        for p, e in zip(params, ck["ema"]):
            p.copy_(e)
    cfg.extra = {"exported_at_unet_step": int(ck["step"])}
    _save_base(comps, out_dir, cfg, 0.0)
    return out_dir
