"""Pretrain the tiny diffusion base: phantoms (with masks) + optional UNLABELLED real ultrasound.

    python -m pipeline pretrain-base --out assets/tiny-base                       # phantoms only
    python -m pipeline pretrain-base --init-base assets/phantom-base --vae-train decoder \
        --unlabelled ../shared/data/hc18/test_set --exclude hc18:../shared/data/hc18 --out assets/tiny-base

The few-shot claim is about ANNOTATIONS: unlabelled images are what hospitals have plenty of, so a base may
learn what ultrasound looks like from them (the HC18 test set: 335 images whose annotations were never
published). No image with an annotation, and no image any evaluation uses, goes into pretraining:
`--exclude` data sources are checked pixel by pixel against the unlabelled folder and a match is refused.

Three stages, each resumable from its checkpoint in the work folder:
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


UNLABELLED_PROMPT = "An ultrasound image of a fetal head"
# settings that may change when a run is resumed: more steps, checkpoint cadence, threads, the report set
RESUMABLE_CHANGES = ("vae_steps", "unet_steps", "ckpt_every", "threads", "judge", "judge_n", "extra", "device",
                     "workers")


def check_resume(cfg: "PretrainConfig", work: Path) -> None:
    """Refuse to resume a work folder with different settings (naming them), never mix two recipes."""
    path = work / "config.json"
    if not path.is_file():
        return
    # a setting added after the run was started is read as its default (what that run used)
    old = {**json.loads(json.dumps(asdict(PretrainConfig()))), **json.loads(path.read_text())}
    new = json.loads(json.dumps(asdict(cfg)))
    changed = [k for k in new if k not in RESUMABLE_CHANGES and old[k] != new[k]]
    if changed:
        raise ValueError("the work folder " + str(work) + " holds a run with other settings: "
                         + ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in changed)
                         + "; use another --work folder or the same settings")


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


def random_ellipse_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A filled ellipse anywhere in (partly outside) the frame: the VAE learns to carry any head mask."""
    from ..masks import Ellipse
    e = Ellipse(rng.uniform(0.2, 0.8) * size, rng.uniform(0.2, 0.8) * size, rng.uniform(0.25, 0.9) * size,
                rng.uniform(0.25, 0.9) * size, rng.uniform(0, 180))
    return e.fill((size, size))


def judge_vae(vae, spec: str | None, n: int, size: int) -> dict | None:
    """Reconstruction of REAL image+mask pairs (never trained on): image L1 (0-255 scale) and mask IoU."""
    import torch
    from ..data import open_source
    from .base import rgb_to_tensor, tensor_to_rgb, to_model_size
    if not spec:
        return None
    src = open_source(spec)
    idx = np.linspace(0, len(src) - 1, min(n, len(src))).round().astype(int)
    return judge_vae_pairs(vae, np.stack([to_model_size(src[int(i)].image, src[int(i)].mask, size) for i in idx]))


def judge_vae_pairs(vae, x: np.ndarray) -> dict:
    """judge_vae on (N, R, R, 3) uint8 in-channel pairs; 'detail' = mean |vertical gradient| of the image,
    which speckle dominates (a blurred reconstruction has less than the real image)."""
    import torch
    from .base import rgb_to_tensor, tensor_to_rgb
    dev = next(vae.parameters()).device
    with torch.no_grad():
        rec = tensor_to_rgb(vae.decode(vae.encode(rgb_to_tensor(x).to(dev)).latent_dist.mean).sample)
    l1 = float(np.abs(rec[..., :2].astype(np.float32) - x[..., :2]).mean())
    a, b = rec[..., 2] > 127, x[..., 2] > 127
    iou = float((a & b).sum() / max(1, (a | b).sum()))
    return {"image_l1": round(l1, 2), "mask_iou": round(iou, 4), "n": len(x),
            "detail_real": round(image_detail(x), 2), "detail_rec": round(image_detail(rec), 2)}


def image_detail(x: np.ndarray) -> float:
    """Mean |vertical gradient| of the image channel of (N, R, R, 3) uint8 in-channel pairs: speckle dominates
    it, so a blurred image has less than the real one."""
    return float(np.mean([np.abs(np.diff(im.astype(np.float32), axis=0)).mean() for im in x[..., 0]]))


