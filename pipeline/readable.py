"""Results as a person reads them: short Markdown with rounded numbers and words, never raw dicts,
15-digit floats or absolute server paths. The dashboard shows these; the API keeps returning the dicts.
"""
from __future__ import annotations

from pathlib import Path


def short_path(path: str | Path | None, work_dir: str | Path | None = None) -> str:
    """A path as the person knows it: relative to the work dir ("synthetic/run-1"), else the last two
    parts ("…/hc18/training_set"): the server's absolute layout says nothing to them."""
    if not path:
        return ""
    p = Path(str(path))
    if work_dir is not None:
        try:
            return str(p.resolve().relative_to(Path(work_dir).resolve()))
        except ValueError:
            pass
    parts = p.parts
    return str(p) if len(parts) <= 2 or not p.is_absolute() else "…/" + "/".join(parts[-2:])


def short_spec(spec: str, work_dir=None) -> str:
    """`hc18:/abs/…/shared/data/hc18` -> `hc18:…/data/hc18` (the kind stays, the path is shortened)."""
    kind, sep, arg = (spec or "").partition(":")
    if not sep or kind == "phantom" or not arg.startswith("/"):
        return spec
    return f"{kind}:{short_path(arg, work_dir)}"


def _num(v, digits: int = 1, unit: str = "") -> str:
    return "—" if v is None else f"{v:.{digits}f}{unit}"


def data_summary_markdown(s: dict | None) -> str:
    """browse.summary(src) as a few lines."""
    if not s:
        return ""
    t, pct = s["trimesters"], s.get("trimester_percent") or {}
    rows = ["| trimester | images | share |", "|---|---:|---:|"]
    for k in ("first", "second", "third"):
        rows.append(f"| {k} | {t[k]} | {_num(pct.get(k), 0, ' %')} |")
    if t.get("unknown"):
        rows.append(f"| unknown | {t['unknown']} | |")
    hc, px = s["hc_mm"], s["pixel_size_mm"]
    lines = [f"**{s['n']} images** in `{short_spec(s['spec'])}`"
             + (f" ({s['phantom']} phantoms made by our generator)" if s.get("phantom") else "")
             + (f" ({s['synthetic']} synthetic)" if s.get("synthetic") else ""), "", *rows, ""]
    if hc["known"]:
        lines.append(f"Head circumference: {hc['min']:.1f}–{hc['max']:.1f} mm (median {hc['median']:.1f} mm, "
                     f"{hc['known']} images with a reference HC).")
    if px["known"]:
        lines.append(f"Pixel size: {px['min']:.3f}–{px['max']:.3f} mm per pixel.")
    if s.get("n_warnings"):
        lines.append(f"⚠️ {s['n_warnings']} warning(s), e.g. {s['warnings'][0]}")
    return "\n".join(lines)


def hc_check_markdown(out: dict | None) -> str:
    """cli_data.summarize's result (the HC check) as a verdict a person reads."""
    if not out:
        return ""
    hc = out.get("hc_mm") or {}
    lines = [f"Checked **{out['n']}** images"
             + (f"; {out['unreadable']} could not be read" if out.get("unreadable") else "") + "."]
    med, mx = hc.get("median_abs_error"), hc.get("max_abs_error")
    if med is None:
        lines.append("No image has both a mask and a reference HC with a pixel size: nothing to compare.")
    else:
        ok = mx <= 1.0
        lines.append(f"HC from each mask's fitted ellipse × pixel size vs the reference HC: median difference "
                     f"**{med:.2f} mm**, largest **{mx:.2f} mm** — "
                     + ("✅ the masks and the reference agree (all within 1 mm)." if ok else
                        "⚠️ some masks disagree with their reference HC by more than 1 mm: check those images."))
    problems = out.get("problems") or []
    if problems:
        lines.append(f"⚠️ {len(problems)} problem(s): " + "; ".join(problems[:5]) + (" …" if len(problems) > 5 else ""))
    return "\n\n".join(lines)


