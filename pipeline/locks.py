"""Lock files that let several worker processes — a SLURM job array, one process per GPU, machines sharing a
file system — fill one sweep folder without running a cell twice.

A lock is a small JSON file created with O_CREAT | O_EXCL (atomic on local file systems and on NFS v3+), so
exactly one process gets it. It names its owner (host, pid, a random token, when it was taken) and the
owner's heartbeat thread touches it every `heartbeat_s` seconds. A lock is *stale*, and may be taken over,
when its owner is on this host and its pid is gone (a killed worker), or when its heartbeat is older than
`stale_after_s` (a worker on another machine that died, or a pid reused since). Taking over is itself
guarded by a short-lived `<lock>.break` file, so two workers that see the same stale lock do not both win;
the owner's heartbeat re-reads the lock and reports `lost` if the token is no longer its own, so a worker
that was (wrongly) judged dead stops before writing anything.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0  # 20 missed heartbeats: long enough for a paused NFS client, short enough for a re-run
BREAK_STALE_S = 60.0  # a .break file left by a worker that died while breaking a lock


def owner_info() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "since": time.time()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def read_lock(path: Path) -> dict | None:
    """The owner recorded in a lock file, {} for an unreadable one (being written, or damaged), None if absent."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
        return info if isinstance(info, dict) else {}
    except json.JSONDecodeError:
        return {}


def lock_age(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def is_stale(path: Path, stale_after_s: float = STALE_AFTER_S) -> bool:
    info, age = read_lock(path), lock_age(path)
    if info is None or age is None:
        return False  # gone: nothing to break, just try to take it
    if age > stale_after_s:
        return True
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        return not _pid_alive(info["pid"])
    return False


def _create_exclusive(path: Path, info: dict) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
        f.flush()
        os.fsync(f.fileno())
    return True


def _break_stale(path: Path, stale_after_s: float) -> None:
    """Remove a stale lock, one breaker at a time, re-checking under the breaker's own lock that it is the
    same stale lock (not one another worker took a moment ago)."""
    brk = path.with_name(path.name + ".break")
    seen = read_lock(path)
    if (lock_age(brk) or 0.0) > BREAK_STALE_S:
        try:
            brk.unlink()
        except FileNotFoundError:
            pass
    if not _create_exclusive(brk, owner_info()):
        return  # another worker is breaking it right now
    try:
        if read_lock(path) == seen and is_stale(path, stale_after_s):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
    finally:
        try:
            brk.unlink()
        except FileNotFoundError:
            pass


class FileLock:
    """One lock file. `acquire()` returns False at once when a live worker holds it (never waits);
    `acquire(wait_s=...)` polls. While held, a daemon thread keeps its heartbeat; `lost` turns True if
    another worker took it over (then stop, write nothing). Use as a context manager after acquire()."""

    def __init__(self, path: str | os.PathLike, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S):
        self.path = Path(path)
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.info: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost = False

    @property
    def held(self) -> bool:
        return self.info is not None

    @property
    def lost(self) -> bool:
        return self._lost

    def owner(self) -> dict | None:
        return read_lock(self.path)

    def acquire(self, wait_s: float = 0.0, poll_s: float = 0.2, stop=None) -> bool:
        deadline = time.monotonic() + wait_s
        while True:
            info = owner_info()
            if _create_exclusive(self.path, info):
                self.info, self._lost = info, False
                self._stop.clear()
                self._thread = threading.Thread(target=self._beat, name=f"lock:{self.path.name}", daemon=True)
                self._thread.start()
                return True
            if is_stale(self.path, self.stale_after_s):
                _break_stale(self.path, self.stale_after_s)
                time.sleep(0.02)  # another worker may be breaking it: let it finish
                continue
            if time.monotonic() >= deadline or (stop is not None and stop()):
                return False
            time.sleep(poll_s)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.still_mine():
                self._lost = True
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                self._lost = True
                return

    def still_mine(self) -> bool:
        cur = read_lock(self.path)
        return bool(cur) and self.info is not None and cur.get("token") == self.info["token"]

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.info is not None and self.still_mine():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        self.info = None

    def __enter__(self) -> "FileLock":
        if not self.held and not self.acquire(wait_s=float("inf")):
            raise RuntimeError(f"could not take the lock {self.path}")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def parse_shard(text: str | None, environ=os.environ) -> tuple[int, int] | None:
    """'i/n' (0 <= i < n: this worker takes cells i, i+n, i+2n, ... of the grid) or 'auto': from a SLURM
    job array (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT), else from a launcher
    that starts one process per GPU (`accelerate launch`, torchrun: RANK of WORLD_SIZE). None = every cell
    (the cell locks alone keep workers apart)."""
    from .data import DataError
    if text is None or str(text).strip() == "":
        return None
    text = str(text).strip()
    if text == "auto":
        try:
            if "SLURM_ARRAY_TASK_ID" in environ:
                tid = int(environ["SLURM_ARRAY_TASK_ID"]) - int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
                count = int(environ["SLURM_ARRAY_TASK_COUNT"])
            else:
                tid, count = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        except (KeyError, ValueError):
            raise DataError("--shard auto needs a SLURM job array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT) "
                            "or a launcher's RANK and WORLD_SIZE (accelerate launch, torchrun); give --shard "
                            "i/n otherwise") from None
        text = f"{tid}/{count}"
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise DataError(f"--shard expects i/n with 0 <= i < n (e.g. 0/4), or auto; got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise DataError(f"--shard {text}: i must be in 0..n-1 and n at least 1")
    return i, n


DISTRIBUTED_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
                   "ACCELERATE_USE_CPU", "ACCELERATE_DYNAMO_BACKEND")


def detach_from_launcher(environ=os.environ) -> dict:
    """A sweep worker started by `accelerate launch` / torchrun runs its OWN cells: its fine-tuning runs must
    not join the launcher's process group (the other ranks run other cells, a collective would hang).
    Pins the process to its local GPU (CUDA_VISIBLE_DEVICES = LOCAL_RANK, before CUDA starts) and removes
    the launcher's variables. Returns what it removed."""
    removed = {}
    if int(environ.get("WORLD_SIZE", "1") or 1) > 1:
        local = environ.get("LOCAL_RANK")
        if local is not None and "CUDA_VISIBLE_DEVICES" not in environ:
            environ["CUDA_VISIBLE_DEVICES"] = local
        elif local is not None:
            visible = environ["CUDA_VISIBLE_DEVICES"].split(",")
            environ["CUDA_VISIBLE_DEVICES"] = visible[int(local) % len(visible)]
        for k in DISTRIBUTED_ENV:
            if k in environ:
                removed[k] = environ.pop(k)
    return removed
