"""Atomic file writes: a crash or a stop never leaves a half-written file behind.

Everything is written to a temporary file in the same folder and moved into place with os.replace,
which is atomic on POSIX and Windows.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _umask() -> int:
    """The process umask, read where Linux shows it (/proc/self/status) and otherwise by setting and restoring
    it: at the first write, not at import (a module import that flips the umask is a side effect)."""
    global _UMASK
    if _UMASK is None:
        try:
            line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("Umask:"))
            _UMASK = int(line.split()[1], 8)
        except (OSError, StopIteration, ValueError, IndexError):
            _UMASK = os.umask(0)
            os.umask(_UMASK)
    return _UMASK


_UMASK: int | None = None


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> Path:
    """Call `write(tmp_path)` and atomically move the result to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def _w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return atomic_write(path, _w)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_save_png(path: str | os.PathLike, array, text: dict[str, str] | None = None) -> Path:
    """Save a uint8 (H,W) / (H,W,3) / (H,W,4) array as PNG, optionally with tEXt metadata."""
    import numpy as np
    from PIL import Image, PngImagePlugin

    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    img = Image.fromarray(arr)
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_text(str(k), str(v))

    def _w(tmp: str) -> None:
        img.save(tmp, format="PNG", pnginfo=info)
    return atomic_write(path, _w, suffix=".png")