# ----------------------------------------------------------------------------- losses
def vae_recon_loss(rec, x, echo_weight: float = 0.0):
    """L1 + Fourier amplitude (log) L1 + local-contrast L1: keeps speckle energy that plain L1 blurs.
    echo_weight k > 0 weighs each pixel's L1 by 1 + k * its brightness in the target image (0..1), so the bright
    skull echo costs more to lose than the dark background."""
    import torch
    import torch.nn.functional as F
    err = (rec - x).abs()
    if echo_weight > 0:
        err = err * (1 + echo_weight * (image_channel(x) + 1) / 2)
    l1 = err.mean()
    fa = torch.log1p(torch.fft.rfft2(rec.float(), norm="ortho").abs())
    fb = torch.log1p(torch.fft.rfft2(x.float(), norm="ortho").abs())
    freq = (fa - fb).abs().mean()

    def local_std(z):
        mu = F.avg_pool2d(z, 5, 1, 2)
        return (F.avg_pool2d(z * z, 5, 1, 2) - mu * mu).clamp_min(1e-6).sqrt()
    contrast = (local_std(rec.float()) - local_std(x.float())).abs().mean()
    return l1 + 0.3 * freq + 0.5 * contrast


def build_discriminator(seed: int):
    """MONAI's PatchDiscriminator (pix2pix / taming-transformers' NLayerDiscriminator) on ONE channel, the
    image (R = G): it judges texture patch by patch (receptive field 70 px); the mask channel is the pixel
    losses' job."""
    import torch
    from monai.networks.nets import PatchDiscriminator
    torch.manual_seed(seed + 101)
    return PatchDiscriminator(spatial_dims=2, num_layers_d=3, channels=32, in_channels=1, out_channels=1)


def image_channel(x):
    """(N, 3, H, W) in-channel tensor -> (N, 1, H, W): the image, the mean of R and G."""
    return x[:, :2].mean(dim=1, keepdim=True)


def adaptive_weight(rec_loss, adv_loss, last_weight) -> float:
    """latent-diffusion's LPIPSWithDiscriminator.calculate_adaptive_weight (deliberate copy, 2026-11-26): the
    ratio of the two losses' gradient norms at the decoder's last layer, so the adversarial pull stays in
    proportion to the reconstruction's whatever their scales (no per-dataset tuning of the weight)."""
    import torch
    g_rec = torch.autograd.grad(rec_loss, last_weight, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv_loss, last_weight, retain_graph=True)[0]
    return float((g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4))


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


def prompt_ids(tok, dev):
    """Token ids of the prompts pretraining conditions on: 0..2 the trimester prompts, 3 empty, 4 unlabelled."""
    from .base import prompt_for
    return tok([prompt_for(t) for t in TRIMESTERS] + ["", UNLABELLED_PROMPT], padding="max_length",
               max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids.to(dev)


class UnetLatents:
    """Swaps a share of a decoder batch's latents for the (frozen) UNet's one-step clean estimate of them, noised
    to a random level: z_t = sqrt(a_t) z + sqrt(1 - a_t) e, z0 = (z_t - sqrt(1 - a_t) e_hat) / sqrt(a_t), with the
    trimester prompt for phantoms and the unlabelled caption for real views (the conditions the UNet learnt)."""

    def __init__(self, cfg: "PretrainConfig", unet, te, tok, sched, dev):
        import torch
        if sched.config.prediction_type != "epsilon":
            raise ValueError(f"vae_unet_latent_frac needs an epsilon-predicting scheduler, not "
                             f"{sched.config.prediction_type!r}")
        self.frac, self.t_max, self.unet = float(cfg.vae_unet_latent_frac), int(cfg.vae_unet_t_max), unet.eval()
        with torch.no_grad():
            self.text = te.eval()(prompt_ids(tok, dev))[0]
        self.alphas = sched.alphas_cumprod.to(dev)

    def __call__(self, z, prompt_idx: np.ndarray, g=None, sf: float = 1.0):
        import torch
        n = z.shape[0]
        pick = (torch.rand(n, generator=g) < self.frac).to(z.device)
        t = torch.randint(1, self.t_max + 1, (n,), generator=g).to(z.device)
        noise = torch.randn(z.shape, generator=g).to(z.device, z.dtype)
        rows = pick.nonzero().flatten()  # the UNet runs on the picked rows only (all draws made above, as before)
        if len(rows) == 0:
            return z
        a = self.alphas[t[rows]].view(-1, 1, 1, 1).to(z.dtype)
        prompts = self.text[torch.as_tensor(prompt_idx, device=z.device)[rows]]
        with torch.no_grad():
            zt = a.sqrt() * z.detach()[rows] * sf + (1 - a).sqrt() * noise[rows]
            eps = self.unet(zt, t[rows], encoder_hidden_states=prompts).sample.to(z.dtype)
            z0 = (zt - (1 - a).sqrt() * eps) / a.sqrt() / sf
        return z.index_put((rows,), z0)


def vae_trainable(vae, which: str) -> list:
    """The VAE parameters that train: all, or the decoder side only (encoder frozen = latent space kept)."""
    if which == "all":
        return list(vae.parameters())
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    return list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())


