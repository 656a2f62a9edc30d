"""Per-trimester report of generated samples vs real data: valid-ellipse rate, head size, a picture.

    python -m pipeline.diffusion.report --lora first=DIR --lora second=DIR --lora third=DIR \
        --real hc18:../shared/data/hc18 --n 32 --out docs/samples_per_trimester.png --json report.json

Head size is compared in the model's frame (real images squashed to the samples' size, 128² on the tiny base
or 256² with a detail pass, as the LoRAs see them): the median perimeter in pixels of the extracted ellipse,
generated vs the real masks of the same trimester. `--detail-lora T=DIR` adds generate's detail pass.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..fileio import atomic_write, atomic_write_json
from ..masks import TRIMESTERS
from ..validate import check_trimester


def evaluate(loras: dict[str, str | None], n: int = 32, seed: int = 1000, real: str | None = None,
             qc: bool = False, batch_size: int = 16, base: str | None = None,
             precision: str = "auto", profile=None, guidance: float | None = None,
             detail_loras: dict[str, str] | None = None, detail_strength: float = 0.5,
             ellipse_guidance: str | None = None, guidance_until: float | None = None) -> tuple[dict, dict]:
    """Generate n samples per trimester (one LoRA each, and the detail pass where `detail_loras` names a LoRA
    for the trimester) and summarise them; the profile (default: tiny) gives the base when none is named and
    the SAM that scores QC. Head sizes are compared at the samples' own size."""
    from ..config import get_profile
    from .base import real_head_sizes
    from .generate import GenerateConfig, generate, summarize
    profile = profile or get_profile()
    out, samples = {}, {}
    real_sizes_at: dict[int, dict] = {}
    for tri, lora in loras.items():
        t0 = time.time()
        cfg = GenerateConfig.for_profile(profile, trimester=tri, n=n, lora=lora, seed=seed, qc=qc,
                                         batch_size=batch_size, precision=precision,
                                         guidance=guidance, detail_lora=(detail_loras or {}).get(tri),
                                         detail_strength=detail_strength, ellipse_guidance=ellipse_guidance,
                                         guidance_until=guidance_until,
                                         **({"base": base} if base else {}))
        smp = [e["sample"] for e in generate(cfg) if e["kind"] == "sample"]
        size = int(smp[0].gray.shape[0]) if smp else 0
        if real and size and size not in real_sizes_at:
            real_sizes_at[size] = real_head_sizes(real, size)
        real_sizes = real_sizes_at.get(size, {})
        samples[tri] = smp
        s = summarize(smp)
        s["seconds"] = round(time.time() - t0, 1)
        s["guidance"] = smp[0].params.get("guidance") if smp else guidance
        s["guidance_until"] = smp[0].params.get("guidance_until") if smp else guidance_until
        s["lora"] = lora
        s["size"] = size
        if cfg.detail_lora:
            s["detail_lora"], s["detail_strength"] = cfg.detail_lora, cfg.detail_strength
        reasons: dict[str, int] = {}
        for x in smp:
            if not x.valid:
                key = x.extraction.reason.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
        s["refusals"] = reasons
        if tri in real_sizes:
            s["real_mean_perimeter_px"], s["real_n"], s["real_median_perimeter_px"] = real_sizes[tri]
            per = [x.extraction.ellipse.perimeter_px() for x in smp if x.valid]
            if per and s["real_median_perimeter_px"]:
                s["median_perimeter_px"] = round(float(np.median(per)), 1)
                # the goal: head size relative to the frame within 10 % of the real median
                s["head_size_vs_real"] = round(s["median_perimeter_px"] / s["real_median_perimeter_px"] - 1, 3)
        out[tri] = s
    return out, samples


def real_examples(spec: str, n: int = 2, size: int = 128, exclude: dict | None = None, seed: int = 0) -> dict:
    """n real images per trimester (in-channel, size²) as the LoRA sees them, not among `exclude[t]` names."""
    from ..data import open_source
    from .base import to_model_size
    src = open_source(spec)
    rng = np.random.default_rng(seed)
    out = {}
    for t in TRIMESTERS:
        cand = [i for i, m in enumerate(src.metas) if m.trimester == t
                and m.name not in set((exclude or {}).get(t, ()))]
        pick = rng.choice(cand, size=min(n, len(cand)), replace=False) if cand else []
        out[t] = [to_model_size(src[int(i)].image, src[int(i)].mask, size) for i in pick]
    return out


def paper_examples(folder: str | Path, n: int = 2, size: int = 128) -> list[np.ndarray]:
    """The paper's own synthetic images (grayscale, second trimester), squashed to our working size."""
    import cv2

    from ..data import read_gray
    files = sorted(p for p in Path(folder).glob("*.png"))[:n] if Path(folder).is_dir() else []
    return [cv2.resize(read_gray(f), (size, size), interpolation=cv2.INTER_AREA) for f in files]


