"""GPU work on Hugging Face Spaces with ZeroGPU must run inside `spaces.GPU`-decorated functions.

`gpu_task` applies `spaces.GPU` only when the `spaces` package is importable (it is on Spaces), so the
package is never a requirement elsewhere; everywhere else it returns the function unchanged.
"""
from __future__ import annotations

import functools
from typing import Callable


def gpu_task(fn: Callable | None = None, *, duration: int = 120):
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
