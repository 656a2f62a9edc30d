"""The paper's Table 1 as a reproducible, resumable sweep.

    python -m pipeline sweep --preset cpu-small --train hc18:../shared/data/hc18 --loras first=L1,second=L2,third=L3 --out DIR
    python -m pipeline sweep --config sweep.json --out DIR

A sweep is a grid of cells: augmentation in {none, weak (WA), strong (SA), syn (SYN)} x N_real x repeat.
Each cell is an ordinary SAM mask-decoder fine-tuning run (pipeline/sam/finetune.py) in
DIR/cells/<cell>/ with its own seed, then evaluated on every test source:
- none/weak/strong train on N_real real pairs only (WA/SA with the seed code's albumentations);
- syn trains on N_real real + (total - N_real) synthetic pairs from a `folder:` dataset, or generates
  that dataset first with the trimester LoRAs, in the trimester proportions of the real training pool.
Real pairs come from the `train` part of the train source's seeded split; nested subsets make
5 ⊂ 10 ⊂ 20 ... within a repeat. The validation part picks each run's best checkpoint. The test source
`heldout` is the `test` part of the same split: never trained on, never used to choose anything.

Resumable: a finished cell has DIR/cells/<cell>/result.json and is skipped; an interrupted cell resumes
from its last checkpoint; results.csv is rebuilt from the result files, so re-running does no work.
The grid may grow (more N_real, repeats, augmentations) in the same folder; the settings that change what
a cell means (train source, split, epochs, ...) may not.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .config import SamFinetuneDefaults, add_profile_argument, resolve_profile
from .data import DataError, open_source, split_indices, trimester_counts
from .fileio import atomic_write_json, atomic_write_text
from .locks import FileLock
from .masks import TRIMESTERS
from .results import AUG_ORDER, RESULT_COLUMNS, load_results, summarize
from .runs import refuse_changed

_D = SamFinetuneDefaults()
HELDOUT = "heldout"
AUG_TO_FINETUNE = {"none": "none", "weak": "weak", "strong": "strong", "syn": "none"}


@dataclass
class SweepConfig:
    train: str  # the real train source (hc18:/folder:/phantom)
    tests: list[str] = field(default_factory=lambda: [HELDOUT])  # "heldout" and/or other sources
    augmentations: list[str] = field(default_factory=lambda: list(AUG_ORDER))
    n_real: list[int] = field(default_factory=lambda: [5, 10, 20, 50, 100, 300, 500])
    repeats: int = 5
    total: int = _D.total_train  # SYN: N_real + synthetic = total
    synthetic: str | None = None  # a folder: dataset of synthetic pairs for SYN
    loras: dict[str, str] | None = None  # trimester -> LoRA folder: generate the synthetic set first
    train_loras: bool = False  # or train the trimester LoRAs here, on the train pool only (never test)
    lora_steps: int = 300
    lora_n: int = 20  # the paper's 20 images per trimester
    generate_min_qc: float = 0.8
    generate_seed: int = 1000
    epochs: int = _D.epochs
    batch_size: int = _D.batch_size
    lr: float = _D.lr
    aug_views: int = 4
    n_val: int = 40
    test_limit: int | None = None  # evaluate on at most this many images per test source
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    seed: int = 0  # repeat r trains with seed + r
    eval_seed: int = 0  # the jittered test boxes
    backend: str = "litemedsam"
    base_weights: str | None = None
    diffusion_base: str | None = None  # the SYN arm's LoRAs train and generate on it (None: the tiny base)

    # settings that define what a finished cell means: they may not change within a sweep folder
    IDENTITY = ("train", "total", "epochs", "batch_size", "lr", "aug_views", "n_val", "split", "split_seed",
                "seed", "eval_seed", "backend", "base_weights", "test_limit")

    @classmethod
    def for_profile(cls, profile, **settings) -> "SweepConfig":
        """A sweep with the profile's SAM (back-end, base weights) and diffusion base unless `settings`
        name them: the one way the dashboard and the CLI make one, so a sweep started under the paper
        profile never fine-tunes LiteMedSAM or generates its SYN set with the tiny base."""
        backend = settings.get("backend", profile.sam_backend)
        return cls.from_dict({"backend": backend, "diffusion_base": profile.diffusion_base,
                              "base_weights": profile.sam_checkpoint if backend == profile.sam_backend else None,
                              **settings})

    @classmethod
    def from_dict(cls, d: dict) -> "SweepConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(f"unknown sweep setting(s): {', '.join(unknown)}")
        d = dict(d)
        if "split" in d:
            d["split"] = tuple(d["split"])
        return cls(**d)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["split"] = list(self.split)
        return d

    def validate(self) -> None:
        bad = [a for a in self.augmentations if a not in AUG_ORDER]
        if bad:
            raise DataError(f"unknown augmentation(s) {bad}: choose from {', '.join(AUG_ORDER)}")
        if not self.n_real or min(self.n_real) < 1:
            raise DataError("n_real needs at least one value, each at least 1")
        if self.repeats < 1 or self.epochs < 1:
            raise DataError("repeats and epochs must be at least 1")
        if "syn" in self.augmentations:
            if max(self.n_real) > self.total:
                raise DataError(f"SYN keeps N_real + synthetic = total ({self.total}); N_real "
                                f"{max(self.n_real)} is larger")
            if not self.synthetic and not self.loras and not self.train_loras:
                raise DataError("the SYN arm needs a synthetic dataset (synthetic: folder:PATH), the "
                                "trimester LoRAs to generate one (loras: {first: DIR, ...}), or "
                                "train_loras: true to train them on the train pool first")
        if not self.tests:
            raise DataError("give at least one test source (heldout = the train source's test split)")
        from .validate import check_float, check_int, check_seed
        # every numeric setting has a checked range, refused with the field's name (never clamped)
        self.n_real = [check_int(v, "N_real", 1, 100_000) for v in self.n_real]
        self.repeats = check_int(self.repeats, "repeats", 1, 1000)
        self.epochs = check_int(self.epochs, "epochs", 1, 10_000)
        self.total = check_int(self.total, "total (SYN)", 1, 1_000_000)
        self.batch_size = check_int(self.batch_size, "batch_size", 1, 1024)
        self.lr = check_float(self.lr, "learning rate (lr)", 0, 1, lo_open=True, hi_open=True)
        self.aug_views = check_int(self.aug_views, "aug_views", 1, 64)
        self.n_val = check_int(self.n_val, "n_val", 1, 100_000)
        self.lora_steps = check_int(self.lora_steps, "lora_steps", 1, 1_000_000)
        self.lora_n = check_int(self.lora_n, "lora_n", 1, 10_000)
        self.generate_min_qc = check_float(self.generate_min_qc, "generate_min_qc", 0, 1)
        if self.test_limit is not None:
            self.test_limit = check_int(self.test_limit, "test_limit", 1, 1_000_000)
        for k in ("seed", "split_seed", "eval_seed", "generate_seed"):
            setattr(self, k, check_seed(getattr(self, k), k))

    def check_sources(self, allowed_roots=None) -> None:
        """Open every source the sweep names (train, tests, synthetic) and check the LoRAs it is given, so a
        bad one is refused BEFORE the sweep folder is created (a test folder outside the allowed roots was
        once refused only after a whole cell had trained, and the folder stayed listed)."""
        open_source(self.train, allowed_roots)
        for spec in self.tests:
            if spec != HELDOUT:
                open_source(spec, allowed_roots)
        if self.synthetic:
            open_source(self.synthetic, allowed_roots)
        for tri, d in (self.loras or {}).items():
            _check_lora_pool(self, tri, d)


PRESETS: dict[str, dict] = {
    # the paper's grid (GPU): 4 augmentations x 7 N_real x 5 repeats, 20 epochs, total 500
    "paper": dict(n_real=[5, 10, 20, 50, 100, 300, 500], repeats=5, epochs=20, total=500, aug_views=4,
                  n_val=40),
    # finishes in about an hour on a 2-core CPU with LiteMedSAM (cached embeddings): fewer N_real values,
    # 3 repeats, 8 epochs instead of 20, SYN total 100 instead of 500, 2 cached augmented views per image
    "cpu-small": dict(n_real=[5, 20, 50], repeats=3, epochs=8, total=100, aug_views=2, n_val=30),
    # a smoke test: two cells on tiny data
    "smoke": dict(augmentations=["none", "weak"], n_real=[3], repeats=1, epochs=1, total=6, aug_views=1,
                  n_val=4, test_limit=4, split=(0.5, 0.25, 0.25)),
}


def preset(name: str, profile=None, **overrides) -> SweepConfig:
    """A named grid with `overrides` (None: the preset's value), for `profile`'s models when given."""
    if name not in PRESETS:
        raise DataError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    settings = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return SweepConfig.from_dict(settings) if profile is None else SweepConfig.for_profile(profile, **settings)


@dataclass(frozen=True)
class Cell:
    augmentation: str
    n_real: int
    repeat: int

    @property
    def name(self) -> str:
        return f"{self.augmentation}-n{self.n_real}-r{self.repeat}"


def cells(cfg: SweepConfig) -> list[Cell]:
    """Repeat by repeat, so a partly finished sweep already holds whole repeats of every arm; within a
    repeat the cheap arms (none/WA/SA) first and SYN last, whose synthetic set (or LoRAs) is only needed,
    or made, when its first cell runs."""
    order = [a for a in AUG_ORDER if a in cfg.augmentations and a != "syn"]
    out = []
    for r in range(cfg.repeats):
        out += [Cell(a, n, r) for a in order for n in sorted(cfg.n_real)]
        if "syn" in cfg.augmentations:
            out += [Cell("syn", n, r) for n in sorted(cfg.n_real)]
    return out


class Sweep:
    """A sweep folder: sweep.json, cells/<cell>/ (run + result.json), results.csv, synthetic/."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "sweep.json"

    @property
    def results_path(self) -> Path:
        return self.path / "results.csv"

    def cell_dir(self, cell: Cell) -> Path:
        return self.path / "cells" / cell.name

    def config(self) -> SweepConfig:
        try:
            return SweepConfig.from_dict(json.loads(self.config_path.read_text()))
        except FileNotFoundError:
            raise DataError(f"{self.path} is not a sweep folder (no sweep.json)") from None

    def start(self, cfg: SweepConfig) -> None:
        """Create the folder, or check the identity settings of an existing one; the grid may grow."""
        if self.config_path.is_file():
            # the one resume rule (runs.refuse_changed), limited to the settings that define a finished cell
            refuse_changed(f"sweep {self.path.name}", json.loads(self.config_path.read_text()), cfg.as_dict(),
                           may_change=(), only=SweepConfig.IDENTITY)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_path, cfg.as_dict())

    def result_rows(self) -> list[dict]:
        rows = []
        for p in sorted((self.path / "cells").glob("*/result.json")):
            try:
                rows += json.loads(p.read_text())["rows"]
            except (json.JSONDecodeError, KeyError):
                continue  # a damaged result is redone, never trusted
        return rows

    def rebuild_results(self) -> None:
        """results.csv from every cell's result.json. Under a lock: with several workers, a rebuild that read
        the cells before another worker's newest result could otherwise be written after that worker's."""
        import pandas as pd
        with FileLock(self.lock_path("results")):
            df = pd.DataFrame(self.result_rows(), columns=RESULT_COLUMNS)
            atomic_write_text(self.results_path, df.to_csv(index=False))

    def lock_path(self, name: str) -> Path:
        return self.path / "locks" / f"{name}.lock"

    @property
    def synthetic_marker(self) -> Path:
        return self.path / "synthetic" / "complete.json"

    def synthetic_ready(self) -> str | None:
        """The SYN arm's generated set as a source spec once it is complete (its marker written), else None."""
        return f"folder:{self.path / 'synthetic'}" if self.synthetic_marker.is_file() else None

    def is_done(self, cell: Cell) -> bool:
        p = self.cell_dir(cell) / "result.json"
        if not p.is_file():
            return False
        try:
            return bool(json.loads(p.read_text())["rows"])
        except (json.JSONDecodeError, KeyError):
            return False

    def results(self):
        return load_results(self.results_path)

    def summary(self):
        return summarize(self.results())

    def zero_shot(self) -> dict:
        p = self.path / "zero_shot.json"
        return json.loads(p.read_text()) if p.is_file() else {}


