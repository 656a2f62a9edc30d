"""The synthetic dataset: its folder, the one place that writes, fills, lists and counts it.

The Generation tab, `python -m pipeline generate` and the sweep's SYN arm all call this module, so the
three agree on the layout, the verdict and the counts (they once had three fill loops and two ways of
counting the trimester mix).

Layout (the `folder:` layout, readable by `open_source("folder:DIR")`):
    images/NAME.png  gray image, generation parameters in PNG text metadata (at restore_aspect's width/height
                     when the generation asked for it, else the generated square)
    masks/NAME.png   filled mask 0/255
    meta/NAME.json   prompt, seed, steps, scale, guidance, base, LoRA, threshold, trimester, verdict, QC, edited ...
    rejected/{images,meta}/NAME.*   refused pairs with their reason
    raw/NAME.png     the raw generated RGB of every sample (provenance)
Every file is written atomically (pipeline/fileio.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from ..fileio import atomic_save_png, atomic_write_json
from ..masks import TRIMESTERS

if TYPE_CHECKING:  # generate.py makes the samples; this module only files them
    from .generate import GenerateConfig, GeneratedSample

NOT_NEEDED = "not needed: the planned count was reached"


# ----------------------------------------------------------------------------- writing one pair
def _png_text(meta: dict) -> dict[str, str]:
    keys = ("prompt", "seed", "steps", "scale", "guidance", "scheduler", "base", "lora", "threshold", "verdict",
            "qc", "edited", "trimester", "detail_lora", "detail_strength", "restore_aspect")
    return {k: json.dumps(meta.get(k)) if not isinstance(meta.get(k), str) else meta[k] for k in keys}


def save_raw(out_dir: str | Path, smp: GeneratedSample) -> Path:
    """The raw generated RGB of a sample, kept or not (provenance)."""
    return atomic_save_png(Path(out_dir) / "raw" / f"{smp.name}.png", smp.rgb,
                           text=_png_text(smp.meta()))


def accept(out_dir: str | Path, smp: GeneratedSample, mask: np.ndarray | None = None, edited: bool = False) -> dict:
    """Write an accepted pair (the mask as given: a person's edit, or the extracted one)."""
    out = Path(out_dir)
    m = smp.extraction.mask if mask is None else np.asarray(mask).astype(bool)
    if m.shape != smp.gray.shape:
        raise ValueError(f"mask size {m.shape[::-1]} does not match the image {smp.gray.shape[::-1]}")
    if not m.any():
        raise ValueError(f"{smp.name}: the mask is empty; paint the head or reject the pair")
    meta = smp.meta(mask=m, edited=edited, verdict="accepted",
                    reason="edited by a person" if edited else smp.extraction.reason)
    meta["extractor_verdict"] = "valid" if smp.valid else "invalid"
    gray = smp.gray
    if smp.params.get("restore_aspect"):  # the pair as SAM sees a real scan; raw/ keeps the square sample
        from .base import restore_aspect
        gray, m = restore_aspect(gray, m, float(smp.params["restore_aspect"]))
        meta["written_size"] = [int(gray.shape[1]), int(gray.shape[0])]
        meta["mask_area_px"] = int(m.sum())
    text = _png_text(meta)
    atomic_save_png(out / "images" / f"{smp.name}.png", gray, text=text)
    atomic_save_png(out / "masks" / f"{smp.name}.png", m)
    atomic_write_json(out / "meta" / f"{smp.name}.json", meta)
    for p in (out / "rejected" / "images" / f"{smp.name}.png", out / "rejected" / "meta" / f"{smp.name}.json"):
        p.unlink(missing_ok=True)
    return meta


def reject(out_dir: str | Path, smp: GeneratedSample, reason: str) -> dict:
    """Write a refused pair under rejected/ with its reason (and withdraw it if it was accepted)."""
    out = Path(out_dir)
    meta = smp.meta(verdict="rejected", reason=reason)
    meta["extractor_verdict"] = "valid" if smp.valid else "invalid"
    atomic_save_png(out / "rejected" / "images" / f"{smp.name}.png", smp.gray, text=_png_text(meta))
    atomic_write_json(out / "rejected" / "meta" / f"{smp.name}.json", meta)
    for sub, ext in (("images", "png"), ("masks", "png"), ("meta", "json")):
        (out / sub / f"{smp.name}.{ext}").unlink(missing_ok=True)
    return meta


def auto_verdict(smp: GeneratedSample, min_qc: float | None) -> tuple[bool, str]:
    """Accept a valid extraction whose QC is at least min_qc (when QC and min_qc are given)."""
    if not smp.valid:
        return False, smp.extraction.reason
    if min_qc is not None and smp.qc is not None and smp.qc < min_qc:
        return False, f"QC {smp.qc:.2f} < {min_qc:.2f}: SAM's mask and the extracted mask disagree"
    return True, "ok"


# ----------------------------------------------------------------------------- the fill loop
def fill(out_dir: str | Path, cfg: GenerateConfig, *, decide: bool = True, min_qc: float | None = None,
         want: int | None = None, stop: Callable[[], bool] | None = None, pipe=None,
         predictor=None) -> Iterator[dict]:
    """Generate `cfg` into the dataset: generate()'s events, each sample's raw image saved as it comes.

    decide=True: each sample is accepted or rejected at once by auto_verdict (valid ellipse, QC >= min_qc),
    and once `want` pairs were accepted by this call the rest are rejected as not needed; a sample event
    then carries "accepted" (bool) and "reason". decide=False leaves the verdict to a person (the
    Generation tab's gallery)."""
    from .generate import generate
    accepted = 0
    for ev in generate(cfg, stop=stop, pipe=pipe, predictor=predictor):
        if ev["kind"] == "sample":
            smp = ev["sample"]
            save_raw(out_dir, smp)
            if decide:
                ok, reason = auto_verdict(smp, min_qc)
                if ok and want is not None and accepted >= want:
                    ok, reason = False, NOT_NEEDED
                if ok:
                    accept(out_dir, smp)
                    accepted += 1
                else:
                    reject(out_dir, smp, reason)
                ev = {**ev, "accepted": ok, "reason": reason, "accepted_so_far": accepted}
        yield ev


# ----------------------------------------------------------------------------- reading it
def is_dataset(folder: str | Path) -> bool:
    return (Path(folder) / "images").is_dir()


def list_datasets(root: str | Path) -> list[Path]:
    """The synthetic datasets under `root` (work_dir/synthetic), by name."""
    root = Path(root)
    return sorted((p for p in root.iterdir() if p.is_dir() and is_dataset(p)), key=lambda p: p.name) \
        if root.is_dir() else []


def counts(folder: str | Path) -> dict:
    """{"accepted": n, "rejected": n, "trimesters": {first: n, second: n, third: n, unknown: n}}: the
    trimester of each accepted pair read from its metadata (never from its file name)."""
    folder = Path(folder)
    tri = {t: 0 for t in (*TRIMESTERS, "unknown")}
    meta_dir = folder / "meta"
    for p in (sorted(meta_dir.glob("*.json")) if meta_dir.is_dir() else []):
        try:
            t = json.loads(p.read_text()).get("trimester")
        except (ValueError, UnicodeDecodeError, OSError, AttributeError):
            t = None
        tri[t if t in TRIMESTERS else "unknown"] += 1
    accepted = len(list((folder / "images").glob("*.png"))) if (folder / "images").is_dir() else 0
    rej = folder / "rejected" / "images"
    return {"accepted": accepted, "rejected": len(list(rej.glob("*.png"))) if rej.is_dir() else 0,
            "trimesters": tri}
