"""What the training stages of one `pretrain-base` run share (pretrain.py runs them in order): the run's
settings and data, its random streams, and how a stage saves a checkpoint and averages weights."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..fileio import atomic_write


@dataclass
class StageRun:
    """One run as its stages see it. `g` (a CPU torch.Generator) and `rng_np` are one random stream each,
    carried from the VAE stage into the UNet stage (and saved in each stage's checkpoint), so a resumed run
    draws what an uninterrupted one would."""
    cfg: Any  # pretrain.PretrainConfig
    work: Path  # the work folder: checkpoints, caches, config.json, time.json
    dev: Any  # torch.device
    amp: dict  # torch.autocast arguments (bf16 where the hardware computes it natively)
    g: Any
    rng_np: np.random.Generator
    clock: Callable[[], None]  # records the time this run has taken (called after each checkpoint)
    stop: Callable[[], bool] | None
    data: np.ndarray  # the phantoms at the base size, (N, R, R, 3) uint8 in-channel
    tri: np.ndarray  # each phantom's trimester index
    real: np.ndarray | None  # the unlabelled views at the base size, (M, R, R) uint8, or None
    real_frac: float  # share of each batch from unlabelled views (0 without them)

    def stopped(self) -> bool:
        return self.stop is not None and self.stop()


def ema_update(ema: list, params: list, decay: float, step: int) -> None:
    """ema <- lerp towards params; the decay warms up as (1 + step) / (10 + step) so early weights fade fast."""
    import torch
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - d)


def _save_ckpt(path: Path, obj: dict) -> None:
    import torch
    atomic_write(path, lambda tmp: torch.save(obj, tmp), suffix=".pt")