# ----------------------------------------------------------------------------- evaluation
class TestSet:
    """Test images, their jittered boxes and cached embeddings: encoded once for the whole sweep."""

    def __init__(self, name: str, samples: list, model, cache, eval_seed: int, jitter_px: int = 20):
        from .augment import jittered_box_for
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
        import torch

        from .metrics import dice, hc_abs_error_mm
        self.prepare()
        m = self.model
        dices, hc = [], []
        with torch.no_grad():
            for s0 in range(0, len(self.samples), 8):
                chunk = range(s0, min(s0 + 8, len(self.samples)))
                emb = torch.stack([self.embeddings[i] for i in chunk]).to(m.device, torch.float32)
                boxes = np.concatenate([m.box_to_input(self.boxes[i], self.samples[i].mask.shape) for i in chunk])
                logits = m.decode(emb, boxes)
                for j, i in enumerate(chunk):
                    s = self.samples[i]
                    pred = m.logits_to_mask(logits[j], s.mask.shape)
                    dices.append(dice(pred, s.mask))
                    e = hc_abs_error_mm(pred, s.meta.hc_mm, s.meta.pixel_size_mm)
                    if e is not None:
                        hc.append(e)
        return {"n_test": len(dices), "dice": 100 * float(np.mean(dices)), "dice_std": 100 * float(np.std(dices)),
                "hc_abs_error_mm": float(np.median(hc)) if hc else None}


