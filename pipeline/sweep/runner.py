"""Running a sweep: cell by cell under lock files (several workers may share one folder), each cell an
ordinary training run of the sweep's segmenter (SAM's decoder fine-tuned, or a U-Net from random weights),
then scored on every test set."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from ..fileio import atomic_write_json
from ..locks import FileLock
from ..arms import SYN_ARMS
from .config import AUG_TO_FINETUNE, SweepConfig
from .folder import Sweep
from .grid import Cell, cells
from .synthetic import _prepare_synthetic, synthetic_plan
from .testset import TestSet, _test_sets


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
    cfg.validate()
    cfg.check_sources(allowed_roots)
    sweep = Sweep(out_dir)
    sweep.start(cfg)
    should_stop = stop if callable(stop) else (stop.is_set if stop is not None else (lambda: False))
    grid = cells(cfg)
    done = [c.name for c in grid if sweep.is_done(c)]
    mine = [c.name for k, c in enumerate(grid) if shard is None or k % shard[1] == shard[0]]
    yield {"kind": "plan", "cells": [c.name for c in grid], "done": done, "mine": mine}

    seg = (_UnetCells if cfg.segmenter == "unet" else _SamCells)(cfg, sweep, allowed_roots)
    plan: dict | None = None

    def synthetic_ready():
        nonlocal plan
        if plan is None:
            plan = synthetic_plan(cfg, allowed_roots)
        return sweep.synthetic_ready(plan)

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
            if cell.augmentation in SYN_ARMS and synthetic is None:
                synthetic = synthetic_ready()
            if cell.augmentation in SYN_ARMS and synthetic is None:
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
                    synthetic = synthetic_ready()  # made by the worker that held the lock before us
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
            run_dir = sweep.cell_dir(cell) / "run"
            last, t_cell = None, time.monotonic()
            for ev in seg.train(cell, synthetic if cell.augmentation in SYN_ARMS else None, run_dir, cell_stop):
                last = ev
                yield {**ev, "kind": "train", "event": ev["kind"], "cell": cell.name}
            if cell_lock.lost:
                yield {"kind": "cell_busy", "cell": cell.name, "owner": cell_lock.owner()}
                continue
            if last is None or last.get("kind") != "done" or last.get("stopped"):
                stopped = True
                break
            rows = []
            for ts, r in seg.score(cell, run_dir):
                rows.append({"augmentation": cell.augmentation, "n_real": cell.n_real, "repeat": cell.repeat,
                             "test": ts.name, "n_test": r["n_test"], "dice": round(r["dice"], 4),
                             "dice_std": round(r["dice_std"], 4),
                             "hc_abs_error_mm": None if r["hc_abs_error_mm"] is None else round(r["hc_abs_error_mm"], 4),
                             "run": str(run_dir.relative_to(sweep.path))})
            train_s = time.monotonic() - t_cell
            atomic_write_json(sweep.cell_dir(cell) / "result.json",
                              {"cell": cell.name, "rows": rows, "best_val_dice": last.get("best_val_dice"),
                               "zero_shot_val_dice": last.get("zero_shot_val_dice"), "time": time.time(),
                               "seconds": round(train_s, 1), "segmenter": cfg.segmenter,
                               "worker": {"host": cell_lock.info["host"], "pid": cell_lock.info["pid"]}})
            sweep.rebuild_results()
            yield {"kind": "cell_done", "cell": cell.name, "index": k, "total": len(grid), "rows": rows,
                   "seconds": train_s}
    finally:
        if lock is not None:
            lock.release()
    if not stopped:
        seg.tests()  # the zero-shot reference (SAM) even when every cell was already done
    sweep.rebuild_results()
    yield {"kind": "done", "stopped": stopped, "sweep": str(sweep.path)}


class _SamCells:
    """SAM's cells: the profile's model built once, the decoder fine-tuned per cell (pipeline/sam/finetune.py)
    on cached embeddings, scored with jittered GT boxes; the zero-shot decoder is the sweep's reference."""

    def __init__(self, cfg: SweepConfig, sweep: Sweep, allowed_roots):
        from ..sam.cache import EmbeddingCache
        from ..sam.models import build_model
        self.cfg, self.sweep, self.allowed_roots = cfg, sweep, allowed_roots
        self.model = build_model(cfg.backend, cfg.base_weights)
        self.base_decoder = {k: v.clone() for k, v in self.model.mask_decoder.state_dict().items()}
        self.cache = EmbeddingCache(sweep.path / "cache" / "embeddings", self.model)
        self._tests: list[TestSet] | None = None

    def tests(self) -> list[TestSet]:
        if self._tests is None:
            self._tests = _test_sets(self.cfg, self.model, self.cache, self.allowed_roots)
            for ts in self._tests:
                ts.prepare()
            zs = self.sweep.zero_shot()
            changed = False
            for ts in self._tests:
                if ts.name not in zs:
                    self.model.mask_decoder.load_state_dict(self.base_decoder)
                    zs[ts.name] = ts.evaluate()
                    changed = True
            if changed:
                atomic_write_json(self.sweep.path / "zero_shot.json", zs)
        return self._tests

    def train(self, cell: Cell, synthetic: str | None, run_dir: Path, stop) -> Iterator[dict]:
        from ..sam.finetune import FinetuneConfig, finetune
        cfg = self.cfg
        ft = FinetuneConfig(
            data=cfg.train, n_real=cell.n_real, aug=AUG_TO_FINETUNE[cell.augmentation], synthetic=synthetic,
            n_synthetic=cfg.n_synthetic(cell.augmentation, cell.n_real) if synthetic else None,
            aug_views=cfg.aug_views, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
            seed=cfg.seed + cell.repeat, split_seed=cfg.split_seed, split=tuple(cfg.split), n_val=cfg.n_val,
            backend=cfg.backend, base_weights=cfg.base_weights,
            cache_dir=str(self.sweep.path / "cache" / "embeddings"))
        yield from finetune(ft, run_dir, resume=True, stop=stop, allowed_roots=self.allowed_roots)

    def score(self, cell: Cell, run_dir: Path):
        """(test set, scores) of the cell's best checkpoint. The test sets come FIRST: their first preparation
        scores the zero-shot reference by loading the BASE decoder into the model, which once replaced the
        cell's decoder loaded before it (the first cell of each process got zero-shot rows)."""
        from ..sam.models import load_weights
        test_sets = self.tests()
        self.model.mask_decoder.load_state_dict(self.base_decoder)
        load_weights(self.model, run_dir / "best.safetensors", f"{cell.name}/best.safetensors")
        return [(ts, ts.evaluate()) for ts in test_sets]


class _UnetCells:
    """The U-Net's cells: a network from random weights per cell (pipeline/unet.py), no box prompt, scored on
    the same test images as SAM's; no zero-shot reference (an untrained network has none worth showing)."""

    def __init__(self, cfg: SweepConfig, sweep: Sweep, allowed_roots):
        self.cfg, self.sweep, self.allowed_roots = cfg, sweep, allowed_roots
        self._tests: list[TestSet] | None = None

    def tests(self) -> list[TestSet]:
        if self._tests is None:
            self._tests = _test_sets(self.cfg, None, None, self.allowed_roots)
        return self._tests

    def train(self, cell: Cell, synthetic: str | None, run_dir: Path, stop) -> Iterator[dict]:
        from ..unet import train_unet
        ucfg = self.cfg.unet_config(cell.n_real, cell.augmentation, synthetic, cell.repeat)
        yield from train_unet(ucfg, run_dir, resume=True, stop=stop, allowed_roots=self.allowed_roots)

    def score(self, cell: Cell, run_dir: Path):
        from ..unet import load_unet
        model = load_unet(run_dir)
        return [(ts, ts.evaluate_unet(model)) for ts in self.tests()]
