"""Pretrain the tiny diffusion base: phantoms (with masks) + optional UNLABELLED real ultrasound.

    python -m pipeline pretrain-base --out assets/tiny-base                       # phantoms only
    python -m pipeline pretrain-base --init-base assets/phantom-base --vae-train decoder \
        --unlabelled ../shared/data/hc18/test_set --exclude hc18:../shared/data/hc18 --out assets/tiny-base

The few-shot claim is about ANNOTATIONS: unlabelled images are what hospitals have plenty of, so a base may
learn what ultrasound looks like from them (the HC18 test set: 335 images whose annotations were never
published). No image with an annotation, and no image any evaluation uses, goes into pretraining:
`--exclude` data sources are checked pixel by pixel against the unlabelled folder and a match is refused.

Three stages, each resumable from its checkpoint in the work folder, each one function in a module named for
it: data here (make_dataset, make_unlabelled), vae in pretrain_vae.py (train_vae), unet in pretrain_unet.py
(encode_latents, train_unet); what they share (the run, its random streams, checkpoints) in pretrain_run.py.
1. data  — N phantoms from pipeline/phantom.py drawn at HC18's aspect ratio, resized to 128² like real
           images are, as in-channel images (R = G = image, B = filled mask); cached as one .npy;
           unlabelled real images as `real_views` seeded views each (zoom, small rotation, gain), 128²;
2. vae   — AutoencoderKL on random 64² crops (it is fully convolutional), bf16 autocast (~3x faster on
           this CPU), loss = L1 + a Fourier-amplitude term + a local-contrast term: L1 alone averages
           speckle away (measured by the probe), the two extra terms ask for the same texture energy;
           `--vae-adv-weight` adds a patch discriminator on the image channel: the pixel terms still make the
           decoder draw the average of the speckle a latent allows, and the discriminator asks for a sample
           of it (the shipped base's stage 4: sample KID 0.55 -> 0.28 in the first trimester, README);
3. unet  — UNet + the tiny CLIP text encoder trained TOGETHER on cached latents, prompts = the trimester
           prompt of each phantom (10 % empty prompt for classifier-free guidance), min-SNR-5 weighted
           epsilon loss, EMA of the weights; training the text encoder is what gives the three trimester
           prompts distinct embeddings (a frozen random one maps them to cosine ~0.99).
           An unlabelled image has no mask: its B channel is empty and its caption is UNLABELLED_PROMPT (the
           trimester prompt without the trimester), so "empty B" is tied to a caption the LoRA never uses,
           and "…, second trimester" keeps meaning "a head WITH its mask" (learned from the phantoms).
The VAE sees unlabelled crops with a random filled ellipse in B (it must carry any mask over real texture;
which mask does not matter to an autoencoder). `--vae-train decoder` keeps the encoder (so the latent space)
of `--init-base` and teaches only the decoder real texture: the init base's UNet stays valid and goes on
learning from where it was, instead of from scratch.
Finally the EMA weights are saved as fp16 safetensors in the diffusers layout, plus a README.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..fileio import atomic_write, atomic_write_json, atomic_write_text
from ..masks import TRIMESTERS, trimester_from_hc
# the stages of the recipe, one module each (names re-exported: scripts and tests import them from here)
from .pretrain_run import StageRun, _save_ckpt, ema_update  # noqa: F401
from .pretrain_unet import (UNLABELLED_PROMPT, UnetLatents, encode_all, encode_latents, latent_scaling,  # noqa: F401
                            prompt_ids, train_unet)
from .pretrain_vae import (adaptive_weight, build_discriminator, image_channel, image_detail, judge_vae,  # noqa: F401
                           judge_vae_pairs, random_ellipse_mask, train_vae, vae_recon_loss, vae_trainable)


@dataclass
class PretrainConfig:
    n_phantoms: int = 3000
    phantom_size: tuple[int, int] = (288, 192)  # (W, H): HC18's ~1.48 aspect, squashed to 128² like HC18
    # how large a trimester's phantom heads are: "demo" (35-70 % of the height by gestational age: 9 / 13 / 19 %
    # of the frame) or "hc18" (drawn from HC18's own shares, 14 / 33 / 34 %; pipeline/phantom.py HC18_HEAD_AREA)
    phantom_framing: str = "demo"
    # False: gestational age uniform over 11.5-40 weeks, so only 8 % of the phantoms are first-trimester ones;
    # True: the three trimesters in turn (phantom i is trimester i % 3), the age uniform within it
    phantom_balance: bool = False
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
    bf16: bool | str = "auto"  # "auto": bf16 autocast only where the CPU has native bf16 (else ~20x slower)
    ckpt_every: int = 100
    threads: int = 2
    unlabelled: str | None = None  # folder of unlabelled real ultrasound images (no masks), e.g. the HC18 test set
    exclude: tuple[str, ...] = ()  # data specs whose images must not appear among the unlabelled ones
    real_views: int = 4
    real_frac: float = 0.6  # share of each UNet batch drawn from unlabelled real images
    vae_real_ellipse_prob: float = 0.7
    init_base: str | None = None  # start VAE / UNet / text encoder from this base folder
    vae_train: str = "all"  # "all" | "decoder" (keeps the init base's encoder, so its latent space)
    judge: str | None = None  # data spec of real image+mask pairs to REPORT the VAE's reconstruction on
    judge_n: int = 32
    latent_channels: int = 4  # SD's 4; more keeps more speckle through the VAE (the UNet barely grows)
    # a patch discriminator on the decoded image channel (MONAI's PatchDiscriminator, least squares): a decoder
    # trained on pixel losses alone draws the average of the speckle a latent allows, i.e. a blur. 0 = off; else
    # the factor on latent-diffusion's adaptive weight (its kl-f8 autoencoder used 0.5)
    vae_adv_weight: float = 0.0
    vae_adv_start: int = 0  # VAE step from which the discriminator pulls on the decoder (it trains from step 1)
    disc_lr: float = 2e-4
    # an EMA of the VAE's trained weights (0 = off): the adversarial pull makes successive decoders differ (KID
    # of snapshots 2.5 min apart went 0.33 -> 0.15 -> 0.43 on 2026-11-26); the saved VAE is the average
    vae_ema_decay: float = 0.0
    # extra L1 weight on the bright pixels of the image channel, (1 + k * brightness): the skull echo is a thin
    # bright ring that a decoder chasing speckle drew fainter and broken (QC -0.04..-0.08, 2026-11-26). 0 = off
    vae_echo_weight: float = 0.0
    # share of each decoder batch decoded from the init base's UNet's one-step clean estimate of the noised
    # latent (noise level t drawn in 1..vae_unet_t_max) instead of from the encoder: sampling decodes the UNet's
    # latents, which are smoother than the encoder's (2-20 % less std per channel, 2026-11-26), and decoders
    # trained on encoder latents alone drew the skull fainter on them (first-trimester QC 0.84-0.86). 0 = off
    vae_unet_latent_frac: float = 0.0
    vae_unet_t_max: int = 250
    # further sizes the UNet + text encoder also train at, one size per step in turn, each batch holding about
    # the pixels of `unet_batch` images at `resolution` (e.g. (256,): a base that samples at 128² and, for the
    # detail pass, at 256²; a UNet that only ever saw 16² latents tiles heads over 32² ones — 1 of 32 valid,
    # 2026-11-27). The VAE and the saved base's own size stay `resolution`
    extra_resolutions: tuple[int, ...] = ()
    device: str = "auto"  # "auto": CUDA where there is one, else the CPU (a setting of the machine, not the recipe)
    workers: int = 1  # processes drawing the phantoms (the same phantoms whatever the number)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.exclude = tuple(self.exclude)
        self.extra_resolutions = tuple(int(r) for r in self.extra_resolutions)
        for r in self.extra_resolutions:
            if r % 8 or not int(self.resolution) < r <= 1024:
                raise ValueError(f"an extra resolution must be a multiple of 8 above the resolution "
                                 f"({self.resolution}) and at most 1024, not {r}")
        if len(set(self.extra_resolutions)) != len(self.extra_resolutions):
            raise ValueError(f"extra resolutions repeat a size: {self.extra_resolutions}")
        self.phantom_size = tuple(self.phantom_size)
        from ..phantom import FRAMINGS
        if self.phantom_framing not in FRAMINGS:
            raise ValueError(f"phantom_framing must be one of {', '.join(FRAMINGS)}, not {self.phantom_framing!r}")
        if self.vae_train not in ("all", "decoder"):
            raise ValueError(f"vae_train must be 'all' or 'decoder', not {self.vae_train!r}")
        if self.vae_train == "decoder" and not self.init_base:
            raise ValueError("vae_train='decoder' keeps an existing encoder: give init_base (--init-base)")
        if not 0.0 <= self.real_frac <= 1.0:
            raise ValueError(f"real_frac must be in [0, 1], not {self.real_frac}")
        if self.real_frac > 0 and not self.unlabelled and self.unlabelled is not None:
            raise ValueError("real_frac > 0 needs an unlabelled folder")
        for k in ("n_phantoms", "vae_batch", "unet_batch", "real_views", "ckpt_every", "threads", "judge_n",
                  "latent_channels", "workers"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be at least 1, not {getattr(self, k)}")
        for k in ("vae_steps", "unet_steps", "vae_adv_start"):
            if int(getattr(self, k)) < 0:
                raise ValueError(f"{k} must not be negative, not {getattr(self, k)}")
        if not (math.isfinite(float(self.vae_adv_weight)) and float(self.vae_adv_weight) >= 0):
            raise ValueError(f"vae_adv_weight must be 0 (off) or positive, not {self.vae_adv_weight}")
        if not (math.isfinite(float(self.vae_ema_decay)) and 0.0 <= float(self.vae_ema_decay) < 1.0):
            raise ValueError(f"vae_ema_decay must be 0 (off) or in (0, 1), not {self.vae_ema_decay}")
        if not (math.isfinite(float(self.vae_echo_weight)) and float(self.vae_echo_weight) >= 0):
            raise ValueError(f"vae_echo_weight must be 0 (off) or positive, not {self.vae_echo_weight}")
        if not (math.isfinite(float(self.vae_unet_latent_frac)) and 0.0 <= float(self.vae_unet_latent_frac) <= 1.0):
            raise ValueError(f"vae_unet_latent_frac must be in [0, 1] (0 = off), not {self.vae_unet_latent_frac}")
        if not 1 <= int(self.vae_unet_t_max) <= 999:
            raise ValueError(f"vae_unet_t_max must be between 1 and 999, not {self.vae_unet_t_max}")
        if self.vae_unet_latent_frac > 0 and (self.vae_train != "decoder"
                                              or int(self.vae_crop) != int(self.resolution)):
            raise ValueError("vae_unet_latent_frac needs --vae-train decoder (the init base's UNet knows only its "
                             "encoder's latents) and --vae-crop equal to the resolution (the UNet sees whole "
                             f"frames), not vae_train={self.vae_train!r}, vae_crop={self.vae_crop}")
        if not (math.isfinite(float(self.disc_lr)) and float(self.disc_lr) > 0):
            raise ValueError(f"disc_lr must be positive, not {self.disc_lr}")
        if not 8 <= int(self.vae_crop) <= int(self.resolution):
            raise ValueError(f"vae_crop must be between 8 and the resolution ({self.resolution}), not {self.vae_crop}")
        if self.device not in ("auto", "cpu") and not str(self.device).startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', not {self.device!r}")

    def unet_sizes(self) -> list[tuple[int, int]]:
        """(size, batch) the UNet trains at, in turn: the base size, then each extra one with the same pixels."""
        r = int(self.resolution)
        return [(r, int(self.unet_batch))] + [(s, max(1, round(self.unet_batch * r * r / (s * s))))
                                              for s in self.extra_resolutions]

    def torch_device(self):
        import torch
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {self.device!r} asked for, but torch sees no CUDA GPU here")
        return torch.device(self.device)

    def use_bf16(self) -> bool:
        if self.bf16 == "auto" and self.torch_device().type == "cuda":
            import torch
            return torch.cuda.is_bf16_supported()
        if self.bf16 == "auto":
            from .generate import cpu_has_fast_bf16
            return cpu_has_fast_bf16()
        return bool(self.bf16)


# settings that may change when a run is resumed: more steps, checkpoint cadence, threads, the report set
RESUMABLE_CHANGES = ("vae_steps", "unet_steps", "ckpt_every", "threads", "judge", "judge_n", "extra", "device",
                     "workers")


def check_resume(cfg: "PretrainConfig", work: Path) -> None:
    """Refuse to resume a work folder with different settings (naming them), never mix two recipes: runs.py's
    resume rule (changed_settings), with pretraining's own list of settings that may change."""
    from ..runs import changed_settings
    path = work / "config.json"
    if not path.is_file():
        return
    new = json.loads(json.dumps(asdict(cfg)))
    # a setting added after the run was started is read as its default (what that run used)
    changed = changed_settings(json.loads(path.read_text()), new, may_change=RESUMABLE_CHANGES, only=list(new),
                               defaults=json.loads(json.dumps(asdict(PretrainConfig()))))
    if changed:
        raise ValueError(f"the work folder {work} holds a run with other settings: {', '.join(changed)}; use "
                         f"another --work folder or the same settings")