def _check_lora_pool(cfg: SweepConfig, trimester: str, lora_dir: str) -> None:
    """A LoRA trained on the sweep's own train source must have chosen its images from the train part of
    the same split: one chosen among all images (the LoRA tab's default) may have seen test images, and
    synthetic pairs made from it would leak them into the result."""
    p = Path(lora_dir) / "lora_config.json"
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        raise DataError(f"{trimester}-trimester LoRA {lora_dir}: no readable lora_config.json") from None
    if rec.get("data") != cfg.train:
        return  # trained on another source: it cannot have seen this source's test part
    if rec.get("pool") != "train" or list(rec.get("split") or []) != list(cfg.split) \
            or rec.get("split_seed") != cfg.split_seed:
        raise DataError(f"{trimester}-trimester LoRA {Path(lora_dir).name} chose its images among "
                        f"{'all images' if rec.get('pool') != 'train' else 'another split'} of {cfg.train}, so it "
                        f"may have seen test images: train it on the train pool (train-lora --pool train) or "
                        f"let the sweep train the LoRAs (train_loras)")


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


# ----------------------------------------------------------------------------- the SYN arm's dataset
def synthetic_plan(cfg: SweepConfig, allowed_roots=None) -> dict[str, int]:
    """How many synthetic pairs per trimester: total - min(N_real), in the real training pool's mix."""
    src = open_source(cfg.train, allowed_roots)
    pool = split_indices(src.metas, cfg.split, cfg.split_seed)["train"]
    counts = trimester_counts([src.metas[i] for i in pool])
    have = set(cfg.loras or {}) | (set(TRIMESTERS) if cfg.train_loras else set())
    known = {t: counts[t] for t in TRIMESTERS if t in have and counts[t] > 0}
    need = cfg.total - min(cfg.n_real)
    if not known or sum(known.values()) == 0:
        raise DataError("no LoRA for any trimester present in the training pool")
    tot = sum(known.values())
    plan = {t: int(math.floor(need * c / tot)) for t, c in known.items()}
    for t in sorted(known, key=lambda t: -known[t])[:need - sum(plan.values())]:
        plan[t] += 1
    return plan