def picture(samples: dict, path: str | Path, per_row: int = 6, report: dict | None = None,
            real: dict | None = None, paper: list | None = None) -> Path:
    """Per trimester: generated samples (✓/✗ = the Ellipse Extractor's verdict), then real images of the same
    trimester (not the LoRA's), then the paper's own samples (second trimester: the only ones published)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..masks import overlay, split_channels
    rows = [t for t in TRIMESTERS if t in samples]
    n_real = max((len(v) for v in (real or {}).values()), default=0)
    n_paper = len(paper or [])
    cols = per_row + n_real + n_paper
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 1.9, len(rows) * 2.1), squeeze=False)
    for r, t in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < per_row and c < len(samples[t]):
                s = samples[t][c]
                ax.imshow(s.picture())
                ax.set_title(("✓" if s.valid else "✗") + f" seed {s.seed}", fontsize=7)
            elif per_row <= c < per_row + n_real and c - per_row < len((real or {}).get(t, [])):
                gray, blue = split_channels(real[t][c - per_row])
                ax.imshow(overlay(gray, blue > 127, 0.25))
                ax.set_title("real (HC18)", fontsize=7, color="darkgreen")
            elif c >= per_row + n_real and t == "second":
                ax.imshow(paper[c - per_row - n_real], cmap="gray", vmin=0, vmax=255)
                ax.set_title("paper's SD v1.5", fontsize=7, color="darkblue")
        rep = (report or {}).get(t, {})
        label = f"{t} trimester"
        if rep.get("valid_frac") is not None:
            label += f"\n{rep['valid_frac']:.0%} valid"
        axes[r][0].text(-0.08, 0.5, label, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=9)
    fig.suptitle("Generated in-channel samples (tiny base + per-trimester LoRA) beside real images of the same "
                 "trimester (not the LoRA's) and the paper's samples: gray = mean(R,G), tint = mask (B)", fontsize=8)
    fig.tight_layout(rect=(0.08, 0, 1, 0.96))
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110), suffix=".png")
    plt.close(fig)
    return path


def _lora_names(lora_dir: str) -> list[str]:
    """The names of the images a LoRA trained on (its lora_config.json), to keep them out of comparisons."""
    p = Path(lora_dir) / "lora_config.json"
    if not p.is_file():
        return []
    cfg = json.loads(p.read_text())
    return list(cfg.get("names") or cfg.get("image_names") or [])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lora", action="append", default=[], help="TRIMESTER=DIR (repeatable); TRIMESTER= for the base")
    p.add_argument("--detail-lora", action="append", default=[],
                   help="TRIMESTER=DIR (repeatable): the detail pass's LoRA for that trimester (generate --detail-lora)")
    p.add_argument("--detail-strength", type=float, default=0.5)
    p.add_argument("--real", default=None, help="real data source for head sizes, e.g. hc18:../shared/data/hc18")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--qc", action="store_true", help="also compute SAM QC scores (slower)")
    p.add_argument("--base", default=None, help="diffusion base folder (default: the profile's)")
    p.add_argument("--profile", choices=("paper", "tiny"), default=None,
                   help="tiny (the tiny base, LiteMedSAM for QC) or paper (SD v1.5, SAM ViT-B) "
                        "(default: SONOSYNTH_PROFILE or tiny)")
    from .generate import PRECISIONS
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the base's own)")
    p.add_argument("--ellipse-guidance", default=None, metavar="off|F,F,...",
                   help="ellipse guidance: off, or fractions of the schedule (default: the base's own)")
    p.add_argument("--guidance-until", type=float, default=None, metavar="F",
                   help="classifier-free guidance for this share of the steps only (default: the base's own)")
    p.add_argument("--out", default=None, help="picture path (PNG)")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--paper", default=None, help="folder of the paper's synthetic images to show beside ours")
    p.add_argument("--save", default=None, metavar="DIR",
                   help="also write every generated sample (in-channel PNG with its metadata) to DIR/TRIMESTER/raw/, "
                        "e.g. for `python -m pipeline realism --generated DIR/second/raw`")
    args = p.parse_args(argv)
    loras = {}
    for item in args.lora:
        t, _, d = item.partition("=")
        try:
            check_trimester(t)
        except ValueError:
            p.error(f"--lora {item}: expected TRIMESTER=DIR")
        loras[t] = d or None
    detail = {}
    for item in args.detail_lora:
        t, _, d = item.partition("=")
        if t not in loras or not d:
            p.error(f"--detail-lora {item}: expected TRIMESTER=DIR for a trimester given with --lora")
        detail[t] = d
    import torch
    torch.set_num_threads(2)
    from ..config import resolve_profile
    rep, samples = evaluate(loras, args.n, args.seed, args.real, args.qc, base=args.base, precision=args.precision,
                            profile=resolve_profile(args.profile), guidance=args.guidance,
                            detail_loras=detail, detail_strength=args.detail_strength,
                            ellipse_guidance=args.ellipse_guidance, guidance_until=args.guidance_until)
    print(json.dumps(rep, indent=1))
    if args.json:
        atomic_write_json(args.json, rep)
    if args.save:
        from .dataset import save_raw
        for t, smp in samples.items():
            for x in smp:
                save_raw(Path(args.save) / t, x)
    if args.out:
        excl = {t: _lora_names(d) for t, d in loras.items() if d}
        size = max((x.gray.shape[0] for smp in samples.values() for x in smp), default=128)
        real = real_examples(args.real, 2, size=size, exclude=excl) if args.real else None
        paper = paper_examples(args.paper, 2, size=size) if args.paper else None
        print(f"picture: {picture(samples, args.out, report=rep, real=real, paper=paper)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
