"""The second segmenter: a MONAI U-Net trained from random weights, with no box prompt (issue 32).

Why a second one: LiteMedSAM starts at ~96 % Dice zero-shot on HC18, so no augmentation has much room to show
on it. The paper's gain (90.51 -> 94.66 % at N_real = 5) is for a weaker starting point, and work on generated
data for segmentation (e.g. GenSeg, 2025) measures segmenters trained from scratch. This one learns everything
from the hybrid dataset (pipeline/hybrid.py: the same N_real real + synthetic pairs and the same val part as
SAM's fine-tuning), so it shows what synthetic pairs are worth when the segmenter has something to learn.

The choice: `monai.networks.nets.BasicUNet` — the classic encoder-decoder U-Net (Ronneberger 2015), the
standard from-scratch baseline in the low-data literature, with plain conv blocks that run well on a CPU;
features (8, 16, 32, 64, 128, 8), 0.49 M parameters: a quarter of MONAI's default widths, ample for one
ellipse-like object, and a training step (8 pairs at 256²) 1.6-2x faster on a 2-core CPU than at (16, ..., 16)
(2026-12-07, both timed in one process under the same load). Input: the grey image squashed to 256² (SAM's input
size), one logit channel. Loss: Dice + cross-entropy (MONAI DiceCELoss, sigmoid), Adam. Training is counted
in optimizer steps, not epochs, so every arm of a cell gets the same number of steps whatever its N_real
(epochs would give the None arm at N_real = 5 one step per epoch); validation Dice every `val_every` steps,
the best-validation weights kept. WA / SA augment a fresh seeded draw at every step (no cache to serve here).

`train_unet(cfg, out_dir)` is a generator of the same events as SAM's `finetune`, so the sweep and the CLI
drive both alike: "prepare", "step", "epoch" (one per validation; `epoch` counts validations), "done".
A stop (or a kill) keeps the last validation's position: calling again continues from there.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch

from .augment import AUGMENTATIONS, augment_pair, build_augmentation
from .data import DataError
from .hybrid import hybrid_items
from .metrics import dice, hc_abs_error_mm
from .runs import RunDir

UNET_FEATURES = (8, 16, 32, 64, 128, 8)


@dataclass
class UnetConfig:
    data: str  # the real source spec
    n_real: int = 5
    synthetic: str | None = None  # a folder: dataset of synthetic pairs
    n_synthetic: int | None = None
    aug: str = "none"  # none | weak (WA) | strong (SA)
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    val_every: int = 25
    size: int = 256  # the square the images are squashed to (SAM's input size)
    features: tuple[int, ...] = UNET_FEATURES
    seed: int = 0
    split_seed: int = 0
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    n_val: int = 40
    # the share of each batch drawn from the real pairs when synthetic ones are mixed in; None: uniform
    # over the hybrid dataset, the paper's (5 real of 100 pairs are then ~5 % of the draws)
    real_share: float | None = None
    kind: str = field(default="unet", init=False)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["split"], d["features"] = list(self.split), list(self.features)
        return d

    def validate(self) -> None:
        from .config import SamFinetuneDefaults
        from .validate import check_float, check_int, check_seed
        if self.aug not in AUGMENTATIONS:
            raise DataError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {self.aug!r}")
        self.n_real = check_int(self.n_real, "n_real", 0, 100_000)
        if self.n_synthetic is not None:
            self.n_synthetic = check_int(self.n_synthetic, "n_synthetic", 0, 1_000_000)
        self.steps = check_int(self.steps, "U-Net steps", 1, 1_000_000)
        self.batch_size = check_int(self.batch_size, "batch_size", 1, 1024)
        self.val_every = check_int(self.val_every, "val_every (steps between validations)", 1, 1_000_000)
        self.size = check_int(self.size, "U-Net input size", 32, 1024)
        if self.size % 16:
            raise DataError(f"U-Net input size must be a multiple of 16 (four poolings), got {self.size}")
        self.n_val = check_int(self.n_val, "n_val", 1, SamFinetuneDefaults.MAX_N_VAL)
        if self.real_share is not None:
            self.real_share = check_float(self.real_share, "real_share (share of real pairs per batch)", 0, 1)
        self.lr = check_float(self.lr, "learning rate (lr)", 0, 1, lo_open=True, hi_open=True)
        self.seed = check_seed(self.seed, "seed")
        self.split_seed = check_seed(self.split_seed, "split_seed")
        if self.n_real == 0 and not self.synthetic:
            raise DataError("nothing to train on: N_real is 0 and no synthetic dataset is given")


def build_unet(features=UNET_FEATURES) -> torch.nn.Module:
    from monai.networks.nets import BasicUNet
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=tuple(features))


def to_input(image: np.ndarray, size: int) -> np.ndarray:
    """A grey uint8 image (H, W) or (H, W, 3) as the network's (size, size) float32 input in [0, 1]."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)
    return cv2.resize(img.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) / 255.0