def train_trimester_loras(cfg: SweepConfig, lora_root: Path, stop=None, allowed_roots=None) -> Iterator[dict]:
    """The paper's recipe, one LoRA per trimester on lora_n images chosen from the TRAIN part of the
    sweep's split only (the SYN arm thereby draws on those real pairs too, as the paper's did).
    Resumable: a finished LoRA is kept, an interrupted one continues."""
    from .diffusion.lora import LoraTrainConfig, train_lora
    loras = {}
    for t, count in synthetic_plan(cfg, allowed_roots).items():
        if count == 0:
            continue
        out = lora_root / t
        lcfg = LoraTrainConfig(data=cfg.train, trimester=t, n=cfg.lora_n, steps=cfg.lora_steps, pool="train",
                               split=tuple(cfg.split), split_seed=cfg.split_seed, preview_every=0,
                               base=cfg.diffusion_base)
        for ev in train_lora(lcfg, out, resume=True, stop=stop, allowed_roots=allowed_roots):
            if ev["kind"] == "step" and (ev["step"] % 10 == 0 or ev["step"] == ev["total"]):
                yield {"kind": "lora", "trimester": t, "step": ev["step"], "total": ev["total"], "loss": ev["loss"]}
            if ev["kind"] == "stopped":
                return
        loras[t] = str(out)
    cfg.loras = loras


