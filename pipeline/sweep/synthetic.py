"""The SYN arm's synthetic set: how many pairs per trimester, the trimester LoRAs trained on the train pool,
the set generated into the sweep folder (pipeline/diffusion/dataset.py's fill loop), resumable."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from ..arms import ARMS
from ..data import DataError, open_source, split_indices, trimester_counts
from ..fileio import atomic_write_json
from ..masks import TRIMESTERS
from .config import SweepConfig
from .folder import Sweep


def synthetic_plan(cfg: SweepConfig, allowed_roots=None) -> dict[str, int]:
    """How many synthetic pairs per trimester: the most any cell trains on (SYN: total - min(N_real); SYN only:
    total), in the real training pool's mix."""
    src = open_source(cfg.train, allowed_roots)
    pool = split_indices(src.metas, cfg.split, cfg.split_seed)["train"]
    counts = trimester_counts([src.metas[i] for i in pool])
    have = set(cfg.loras or {}) | (set(TRIMESTERS) if cfg.train_loras else set())
    known = {t: counts[t] for t in TRIMESTERS if t in have and counts[t] > 0}
    need = max(cfg.n_synthetic(a, min(cfg.n_real) if ARMS[a].real else 0) or 0 for a in cfg.augmentations)
    if not known or sum(known.values()) == 0:
        raise DataError("no LoRA for any trimester present in the training pool")
    tot = sum(known.values())
    plan = {t: int(math.floor(need * c / tot)) for t, c in known.items()}
    for t in sorted(known, key=lambda t: -known[t])[:need - sum(plan.values())]:
        plan[t] += 1
    return plan


def pool_aspect(cfg: SweepConfig, allowed_roots=None, n: int = 20) -> float:
    """The median width/height of (up to n of) the train pool's images, to 2 decimals: the shape the SYN pairs
    are written at by default (HC18: 800x540 -> 1.48); 0 (square) when the pool is within 3 % of square.
    Measured with real pairs in the SYN slot at 256²: test Dice 96.28 squashed, 96.65 at the scans' aspect
    (docs/lab/2026-11-results.md, 2026-11-26)."""
    src = open_source(cfg.train, allowed_roots)
    pool = split_indices(src.metas, cfg.split, cfg.split_seed)["train"][:n]
    ratios = [src[i].image.shape[1] / src[i].image.shape[0] for i in pool]
    a = round(float(np.median(ratios)), 2) if ratios else 0.0
    return 0.0 if abs(a - 1) <= 0.03 else a


def train_trimester_loras(cfg: SweepConfig, lora_root: Path, stop=None, allowed_roots=None) -> Iterator[dict]:
    """The paper's recipe, one LoRA per trimester on lora_n images chosen from the TRAIN part of the
    sweep's split only (the SYN arm thereby draws on those real pairs too, as the paper's did).
    Resumable: a finished LoRA is kept, an interrupted one continues."""
    from ..diffusion.lora import LoraTrainConfig, train_lora
    tris = [t for t, count in synthetic_plan(cfg, allowed_roots).items() if count > 0]
    # (trimester, size, folder): the base-size LoRAs, then with detail_resolution the detail pass's LoRAs on
    # the same images at that size
    jobs = [(t, 0, lora_root / t) for t in tris]
    if cfg.detail_resolution:
        jobs += [(t, cfg.detail_resolution, lora_root / f"{t}-{cfg.detail_resolution}") for t in tris]
    done: dict[int, dict[str, str]] = {}
    for t, res, out in jobs:
        lcfg = LoraTrainConfig(data=cfg.train, trimester=t, n=cfg.lora_n, steps=cfg.lora_steps, pool="train",
                               split=tuple(cfg.split), split_seed=cfg.split_seed, preview_every=0,
                               base=cfg.diffusion_base, resolution=res)
        label = f"{t} ({res}²)" if res else t
        for ev in train_lora(lcfg, out, resume=True, stop=stop, allowed_roots=allowed_roots):
            if ev["kind"] == "step" and (ev["step"] % 10 == 0 or ev["step"] == ev["total"]):
                yield {"kind": "lora", "trimester": label, "step": ev["step"], "total": ev["total"], "loss": ev["loss"]}
            if ev["kind"] == "stopped":
                return
        done.setdefault(res, {})[t] = str(out)
    cfg.loras = done.get(0, {})
    cfg.detail_loras = done.get(cfg.detail_resolution) if cfg.detail_resolution else cfg.detail_loras


