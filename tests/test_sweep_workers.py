"""Several workers on one sweep folder: lock files (atomic, owner named, stale ones taken over), --shard,
and two real worker processes filling one folder with every cell run exactly once and every file whole."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.data import DataError
from pipeline.sweep import Sweep, cells, preset, run_sweep
from pipeline.locks import FileLock, detach_from_launcher, is_stale, parse_shard, read_lock

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_is_exclusive_and_names_its_owner(tmp_path):
    a, b = FileLock(tmp_path / "c.lock"), FileLock(tmp_path / "c.lock")
    assert a.acquire()
    owner = read_lock(tmp_path / "c.lock")
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname() and owner["token"]
    assert not b.acquire()  # a live owner: refused at once, never broken
    assert not b.acquire(wait_s=0.3, poll_s=0.05)
    a.release()
    assert not (tmp_path / "c.lock").exists()
    assert b.acquire()
    b.release()


def test_stale_locks_are_taken_over(tmp_path):
    # a worker on this host that died: its pid is gone
    dead = tmp_path / "dead.lock"
    dead.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "token": "x", "since": 0}))
    assert is_stale(dead)
    lk = FileLock(dead)
    assert lk.acquire() and read_lock(dead)["token"] == lk.info["token"]
    lk.release()
    # a worker on another machine: stale only once its heartbeat is old
    other = tmp_path / "other.lock"
    other.write_text(json.dumps({"host": "node-17", "pid": 1, "token": "y", "since": 0}))
    assert not is_stale(other) and not FileLock(other).acquire()
    old = time.time() - 3600
    os.utime(other, (old, old))
    assert is_stale(other)
    lk = FileLock(other)
    assert lk.acquire()
    lk.release()
    assert not list(tmp_path.glob("*.break"))


def _within(limit_s: float, cond) -> bool:
    """Wait for a condition (not for a time): True as soon as it holds; the limit only bounds a failure."""
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_heartbeat_and_lost_lock(tmp_path):
    path = tmp_path / "c.lock"
    lk = FileLock(path, heartbeat_s=0.05)
    assert lk.acquire()
    old = time.time() - 100
    os.utime(path, (old, old))
    assert _within(30, lambda: path.stat().st_mtime > old + 50)  # the heartbeat touched it
    assert not lk.lost
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "theirs"}))  # taken over
    assert _within(30, lambda: lk.lost)
    lk.release()
    assert read_lock(path)["token"] == "theirs"  # never removes a lock that is not its own


def test_parse_shard():
    assert parse_shard(None) is None and parse_shard("") is None
    assert parse_shard("0/4") == (0, 4) and parse_shard("3/4") == (3, 4)
    assert parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5",
                                "SLURM_ARRAY_TASK_COUNT": "4"}) == (2, 4)
    for bad in ("4/4", "-1/2", "1/0", "a/b", "2"):
        with pytest.raises(DataError, match="shard"):
            parse_shard(bad)
    assert parse_shard("auto", {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2)  # accelerate launch
    with pytest.raises(DataError, match="SLURM"):
        parse_shard("auto", {})


def test_worker_under_a_launcher_leaves_its_process_group():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "x", "MASTER_PORT": "1", "PATH": "/bin"}
    removed = detach_from_launcher(env)
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1"} and removed["RANK"] == "3"
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "4,6"}
    detach_from_launcher(env)
    assert env == {"CUDA_VISIBLE_DEVICES": "6"}
    single = {"PATH": "/bin"}
    assert detach_from_launcher(single) == {} and single == {"PATH": "/bin"}


def test_shard_takes_every_nth_cell(tmp_path):
    cfg = preset("smoke", train="phantom:24", n_real=[3, 4])
    names = [c.name for c in cells(cfg)]
    plan = next(run_sweep(cfg, tmp_path / "s", shard=(1, 2)))
    assert plan["cells"] == names and plan["mine"] == names[1::2]


def test_a_cell_held_by_another_live_worker_is_left_to_it(tmp_path):
    cfg = preset("smoke", train="phantom:24")
    first, second = cells(cfg)
    out = tmp_path / "s"
    held = FileLock(Sweep(out).lock_path(first.name))
    assert held.acquire()
    try:
        events = list(run_sweep(cfg, out))
    finally:
        held.release()
    assert [e["cell"] for e in events if e["kind"] == "cell_busy"] == [first.name]
    assert [e["cell"] for e in events if e["kind"] == "cell_done"] == [second.name]
    assert not Sweep(out).is_done(first) and not (Sweep(out).cell_dir(first) / "run").exists()
    assert pd.read_csv(out / "results.csv")["augmentation"].tolist() == [second.augmentation]


def test_two_worker_processes_fill_one_folder(tmp_path):
    """Two `python -m pipeline sweep` processes started together on one folder: each of the 4 cells runs
    in exactly one of them, every file parses, results.csv holds all cells, no lock is left behind."""
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "pipeline", "sweep", "--preset", "smoke", "--train", "phantom:24",
           "--n-real", "3,4", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    logs = [tmp_path / f"w{i}.log" for i in range(2)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
             for log in logs]
    for p in procs:
        assert p.wait(timeout=1200) == 0
    grid = [c.name for c in cells(preset("smoke", train="phantom:24", n_real=[3, 4]))]
    done_lines = [m.group(1) for log in logs for m in re.finditer(r"^(\S+): Dice [\d.]+ % on heldout", log.read_text(),
                                                                   re.M)]
    assert sorted(done_lines) == sorted(grid), [log.read_text()[-2000:] for log in logs]  # each cell once
    sweep = Sweep(out)
    workers = set()
    for name in grid:
        res = json.loads((sweep.path / "cells" / name / "result.json").read_text())
        assert res["cell"] == name and len(res["rows"]) == 1
        workers.add(res["worker"]["pid"])
        metrics = pd.read_csv(sweep.path / "cells" / name / "run" / "metrics.csv")
        assert not metrics.duplicated().any()  # no step or epoch logged twice
    assert workers <= {p.pid for p in procs}
    df = pd.read_csv(out / "results.csv")
    assert sorted(f"{a}-n{n}-r{r}" for a, n, r in zip(df.augmentation, df.n_real, df.repeat)) == sorted(grid)
    for p in out.rglob("*.json"):
        json.loads(p.read_text())
    assert not list((out / "locks").glob("*.lock")) and not list((out / "locks").glob("*.break"))
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporary file of an atomic write left over