def generate_synthetic(cfg: SweepConfig, out_dir: Path, stop=None, allowed_roots=None) -> Iterator[dict]:
    """Generate the SYN arm's synthetic set with the trimester LoRAs (accepting valid pairs with QC >=
    generate_min_qc), resumable: pairs already accepted are counted, seeds continue after the last."""
    from .diffusion import dataset
    from .diffusion.generate import GenerateConfig
    plan = synthetic_plan(cfg, allowed_roots)
    state_path = out_dir / "generation_state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
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
                                  base=cfg.diffusion_base, sam=cfg.backend, sam_weights=cfg.base_weights)
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
    if cfg.train_loras and not cfg.loras:
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


# ----------------------------------------------------------------------------- running the sweep
def run_sweep(cfg: SweepConfig, out_dir: str | Path, stop=None, allowed_roots=None,
              shard: tuple[int, int] | None = None) -> Iterator[dict]:
    """Generator of progress events:
        {"kind": "plan", "cells": [...], "done": [...]}
        {"kind": "cell_start", "cell", "index", "total"}
        {"kind": "train", "cell", ...finetune event...}
        {"kind": "cell_done", "cell", "rows"}      (the summary can be re-read after this)
        {"kind": "cell_busy", "cell", "owner"}     (another live worker holds the cell: left to it)
        {"kind": "waiting", "cell", "for", "owner"} (the SYN set is being made by another worker)
        {"kind": "done", "stopped": bool}

    Several workers may fill one folder at once (a job array, one process per GPU): a cell is run only
    under its lock file (pipeline/locks.py), so no cell runs twice and a killed worker's cell is taken
    over by the next run. `shard=(i, n)` further restricts this worker to cells i, i+n, i+2n, ... of the grid.
    """
    from .sam.cache import EmbeddingCache
    from .sam.finetune import FinetuneConfig, finetune
    from .sam.models import _apply_state, _load_state_file, build_model

    cfg.validate()
    cfg.check_sources(allowed_roots)
    sweep = Sweep(out_dir)
    sweep.start(cfg)
    should_stop = stop if callable(stop) else (stop.is_set if stop is not None else (lambda: False))
    grid = cells(cfg)
    done = [c.name for c in grid if sweep.is_done(c)]
    mine = [c.name for k, c in enumerate(grid) if shard is None or k % shard[1] == shard[0]]
    yield {"kind": "plan", "cells": [c.name for c in grid], "done": done, "mine": mine}

    model = build_model(cfg.backend, cfg.base_weights)
    base_decoder = {k: v.clone() for k, v in model.mask_decoder.state_dict().items()}
    cache = EmbeddingCache(sweep.path / "cache" / "embeddings", model)
    tests: list[TestSet] | None = None

    def ensure_tests() -> list[TestSet]:
        nonlocal tests
        if tests is None:
            tests = _test_sets(cfg, model, cache, allowed_roots)
            for ts in tests:
                ts.prepare()
            zs = sweep.zero_shot()
            changed = False
            for ts in tests:
                if ts.name not in zs:
                    model.mask_decoder.load_state_dict(base_decoder)
                    zs[ts.name] = ts.evaluate()
                    changed = True
            if changed:
                atomic_write_json(sweep.path / "zero_shot.json", zs)
        return tests

    synthetic = cfg.synthetic
    stopped = False
    # this worker's cells in grid order; a SYN cell whose synthetic set another worker is still making is
    # put back at the end once (the other cells go first), and waited for on its second visit
    queue = [(k, c) for k, c in enumerate(grid) if c.name in mine]
    deferred: set[str] = set()
    started: set[str] = set()
    lock: FileLock | None = None
    try:
        while queue:
            if lock is not None:
                lock.release()
                lock = None
            k, cell = queue.pop(0)
            if sweep.is_done(cell):
                continue
            if should_stop():
                stopped = True
                break
            if cell.augmentation == "syn" and synthetic is None:
                synthetic = sweep.synthetic_ready()
            if cell.augmentation == "syn" and synthetic is None:
                syn_lock = FileLock(sweep.lock_path("synthetic"))
                if not syn_lock.acquire(wait_s=0 if cell.name not in deferred else float("inf"), poll_s=5,
                                        stop=should_stop):
                    if should_stop():
                        stopped = True
                        break
                    yield {"kind": "waiting", "cell": cell.name, "for": "the synthetic set", "owner": syn_lock.owner()}
                    deferred.add(cell.name)
                    queue.append((k, cell))
                    continue
                try:
                    synthetic = sweep.synthetic_ready()  # made by the worker that held the lock before us
                    if synthetic is None:
                        started.add(cell.name)
                        yield {"kind": "cell_start", "cell": cell.name, "index": k, "total": len(grid)}
                        synthetic = yield from _prepare_synthetic(cfg, sweep, should_stop, allowed_roots, cell.name)
                finally:
                    syn_lock.release()
                if synthetic is None:
                    stopped = True
                    break
            lock = FileLock(sweep.lock_path(cell.name))
            if not lock.acquire():
                yield {"kind": "cell_busy", "cell": cell.name, "owner": lock.owner()}
                lock = None
                continue
            if sweep.is_done(cell):  # finished by another worker between our check and our lock
                continue
            cell_lock = lock
            cell_stop = lambda: should_stop() or cell_lock.lost  # noqa: E731 -- a lost lock: stop, write nothing
            if cell.name not in started:
                yield {"kind": "cell_start", "cell": cell.name, "index": k, "total": len(grid)}
            ft = FinetuneConfig(
                data=cfg.train, n_real=cell.n_real, aug=AUG_TO_FINETUNE[cell.augmentation],
                synthetic=synthetic if cell.augmentation == "syn" else None,
                n_synthetic=(cfg.total - cell.n_real) if cell.augmentation == "syn" else None,
                aug_views=cfg.aug_views, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                seed=cfg.seed + cell.repeat, split_seed=cfg.split_seed, split=tuple(cfg.split), n_val=cfg.n_val,
                backend=cfg.backend, base_weights=cfg.base_weights, cache_dir=str(sweep.path / "cache" / "embeddings"))
            run_dir = sweep.cell_dir(cell) / "run"
            last = None
            for ev in finetune(ft, run_dir, resume=True, stop=cell_stop, allowed_roots=allowed_roots):
                last = ev
                yield {**ev, "kind": "train", "event": ev["kind"], "cell": cell.name}
            if cell_lock.lost:
                yield {"kind": "cell_busy", "cell": cell.name, "owner": cell_lock.owner()}
                continue
            if last is None or last.get("kind") != "done" or last.get("stopped"):
                stopped = True
                break
            # evaluate the cell's best checkpoint on every test source. The test sets come FIRST: their first
            # preparation scores the zero-shot reference by loading the BASE decoder into the model, which once
            # replaced the cell's decoder loaded before it (the first cell of each process got zero-shot rows)
            test_sets = ensure_tests()
            model.mask_decoder.load_state_dict(base_decoder)
            _apply_state(model, _load_state_file(run_dir / "best.safetensors"), f"{cell.name}/best.safetensors")
            rows = []
            for ts in test_sets:
                r = ts.evaluate()
                rows.append({"augmentation": cell.augmentation, "n_real": cell.n_real, "repeat": cell.repeat,
                             "test": ts.name, "n_test": r["n_test"], "dice": round(r["dice"], 4),
                             "dice_std": round(r["dice_std"], 4),
                             "hc_abs_error_mm": None if r["hc_abs_error_mm"] is None else round(r["hc_abs_error_mm"], 4),
                             "run": str(run_dir.relative_to(sweep.path))})
            atomic_write_json(sweep.cell_dir(cell) / "result.json",
                              {"cell": cell.name, "rows": rows, "best_val_dice": last.get("best_val_dice"),
                               "zero_shot_val_dice": last.get("zero_shot_val_dice"), "time": time.time(),
                               "worker": {"host": cell_lock.info["host"], "pid": cell_lock.info["pid"]}})
            sweep.rebuild_results()
            yield {"kind": "cell_done", "cell": cell.name, "index": k, "total": len(grid), "rows": rows}
    finally:
        if lock is not None:
            lock.release()
    if not stopped:
        ensure_tests()  # zero-shot reference even when every cell was already done
    sweep.rebuild_results()
    yield {"kind": "done", "stopped": stopped, "sweep": str(sweep.path)}


