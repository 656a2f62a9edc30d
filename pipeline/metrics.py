"""Segmentation metrics (MONAI's implementations) and head-circumference error.

Masks are bool (H, W) numpy arrays. Convention for empty masks: two empty masks agree perfectly
(Dice = IoU = 1, HD95 = 0); one empty and one not gives Dice = IoU = 0 and HD95 = inf.
"""
from __future__ import annotations

import math

import numpy as np


def _as_tensor(pred: np.ndarray, gt: np.ndarray):
    import torch
    p = np.asarray(pred).astype(bool)
    g = np.asarray(gt).astype(bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction size {p.shape[::-1]} does not match ground-truth size {g.shape[::-1]}")
    # MONAI wants (batch, channel, H, W) one-hot-ish tensors
    return (torch.from_numpy(p)[None, None].float(), torch.from_numpy(g)[None, None].float(), p, g)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    from monai.metrics import compute_dice
    tp, tg, p, g = _as_tensor(pred, gt)
    if not p.any() and not g.any():
        return 1.0
    return float(compute_dice(tp, tg, include_background=True, ignore_empty=False)[0, 0])


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    from monai.metrics import compute_iou
    tp, tg, p, g = _as_tensor(pred, gt)
    if not p.any() and not g.any():
        return 1.0
    return float(compute_iou(tp, tg, include_background=True, ignore_empty=False)[0, 0])


def hd95(pred: np.ndarray, gt: np.ndarray, pixel_size_mm: float | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance, in pixels (or mm when pixel_size_mm is given)."""
    from monai.metrics import compute_hausdorff_distance
    tp, tg, p, g = _as_tensor(pred, gt)
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        return math.inf
    d = float(compute_hausdorff_distance(tp, tg, include_background=True, percentile=95)[0, 0])
    return d * pixel_size_mm if pixel_size_mm else d


def segmentation_scores(pred: np.ndarray, gt: np.ndarray, pixel_size_mm: float | None = None) -> dict:
    return {"dice": dice(pred, gt), "iou": iou(pred, gt), "hd95": hd95(pred, gt, pixel_size_mm)}


def hc_abs_error_mm(pred_mask: np.ndarray, reference_hc_mm: float | None,
                    pixel_size_mm: float | None) -> float | None:
    """|HC(ellipse fitted to pred_mask) - reference HC| in mm, or None when it cannot be computed."""
    from .masks import refit
    if reference_hc_mm is None or not pixel_size_mm:
        return None
    ex = refit(pred_mask, allow_border=True, min_fit_iou=0.0)
    if ex.ellipse is None:
        return None
    return abs(ex.ellipse.head_circumference_mm(pixel_size_mm) - reference_hc_mm)