def _param_names(model, params) -> list[str]:
    """The names of `params` in `model`, in the order of `params` (EMA checkpoints key by name)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for p in params]


def ema_update(ema: list, params: list, decay: float, step: int) -> None:
    """ema <- lerp towards params; the decay warms up as (1 + step) / (10 + step) so early weights fade fast."""
    import torch
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - d)


def encode_all(vae, rgb: np.ndarray, chunk: int = 64) -> dict:
    """Posterior mean and std of every image, on the CPU (the cache is device-independent)."""
    import torch
    from .base import rgb_to_tensor
    means, stds = [], []
    dev = next(vae.parameters()).device
    with torch.no_grad():
        for i in range(0, len(rgb), chunk):
            d = vae.encode(rgb_to_tensor(rgb[i:i + chunk]).to(dev)).latent_dist
            means.append(d.mean.float().cpu()); stds.append(d.std.float().cpu())
    return {"mean": torch.cat(means), "std": torch.cat(stds)}


def latent_scaling(cfg: PretrainConfig, vae, lat: dict) -> float:
    """SD's convention: latents * scaling_factor have unit variance. A kept encoder keeps its factor (the
    init base's UNet was trained at that scale)."""
    if cfg.vae_train == "decoder":
        return float(vae.config.scaling_factor)
    return float(1.0 / lat["mean"].std())


def _save_ckpt(path: Path, obj: dict) -> None:
    import torch
    atomic_write(path, lambda tmp: torch.save(obj, tmp), suffix=".pt")


