"""The hybrid dataset (the paper's words): N_real real pairs from the train part of a split plus synthetic
pairs from a `folder:` dataset, and the validation pairs of the same split's val part. Both segmenters (SAM's
decoder, pipeline/sam/finetune.py; the from-scratch U-Net, pipeline/unet.py) train on exactly these lists.

N_real real pairs are nested seeded subsets of the train part of `split_indices` (so 5 ⊂ 10 ⊂ 20 across
runs); validation = up to n_val pairs of the held-out val part (never in any training subset). `cfg` is any
object with the fields data, n_real, synthetic, n_synthetic, seed, split, split_seed, n_val.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .config import SamFinetuneDefaults
from .data import DataError, nested_subsets, open_source, split_indices

_D = SamFinetuneDefaults()


@dataclass
class Item:
    name: str
    origin: str  # "real" | "synthetic"
    load: Callable  # () -> Sample
    views: list = field(default_factory=list)  # SAM's cached views (pipeline/sam/finetune.py View)


def hybrid_items(cfg, allowed_roots=None) -> tuple[list[Item], list[Item], list[str]]:
    """(train items, val items, warnings) — the N_real real + synthetic training pairs and the val pairs."""
    src = open_source(cfg.data, allowed_roots)
    warnings = list(src.warnings)
    parts = split_indices(src.metas, cfg.split, cfg.split_seed)
    if len(parts["train"]) < cfg.n_real:
        raise DataError(f"n_real: asked for {cfg.n_real} real pairs but the train part of {cfg.data} holds "
                        f"only {len(parts['train'])}: ask for at most {len(parts['train'])} or use a larger source")
    real = nested_subsets(parts["train"], [cfg.n_real], cfg.seed)[cfg.n_real] if cfg.n_real else []
    # never the test part, even when the val part is empty: choosing a checkpoint on test images would
    # leak them into every result measured on that test part
    val_pool = parts["val"]
    if not val_pool:
        raise DataError(f"{cfg.data} is too small to hold out a validation part ({len(src)} images, split "
                        f"{'/'.join(f'{f:g}' for f in cfg.split)}): use a larger source")
    if cfg.n_val > len(val_pool):
        if cfg.n_val != _D.n_val:  # asked for: refused by name; the default validates on what there is, said so
            raise DataError(f"n_val: asked for {cfg.n_val} validation pairs but the validation part of {cfg.data} "
                            f"holds only {len(val_pool)}: ask for at most {len(val_pool)} or use a larger source")
        warnings.append(f"n_val: the validation part of {cfg.data} holds {len(val_pool)} pairs, fewer than the "
                        f"default {cfg.n_val}: all {len(val_pool)} validate")
    val = nested_subsets(val_pool, [min(cfg.n_val, len(val_pool))], cfg.split_seed)[min(cfg.n_val, len(val_pool))]
    train = [Item(src.metas[i].name, "real", (lambda i=i: src[i])) for i in real]
    if cfg.synthetic:
        syn = open_source(cfg.synthetic, allowed_roots)
        warnings += syn.warnings
        idx = list(range(len(syn)))
        if cfg.n_synthetic is not None:
            if cfg.n_synthetic > len(idx):
                raise DataError(f"asked for {cfg.n_synthetic} synthetic pairs, {cfg.synthetic} holds {len(idx)}")
            idx = nested_subsets(idx, [cfg.n_synthetic], cfg.seed)[cfg.n_synthetic]
        train += [Item(syn.metas[i].name, "synthetic", (lambda i=i: syn[i])) for i in idx]
    vitems = [Item(src.metas[i].name, "val", (lambda i=i: src[i])) for i in val]
    return train, vitems, warnings
