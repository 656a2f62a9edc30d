"""Elapsed time and a time-left estimate for every long job (training, embeddings, sweeps, generation).

    started = time.monotonic()
    ...
    eta_text(started, done, total)   # "elapsed 1 min 05 s · about 3 min 20 s left"

The estimate is the mean time per finished unit so far times the units left: honest about what it knows
("estimating…" before the first unit finishes) and never negative.
"""
from __future__ import annotations

import time


def fmt_duration(seconds: float | None) -> str:
    """45 s · 3 min 20 s · 1 h 05 min (a person reads minutes, not 200 s)."""
    if seconds is None or seconds != seconds:  # None or NaN
        return "?"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def remaining_s(elapsed_s: float, done: float, total: float) -> float | None:
    """Seconds left at the mean rate so far; None before anything is done (no rate yet)."""
    if done <= 0 or total <= 0 or elapsed_s < 0:
        return None
    return max(0.0, elapsed_s / done * (total - done))


def eta_text(started: float, done: float, total: float, now: float | None = None) -> str:
    """"elapsed X · about Y left" for a job that began at `started` (time.monotonic())."""
    elapsed = (time.monotonic() if now is None else now) - started
    left = remaining_s(elapsed, done, total)
    if done >= total > 0:
        return f"elapsed {fmt_duration(elapsed)} · done"
    return f"elapsed {fmt_duration(elapsed)} · " + ("estimating…" if left is None else f"about {fmt_duration(left)} left")


def estimate_text(seconds: float) -> str:
    """"about 4 min" for a job not started yet (a figure beside a Start button)."""
    return f"about {fmt_duration(seconds)}"
