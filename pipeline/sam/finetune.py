"""Fine-tune SAM's mask decoder on a hybrid dataset, the paper's way, with cached image embeddings.

Paper defaults (every one a FinetuneConfig field): image and prompt encoders frozen, only the mask
decoder trains; box prompt = bounding box of the ground-truth mask computed AFTER augmentation, each side
jittered by 0-20 px; loss = Dice + cross-entropy (MONAI DiceCELoss, sigmoid; for one channel that is
Dice + BCE, a non-zero CE term); Adam lr 1e-5, weight decay 0, batch 5, 20 epochs; validation Dice every
epoch; the best-validation checkpoint is kept.

Hybrid dataset = N_real real pairs (nested seeded subsets of the train part of `split_indices`, so
5 ⊂ 10 ⊂ 20 across runs) + synthetic pairs from a `folder:` dataset. Validation = up to n_val pairs of the
held-out val part of the same split (never in any training subset).

Why training is fast on a CPU — and the augmentation problem. The frozen image encoder is ~95 % of a
recomputing step, so image embeddings are computed once and cached (on disk, keyed by image content +
model + weights: see cache.py). A geometric augmentation changes the image, hence its embedding, so a
cache cannot serve a fresh random draw every step. Our choice: each training image gets `aug_views`
seeded augmented VIEWS (WA / SA draws) whose embeddings are computed once; every epoch draws one view per
image, and the box jitter is fresh at every step (it acts on the prompt, not the embedding, so it costs
nothing). With aug="none" there is one view. `cache_embeddings=False` is the exact alternative: a fresh
augmentation every step and the encoder recomputed each step (MedSAM's training loop) — the benchmark
measures both. With 20 epochs and 4 views an image is seen ~5 times per view; the views cover the
augmentation family coarsely, which is the price of a ~15x faster step.

`finetune(cfg, out_dir)` is a generator of progress events, so one function drives the CLI's tqdm bar and
the dashboard's live curves:
    {"kind": "prepare", "done", "total", "message"}        embeddings being computed / loaded
    {"kind": "step", "step", "epoch", "loss"}              one optimizer step
    {"kind": "epoch", "epoch", "val_dice", "best", "train_loss", "val_scores"}   epoch 0 = the zero-shot model;
                                                           val_scores: Dice per validation image
    {"kind": "done", "best_val_dice", "best_epoch", "zero_shot_val_dice", "stopped", "run_dir"}
Stop (a `stop` callable/Event, Ctrl-C, or closing the generator) saves the last position and keeps the
best checkpoint; calling again with resume=True continues from the saved position.
"""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..augment import AUGMENTATIONS, augment_pair, build_augmentation, jitter_box
from ..config import SamFinetuneDefaults
from ..data import DataError
from ..hybrid import Item, hybrid_items  # noqa: F401 -- the hybrid dataset, shared with the U-Net
from ..runs import RunDir
from .evaluate import evaluate_embeddings
from .models import build_model

_D = SamFinetuneDefaults()