def _phantom_rgb(cfg: PretrainConfig, i: int, sizes: tuple[int, ...] | None = None):
    """Phantom i as in-channel images, one per size (default: the resolution alone), and its trimester."""
    from ..masks import hc_from_ga_weeks
    from ..phantom import GA_RANGES, PhantomSpec, make_phantom
    from .base import to_model_size
    seed, hc = cfg.seed * 1_000_003 + i, None
    if cfg.phantom_balance:  # trimester i % 3, its age drawn from the phantom's own seed
        hc = hc_from_ga_weeks(float(np.random.default_rng(seed + 17).uniform(*GA_RANGES[TRIMESTERS[i % 3]])))
    ph = make_phantom(seed, hc_mm=hc, spec=PhantomSpec(size=tuple(cfg.phantom_size), framing=cfg.phantom_framing))
    if sizes is None:
        return to_model_size(ph.image, ph.mask, cfg.resolution), trimester_from_hc(ph.hc_mm)
    return [to_model_size(ph.image, ph.mask, s) for s in sizes], trimester_from_hc(ph.hc_mm)


def _cache_name(stem: str, cfg: PretrainConfig, size: int) -> str:
    # the base size keeps the name earlier work folders used, so they still resume
    return f"{stem}.npy" if size == int(cfg.resolution) else f"{stem}_{size}.npy"