# ----------------------------------------------------------------------------- report
def report_markdown(sweep_dir: str | Path, command: str | None = None) -> str:
    """Table-1-shaped tables (ours, then the paper's cells beside ours) for every test source of a sweep.
    The paper's columns are labelled by its train/test pair, and a sentence says how alike the pairs are
    (results.paper_comparison: a HC18 held-out run is never shown as if it were the paper's HC18→ES)."""
    from .results import load_paper_reference, markdown_table, paper_beside, paper_comparison, table1
    sweep = Sweep(sweep_dir)
    summ = sweep.summary()
    paper = load_paper_reference()
    zs = sweep.zero_shot()
    train = sweep.config().train if sweep.config_path.is_file() else ""
    parts = []
    if command:
        parts.append(f"Command:\n\n```\n{command}\n```\n")
    for test in (summ["test"].unique() if not summ.empty else []):
        parts.append(f"### Test: {test}\n\nDice (%) mean ± std over repeats; best per column in bold.\n")
        parts.append(markdown_table(table1(summ, test)))
        if test in zs:
            parts.append(f"\nZero-shot (no fine-tuning): {zs[test]['dice']:.2f} % Dice on "
                         f"{zs[test]['n_test']} images.\n")
        cmp = paper_comparison(paper, train, test)
        parts.append(f"\nBeside ours, {cmp.note} (Table 1, mean ± std as printed; — = no such cell):\n")
        parts.append(markdown_table(paper_beside(summ, paper, test, cmp), index=False))
    return "\n".join(parts) if parts else "_no finished cells yet_"


