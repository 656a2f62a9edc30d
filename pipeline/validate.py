"""Checks at the boundaries where a user's input enters: names, numbers, image sizes, model (run) names.

Every refusal is a DataError whose message names the field and says what is allowed, so the dashboard, the
API and the CLI show the same clear line. Checks refuse; they never truncate or clamp silently (a name cut
to fit once matched another run and returned that run's result as if it were new).
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

from .errors import DataError

MAX_NAME_LEN = 60
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
SEED_MAX = 2**31 - 1
# one pixel limit for every image that enters (uploads, zips, typed folders, /segment, data loaders):
# 40 Mpx is ~6300x6300, far above ultrasound frames (HC18: 800x540), far below a decompression bomb
# (a 415 KB PNG of 20000x20000 took 42 s and 11.7 GiB when decoded with OpenCV, which has no limit)
MAX_IMAGE_PIXELS = int(os.environ.get("SONOSYNTH_MAX_IMAGE_PIXELS", 40_000_000))
# and per side: a 100000 x 100 strip is under the pixel limit but no ultrasound frame (issue 35)
MAX_IMAGE_SIDE = int(os.environ.get("SONOSYNTH_MAX_IMAGE_SIDE", 8192))


def _limit_pil() -> None:
    """PIL's own bomb check (warning above the limit, error above twice it) uses the same limit, so images
    that other libraries decode with PIL (Gradio's image inputs) are bounded too."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


_limit_pil()


def check_name(name, field: str, example: str = "ux-second") -> str:
    """A user-chosen name (run, LoRA, dataset, sweep): letters, digits, '-', '_', '.', not starting with
    '.', at most MAX_NAME_LEN characters. Refused, never cut: a cut name may match another run. A blank
    one is refused too, never replaced by a default: a default name is an existing run's, whose result
    came back as if it were new (issue 35)."""
    text = "" if name is None else str(name).strip()
    if not text:
        raise DataError(f"{field} is empty: type a name such as {example} (letters, digits, '-', '_' or '.')")
    if len(text) > MAX_NAME_LEN:
        raise DataError(f"{field} is {len(text)} characters long; at most {MAX_NAME_LEN} are allowed")
    if not _NAME_RE.fullmatch(text) or text.startswith("."):
        raise DataError(f"{field} {text[:MAX_NAME_LEN]!r}: use letters, digits, '-', '_' or '.' only "
                        f"(not starting with '.')")
    return text


def _number(value, field: str) -> float:
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{field}: a number is needed, got {value!r}")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{field}: a number is needed, got {value!r}") from None
    if not math.isfinite(f):
        raise DataError(f"{field} must be a finite number, got {value!r}")
    return f


def check_int(value, field: str, lo: int, hi: int) -> int:
    """A whole number in [lo, hi]; refuses NaN, infinities, fractions and out-of-range values by name."""
    f = _number(value, field)
    if f != int(f):
        raise DataError(f"{field} must be a whole number, got {value!r}")
    if not lo <= f <= hi:
        raise DataError(f"{field} must be between {lo} and {hi}, got {int(f)}")
    return int(f)


def check_float(value, field: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite number in the interval lo..hi (open ends when asked); the message names the field."""
    f = _number(value, field)
    if f < lo or f > hi or (lo_open and f == lo) or (hi_open and f == hi):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise DataError(f"{field} must be in {interval}, got {value!r}")
    return f


def check_seed(value, field: str = "seed") -> int:
    return check_int(value, field, 0, SEED_MAX)


def optional_int(value, field: str, lo: int, hi: int) -> int | None:
    """None / empty stays None (the preset's or the default's value); anything else is checked."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return check_int(value, field, lo, hi)


# ----------------------------------------------------------------------------- images
def check_trimester(value) -> str:
    """The one check of a trimester name (masks.TRIMESTERS), with one message wherever one enters: prompts,
    LoRA / generation / grid configs, the realism sets, the dashboard."""
    from .masks import TRIMESTERS
    if value not in TRIMESTERS:
        raise DataError(f"unknown trimester {value!r}: choose {', '.join(TRIMESTERS[:-1])} or {TRIMESTERS[-1]}")
    return value


def check_image_size(width: int, height: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise DataError(f"{what}: the image has no pixels ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"{what}: the image is {width}x{height}, it has {width * height / 1e6:.0f} Mpx; at most "
                        f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx are accepted")
    if max(width, height) > MAX_IMAGE_SIDE:
        raise DataError(f"{what}: the image is {width}x{height} px; at most {MAX_IMAGE_SIDE} px per side are "
                        f"accepted: downscale it")


def image_header_size(data, what: str) -> tuple[int, int]:
    """(width, height) from an encoded image's header (bytes, or a file path: read as far as the header),
    read by PIL without decoding the pixels (OpenCV cannot do that); DataError when the bytes are not an
    image or its size is over the limit."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            src = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
            with Image.open(src) as im:  # lazy: reads the header only
                w, h = im.size
    except Image.DecompressionBombError as exc:  # PIL refuses at twice its limit, before we see the size
        m = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(m.group(1)) / 1e6:.0f} Mpx" if m else "too many pixels"
        raise DataError(f"{what}: the image has {size}; at most {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx are "
                        f"accepted") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise DataError(f"cannot read {what}: the file is corrupt or not an image (use a PNG, JPEG, BMP or TIFF "
                        f"file)") from None
    check_image_size(w, h, what)
    return w, h


def check_array_size(arr, what: str) -> None:
    import numpy as np
    a = np.asarray(arr)
    if a.ndim < 2:
        raise DataError(f"{what}: expected an image, got an array of shape {a.shape}")
    check_image_size(int(a.shape[1]), int(a.shape[0]), what)


# ----------------------------------------------------------------------------- fine-tuned SAM runs
def resolve_run(runs_root: str | os.PathLike, name, field: str = "model") -> Path:
    """A fine-tuned run by NAME inside runs_root (never a path): the folder must lie inside runs_root after
    resolving links and hold config.json + best.safetensors. One message whether or not something exists
    at that place, so the answer tells nothing about the server's files."""
    missing = DataError(f"{field}: no fine-tuned run named {str(name)[:MAX_NAME_LEN]!r}; use the base model or "
                        f"a run name from the Fine-tune SAM tab's list")
    try:
        name = check_name(name, field)
    except DataError:
        raise missing from None
    root = Path(runs_root).resolve()
    path = (root / name).resolve()
    if path.parent != root or not (path / "config.json").is_file() or not (path / "best.safetensors").is_file():
        raise missing
    return path


def validate_box(box, hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """A box (x0, y0, x1, y1) in image pixels, clipped to the image; DataError for a box that is
    missing, malformed, empty or entirely outside the image."""
    import numpy as np
    if box is None:
        raise DataError("no box: draw a box around the head first")
    try:
        x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=float).reshape(-1)[:4])
        if np.asarray(box).size != 4:
            raise ValueError
    except (TypeError, ValueError):
        raise DataError(f"a box is four numbers x0 y0 x1 y1, got {box!r}") from None
    if not np.isfinite([x0, y0, x1, y1]).all():
        raise DataError("the box has a non-finite coordinate")
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    h, w = hw
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise DataError(f"the box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}) lies outside the "
                        f"{w}x{h} image")
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise DataError("the box is too small (under 2 pixels wide or high): draw it around the head")
    return x0, y0, x1, y1