def pretrain(cfg: PretrainConfig, out_dir: str | Path, work_dir: str | Path | None = None,
             stop=None) -> Iterator[dict]:
    """Generator: yields {"kind": "stage"|"step"|"done", ...}; resumes from work_dir checkpoints."""
    import torch
    from .base import rgb_to_tensor

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
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=cfg.use_bf16())
    t_start = time.time()
    spent = _spent(work)["seconds"]  # seconds earlier invocations of this run took (the README gives the total)

    def clock():
        _save_spent(work, spent + time.time() - t_start, dev)

    yield {"kind": "stage", "stage": "data", "n": cfg.n_phantoms, "unlabelled": cfg.unlabelled}
    sizes = tuple(s for s, _ in cfg.unet_sizes())
    data_at, tri = make_dataset(cfg, work, sizes)
    real_at = make_unlabelled(cfg, work, sizes) if cfg.unlabelled else None
    data = data_at[sizes[0]]
    real = real_at[sizes[0]] if real_at is not None else None
    real_frac = cfg.real_frac if real is not None else 0.0
    comps = init_components(cfg)
    vae, unet, te, tok, sched = (comps[k] for k in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"))
    vae.to(dev); unet.to(dev); te.to(dev)
    g = torch.Generator().manual_seed(cfg.seed)
    rng_np = np.random.default_rng(cfg.seed + 11)

    # ---- stage 2: VAE
    vae_ck = work / "vae.pt"
    vae_params = vae_trainable(vae, cfg.vae_train)
    opt = torch.optim.AdamW(vae_params, lr=cfg.vae_lr, weight_decay=0.0)
    disc = d_opt = adv = None
    if cfg.vae_adv_weight > 0 and cfg.vae_steps > 0:
        from monai.losses import PatchAdversarialLoss
        disc = build_discriminator(cfg.seed).to(dev).train()
        d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999))
        adv = PatchAdversarialLoss(criterion="least_squares")
    step = 0
    vae_ema = [p.detach().clone() for p in vae_params] if cfg.vae_ema_decay > 0 else None
    ema_names = _param_names(vae, vae_params)

    def save_vae():
        state = {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "rng": g.get_state(),
                 "rng_np": rng_np.bit_generator.state}
        if vae_ema is not None:  # the averaged weights, by parameter name (what the saved VAE will be)
            state["ema"] = dict(zip(ema_names, vae_ema))
        if disc is not None:
            state.update(disc=disc.state_dict(), d_opt=d_opt.state_dict())
        _save_ckpt(vae_ck, state)
        clock()
    if vae_ck.is_file():
        ck = torch.load(vae_ck, weights_only=False, map_location=dev)
        vae.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); step = ck["step"]
        g.set_state(ck["rng"].cpu())
        if "rng_np" in ck:
            rng_np.bit_generator.state = ck["rng_np"]
        if disc is not None and "disc" in ck:
            disc.load_state_dict(ck["disc"]); d_opt.load_state_dict(ck["d_opt"])
        if vae_ema is not None and "ema" in ck:
            vae_ema = [ck["ema"][n].to(dev) for n in ema_names]
    yield {"kind": "stage", "stage": "vae", "step": step, "total": cfg.vae_steps, "train": cfg.vae_train,
           "judge_before": judge_vae(vae.eval(), cfg.judge, cfg.judge_n, cfg.resolution) if step == 0 else None}
    vae.train()
    if cfg.vae_train == "decoder":
        vae.encoder.eval(); vae.quant_conv.eval()
    n_real = int(round(cfg.vae_batch * real_frac))
    unet_latents = (UnetLatents(cfg, unet, te, tok, sched, dev)
                    if cfg.vae_unet_latent_frac > 0 and step < cfg.vae_steps else None)
    while step < cfg.vae_steps:
        if stop is not None and stop():
            save_vae()
            yield {"kind": "stopped", "stage": "vae", "step": step}
            return
        c = cfg.vae_crop
        oy, ox = (int(v) for v in torch.randint(cfg.resolution - c + 1, (2,), generator=g))
        idx = torch.randint(len(data), (cfg.vae_batch - n_real,), generator=g)
        crops = [data[idx.numpy(), oy:oy + c, ox:ox + c]]
        if n_real:
            ridx = torch.randint(len(real), (n_real,), generator=g).numpy()
            rgb = np.repeat(real[ridx][..., None], 3, axis=3)
            for j in range(n_real):
                rgb[j, ..., 2] = random_ellipse_mask(rng_np, cfg.resolution) * 255 \
                    if rng_np.random() < cfg.vae_real_ellipse_prob else 0
            crops.append(rgb[:, oy:oy + c, ox:ox + c])
        x = rgb_to_tensor(np.concatenate(crops)).to(dev)
        if torch.rand((), generator=g) < 0.5:
            x = x.flip(3)
        lr = cfg.vae_lr * min(1.0, (step + 1) / 50)
        for pg in opt.param_groups:
            pg["lr"] = lr
        with torch.autocast(**amp):
            post = vae.encode(x).latent_dist
            z = post.sample(generator=g)
            if unet_latents is not None:
                z = unet_latents(z, np.concatenate([tri[idx.numpy()], np.full(n_real, 4)]), g,
                                 float(vae.config.scaling_factor))
            rec = vae.decode(z).sample
        rec = rec.float()
        rl = vae_recon_loss(rec, x, cfg.vae_echo_weight)
        kl = post.kl().float().mean() / x[0].numel()
        loss = rl + 1e-4 * kl
        extra = {}
        if disc is not None and step >= cfg.vae_adv_start:
            with torch.autocast(**amp):
                g_adv = adv(disc(image_channel(rec))[-1].float(), target_is_real=True, for_discriminator=False)
            w = cfg.vae_adv_weight * adaptive_weight(rl, g_adv, vae.decoder.conv_out.weight)
            loss = loss + w * g_adv
            extra.update(g_adv=float(g_adv.detach()), adv_w=w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae_params, 1.0)
        opt.step()
        if disc is not None:  # the discriminator: real crops vs their reconstructions
            with torch.autocast(**amp):
                d_loss = 0.5 * (adv(disc(image_channel(rec.detach()))[-1].float(), target_is_real=False,
                                    for_discriminator=True)
                                + adv(disc(image_channel(x))[-1].float(), target_is_real=True, for_discriminator=True))
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            extra["d_loss"] = float(d_loss.detach())
        step += 1
        if vae_ema is not None:
            ema_update(vae_ema, vae_params, cfg.vae_ema_decay, step)
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"VAE loss is not finite at step {step}: the run is stopped, its last "
                                     f"checkpoint ({vae_ck}) is kept; lower --vae-lr")
        yield {"kind": "step", "stage": "vae", "step": step, "total": cfg.vae_steps, "loss": float(loss.detach()),
               "l1": float((rec - x).detach().abs().mean()), **extra}
        if step % cfg.ckpt_every == 0 or step == cfg.vae_steps:
            save_vae()
    if vae_ema is not None:  # the saved VAE (and what the UNet's latents come from) is the average
        with torch.no_grad():
            for p, e in zip(vae_params, vae_ema):
                p.copy_(e)
    vae.eval().requires_grad_(False)
    judged = judge_vae(vae, cfg.judge, cfg.judge_n, cfg.resolution)
    if judged:
        yield {"kind": "judge", "stage": "vae", **judged}

    # ---- latents once (the VAE is frozen from here): posterior mean and std of every phantom, at every size
    lat_at = {}
    for s in sizes:
        lat_path = work / ("latents.pt" if s == sizes[0] else f"latents_{s}.pt")
        if lat_path.is_file():
            lat = torch.load(lat_path, map_location="cpu")
        else:
            lat = encode_all(vae, data_at[s])
            if real_at is not None:  # unlabelled: R = G = image, B = 0 (no mask)
                rs = real_at[s]
                rl = encode_all(vae, np.concatenate([np.repeat(rs[..., None], 2, axis=3),
                                                     np.zeros_like(rs)[..., None]], axis=3))
                lat.update(real_mean=rl["mean"], real_std=rl["std"])
            _save_ckpt(lat_path, lat)
        lat_at[s] = lat
    sf = latent_scaling(cfg, vae, lat_at[sizes[0]])
    vae.register_to_config(scaling_factor=sf)
    atomic_write_json(work / "scaling_factor.json", {"scaling_factor": sf})
    lat_at = {s: {k: v.to(dev) for k, v in lat.items()} for s, lat in lat_at.items()}

    # ---- stage 3: UNet + text encoder
    ids = prompt_ids(tok, dev)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]
    step = 0
    unet_ck = work / "unet.pt"
    if unet_ck.is_file():
        ck = torch.load(unet_ck, weights_only=False, map_location=dev)
        unet.load_state_dict(ck["unet"]); te.load_state_dict(ck["te"]); opt.load_state_dict(ck["opt"])
        ema = ck["ema"]; step = ck["step"]; g.set_state(ck["rng"].cpu())
    batch_at = dict(cfg.unet_sizes())
    alphas = sched.alphas_cumprod.to(dev)
    snr = alphas / (1 - alphas)
    tri_t = torch.from_numpy(tri)
    yield {"kind": "stage", "stage": "unet", "step": step, "total": cfg.unet_steps, "scaling_factor": sf}
    unet.train(); te.train()

    def save_unet():
        _save_ckpt(unet_ck, {"unet": unet.state_dict(), "te": te.state_dict(), "opt": opt.state_dict(),
                             "ema": ema, "step": step, "rng": g.get_state()})
        clock()
    while step < cfg.unet_steps:
        if stop is not None and stop():
            save_unet()
            yield {"kind": "stopped", "stage": "unet", "step": step}
            return
        # every random draw comes from the CPU generator g (the same stream on any device), then moves
        size = sizes[step % len(sizes)]  # one size per step, in turn
        lat, batch = lat_at[size], batch_at[size]
        n_real = int(round(batch * real_frac))
        idx = torch.randint(len(data), (batch - n_real,), generator=g)
        mu, sd = lat["mean"][idx.to(dev)], lat["std"][idx.to(dev)]
        which = tri_t[idx].clone()
        if n_real:
            ridx = torch.randint(len(lat["real_mean"]), (n_real,), generator=g).to(dev)
            mu, sd = torch.cat([mu, lat["real_mean"][ridx]]), torch.cat([sd, lat["real_std"][ridx]])
            which = torch.cat([which, torch.full((n_real,), 4)])
        z = (mu + sd * torch.randn(mu.shape, generator=g).to(dev)) * sf
        if torch.rand((), generator=g) < 0.5:  # heads face either way in real scans
            z = z.flip(3)
        noise = torch.randn(z.shape, generator=g).to(dev)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(z),), generator=g).to(dev)
        noisy = sched.add_noise(z, noise, t)
        which[torch.rand(len(z), generator=g) < cfg.uncond_prob] = 3
        which = which.to(dev)
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
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"UNet loss is not finite at step {step}: the run is stopped, its last "
                                     f"checkpoint ({unet_ck}) is kept; lower the learning rate")
        ema_update(ema, params, cfg.ema_decay, step)
        yield {"kind": "step", "stage": "unet", "step": step, "total": cfg.unet_steps, "loss": float(loss.detach())}
        if step % cfg.ckpt_every == 0 or step == cfg.unet_steps:
            save_unet()

    # ---- save the EMA weights, fp16, diffusers layout
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    unet.eval(); te.eval()
    comps["scheduler"] = sched
    clock()
    for m in (vae, unet, te):
        m.to("cpu")
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