# ----------------------------------------------------------------------------- CLI
def add_arguments(p, command: str = "sweep") -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", help="a JSON file of SweepConfig settings")
    g.add_argument("--preset", choices=sorted(PRESETS), help="a named grid (paper, cpu-small, smoke)")
    p.add_argument("--out", required=True, help="the sweep folder (re-run the same command to resume)")
    p.add_argument("--train", help="train source spec (with --preset)")
    p.add_argument("--test", action="append", help="a test source spec (repeatable; default: heldout)")
    p.add_argument("--synthetic", help="folder: dataset of synthetic pairs for the SYN arm")
    p.add_argument("--loras", help="first=DIR,second=DIR,third=DIR: generate the SYN set with these LoRAs")
    p.add_argument("--train-loras", action="store_true",
                   help="train the trimester LoRAs on the train pool first (20 images each, the paper's recipe)")
    p.add_argument("--lora-steps", type=int, help="steps per LoRA with --train-loras (default 300)")
    p.add_argument("--augmentations", help="comma list of none,weak,strong,syn (WA, SA, synthetic data; default: the preset's)")
    p.add_argument("--n-real", help="comma list of N_real values (real training pairs per cell; default: the preset's)")
    p.add_argument("--repeats", type=int, help="repeats per cell, each with its own seed (default: the preset's)")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs per cell (default: the preset's)")
    p.add_argument("--shard", help="i/n: this worker runs only cells i, i+n, i+2n, ... (0 <= i < n); auto: from a "
                   "SLURM job array. Without it, several workers on one --out share the cells by lock files")
    p.add_argument("--report", help="write the markdown tables here when the sweep ends")
    p.add_argument("--figure", help="write the Figure-3 PNG here when the sweep ends")
    add_profile_argument(p)


def config_from_args(args) -> SweepConfig:
    """The sweep the CLI asks for, with the profile's models (--profile / SONOSYNTH_PROFILE) for every
    model setting the config file does not name."""
    profile = resolve_profile(getattr(args, "profile", None))
    over = {}
    if args.train:
        over["train"] = args.train
    if args.test:
        over["tests"] = args.test
    if args.synthetic:
        over["synthetic"] = args.synthetic
    if args.loras:
        try:
            over["loras"] = dict(kv.split("=", 1) for kv in args.loras.split(","))
        except ValueError:
            raise DataError("--loras expects first=DIR,second=DIR,third=DIR") from None
    if args.train_loras:
        over["train_loras"] = True
    if args.lora_steps is not None:
        over["lora_steps"] = args.lora_steps
    if args.augmentations:
        over["augmentations"] = [a.strip() for a in args.augmentations.split(",") if a.strip()]
    if args.n_real:
        try:
            over["n_real"] = [int(v) for v in args.n_real.split(",")]
        except ValueError:
            raise DataError("--n-real expects a comma list of integers") from None
    if args.repeats is not None:
        over["repeats"] = args.repeats
    if args.epochs is not None:
        over["epochs"] = args.epochs
    if args.config:
        try:
            base = json.loads(Path(args.config).read_text())
        except FileNotFoundError:
            raise DataError(f"config file not found: {args.config}") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{args.config} is not valid JSON: {exc}") from None
        if not isinstance(base, dict):
            raise DataError(f"{args.config} must hold a JSON object of sweep settings")
        return SweepConfig.for_profile(profile, **{**base, **over})
    if "train" not in over:
        raise DataError("--train SPEC is needed with --preset")
    return preset(args.preset, profile, **over)


def run(args) -> int:
    from tqdm import tqdm
    from .locks import detach_from_launcher, parse_shard
    cfg = config_from_args(args)
    shard = parse_shard(getattr(args, "shard", None))  # before detaching: 'auto' may read RANK / WORLD_SIZE
    detach_from_launcher()
    bar = None
    busy: dict[str, dict | None] = {}
    for ev in run_sweep(cfg, args.out, shard=shard):
        k = ev["kind"]
        if k == "plan":
            mine = set(ev["mine"])
            bar = tqdm(total=len(mine), initial=len(mine & set(ev["done"])), unit="cell", file=sys.stderr,
                       desc="cells" if shard is None else f"cells of shard {shard[0]}/{shard[1]}")
        elif k == "cell_busy":
            busy[ev["cell"]] = ev["owner"]
        elif k == "waiting" and bar is not None:
            bar.set_postfix_str(f"{ev['cell']}: waiting for {ev['for']} (another worker makes it)")
        elif k == "cell_start" and bar is not None:
            bar.set_postfix_str(ev["cell"])
        elif k == "lora" and bar is not None:
            bar.set_postfix_str(f"{ev['cell']}: LoRA {ev['trimester']} step {ev['step']}/{ev['total']}")
        elif k == "generate" and bar is not None:
            bar.set_postfix_str(f"{ev['cell']}: generating {ev['trimester']} {ev['have']}/{ev['want']}")
        elif k == "train" and ev["event"] == "epoch" and bar is not None:
            bar.set_postfix_str(f"{ev['cell']}: epoch {ev['epoch']} val Dice {100 * ev['val_dice']:.2f} %")
        elif k == "cell_done" and bar is not None:
            bar.update(1)
            r = ev["rows"][0]
            tqdm.write(f"{ev['cell']}: Dice {r['dice']:.2f} % on {r['test']}", file=sys.stderr)
        elif k == "done":
            if bar is not None:
                bar.close()
            if ev["stopped"]:
                print("stopped: re-run the same command to resume", file=sys.stderr)
    by_name = {c.name: c for c in cells(cfg)}
    busy = {c: o for c, o in busy.items() if not Sweep(args.out).is_done(by_name[c])}
    if busy:
        who = ", ".join(f"{c} ({(o or {}).get('host', '?')}:{(o or {}).get('pid', '?')})" for c, o in sorted(busy.items()))
        print(f"{len(busy)} cell(s) were running in other workers and are left to them: {who}. The report below "
              "has what is finished; re-run this command after they end (a dead worker's cell is taken over "
              "then).", file=sys.stderr)
    md = report_markdown(args.out, command=" ".join(["python -m pipeline sweep", *sys.argv[2:]]))
    print(md)
    if args.report:
        atomic_write_text(args.report, md + "\n")
    if args.figure:
        from .results import figure3_png, load_paper_reference, paper_comparison
        sw = Sweep(args.out)
        s = sw.summary()
        if not s.empty:
            paper = load_paper_reference()
            test = s["test"].iloc[0]
            figure3_png(s, args.figure, test=test, paper=paper,
                        comparison=paper_comparison(paper, sw.config().train, test))
    return 0