def make_dataset(cfg: PretrainConfig, work: Path, sizes: tuple[int, ...] | None = None):
    """(N, R, R, 3) uint8 in-channel phantoms and their trimester index (0, 1, 2); cached in work/.
    With `sizes`: ({size: (N, s, s, 3)}, trimesters), every size drawn from the same phantoms."""
    want = (int(cfg.resolution),) if sizes is None else tuple(sizes)
    paths = {s: work / _cache_name("phantoms", cfg, s) for s in want}
    tpath = work / "phantom_trimesters.npy"
    if all(p.is_file() for p in paths.values()) and tpath.is_file():
        xs, t = {s: np.load(p, mmap_mode="r") for s, p in paths.items()}, np.load(tpath)
        if all(len(x) == cfg.n_phantoms and x.shape[1] == s for s, x in xs.items()):
            xs = {s: np.load(p) for s, p in paths.items()}
            return (xs[want[0]], t) if sizes is None else (xs, t)
    rgb, tri = {s: [] for s in want}, []
    # the GA is drawn uniformly over 11.5-40 weeks so all three trimesters are well represented; phantom i
    # depends on i alone, so any number of workers draws the same set
    if cfg.workers > 1:
        import multiprocessing as mp
        from functools import partial
        with mp.get_context("spawn").Pool(cfg.workers) as pool:
            made = pool.map(partial(_phantom_rgb, cfg, sizes=want), range(cfg.n_phantoms), chunksize=64)
    else:
        made = (_phantom_rgb(cfg, i, want) for i in range(cfg.n_phantoms))
    for rs, t in made:
        for s, r in zip(want, rs):
            rgb[s].append(r)
        tri.append(TRIMESTERS.index(t))
    xs, t = {s: np.stack(v) for s, v in rgb.items()}, np.array(tri, np.int64)
    for s, x in xs.items():
        atomic_write(paths[s], lambda tmp, x=x: np.save(open(tmp, "wb"), x), suffix=".npy")
    atomic_write(tpath, lambda tmp: np.save(open(tmp, "wb"), t), suffix=".npy")
    return (xs[want[0]], t) if sizes is None else (xs, t)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _pixel_hash(img: np.ndarray) -> str:
    import hashlib
    a = np.ascontiguousarray(img)
    return hashlib.sha1(str(a.shape).encode() + a.tobytes()).hexdigest()


