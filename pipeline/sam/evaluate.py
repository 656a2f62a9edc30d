"""Segment one image from a box, and evaluate a model on a data source with the jittered-box protocol.

Protocol (the paper's, MedSAM's): the box prompt is the ground-truth mask's bounding box with each side
enlarged by 0-20 px drawn from a generator seeded by (seed, sample index), so two runs agree and a
sample's box does not depend on which others are evaluated. `ellipse_fit` replaces each predicted mask
by its fitted filled ellipse (fetal heads are annotated as ellipses); the default is the raw mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..augment import jittered_box_for
from ..data import DataError, open_source
from ..masks import Ellipse, hadlock_ga_weeks, refit
from ..metrics import dice, hc_abs_error_mm
from .predictor import SamPredictor, validate_box


@dataclass
class Segmentation:
    mask: np.ndarray  # bool (H, W), the model's raw mask
    box: tuple[float, float, float, float]
    ellipse: Ellipse | None  # fitted to the mask (None when the mask is empty)
    ellipse_mask: np.ndarray | None
    hc_mm: float | None
    ga_weeks: float | None

    def as_dict(self) -> dict:
        return {"box": [round(v, 1) for v in self.box],
                "ellipse": None if self.ellipse is None else self.ellipse.as_dict(),
                "hc_mm": None if self.hc_mm is None else round(self.hc_mm, 2),
                "ga_weeks": None if self.ga_weeks is None else round(self.ga_weeks, 1),
                "mask_pixels": int(self.mask.sum())}


def segment(predictor: SamPredictor, image: np.ndarray, box, pixel_size_mm: float | None = None) -> Segmentation:
    """Mask, fitted ellipse, HC (mm) and GA (weeks, Hadlock) for one image and one box."""
    if pixel_size_mm is not None and not (np.isfinite(pixel_size_mm) and 0 < pixel_size_mm < 10):
        raise DataError(f"pixel size must be a positive number of mm (e.g. 0.15), got {pixel_size_mm}")
    b = validate_box(box, np.asarray(image).shape[:2])
    mask = predictor.predict_image(image, b)  # embedding + image size as one pair (shared predictors)
    e, emask, hc, ga = None, None, None, None
    if mask.any():
        ex = refit(mask, allow_border=True, min_fit_iou=0.0)
        if ex.ellipse is not None:
            e, emask = ex.ellipse, ex.mask
            hc = e.head_circumference_mm(pixel_size_mm)
            ga = hadlock_ga_weeks(hc)
    return Segmentation(mask, b, e, emask, hc, ga)


def score_mask(pred: np.ndarray, gt: np.ndarray, hc_mm: float | None = None, pixel_size_mm: float | None = None,
               ellipse_fit: bool = False) -> tuple[float, float | None]:
    """(Dice, |HC error| in mm or None) of one predicted mask against its ground truth (metrics.dice);
    `ellipse_fit` scores the mask's fitted filled ellipse instead of the raw mask."""
    if ellipse_fit and pred.any():
        ex = refit(pred, allow_border=True, min_fit_iou=0.0)
        if ex.ellipse is not None:
            pred = ex.mask
    return dice(pred, gt), hc_abs_error_mm(pred, hc_mm, pixel_size_mm)


def evaluate_embeddings(model, embeddings, boxes, masks, metas=None, batch_size: int = 8,
                        ellipse_fit: bool = False) -> dict:
    """The batched evaluator: the model's current mask decoder on cached image embeddings, one box per image.

    embeddings: one (256, 64, 64) tensor per image; boxes: (x0, y0, x1, y1) in original pixels; masks: the
    ground-truth bool masks (their shapes are the images' sizes); metas: SampleMeta per image for the HC
    error (None: Dice only). Decoded `batch_size` images at a time. Returns per-image lists, in order:
    {"dice": [...], "hc_abs_error_mm": [... or None]}. Used by the sweep's test sets and by fine-tuning's
    validation, so the two score a decoder the same way."""
    import torch
    dec = model.mask_decoder
    was_training = dec.training
    dec.eval()
    dices, hcs = [], []
    try:
        with torch.no_grad():
            for s0 in range(0, len(masks), batch_size):
                chunk = range(s0, min(s0 + batch_size, len(masks)))
                emb = torch.stack([embeddings[i] for i in chunk]).to(model.device, torch.float32)
                inp = np.concatenate([model.box_to_input(boxes[i], masks[i].shape) for i in chunk])
                logits = model.decode(emb, inp, crop=model.crop_cells([masks[i].shape for i in chunk]))
                for j, i in enumerate(chunk):
                    pred = model.logits_to_mask(logits[j], masks[i].shape)
                    m = metas[i] if metas is not None else None
                    d, e = score_mask(pred, masks[i], m.hc_mm if m else None, m.pixel_size_mm if m else None,
                                      ellipse_fit)
                    dices.append(d)
                    hcs.append(e)
    finally:
        dec.train(was_training)
    return {"dice": dices, "hc_abs_error_mm": hcs}


def evaluate(predictor: SamPredictor, spec: str, limit: int | None = None, seed: int = 0,
             ellipse_fit: bool = False, jitter_px: int = 20, allowed_roots=None,
             progress: Callable[[int, int], None] | None = None, split: str | None = None,
             split_seed: int = 0) -> dict:
    """{"n", "dice_mean", "dice_std", "hc_abs_error_mm_median"} over the first `limit` labelled samples
    (of the `split` part — train / val / test of pipeline.data.split_indices — when given)."""
    src = open_source(spec, allowed_roots)
    if split and split != "all":
        from ..data import split_indices
        parts = split_indices(src.metas, seed=split_seed)
        if split not in parts:
            raise DataError(f"split must be all, train, val or test, got {split!r}")
        src = src.subset(parts[split])
    n_total = len(src) if limit is None else min(limit, len(src))
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be at least 1, got {limit}")
    dices, hc_errs, per_sample = [], [], []
    for i in range(n_total):
        s = src[i]
        if s.mask is None:
            continue
        rng = np.random.default_rng([seed, i])
        box = jittered_box_for(s.mask, rng, jitter_px)
        predictor.set_image(s.image)
        d, err = score_mask(predictor.predict(box=box), s.mask, s.meta.hc_mm, s.meta.pixel_size_mm, ellipse_fit)
        dices.append(d)
        if err is not None:
            hc_errs.append(err)
        per_sample.append({"name": s.name, "dice": d, "hc_abs_error_mm": err, "box": list(box)})
        if progress:
            progress(i + 1, n_total)
    if not dices:
        raise DataError(f"no labelled samples to evaluate in {spec}")
    return {"n": len(dices), "dice_mean": float(np.mean(dices)), "dice_std": float(np.std(dices)),
            "hc_abs_error_mm_median": float(np.median(hc_errs)) if hc_errs else None,
            "per_sample": per_sample}
