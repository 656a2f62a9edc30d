"""A sweep's test sets: images, jittered boxes and embeddings encoded once, scored by the batched
evaluator of pipeline/sam/evaluate.py."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..data import DataError, open_source, split_indices
from .config import _D, HELDOUT, SweepConfig


class TestSet:
    """Test images, their jittered boxes and cached embeddings: encoded once for the whole sweep."""

    def __init__(self, name: str, samples: list, model, cache, eval_seed: int, jitter_px: int = 20):
        from ..augment import jittered_box_for
        self.name = name
        self.samples = [s for s in samples if s.mask is not None]
        if not self.samples:
            raise DataError(f"test source {name} has no labelled images")
        self.boxes = [jittered_box_for(s.mask, np.random.default_rng([eval_seed, i]), jitter_px)
                      for i, s in enumerate(self.samples)]
        self.embeddings = None
        self.model, self.cache = model, cache

    def prepare(self, progress: Callable[[int, int], None] | None = None) -> None:
        if self.embeddings is None:
            self.embeddings = self.cache.get_or_compute([s.image for s in self.samples], progress=progress)

    def evaluate(self) -> dict:
        """Mean/std Dice (%) and median HC error (mm) of the model's current decoder."""
        from ..sam.evaluate import evaluate_embeddings
        self.prepare()
        r = evaluate_embeddings(self.model, self.embeddings, self.boxes, [s.mask for s in self.samples],
                                [s.meta for s in self.samples])
        return _summary(r)

    def evaluate_unet(self, model) -> dict:
        """The same scores for a U-Net (pipeline/unet.py): no box, no embeddings, the whole image in."""
        from ..unet import evaluate_unet
        return _summary(evaluate_unet(model, self.samples))


def _summary(r: dict) -> dict:
    """Per-image scores -> mean/std Dice (%) and median |HC error| (mm, None where no image has a pixel size)."""
    dices, hc = r["dice"], [e for e in r["hc_abs_error_mm"] if e is not None]
    return {"n_test": len(dices), "dice": 100 * float(np.mean(dices)), "dice_std": 100 * float(np.std(dices)),
            "hc_abs_error_mm": float(np.median(hc)) if hc else None}


def _test_sets(cfg: SweepConfig, model, cache, allowed_roots=None) -> list[TestSet]:
    out = []
    for spec in cfg.tests:
        if spec == HELDOUT:
            src = open_source(cfg.train, allowed_roots)
            idx = split_indices(src.metas, cfg.split, cfg.split_seed)["test"]
            name = HELDOUT
        else:
            src = open_source(spec, allowed_roots)
            idx = list(range(len(src)))
            name = spec
        if cfg.test_limit:
            idx = idx[:cfg.test_limit]
        out.append(TestSet(name, [src[i] for i in idx], model, cache, cfg.eval_seed, _D.box_jitter_px))
    return out