def unlabelled_files(folder: str | Path) -> list[Path]:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"unlabelled image folder not found: {folder}")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and "annotation" not in p.stem.lower())
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the unlabelled folder {folder}")
    return files


def check_excluded(files: list[Path], grays: list[np.ndarray], exclude: tuple[str, ...]) -> int:
    """Raise if any unlabelled image equals (pixel for pixel) an image of an excluded data source."""
    from ..data import open_source
    if not exclude:
        return 0
    mine = {_pixel_hash(g): f.name for f, g in zip(files, grays)}
    n = 0
    for spec in exclude:
        src = open_source(spec)
        for i, m in enumerate(src.metas):
            img = src[i].image
            n += 1
            h = _pixel_hash(img)
            if h in mine:
                raise ValueError(f"unlabelled image {mine[h]} is also in {spec} ({src.names[i]}): images that "
                                 f"are annotated or used for evaluation must stay out of pretraining")
    return n


def _real_view(gray: np.ndarray, rng: np.random.Generator, size, plain: bool):
    """A seeded view of one unlabelled image at size² (view 0 is the plain squash, as real images enter);
    with a tuple of sizes, the same view at each of them."""
    import cv2
    if not plain:
        h, w = gray.shape
        zoom, ang = rng.uniform(1.0, 1.2), rng.uniform(-8, 8)
        m = cv2.getRotationMatrix2D((w / 2 + rng.uniform(-0.05, 0.05) * w, h / 2 + rng.uniform(-0.05, 0.05) * h),
                                    ang, zoom)
        gray = cv2.warpAffine(gray, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        gray = np.clip(gray.astype(np.float32) * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)
    if isinstance(size, (tuple, list)):
        return [cv2.resize(gray, (s, s), interpolation=cv2.INTER_AREA) for s in size]
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)