def generate_synthetic(cfg: SweepConfig, out_dir: Path, stop=None, allowed_roots=None) -> Iterator[dict]:
    """Generate the SYN arm's synthetic set with the trimester LoRAs (accepting valid pairs with QC >=
    generate_min_qc), resumable: pairs already accepted are counted, seeds continue after the last."""
    from ..diffusion import dataset
    from ..diffusion.generate import GenerateConfig
    from ..diffusion.base import BaseSampling
    plan = synthetic_plan(cfg, allowed_roots)
    state_path = out_dir / "generation_state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    # how the base samples (its sampling file) is part of the set: a set begun one way is not finished another
    sampling = BaseSampling.of(cfg.diffusion_base).set_record()
    aspect = pool_aspect(cfg, allowed_roots) if cfg.restore_aspect is None else cfg.restore_aspect
    if cfg.detail_loras or aspect:  # only when asked: sets begun before these existed still match
        sampling.update(detail_strength=cfg.detail_strength if cfg.detail_loras else None, restore_aspect=aspect)
    out_size = GenerateConfig().out_size
    if out_size:  # pairs written at 256² (issue 32): a set begun at the sample's size is not finished at 256²
        sampling.update(out_size=out_size)
    if state.get("sampling", sampling) != sampling:
        raise DataError(f"the synthetic set in {out_dir} was begun with the base sampling at {state['sampling']}, "
                        f"but {cfg.diffusion_base} now samples at {sampling} (its sonosynth_sampling.json "
                        f"changed): finish it with the base as it was, or start a new sweep folder")
    if state.get("sampling") != sampling:
        state["sampling"] = sampling
        atomic_write_json(state_path, state)
    for t, want in plan.items():
        if want == 0:
            continue
        have = dataset.counts(out_dir)["trimesters"][t]
        next_seed = state.get(t, cfg.generate_seed + 100_000 * TRIMESTERS.index(t))
        tries = 0
        while have < want:
            if stop is not None and stop():
                return
            if tries > 6 * want + 16:
                raise DataError(f"only {have} of {want} {t}-trimester samples passed the extractor and QC "
                                f"≥ {cfg.generate_min_qc}; lower generate_min_qc or retrain the LoRA")
            n = min(16, max(4, want - have))
            gcfg = GenerateConfig(trimester=t, n=n, lora=cfg.loras[t], seed=next_seed, batch_size=8,
                                  base=cfg.diffusion_base, sam=cfg.backend, sam_weights=cfg.base_weights,
                                  detail_lora=(cfg.detail_loras or {}).get(t), detail_strength=cfg.detail_strength,
                                  restore_aspect=aspect)
            for ev in dataset.fill(out_dir, gcfg, min_qc=cfg.generate_min_qc, want=want - have, stop=stop):
                if ev["kind"] != "sample":
                    continue
                tries += 1
                have += ev["accepted"]
                yield {"kind": "generate", "trimester": t, "have": have, "want": want}
            next_seed += n
            state[t] = next_seed
            atomic_write_json(state_path, state)


def _prepare_synthetic(cfg: SweepConfig, sweep: Sweep, stop, allowed_roots, cell_name: str):
    """Train the trimester LoRAs (with train_loras) and generate the SYN set, then mark it complete; returns
    its source spec, or None when stopped. The caller holds the sweep's `synthetic` lock; both steps are
    resumable, so a worker that died half-way is continued, not restarted."""
    if cfg.train_loras and (not cfg.loras or (cfg.detail_resolution and not cfg.detail_loras)):
        for ev in train_trimester_loras(cfg, sweep.path / "loras", stop, allowed_roots):
            yield {**ev, "cell": cell_name}
        if stop():
            return None
    syn_dir = sweep.path / "synthetic"
    for ev in generate_synthetic(cfg, syn_dir, stop, allowed_roots):
        yield {**ev, "cell": cell_name}
    if stop():
        return None
    atomic_write_json(sweep.synthetic_marker, {"plan": synthetic_plan(cfg, allowed_roots), "time": time.time()})
    return sweep.synthetic_ready()
