"""Running a sweep: cell by cell under lock files (several workers may share one folder), each cell an
ordinary SAM fine-tuning run, then scored on every test set."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from ..fileio import atomic_write_json
from ..locks import FileLock
from .config import AUG_TO_FINETUNE, SweepConfig
from .folder import Sweep
from .grid import cells
from .synthetic import _prepare_synthetic
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
    from ..sam.cache import EmbeddingCache
    from ..sam.finetune import FinetuneConfig, finetune
    from ..sam.models import build_model, load_weights

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
            load_weights(model, run_dir / "best.safetensors", f"{cell.name}/best.safetensors")
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