def make_unlabelled(cfg: PretrainConfig, work: Path, sizes: tuple[int, ...] | None = None):
    """(N * real_views, R, R) uint8 gray views of the unlabelled images; cached in work/. With `sizes`:
    {size: views}, the same seeded views at every size."""
    from ..data import read_gray
    want = (int(cfg.resolution),) if sizes is None else tuple(sizes)
    paths = {s: work / _cache_name("unlabelled", cfg, s) for s in want}
    if all(p.is_file() for p in paths.values()):
        xs = {s: np.load(p) for s, p in paths.items()}
        if all(x.shape[1] == s for s, x in xs.items()):
            return xs[want[0]] if sizes is None else xs
    files = unlabelled_files(cfg.unlabelled)
    grays = [read_gray(f) for f in files]
    check_excluded(files, grays, cfg.exclude)
    rng = np.random.default_rng(cfg.seed + 7)
    views = [_real_view(g, rng, want, v == 0) for g in grays for v in range(cfg.real_views)]
    xs = {s: np.stack([v[k] for v in views]) for k, s in enumerate(want)}
    for s, x in xs.items():
        atomic_write(paths[s], lambda tmp, x=x: np.save(open(tmp, "wb"), x), suffix=".npy")
    return xs[want[0]] if sizes is None else xs