def generation_markdown(summ: dict | None, seeds=None, dataset: str | None = None, work_dir=None,
                        done: int | None = None, total: int | None = None) -> str:
    """generate.summarize(samples) (+ seeds, the dataset folder) as one short paragraph."""
    if not summ or not summ.get("n"):
        return ""
    n, valid = summ["n"], summ["valid"]
    head = f"**{n}** generated" + (f" of {total}" if total and total != n else "")
    bits = [f"{head} · **{valid} valid** ellipses ({100 * valid / n:.0f} %)"]
    if summ.get("mean_qc") is not None:
        bits.append(f"mean QC {summ['mean_qc']:.2f}")
    if summ.get("mean_perimeter_px") is not None:
        bits.append(f"mean head perimeter {summ['mean_perimeter_px']:.0f} px")
    if seeds:
        bits.append(f"seeds {min(seeds)}–{max(seeds)}" if len(seeds) > 1 else f"seed {seeds[0]}")
    text = " · ".join(bits)
    if dataset:
        text += f"\n\nRaw samples saved in `{short_path(dataset, work_dir)}/raw`; accept pairs to add them to the dataset."
    return text


def ellipse_markdown(ellipse) -> str:
    """"centre (74.3, 61.0) px · axes 88.2 × 70.1 px · angle 12°" instead of a dict of 15-digit floats."""
    if ellipse is None:
        return "no ellipse"
    return (f"centre ({ellipse.cx:.1f}, {ellipse.cy:.1f}) px · axes {ellipse.width:.1f} × {ellipse.height:.1f} px"
            f" · angle {ellipse.angle:.0f}° · perimeter {ellipse.perimeter_px():.0f} px")


def lora_state(folder: str | Path) -> dict:
    """{"done", "total", "finished", "status"} of a LoRA folder from its lora_config.json (a LoRA stopped
    at step 2 of 300 is usable but unfinished: a person must be told before generating with it)."""
    import json
    try:
        info = json.loads((Path(folder) / "lora_config.json").read_text())
    except (OSError, ValueError):
        return {"done": None, "total": None, "finished": False, "status": "unreadable"}
    done, total = info.get("steps_done"), info.get("steps")
    finished = isinstance(done, int) and isinstance(total, int) and done >= total
    res = info.get("resolution")
    return {"done": done, "total": total, "finished": finished, "status": info.get("status"),
            "resolution": res if isinstance(res, int) and res > 0 else None}


def lora_label(name: str, state: dict) -> str:
    """The LoRA list entry: its name, its size when it was trained at one of its own (a detail LoRA), and
    "unfinished: 2/300 steps" when it is."""
    if state.get("resolution"):
        name = f"{name} ({state['resolution']}²)"
    if state["finished"]:
        return name
    if state["done"] is not None and state["total"]:
        return f"{name} (⚠️ unfinished: {state['done']}/{state['total']} steps)"
    return f"{name} (⚠️ {state['status']})"


def lora_warning(name: str, state: dict) -> str | None:
    if state["finished"]:
        return None
    if state["done"] is not None and state["total"]:
        return (f"LoRA {name} is unfinished: trained {state['done']} of {state['total']} steps. Its samples show "
                "what an unfinished LoRA does, not the method; press Start in the LoRA tab with the same name to "
                "finish it")
    return f"LoRA {name}: {state['status']}"


def paired_gain(before: list[float] | None, after: list[float] | None) -> dict | None:
    """Mean paired difference (after − before) per image with its standard error; None when the two lists
    do not pair up (a resumed run has no zero-shot scores of this session)."""
    import math
    if not before or not after or len(before) != len(after) or len(before) < 2:
        return None
    d = [a - b for a, b in zip(after, before)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    return {"n": n, "mean": mean, "se": sd / math.sqrt(n)}


def gain_verdict(gain: dict | None, what: str = "the base model") -> str:
    """"better than the base model" only when the gain is beyond noise: the mean paired gain exceeds two
    standard errors (about a 95 % interval that excludes zero); otherwise "no clear difference"."""
    if gain is None:
        return f"compared with {what} on the validation mean only (per-image scores unavailable, e.g. a resumed run)"
    m, se, n = gain["mean"], gain["se"], gain["n"]
    interval = f"{m:+.4f} ± {2 * se:.4f} Dice over {n} images"
    if m > 2 * se:
        return f"better than {what} beyond noise ({interval})"
    if m < -2 * se:
        return f"worse than {what} beyond noise ({interval})"
    return f"no clear difference from {what}: the gain is within noise ({interval})"