@dataclass
class FinetuneConfig:
    data: str  # the real source spec (hc18:PATH, folder:PATH, phantom:N)
    n_real: int = _D.n_real
    synthetic: str | None = None  # a folder: dataset of synthetic pairs (optional)
    n_synthetic: int | None = None  # None: all of them
    aug: str = "none"  # none | weak (WA) | strong (SA)
    aug_views: int = _D.aug_views  # cached augmented views per image (when aug != none)
    cache_embeddings: bool = True  # False: recompute the encoder every step, fresh augmentation
    epochs: int = _D.epochs
    batch_size: int = _D.batch_size
    lr: float = _D.lr
    weight_decay: float = _D.weight_decay
    box_jitter_px: int = _D.box_jitter_px
    seed: int = 0  # training seed: subset choice, views, order, jitter
    split_seed: int = 0
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    n_val: int = _D.n_val
    backend: str = "litemedsam"
    base_weights: str | None = None  # None: the back-end's default weights
    cache_dir: str | None = None  # on-disk embedding cache (default: <run>/../../cache/embeddings)
    device: str | None = None
    # bf16 autocast for the training step: "auto" = where the hardware computes bf16 natively (CPUs with
    # AVX512-BF16/AMX, recent GPUs); weights, optimizer, validation and inference stay fp32
    mixed_precision: str = "auto"
    kind: str = field(default="sam-finetune", init=False)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["split"] = list(self.split)
        return d

    @staticmethod
    def check_training(cfg) -> None:
        """The checked ranges of the training settings a fine-tuning run and a sweep (SweepConfig, whose
        cells are fine-tuning runs) share, refused with the field's name (never clamped): their one home."""
        from ..validate import check_float, check_int
        cfg.epochs = check_int(cfg.epochs, "epochs", 1, 10_000)
        cfg.batch_size = check_int(cfg.batch_size, "batch_size", 1, 1024)
        cfg.aug_views = check_int(cfg.aug_views, "aug_views", 1, 64)
        cfg.n_val = check_int(cfg.n_val, "n_val", 1, _D.MAX_N_VAL)
        cfg.lr = check_float(cfg.lr, "learning rate (lr)", 0, 1, lo_open=True, hi_open=True)

    def validate(self) -> None:
        from ..validate import check_float, check_int, check_seed
        if self.aug not in AUGMENTATIONS:
            raise DataError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {self.aug!r}")
        # every numeric setting has a checked range, refused with the field's name (never clamped)
        self.n_real = check_int(self.n_real, "n_real", 0, 100_000)
        if self.n_synthetic is not None:
            self.n_synthetic = check_int(self.n_synthetic, "n_synthetic", 0, 1_000_000)
        self.check_training(self)
        self.weight_decay = check_float(self.weight_decay, "weight_decay", 0, 1)
        # the paper jitters each side by 0-20 px; beyond a few hundred px the box is no longer a prompt
        self.box_jitter_px = check_int(self.box_jitter_px, "box jitter (box_jitter_px)", 0, 256)
        self.seed = check_seed(self.seed, "seed")
        self.split_seed = check_seed(self.split_seed, "split_seed")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise DataError(f"mixed precision must be auto, no or bf16, got {self.mixed_precision!r}")
        if self.n_real == 0 and not self.synthetic:
            raise DataError("nothing to train on: N_real is 0 and no synthetic dataset is given")


# ----------------------------------------------------------------------------- the hybrid dataset
@dataclass
class View:
    """One cached training view: an (augmented) image's embedding, its low-res target, its tight box."""
    embedding: torch.Tensor | None  # (256, 64, 64) fp16, CPU; None in recompute mode
    target: np.ndarray | None  # (256, 256) uint8 low-res frame
    box: tuple[int, int, int, int]  # tight box of the (augmented) mask, original pixels
    hw: tuple[int, int]


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) % (2**63) for p in parts]).generate_state(1)[0])