def init_components(cfg: PretrainConfig) -> dict:
    """Fresh tiny components, or (init_base) the VAE / UNet / text encoder of an existing base, in fp32."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from .base import build_tiny_components
    comps = build_tiny_components(cfg.seed, latent_channels=cfg.latent_channels)
    if cfg.init_base:
        src = str(cfg.init_base)
        comps["vae"] = AutoencoderKL.from_pretrained(src, subfolder="vae", torch_dtype=torch.float32)
        comps["unet"] = UNet2DConditionModel.from_pretrained(src, subfolder="unet", torch_dtype=torch.float32)
        comps["text_encoder"] = CLIPTextModel.from_pretrained(src, subfolder="text_encoder",
                                                              torch_dtype=torch.float32)
        if comps["vae"].config.latent_channels != cfg.latent_channels:
            raise ValueError(f"--init-base {src} has {comps['vae'].config.latent_channels} latent channels, "
                             f"not {cfg.latent_channels}: give the same --latent-channels or no --init-base")
    return comps


def pretrain(cfg: PretrainConfig, out_dir: str | Path, work_dir: str | Path | None = None,
             stop=None) -> Iterator[dict]:
    """Generator: yields {"kind": "stage"|"step"|"done", ...}; resumes from work_dir checkpoints. The recipe's
    stages in order, each one function: the data (make_dataset, make_unlabelled), the VAE
    (pretrain_vae.train_vae), the latents and the UNet + text encoder (pretrain_unet.encode_latents,
    train_unet), then the base in the diffusers layout (_save_base)."""
    import torch

    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir else out_dir.parent / f".{out_dir.name}-work"
    if cfg.unlabelled and not Path(cfg.unlabelled).expanduser().is_dir():
        raise FileNotFoundError(f"unlabelled image folder not found: {cfg.unlabelled}")
    if cfg.init_base and not (Path(cfg.init_base) / "model_index.json").is_file():
        raise FileNotFoundError(f"--init-base {cfg.init_base} is not a diffusers base folder (no model_index.json)")
    work.mkdir(parents=True, exist_ok=True)
    check_resume(cfg, work)
    atomic_write_json(work / "config.json", asdict(cfg))
    torch.set_num_threads(cfg.threads)
    dev = cfg.torch_device()
    t_start = time.time()
    spent = _spent(work)["seconds"]  # seconds earlier invocations of this run took (the README gives the total)

    yield {"kind": "stage", "stage": "data", "n": cfg.n_phantoms, "unlabelled": cfg.unlabelled}
    sizes = tuple(s for s, _ in cfg.unet_sizes())
    data_at, tri = make_dataset(cfg, work, sizes)
    real_at = make_unlabelled(cfg, work, sizes) if cfg.unlabelled else None
    real = real_at[sizes[0]] if real_at is not None else None
    comps = init_components(cfg)
    for k in ("vae", "unet", "text_encoder"):
        comps[k].to(dev)
    run = StageRun(cfg, work, dev, dict(device_type=dev.type, dtype=torch.bfloat16, enabled=cfg.use_bf16()),
                   torch.Generator().manual_seed(cfg.seed), np.random.default_rng(cfg.seed + 11),
                   lambda: _save_spent(work, spent + time.time() - t_start, dev), stop, data_at[sizes[0]], tri,
                   real, cfg.real_frac if real is not None else 0.0)
    if not (yield from train_vae(run, comps)):
        return
    lat_at, sf = encode_latents(run, comps["vae"], sizes, data_at, real_at)
    if not (yield from train_unet(run, comps, lat_at, sf, sizes)):
        return
    run.clock()  # the EMA weights, fp16, diffusers layout
    for k in ("vae", "unet", "text_encoder"):
        comps[k].to("cpu")
    took = _spent(work)
    _save_base(comps, out_dir, cfg, took["seconds"], took["on"])
    yield {"kind": "done", "out": str(out_dir), "minutes": (time.time() - t_start) / 60}


def _spent(work: Path) -> dict:
    """{"seconds", "on"}: the time earlier invocations of this run took, and on what (time.json)."""
    p = work / "time.json"
    return json.loads(p.read_text()) if p.is_file() else {"seconds": 0.0, "on": ""}


def _save_spent(work: Path, seconds: float, dev) -> None:
    import os

    import torch

    from .generate import cpu_has_fast_bf16
    on = (torch.cuda.get_device_name(dev) if dev.type == "cuda"
          else f"a {os.cpu_count()}-core CPU ({'native bf16' if cpu_has_fast_bf16() else 'no native bf16'})")
    old = _spent(work)["on"]
    atomic_write_json(work / "time.json", {"seconds": round(seconds, 1),
                                           "on": on if not old or old == on else f"{old}, then {on}"})


def _save_base(comps: dict, out_dir: Path, cfg: PretrainConfig, seconds: float, on: str = "") -> None:
    """save_pretrained into a temp folder beside out_dir, then swap it in (never a half-written base)."""
    import torch
    from .base import assemble_pipeline
    pipe = assemble_pipeline(comps)
    pipe.to(torch.float16)
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    readme = _readme(cfg, seconds, on)
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
    for k in ("n_phantoms", "phantom_framing", "phantom_balance", "vae_steps", "unet_steps", "vae_batch",
              "unet_batch", "vae_crop", "seed", "unlabelled", "real_views", "real_frac", "init_base", "vae_train",
              "vae_lr", "unet_lr", "judge", "latent_channels", "ema_decay", "vae_adv_weight", "vae_adv_start",
              "disc_lr", "vae_ema_decay", "vae_echo_weight", "vae_unet_latent_frac", "vae_unet_t_max",
              "extra_resolutions"):
        if getattr(cfg, k) != getattr(d, k):
            v = getattr(cfg, k)
            if isinstance(v, bool):  # a flag
                parts.append(f"--{k.replace('_', '-')}")
                continue
            parts.append(f"--{k.replace('_', '-')} " + (" ".join(map(str, v)) if isinstance(v, tuple) else str(v)))
    parts += [f"--exclude {e}" for e in cfg.exclude]
    return " ".join(parts)


def _took(seconds: float, on: str = "") -> str:
    if seconds <= 0:
        return "exported mid-run"
    return f"this build took {seconds / 60:.1f} minutes" + (f" on {on}" if on else "")


def _data_paragraph(cfg: PretrainConfig) -> str:
    kept = (" (its VAE kept as it was; UNet and text encoder trained further)" if cfg.vae_steps == 0 else
            " (its VAE encoder, so its latent space, kept; the decoder retrained)" if cfg.vae_train == "decoder"
            else "")
    init = f" It continues from the base in `{cfg.init_base}`{kept}." if cfg.init_base else ""
    if cfg.phantom_framing == "hc18":  # six numbers from annotations: say which
        init += (" The phantoms' heads fill as much of the frame as HC18's of their trimester: six numbers (per "
                 "trimester, the median and spread of the head's share of the frame; `HC18_HEAD_AREA` in "
                 "`pipeline/phantom.py`) measured on the annotated images of the default split's train pool, "
                 "never on its test part; no image or mask of it is used.")
    if cfg.phantom_balance:
        init += " The phantoms take the three trimesters in turn."
    if not cfg.unlabelled:
        return (f"Pretrained by our own code on {cfg.n_phantoms} **phantoms** from `pipeline/phantom.py` — never "
                f"on an annotated image — so few-shot LoRA experiments on real data stay honest.{init}")
    excl = ", ".join(cfg.exclude) or "none given"
    return (f"Pretrained by our own code on {cfg.n_phantoms} **phantoms** from `pipeline/phantom.py` (with their "
            f"exact masks) and on the **unlabelled** real ultrasound images in `{cfg.unlabelled}` ({cfg.real_views} "
            f"seeded views each, empty B channel, caption \"{UNLABELLED_PROMPT}\"; {cfg.real_frac:.0%} of each UNet "
            f"batch).{init} For the HC18 test set: data from the HC18 Grand Challenge (van den Heuvel et al., PLOS ONE "
            f"2018; Zenodo record 1327317), licence CC BY 4.0 — its annotations were never published, so no "
            f"annotation and no evaluation image went into this base; checked pixel for pixel against: {excl}.")


def _vae_recipe(cfg: PretrainConfig) -> str:
    if cfg.init_base and cfg.vae_steps == 0:
        return f"the VAE of `{cfg.init_base}` unchanged"
    adv = (f" + {cfg.vae_adv_weight} × a patch discriminator's least-squares loss from step {cfg.vae_adv_start}"
           if cfg.vae_adv_weight > 0 else "")
    echo = f", pixel L1 weighted 1 + {cfg.vae_echo_weight:g} × brightness" if cfg.vae_echo_weight > 0 else ""
    ema = f", EMA {cfg.vae_ema_decay} of its weights saved" if cfg.vae_ema_decay > 0 else ""
    ema += (f", {cfg.vae_unet_latent_frac:.0%} of each batch decoded from the UNet's one-step estimate at noise "
            f"levels up to t = {cfg.vae_unet_t_max}" if cfg.vae_unet_latent_frac > 0 else "")
    return (f"VAE {cfg.vae_steps} steps (batch {cfg.vae_batch}, {cfg.vae_crop}² crops, L1 + Fourier-amplitude +\n"
            f"local-contrast loss{adv}{echo}{ema})")


def _unet_sizes_text(cfg: PretrainConfig) -> str:
    if not cfg.extra_resolutions:
        return f"batch {cfg.unet_batch}"
    return "one size per step in turn: " + ", ".join(f"{s}² at batch {b}" for s, b in cfg.unet_sizes())


def _readme(cfg: PretrainConfig, seconds: float, on: str = "") -> str:
    return f"""# Tiny diffusion base (SonoSynth Lab)

