"""Looking at a data source: pages of overlaid thumbnails, one sample in detail, a summary and charts.

The Data tab is thin wiring over these functions (no gradio here). Everything works from a spec string
and the cheap metadata, so a page of 24 thumbnails loads 24 samples, never the whole dataset.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import DataError, DataSource, SampleMeta, dataset_root_in, safe_extract_zip, trimester_counts
from .masks import TRIMESTERS, overlay

PER_PAGE = 24
THUMB_SIDE = 256  # longest side of a gallery thumbnail (HC18 images are 800x540)
TRIMESTER_COLORS = {"first": "#4c9be8", "second": "#3cb371", "third": "#e8884c", "unknown": "#9e9e9e"}
FILTERS = ("all", *TRIMESTERS, "unknown")


# ----------------------------------------------------------------------------- pictures
def downscale(img: np.ndarray, max_side: int = THUMB_SIDE) -> np.ndarray:
    import cv2
    h, w = img.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def unreadable_tile(text: str, size: tuple[int, int] = (THUMB_SIDE, THUMB_SIDE * 2 // 3)) -> np.ndarray:
    """A grey tile with a red cross standing in for a sample that cannot be read."""
    import cv2
    w, h = size
    tile = np.full((h, w, 3), 60, np.uint8)
    cv2.line(tile, (0, 0), (w - 1, h - 1), (200, 60, 60), 2)
    cv2.line(tile, (0, h - 1), (w - 1, 0), (200, 60, 60), 2)
    cv2.putText(tile, text[:28], (6, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def caption(meta: SampleMeta) -> str:
    parts = [meta.name]
    if meta.trimester:
        parts.append(meta.trimester)
    if meta.hc_mm is not None:
        parts.append(f"HC {meta.hc_mm:.1f} mm")
    return " · ".join(parts)


# ----------------------------------------------------------------------------- selection and pages
def filtered_indices(metas: Sequence[SampleMeta], trimester: str = "all") -> list[int]:
    if trimester in (None, "", "all"):
        return list(range(len(metas)))
    if trimester not in FILTERS:
        raise DataError(f"unknown trimester filter {trimester!r}: use one of {', '.join(FILTERS)}")
    if trimester == "unknown":
        return [i for i, m in enumerate(metas) if m.trimester not in TRIMESTERS]
    return [i for i, m in enumerate(metas) if m.trimester == trimester]


def n_pages(n: int, per_page: int = PER_PAGE) -> int:
    return max(1, math.ceil(n / per_page))


def clamp_page(page: int, n: int, per_page: int = PER_PAGE) -> int:
    return min(max(int(page), 0), n_pages(n, per_page) - 1)


def gallery_page(src: DataSource, page: int = 0, alpha: float = 0.4, trimester: str = "all",
                 per_page: int = PER_PAGE, max_side: int = THUMB_SIDE):
    """One page of (thumbnail RGB uint8, caption) with the mask tinted at `alpha`.

    Returns (items, indices, page, problems): `indices` are the source indices shown (for selection), a
    sample that cannot be read is shown as a crossed tile and its reason is listed in `problems`.
    """
    idx = filtered_indices(src.metas, trimester)
    page = clamp_page(page, len(idx), per_page)
    shown = idx[page * per_page:(page + 1) * per_page]
    items, problems = [], []
    for i in shown:
        meta = src.metas[i]
        try:
            s = src[i]
            items.append((downscale(overlay(s.image, s.mask, alpha)), caption(meta)))
        except DataError as exc:
            problems.append(str(exc))
            items.append((unreadable_tile("unreadable"), f"{meta.name} · unreadable"))
    return items, shown, page, problems


def page_label(n_shown_total: int, n_all: int, page: int, per_page: int = PER_PAGE) -> str:
    if n_shown_total == 0:
        return "no samples match"
    a, b = page * per_page + 1, min((page + 1) * per_page, n_shown_total)
    of = f"{n_shown_total}" if n_shown_total == n_all else f"{n_shown_total} (of {n_all})"
    return f"page {page + 1} / {n_pages(n_shown_total, per_page)} · samples {a}–{b} of {of}"


def sample_detail(src: DataSource, index: int, alpha: float = 0.4) -> tuple[np.ndarray, dict]:
    """The full-size overlay (mask tinted, annotation ellipse drawn) and the sample's metadata."""
    if not 0 <= index < len(src):
        raise DataError(f"sample {index + 1} does not exist: the source has {len(src)} samples")
    s = src[index]
    info = {"index": index, **s.meta.as_dict(), "size_px": f"{s.image.shape[1]}x{s.image.shape[0]}",
            "has_mask": s.mask is not None}
    if s.ellipse is not None:
        e = s.ellipse
        info["ellipse"] = {k: round(float(v), 2) for k, v in e.as_dict().items()}
        hc = e.head_circumference_mm(s.meta.pixel_size_mm)
        if hc is not None:
            info["hc_from_mask_mm"] = round(hc, 2)
    return overlay(s.image, s.mask, alpha, ellipse=s.ellipse), info