def to_target(mask: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(np.asarray(mask).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(np.float32)


@torch.no_grad()
def predict_masks(model: torch.nn.Module, images: list[np.ndarray], size: int, batch_size: int = 8) -> list[np.ndarray]:
    """Each image's predicted bool mask at the image's own size (probabilities resized back, then > 0.5)."""
    was = model.training
    model.eval()
    out = []
    try:
        for s0 in range(0, len(images), batch_size):
            chunk = images[s0:s0 + batch_size]
            x = torch.from_numpy(np.stack([to_input(im, size) for im in chunk]))[:, None]
            prob = torch.sigmoid(model(x))[:, 0].numpy()
            for im, p in zip(chunk, prob):
                h, w = np.asarray(im).shape[:2]
                out.append(cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5)
    finally:
        model.train(was)
    return out


def evaluate_unet(model, samples: list) -> dict:
    """Per-image Dice and |HC error| (mm, or None) on labelled Samples, scored as SAM's masks are (the raw
    mask at the image's own size, pipeline/metrics.py)."""
    size = int(getattr(model, "sonosynth_size", 256))
    preds = predict_masks(model, [s.image for s in samples], size)
    return {"dice": [dice(p, s.mask) for p, s in zip(preds, samples)],
            "hc_abs_error_mm": [hc_abs_error_mm(p, s.meta.hc_mm, s.meta.pixel_size_mm) for p, s in zip(preds, samples)]}


def load_unet(run_dir: str | Path, name: str = "best") -> torch.nn.Module:
    """The U-Net of a finished (or stopped) run folder, with the size it was trained at."""
    from safetensors.torch import load_file
    run = RunDir(run_dir)
    cfg = run.config()
    if cfg.get("kind") != "unet":
        raise DataError(f"{run_dir} is not a U-Net run (kind {cfg.get('kind')!r})")
    path = run.path / f"{name}.safetensors"
    if not path.is_file():
        raise DataError(f"{run_dir} has no {name}.safetensors yet: it has not validated once")
    model = build_unet(cfg.get("features", UNET_FEATURES))
    model.load_state_dict(load_file(str(path)))
    model.sonosynth_size = int(cfg.get("size", 256))
    model.eval()
    return model


def _dice_batch(pred: np.ndarray, gt: np.ndarray) -> float:
    inter = float((pred & gt).sum())
    s = float(pred.sum() + gt.sum())
    return 1.0 if s == 0 else 2 * inter / s


def draw_batch(origins: list[str], batch_size: int, real_share: float | None, rng) -> np.ndarray:
    """One batch's pair indices into the hybrid dataset (`origins`: "real" / "synthetic" per pair): uniform over
    it (the paper's), or with `real_share` that share of the batch (rounded) from the real pairs and the rest
    from the synthetic ones. A set with only one origin is drawn uniformly either way."""
    real_at = [k for k, o in enumerate(origins) if o == "real"]
    syn_at = [k for k, o in enumerate(origins) if o != "real"]
    if real_share is None or not real_at or not syn_at:
        return rng.choice(len(origins), size=batch_size, replace=len(origins) < batch_size)
    n_real = int(round(real_share * batch_size))
    n_syn = batch_size - n_real
    return np.concatenate([rng.choice(real_at, size=n_real, replace=len(real_at) < n_real),
                           rng.choice(syn_at, size=n_syn, replace=len(syn_at) < n_syn)]).astype(int)


def train_unet(cfg: UnetConfig, out_dir: str | Path, resume: bool = True, stop=None,
               allowed_roots=None) -> Iterator[dict]:
    """Train the U-Net on the hybrid dataset of `cfg` in `out_dir` (a run folder, pipeline/runs.py)."""
    cfg.validate()
    should_stop = stop if callable(stop) else (stop.is_set if stop is not None else (lambda: False))
    train, val, warnings = hybrid_items(cfg, allowed_roots)  # every data check before a file is written
    run = RunDir(out_dir, what="U-Net run")
    resuming = run.start(cfg.as_dict(), resume=resume)
    run.set_status("running", "preparing")
    for w in warnings[:5]:
        yield {"kind": "warning", "message": w}

    # the pairs at full size (augmentation acts there, as for SAM) and squashed to the input size
    full, xs, ys = [], [], []
    for k, it in enumerate(train):
        s = it.load()
        if s.mask is None or not s.mask.any():
            raise DataError(f"training pair {it.name} has no head mask")
        full.append((s.image, s.mask))
        xs.append(to_input(s.image, cfg.size))
        ys.append(to_target(s.mask, cfg.size))
        yield {"kind": "prepare", "done": k + 1, "total": len(train) + len(val), "message": "loading pairs"}
    vx, vy = [], []
    for k, it in enumerate(val):
        s = it.load()
        vx.append(to_input(s.image, cfg.size))
        vy.append(to_target(s.mask, cfg.size) > 0.5)
        yield {"kind": "prepare", "done": len(train) + k + 1, "total": len(train) + len(val), "message": "loading pairs"}
    vx_t = torch.from_numpy(np.stack(vx))[:, None]

    torch.manual_seed(cfg.seed)
    model = build_unet(cfg.features)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    from monai.losses import DiceCELoss
    loss_fn = DiceCELoss(sigmoid=True, reduction="mean")
    augmentation = build_augmentation(cfg.aug)

    @torch.no_grad()
    def validate() -> list[float]:
        model.eval()
        prob = torch.cat([torch.sigmoid(model(vx_t[i:i + 8])) for i in range(0, len(vx_t), 8)])[:, 0].numpy()
        model.train()
        return [_dice_batch(p > 0.5, g) for p, g in zip(prob, vy)]

    origins = [it.origin for it in train]
    step, best, best_at, n_val_done = 0, -1.0, 0, 0
    state = run.resume_state() if resuming else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, best, best_at, n_val_done = state["step"], state["best_val_dice"], state["best_epoch"], state["validations"]
        run.truncate_metrics(step)

    def save_last(reason: str) -> None:
        run.save_weights("last", model.state_dict(), {"step": step})
        run.save_state({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "best_val_dice": best, "best_epoch": best_at, "validations": n_val_done,
                        "reason": reason, "config": cfg.as_dict()})

    run.set_status("running", f"training: {len(train)} pairs, {cfg.steps} steps")
    model.train()
    stopped, losses, pending = False, [], []
    t0 = time.monotonic()
    try:
        while step < cfg.steps:
            if should_stop():
                stopped = True
                break
            # the batch of step k depends on (seed, k) only: a resumed run draws what it would have drawn
            rng = np.random.default_rng([cfg.seed, 7, step])
            idx = draw_batch(origins, cfg.batch_size, cfg.real_share, rng)
            bx, by = [], []
            for j, i in enumerate(idx):
                if augmentation is None:
                    bx.append(xs[i])
                    by.append(ys[i])
                    continue
                ap = augment_pair(*full[i], augmentation, seed=int(rng.integers(2**62)))
                if ap is None:  # the head left the frame: the un-augmented pair instead
                    bx.append(xs[i])
                    by.append(ys[i])
                else:
                    bx.append(to_input(ap.image, cfg.size))
                    by.append(to_target(ap.mask, cfg.size))
            x = torch.from_numpy(np.stack(bx))[:, None]
            y = torch.from_numpy(np.stack(by))[:, None]
            loss = loss_fn(model(x), y)
            if not torch.isfinite(loss):
                raise DataError(f"U-Net training stopped at step {step + 1}: the loss is {float(loss)} "
                                f"(learning rate {cfg.lr:g} too high?)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            lv = float(loss.detach())
            losses.append(lv)
            pending.append({"kind": "step", "epoch": n_val_done + 1, "step": step, "loss": round(lv, 6)})
            yield {"kind": "step", "step": step, "epoch": n_val_done + 1, "loss": lv, "steps": cfg.steps,
                   "elapsed_s": time.monotonic() - t0}
            if step % cfg.val_every == 0 or step == cfg.steps:
                scores = validate()
                vd = float(np.mean(scores))
                n_val_done += 1
                is_best = vd > best
                if is_best:
                    best, best_at = vd, n_val_done
                    run.save_weights("best", model.state_dict(), {"step": step, "val_dice": vd})
                tl = float(np.mean(losses)) if losses else None
                losses = []
                pending.append({"kind": "epoch", "epoch": n_val_done, "step": step, "val_dice": round(vd, 5),
                                "train_loss": None if tl is None else round(tl, 6), "best": int(is_best)})
                run.log(pending)
                pending = []
                save_last("validation")
                yield {"kind": "epoch", "epoch": n_val_done, "step": step, "val_dice": vd, "best": is_best,
                       "train_loss": tl, "val_scores": scores}
    except BaseException:
        stopped = True
        raise
    finally:
        if stopped or step < cfg.steps:
            run.set_status("stopped", f"stopped at step {step} (resumes from the last validation); "
                                      f"best val Dice {max(best, 0):.4f}")
        else:
            run.set_status("done", f"best val Dice {best:.4f} at validation {best_at}", best_val_dice=best,
                           best_epoch=best_at)
    yield {"kind": "done", "best_val_dice": best, "best_epoch": best_at, "zero_shot_val_dice": None,
           "stopped": stopped, "run_dir": str(run.path), "global_step": step}
