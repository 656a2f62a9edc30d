"""GPU work on Hugging Face Spaces with ZeroGPU must run inside `spaces.GPU`-decorated functions.

`gpu_task` applies `spaces.GPU` only when the `spaces` package is importable (it is on Spaces), so the
package is never a requirement elsewhere; everywhere else it returns the function unchanged.
"""
from __future__ import annotations

import functools
from typing import Callable


# seconds of GPU one call may hold on ZeroGPU (spaces.GPU's own default is 60; ZeroGPU refuses requests
# above a few minutes). `python -m pipeline bench paper` checks each handler's paper-size work against it.
DEFAULT_DURATION_S = 120


def gpu_task(fn: Callable | None = None, *, duration: int = DEFAULT_DURATION_S):
    def wrap(f: Callable) -> Callable:
        try:
            import spaces  # type: ignore
        except ImportError:
            return f
        return functools.wraps(f)(spaces.GPU(duration=duration)(f))
    return wrap(fn) if fn is not None else wrap


def best_device() -> str:
    import torch
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