def _box_rng(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([seed, *parts])


VAL_JITTER_SEED = 12345  # one fixed jittered box per val image: epochs and runs are comparable
# a checkpoint (last.safetensors + last_state.pt) at least this often inside an epoch, besides every epoch end
# and every Stop: a SIGKILL loses at most this much work (0: after every step, for tests)
SAVE_EVERY_S = float(os.environ.get("SONOSYNTH_SAVE_EVERY_S", 60))


# ----------------------------------------------------------------------------- training
def dice_ce_loss():
    """MONAI's DiceCELoss for one sigmoid channel: Dice + BCE-with-logits (the CE term is non-zero)."""
    from monai.losses import DiceCELoss
    return DiceCELoss(sigmoid=True, reduction="mean")


def use_bf16(mode: str, device: torch.device) -> bool:
    if mode == "no":
        return False
    if mode == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def _stopper(stop) -> Callable[[], bool]:
    if stop is None:
        return lambda: False
    if isinstance(stop, threading.Event):
        return stop.is_set
    return stop


def _embed_items(cfg: FinetuneConfig, model, cache, train: list[Item], val: list[Item], augmentation,
                 n_views: int) -> Iterator[dict]:
    """Step 1, prepare: load every pair and store its image embeddings on the items (val: the image; train:
    n_views augmented views, or the sample itself when nothing is cached), yielding "prepare" events."""
    total = len(val) + (len(train) * n_views if cfg.cache_embeddings else len(train))
    done = 0
    for items, is_val in ((val, True), (train, False)):
        for k, it in enumerate(items):
            sample = it.load()
            if sample.mask is None:
                raise DataError(f"{it.name} has no mask: training and validation need image+mask pairs")
            if is_val:
                it.views = [View(None, None, (0, 0, 0, 0), sample.image.shape[:2])]
                it.gt = sample.mask  # type: ignore[attr-defined]
                it.meta = sample.meta  # type: ignore[attr-defined]
                imgs = [sample.image]
            elif not cfg.cache_embeddings:
                it.sample = sample  # type: ignore[attr-defined]  # augmented afresh every step
                done += 1
                continue
            else:
                imgs, it.views = [], []
                for v in range(n_views):
                    ap = augment_pair(sample.image, sample.mask, augmentation,
                                      _seed(cfg.seed, 7, hash_name(it.name), v))
                    if ap is None:  # augmented out of view: fall back to the original pair
                        ap = augment_pair(sample.image, sample.mask, None, 0)
                    imgs.append(ap.image)
                    it.views.append(View(None, model.mask_to_lowres(ap.mask).astype(np.uint8),
                                         ap.box, ap.mask.shape[:2]))
            embs = cache.get_or_compute(imgs)
            for view, e in zip(it.views, embs):
                view.embedding = e
            done += len(imgs)
            yield {"kind": "prepare", "done": done, "total": total,
                   "message": f"image embeddings: {done}/{total} ({cache.misses} computed, {cache.hits} cached)"}


def _step_batch(cfg: FinetuneConfig, model, train: list[Item], idx: list[int], view_of, augmentation, epoch: int,
                j: int, device) -> tuple[list[View], torch.Tensor, torch.Tensor]:
    """One step's batch: (views, embeddings, low-res targets) of the train items `idx`, from the cached views
    (view_of[i] chooses one), or augmented afresh and encoded now (cache_embeddings=False)."""
    if cfg.cache_embeddings:
        views = [train[i].views[view_of[i]] for i in idx]
        emb = torch.stack([v.embedding for v in views]).to(device, torch.float32)
        return views, emb, torch.from_numpy(np.stack([v.target for v in views])).float()
    views, imgs, tg = [], [], []
    for i in idx:
        s = train[i].sample
        ap = augment_pair(s.image, s.mask, augmentation, _seed(cfg.seed, 3, epoch, j, i)) \
            or augment_pair(s.image, s.mask, None, 0)
        views.append(View(None, None, ap.box, ap.mask.shape[:2]))
        imgs.append(ap.image)
        tg.append(model.mask_to_lowres(ap.mask))
    with torch.no_grad():
        emb = model.encode(torch.cat([model.preprocess(im)[0] for im in imgs]))
    return views, emb, torch.from_numpy(np.stack(tg)).float()


def decoder_loss(model, emb: torch.Tensor, boxes, target: torch.Tensor, crop, loss_fn, bf16: bool,
                 decoder=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward half of one fine-tuning step, as finetune() runs it and the benches measure it: decode the
    embeddings (B, 256, 64, 64) with their box inputs (bf16 autocast when `bf16`), cut the low-res targets
    (B, 256, 256) to the logits that cover the image (`crop`, from model.crop_cells: the loss never sees the
    padding, see fast_decoder.py) and take the loss. -> (logits, loss); backward and the optimizer step are
    the caller's (accelerate's in finetune())."""
    with torch.autocast(emb.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model.decode(emb, boxes, decoder=decoder, crop=crop)
    target = target[:, None, :logits.shape[-2], :logits.shape[-1]]
    return logits, loss_fn(logits.float(), target.to(logits.device))


def _resume_or_start(run: RunDir, state: dict | None, acc, decoder, opt, validate, val_scores):
    """Step 2, resume: put the saved decoder, optimizer and position back (dropping metric rows logged after
    it), or start: score the zero-shot decoder as epoch 0 and keep it as the first best. Yields the
    "resume" / epoch-0 event; returns the position (epoch, step_in_epoch, global_step), the best so far,
    the zero-shot val Dice and the resumed epoch's losses."""
    if state is not None:
        acc.unwrap_model(decoder).load_state_dict(state["decoder"])
        opt.load_state_dict(state["optimizer"])
        run.truncate_metrics(state["global_step"])
        yield {"kind": "resume", "epoch": state["epoch"], "step": state["global_step"],
               "message": f"resumed at epoch {state['epoch'] + 1}, step {state['global_step']}"}
        keys = ("epoch", "step_in_epoch", "global_step", "best_val_dice", "best_epoch", "zero_shot_val_dice")
        # the resumed epoch's losses so far (its mean)
        return {**{k: state[k] for k in keys}, "epoch_losses": list(state.get("epoch_losses", []))}
    if run.metrics():
        run.truncate_metrics(-1)
    zero_shot = validate()
    # best starts as the zero-shot decoder: a run never hands back something worse on val
    run.save_weights("best", acc.unwrap_model(decoder).state_dict(), {"epoch": 0, "val_dice": zero_shot})
    run.log({"kind": "epoch", "epoch": 0, "step": 0, "val_dice": round(zero_shot, 5), "best": 1})
    yield {"kind": "epoch", "epoch": 0, "val_dice": zero_shot, "best": True, "train_loss": None,
           "val_scores": list(val_scores)}
    return {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_val_dice": zero_shot, "best_epoch": 0,
            "zero_shot_val_dice": zero_shot, "epoch_losses": []}


def finetune(cfg: FinetuneConfig, out_dir: str | Path, resume: bool = True, stop=None,
             allowed_roots=None) -> Iterator[dict]:
    cfg.validate()
    should_stop = _stopper(stop)
    # every check on the data (sources, sizes, N_real against the train part) BEFORE the first file is
    # written: a refused start leaves no run folder behind to block the name
    train, val, warnings = hybrid_items(cfg, allowed_roots)
    from accelerate import Accelerator
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from accelerate.utils import DistributedDataParallelKwargs
    # several processes (DDP): the fast decoder never uses mask tokens 1-3, their hypernetwork MLPs or the
    # IoU head (multimask_output=False), so DDP must not wait for their gradients; without this a 2-process
    # run failed at its second step ("Expected to have finished reduction in the prior iteration")
    acc = Accelerator(cpu=(device == "cpu"), kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    run = RunDir(out_dir)
    if acc.is_main_process:  # one writer: with several GPUs the other processes only read
        resuming = run.start(cfg.as_dict(), resume=resume)
        run.set_status("running", "preparing")
    acc.wait_for_everyone()
    if not acc.is_main_process:
        resuming = (run.path / "last_state.pt").is_file()
        run = _ReadOnlyRun(run.path)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.backend, cfg.base_weights).to(acc.device)
    model.image_encoder.requires_grad_(False)
    model.prompt_encoder.requires_grad_(False)
    model.image_encoder.eval()
    model.prompt_encoder.eval()

    for w in warnings[:5]:
        yield {"kind": "warning", "message": w}
    augmentation = build_augmentation(cfg.aug)
    n_views = 1 if augmentation is None else cfg.aug_views

    # -- cached embeddings: the encoder runs once per (view of an) image, misses are stored on disk --
    from .cache import EmbeddingCache
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else Path(out_dir).resolve().parent.parent / "cache" / "embeddings"
    cache = EmbeddingCache(cache_dir, model)
    with acc.main_process_first():  # other processes then read what the main process stored
        yield from _embed_items(cfg, model, cache, train, val, augmentation, n_views)

    val_boxes = []
    for k, it in enumerate(val):
        from ..masks import mask_bbox
        val_boxes.append(jitter_box(mask_bbox(it.gt), it.gt.shape, _box_rng(VAL_JITTER_SEED, k), cfg.box_jitter_px))

    val_scores: list[float] = []  # per image, of the latest validation: pages test a gain against noise

    def validate() -> float:
        """Mean Dice of the current decoder on the val pairs (the batched evaluator of sam/evaluate.py)."""
        val_scores[:] = evaluate_embeddings(model, [it.views[0].embedding for it in val], val_boxes,
                                            [it.gt for it in val])["dice"]
        model.mask_decoder.train()
        return float(np.mean(val_scores))

    # -- optimiser, accelerate, resume --------------------------------------------------------------
    decoder = model.mask_decoder
    # fused Adam: one kernel per step instead of ~10 small ops per tensor (measured ~15 % of a CPU step)
    opt = torch.optim.Adam(decoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                           fused=acc.device.type in ("cpu", "cuda"))
    decoder, opt = acc.prepare(decoder, opt)
    loss_fn = dice_ce_loss()
    bf16 = use_bf16(cfg.mixed_precision, acc.device)
    P, R, B = acc.num_processes, acc.process_index, cfg.batch_size
    steps_per_epoch = max(1, math.ceil(len(train) / (B * P)))
    begun = yield from _resume_or_start(run, run.resume_state() if resuming else None, acc, decoder, opt,
                                        validate, val_scores)
    epoch, step_in_epoch, gstep = begun["epoch"], begun["step_in_epoch"], begun["global_step"]
    best, best_epoch, zero_shot = begun["best_val_dice"], begun["best_epoch"], begun["zero_shot_val_dice"]

    position = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": gstep}
    pending: list[dict] = []
    clean = True
    losses: list[float] = list(begun["epoch_losses"]) if step_in_epoch else []
    last_save = time.monotonic()

    def save_last(reason: str) -> None:
        # order matters: last_state.pt is the commit point. Metric rows go first (a kill before the state
        # is written leaves rows past the saved position, which the resume truncates), then the weights.
        run.log(pending)
        pending.clear()
        sd = acc.unwrap_model(decoder).state_dict()
        run.save_weights("last", sd, {"epoch": position["epoch"], "global_step": position["global_step"]})
        run.save_state({"decoder": sd, "optimizer": opt.state_dict(), **position,
                        "best_val_dice": best, "best_epoch": best_epoch, "zero_shot_val_dice": zero_shot,
                        "reason": reason, "config": cfg.as_dict(),
                        "epoch_losses": list(losses) if position["step_in_epoch"] else []})

    run.set_status("running", f"training: {len(train)} pairs, {steps_per_epoch} steps per epoch")
    stopped, failed = False, ""
    decoder.train()
    try:
        while epoch < cfg.epochs:
            rng = np.random.default_rng([cfg.seed, 1, epoch])
            perm = rng.permutation(len(train))
            view_of = rng.integers(n_views, size=len(train))
            losses = losses if step_in_epoch else []  # a resumed epoch keeps the losses of its first steps
            for j in range(step_in_epoch, steps_per_epoch):
                if should_stop():
                    stopped = True
                    break
                idx = [int(perm[(k) % len(perm)]) for k in range((j * P + R) * B, (j * P + R + 1) * B)]
                jr = _box_rng(cfg.seed, 2, epoch, j, R)
                views, emb, target = _step_batch(cfg, model, train, idx, view_of, augmentation, epoch, j, acc.device)
                boxes = np.concatenate([model.box_to_input(jitter_box(v.box, v.hw, jr, cfg.box_jitter_px), v.hw)
                                        for v in views])
                clean = False
                # the loss covers the image, not the padding below/right of it (see fast_decoder.py)
                crop = model.crop_cells([v.hw for v in views])
                _, loss = decoder_loss(model, emb, boxes, target, crop, loss_fn, bf16, decoder=decoder)
                if not torch.isfinite(loss):  # stop: a diverged decoder must never be saved or reported done
                    raise TrainingDiverged(
                        f"training stopped at epoch {epoch + 1}, step {gstep + 1}: the loss is "
                        f"{float(loss.detach())} (learning rate {cfg.lr:g} too high?); the best checkpoint so far "
                        f"(epoch {best_epoch}, val Dice {best:.4f}) is kept")
                acc.backward(loss)
                opt.step()
                opt.zero_grad(set_to_none=True)
                gstep += 1
                position.update(epoch=epoch, step_in_epoch=j + 1, global_step=gstep)
                clean = True
                lv = float(loss.detach())
                losses.append(lv)
                pending.append({"kind": "step", "epoch": epoch + 1, "step": gstep, "loss": round(lv, 6)})
                yield {"kind": "step", "step": gstep, "epoch": epoch + 1, "loss": lv,
                       "steps_per_epoch": steps_per_epoch, "epochs": cfg.epochs}
                if time.monotonic() - last_save >= SAVE_EVERY_S:  # mid-epoch: a kill loses at most this much
                    save_last("periodic")
                    last_save = time.monotonic()
            if stopped:
                break
            epoch += 1
            step_in_epoch = 0
            vd = validate()
            is_best = vd > best
            if is_best:
                best, best_epoch = vd, epoch
                run.save_weights("best", acc.unwrap_model(decoder).state_dict(), {"epoch": epoch, "val_dice": vd})
            tl = float(np.mean(losses)) if losses else None
            pending.append({"kind": "epoch", "epoch": epoch, "step": gstep, "val_dice": round(vd, 5),
                            "train_loss": None if tl is None else round(tl, 6), "best": int(is_best)})
            position.update(epoch=epoch, step_in_epoch=0, global_step=gstep)
            save_last("epoch")
            yield {"kind": "epoch", "epoch": epoch, "val_dice": vd, "best": is_best, "train_loss": tl,
                   "val_scores": list(val_scores)}
    except TrainingDiverged as exc:
        stopped, failed = True, str(exc)
        raise
    except BaseException:
        stopped = True
        raise
    finally:
        if failed:
            run.set_status("failed", failed)
        elif stopped or epoch < cfg.epochs:
            if clean:  # never save weights caught half-way through an optimizer step
                save_last("stopped")
            run.set_status("stopped", f"stopped at epoch {position['epoch']} step {position['global_step']}; "
                                      f"best val Dice {best:.4f} (epoch {best_epoch}); resume to continue")
        else:
            run.set_status("done", f"best val Dice {best:.4f} at epoch {best_epoch} "
                                   f"(zero-shot {zero_shot:.4f})", best_val_dice=best, best_epoch=best_epoch,
                           zero_shot_val_dice=zero_shot)
    yield {"kind": "done", "best_val_dice": best, "best_epoch": best_epoch, "zero_shot_val_dice": zero_shot,
           "stopped": stopped, "run_dir": str(run.path), "global_step": gstep,
           "encoder_runs": cache.misses, "cache_hits": cache.hits}


class TrainingDiverged(DataError):
    """The loss became NaN or infinite: the job stops with this message instead of saving a broken model."""


class _ReadOnlyRun(RunDir):
    """The run folder as seen by a non-main process: reads work, writes are the main process's job."""
    def _noop(self, *a, **k):
        return None
    start = set_status = save_weights = save_state = log = truncate_metrics = _noop  # type: ignore[assignment]


def hash_name(name: str) -> int:
    import zlib
    return zlib.crc32(name.encode())