A small Stable-Diffusion-architecture model (diffusers `AutoencoderKL` + `UNet2DConditionModel` +
transformers `CLIPTextModel` + SD v1.5's exact CLIP tokenizer), 128², in-channel images
(R = G = ultrasound, B = filled head mask). {_data_paragraph(cfg)}
fp16 safetensors, standard diffusers layout: `StableDiffusionPipeline.from_pretrained(this_folder)`.

Rebuild ({_took(seconds, on)}; bf16 autocast on GPUs and on CPUs with native bf16; a GPU run repeats up to
floating-point order, not bit for bit):

    {rebuild_command(cfg)}

Recipe: {_vae_recipe(cfg)}, then UNet + text encoder {cfg.unet_steps} steps ({_unet_sizes_text(cfg)}, lr {cfg.unet_lr},
min-SNR-{cfg.min_snr_gamma:g} weighting, {cfg.uncond_prob:.0%} empty prompts, EMA {cfg.ema_decay}); bf16 autocast;
seed {cfg.seed}. Full settings: pretrain_config.json.
"""


def export_checkpoint(work_dir: str | Path, out_dir: str | Path) -> Path:
    """Save the work folder's latest checkpoints (EMA UNet + text encoder) as a base folder, mid-run.

    For looking at an intermediate model while pretraining goes on; the shipped base comes from the
    end of `pretrain`. A decoder job from an init base that has not reached the UNet yet exports its VAE (the
    EMA of its weights where it keeps one, as the end of the run would) with the init base's UNet."""
    import torch

    from .base import build_tiny_components
    work, out_dir = Path(work_dir), Path(out_dir)
    if not (work / "config.json").is_file():
        raise FileNotFoundError(f"{work} is not a pretraining work folder (no config.json): nothing to export")
    cfg = PretrainConfig(**{k: v for k, v in json.loads((work / "config.json").read_text()).items()
                            if k in PretrainConfig.__dataclass_fields__})
    if not (work / "unet.pt").is_file() and (work / "vae.pt").is_file() and cfg.init_base:
        comps = init_components(cfg)
        ck = torch.load(work / "vae.pt", weights_only=False, map_location="cpu")
        comps["vae"].load_state_dict({**ck["model"], **ck.get("ema", {})})
        cfg.extra = {"exported_at_vae_step": int(ck["step"])}
        _save_base(comps, out_dir, cfg, 0.0)
        return out_dir
    if not (work / "unet.pt").is_file():
        raise FileNotFoundError(f"{work} has no UNet checkpoint yet (unet.pt): nothing to export")
    comps = build_tiny_components(cfg.seed, latent_channels=cfg.latent_channels)
    if (work / "vae.pt").is_file():
        comps["vae"].load_state_dict(torch.load(work / "vae.pt", weights_only=False, map_location="cpu")["model"])
    elif cfg.init_base and cfg.vae_steps == 0:  # a continuation that keeps its init base's VAE saves none
        from diffusers import AutoencoderKL
        comps["vae"] = AutoencoderKL.from_pretrained(str(cfg.init_base), subfolder="vae", torch_dtype=torch.float32)
    else:
        raise FileNotFoundError(f"{work} has no VAE checkpoint (vae.pt): nothing to export")
    sf_path = work / "scaling_factor.json"
    sf = json.loads(sf_path.read_text())["scaling_factor"] if sf_path.is_file() \
        else float(1.0 / torch.load(work / "latents.pt")["mean"].std())
    comps["vae"].register_to_config(scaling_factor=sf)
    ck = torch.load(work / "unet.pt", weights_only=False, map_location="cpu")
    comps["unet"].load_state_dict(ck["unet"]); comps["text_encoder"].load_state_dict(ck["te"])
    params = list(comps["unet"].parameters()) + list(comps["text_encoder"].parameters())
    with torch.no_grad():
        for p, e in zip(params, ck["ema"]):
            p.copy_(e.cpu())
    cfg.extra = {"exported_at_unet_step": int(ck["step"])}
    _save_base(comps, out_dir, cfg, 0.0)
    return out_dir


VAE_FILE = "vae/diffusion_pytorch_model.safetensors"


def blend_vae(base_a: str | Path, base_b: str | Path, weight: float, out_file: str | Path,
              layers: Sequence[str] | None = None) -> Path:
    """Write the VAE weights (1 - weight) * A + weight * B (fp16 safetensors) to out_file, atomically.
    With `layers` (weight-name prefixes, e.g. "decoder.up_blocks.3"), only the weights under them blend and
    every other weight stays A's: a layer-wise merge; a prefix that names no weight is refused.

    Meant for B = A continued (one basin: a weight average lands between the two, 'model soup'): the
    continued decoder drew more real texture but a fainter skull echo (2026-11-26), the average a little of both.
    Both bases must have the same VAE config (so the same keys and shapes); the encoder, if B kept A's, stays."""
    import torch
    from safetensors.torch import load_file, save_file
    w = float(weight)
    if not (math.isfinite(w) and 0.0 <= w <= 1.0):
        raise ValueError(f"the blend weight must be between 0 (all A) and 1 (all B), not {weight}")
    paths = [Path(b) / VAE_FILE for b in (base_a, base_b)]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p.parent.parent} is not a base folder with a VAE ({VAE_FILE} missing)")
    try:
        cfgs = [json.loads((p.parent / "config.json").read_text()) for p in paths]
    except (OSError, ValueError) as e:
        raise ValueError(f"a VAE config.json is missing or not JSON: {e}") from e
    diff = sorted(k for k in set(cfgs[0]) | set(cfgs[1])
                  if not k.startswith("_") and k != "scaling_factor" and cfgs[0].get(k) != cfgs[1].get(k))
    if diff:
        raise ValueError(f"the two VAEs differ in {', '.join(diff)}: only VAEs of one architecture blend")
    weights = []
    for p in paths:
        try:
            weights.append(load_file(p))
        except Exception as e:  # a truncated or foreign file: say which
            raise ValueError(f"{p} is not a readable safetensors file ({e})") from e
    a, b = weights
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ValueError("the two VAEs have different weights (keys or shapes): only VAEs of one architecture blend")
    chosen = set(a)
    if layers is not None:
        prefixes = [str(x).strip().rstrip(".") for x in layers if str(x).strip()]
        if not prefixes:
            raise ValueError("layers: name at least one weight prefix, e.g. decoder.up_blocks.3")
        under = {x: {k for k in a if k == x or k.startswith(x + ".")} for x in prefixes}
        unknown = [x for x, keys in under.items() if not keys]
        if unknown:
            raise ValueError(f"layers: no VAE weight is named {', '.join(unknown)} (prefixes such as "
                             f"decoder.up_blocks.3, decoder.conv_out, post_quant_conv)")
        chosen = set().union(*under.values())
    mix = {k: (torch.lerp(a[k].float(), b[k].float(), w) if k in chosen else a[k].float()).half().contiguous()
           for k in a}
    out = Path(out_file)
    atomic_write(out, lambda tmp: save_file(mix, tmp, metadata={"format": "pt"}), suffix=".safetensors")  # as diffusers writes
    return out
