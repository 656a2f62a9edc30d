"""`python -m pipeline data-summary --data SPEC [--json]`"""
from __future__ import annotations

import json
import sys

import numpy as np

from .data import DataError, open_source, trimester_counts
from .masks import refit


def summarize(spec: str, allowed_roots=None, progress=None) -> dict:
    """Counts per trimester and the HC check: HC from each loaded mask (fitted ellipse x pixel size)
    against the reference HC (HC18's CSV), where both exist. Unreadable samples are listed, not fatal."""
    src = open_source(spec, allowed_roots)
    errors, problems, unreadable = [], list(src.warnings), 0
    for i, meta in enumerate(src.metas):
        if progress:
            progress(i, len(src))
        try:  # every sample is read, even those without a reference HC: an unreadable one is counted
            sample = src[i]
        except DataError as exc:
            problems.append(str(exc))
            unreadable += 1
            continue
        if meta.hc_mm is None or not meta.pixel_size_mm or sample.mask is None:
            continue
        ex = refit(sample.mask, allow_border=True, min_fit_iou=0.0)
        if ex.ellipse is not None:
            errors.append(abs(ex.ellipse.head_circumference_mm(meta.pixel_size_mm) - meta.hc_mm))
    hc = {"median_abs_error": float(np.median(errors)) if errors else None,
          "max_abs_error": float(np.max(errors)) if errors else None}
    return {"n": len(src), "unreadable": unreadable, "trimesters": trimester_counts(src.metas), "hc_mm": hc,
            "problems": problems}


def add_arguments(p, command: str = "data-summary") -> None:
    p.add_argument("--data", required=True, help="hc18:PATH, folder:PATH or phantom[:N[:SEED]]")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    out = summarize(args.data, progress=_bar() if not args.json else None)
    problems = out.pop("problems")
    if args.json:
        print(json.dumps(out))
    else:
        t = out["trimesters"]
        print(f"{out['n']} samples: first {t['first']}, second {t['second']}, third {t['third']}, "
              f"unknown {t['unknown']}")
        if out["hc_mm"]["median_abs_error"] is not None:
            print(f"HC from masks vs reference: median |error| {out['hc_mm']['median_abs_error']:.3f} mm, "
                  f"max {out['hc_mm']['max_abs_error']:.3f} mm")
    for p in problems[:20]:
        print(f"warning: {p}", file=sys.stderr)
    if len(problems) > 20:
        print(f"warning: ... and {len(problems) - 20} more", file=sys.stderr)
    return 0


def _bar():
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    state = {}

    def progress(i, n):
        if "bar" not in state:
            state["bar"] = tqdm(total=n, desc="loading", unit="img", file=sys.stderr)
        state["bar"].update(1)
        if i == n - 1:
            state["bar"].close()
    return progress
