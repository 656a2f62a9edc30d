"""What does the realism classifier key on? KID x1000 and C2ST AUC of one synthetic set after simple edits.

    python scripts/realism_probes.py --synthetic outputs/sweeps/NAME/synthetic --lora outputs/sweeps/NAME/loras/second --trimester second [--json out.json]

Each probe edits the generated images and measures them against the same real set the realism report uses
(`pipeline.diffusion.realism`, its definition unchanged: LiteMedSAM features at the working size 128, 64 real
images of the trimester without the LoRA's training images). The edits are diagnostics, not a generator:
- frame       the fan borders and corner boxes of a (seeded) random real image of the trimester (pixels <= 3
              there) painted black into the sample: does the classifier key on the scan's layout?
- hist        the sample's grey levels mapped to that real image's histogram: on global brightness/contrast?
- frame+hist  both.
- speckle S/B multiplicative gamma noise of relative std S, Gaussian-blurred by B px (B = 0: none): on grain?
A probe that brings AUC far below the unedited set's names what the generator lacks; none that does means the
difference is in what the generator draws (texture and anatomy), not in its layout, levels or noise.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def hist_match(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    s = np.sort(src.ravel())
    q = np.sort(ref.ravel())
    ranks = np.searchsorted(s, src.ravel(), side="left") / max(len(s) - 1, 1)
    return np.interp(ranks, np.linspace(0, 1, len(q)), q).reshape(src.shape).astype(np.uint8)


def main(argv=None) -> int:
    import cv2
    from pipeline.diffusion import realism as R
    from pipeline.sam.models import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--synthetic", required=True, help="a generated dataset folder (generate / the sweep's synthetic/)")
    p.add_argument("--lora", required=True, help="the LoRA folder the samples came from (its images are left out)")
    p.add_argument("--trimester", required=True)
    p.add_argument("--real", default="hc18:../shared/data/hc18")
    p.add_argument("--cache", default="outputs/cache/realism")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args(argv)

    names, _ = R.lora_training_names(a.lora)
    real = R.load_real(a.real, a.trimester, exclude=names)
    gen = R.load_generated(a.synthetic if ":" in a.synthetic else f"folder:{a.synthetic}", a.trimester)
    model = load_model("litemedsam")

    def feats(images):
        return R.realism_features(images, 128, model, a.cache)[0]

    fr = feats(real.images)
    rng = np.random.default_rng(a.seed)
    gims = [R.as_gray(g) for g in gen.images]
    raw = [R.as_gray(real.images[int(rng.integers(len(real.images)))]) for _ in gims]
    # the real image at the sample's size: area-averaged for its black frame, bilinear for its histogram
    refs = [cv2.resize(r, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_AREA) for r, g in zip(raw, gims)]
    hist = [hist_match(g, cv2.resize(r, (g.shape[1], g.shape[0]))) for r, g in zip(raw, gims)]
    noise = np.random.default_rng(a.seed)  # the speckle's own stream, apart from the draw of real images

    def speckle(g, sigma, blur):
        n = noise.gamma(1 / sigma ** 2, sigma ** 2, g.shape).astype(np.float32)
        if blur:
            n = cv2.GaussianBlur(n, (0, 0), blur)
            n /= n.mean()
        return np.clip(g.astype(np.float32) * n, 0, 255).astype(np.uint8)

    probes = {
        "as-is": gims,
        "frame": [np.where(r <= 3, 0, g).astype(np.uint8) for g, r in zip(gims, refs)],
        "hist": hist,
        "frame+hist": [np.where(r <= 3, 0, h).astype(np.uint8) for h, r in zip(hist, refs)],
    }
    for sigma, blur in [(0.3, 0), (0.6, 0), (0.6, 0.8), (1.0, 0.8)]:
        probes[f"speckle {sigma}/{blur}"] = [speckle(g, sigma, blur) for g in gims]

    out = {"trimester": a.trimester, "n_generated": len(gims), "n_real": len(fr), "probes": {}}
    print(f"{a.trimester}: {len(gims)} generated vs {len(fr)} real")
    print(f"{'probe':<18} {'KID x1000':>10} {'AUC':>6}")
    for k, ims in probes.items():
        r = R.compare(feats(ims), fr, a.seed)
        out["probes"][k] = {"kid_x1000": r["kid_x1000"], "kid_x1000_std": r["kid_x1000_std"], "auc": r["auc"]}
        print(f"{k:<18} {r['kid_x1000']:>10.3f} {r['auc']:>6.3f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