# ----------------------------------------------------------------------------- summary and charts
def summary(src: DataSource) -> dict:
    """Counts and ranges from the cheap metadata (no pixel is read)."""
    hcs = np.array([m.hc_mm for m in src.metas if m.hc_mm is not None], float)
    px = np.array([m.pixel_size_mm for m in src.metas if m.pixel_size_mm], float)
    n = len(src)
    counts = trimester_counts(src.metas)
    known = n - counts["unknown"]
    return {
        "spec": src.spec,
        "n": n,
        "trimesters": counts,
        "trimester_percent": {t: round(100 * counts[t] / known, 1) if known else None for t in TRIMESTERS},
        "hc_mm": {"known": int(hcs.size),
                  "min": round(float(hcs.min()), 1) if hcs.size else None,
                  "median": round(float(np.median(hcs)), 1) if hcs.size else None,
                  "max": round(float(hcs.max()), 1) if hcs.size else None},
        "pixel_size_mm": {"known": int(px.size),
                          "min": round(float(px.min()), 4) if px.size else None,
                          "max": round(float(px.max()), 4) if px.size else None},
        "synthetic": sum(1 for m in src.metas if m.extra.get("synthetic")),
        "phantom": sum(1 for m in src.metas if m.extra.get("phantom")),
        "warnings": src.warnings[:50],
        "n_warnings": len(src.warnings),
    }


def charts(metas: Sequence[SampleMeta], title: str = ""):
    """A plotly figure: trimester counts (bars) beside the head-circumference histogram per trimester."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    counts = trimester_counts(metas)
    n = max(1, len(metas))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.35, 0.65], horizontal_spacing=0.1,
                        subplot_titles=("Trimester (Hadlock GA from HC)", "Head circumference (mm)"))
    cats = [t for t in (*TRIMESTERS, "unknown") if t != "unknown" or counts["unknown"]]
    fig.add_trace(go.Bar(x=cats, y=[counts[t] for t in cats],
                         marker_color=[TRIMESTER_COLORS[t] for t in cats],
                         text=[f"{counts[t]} ({100 * counts[t] / n:.0f}%)" for t in cats], textposition="auto",
                         showlegend=False, hovertemplate="%{x}: %{y}<extra></extra>"), row=1, col=1)
    any_hc = False
    for t in TRIMESTERS:
        hc = [m.hc_mm for m in metas if m.trimester == t and m.hc_mm is not None]
        if hc:
            any_hc = True
            fig.add_trace(go.Histogram(x=hc, name=t, marker_color=TRIMESTER_COLORS[t], xbins=dict(size=10),
                                       hovertemplate="HC %{x} mm: %{y}<extra>" + t + "</extra>"), row=1, col=2)
    if not any_hc:
        fig.add_annotation(text="no head circumference known for this source", showarrow=False,
                           xref="x2 domain", yref="y2 domain", x=0.5, y=0.5)
    fig.update_layout(barmode="stack", height=320, margin=dict(l=40, r=20, t=60, b=40),
                      legend=dict(orientation="h", yanchor="bottom", y=1.12, xanchor="right", x=1),
                      title=dict(text=title, x=0.01, y=0.98, font=dict(size=13)) if title else None,
                      template="plotly_white")
    fig.update_yaxes(title_text="images", row=1, col=1)
    fig.update_yaxes(title_text="images", row=1, col=2)
    return fig


# ----------------------------------------------------------------------------- choosing sources
def suggest_sources(roots: Sequence[Path], work_dir: Path | None = None, default: str = "phantom:24",
                    limit: int = 30) -> list[str]:
    """Spec strings worth offering: the phantom default, HC18 / folder datasets found shallowly under the
    allowed roots, and synthetic datasets written under work_dir/synthetic (two levels, so it stays cheap)."""
    out = [default]
    dirs: list[Path] = []
    for r in roots:
        r = Path(r)
        if r.is_dir():
            dirs.append(r)
            dirs.extend(sorted(p for p in r.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if work_dir is not None:
        syn = Path(work_dir) / "synthetic"
        if syn.is_dir():
            dirs.extend(sorted(p for p in syn.iterdir() if p.is_dir()))
    for d in dirs:
        if (d / "training_set").is_dir():
            out.append(f"hc18:{d}")
        elif (d / "images").is_dir():
            out.append(f"folder:{d}")
        if len(out) >= limit:
            break
    return list(dict.fromkeys(out))


def open_upload(zip_path: str | os.PathLike, uploads_dir: Path, max_bytes: int = 500 * 2**20) -> str:
    """Extract an uploaded dataset zip safely into uploads_dir/<content hash> and return its spec string.

    The same zip uploaded twice is extracted once; extraction goes to a temporary folder that is moved
    into place only when complete, so a refused or broken zip leaves nothing behind."""
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise DataError("the uploaded file is missing (upload it again)")
    h = hashlib.sha256()
    with open(zip_path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    uploads_dir = Path(uploads_dir)
    uploads_dir.mkdir(parents=True, exist_ok=True)
    dest = uploads_dir / h.hexdigest()[:16]
    if not dest.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=uploads_dir))
        try:
            safe_extract_zip(zip_path, tmp, max_bytes=max_bytes)
            dataset_root_in(tmp)  # refuse a zip that holds no dataset before keeping it
            try:
                os.replace(tmp, dest)
            except OSError:  # another session extracted the same zip meanwhile
                if not dest.is_dir():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    kind, root = dataset_root_in(dest)
    return f"{kind}:{root}"

