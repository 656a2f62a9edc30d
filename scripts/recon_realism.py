"""How real can a base's samples get through its VAE? KID x1000 of VAE reconstructions of real images.

    python scripts/recon_realism.py stage1=PATH_TO_OLD_BASE shipped=assets/tiny-base [--n 96] [--trimesters third] [--json out.json]

Per trimester: N real HC18 pairs (a seeded draw) squashed to 128² as in-channel images, split in two halves A
and B; reports KID x1000 (the realism report's definition: LiteMedSAM features, pipeline.diffusion.realism)
of B against A itself (the floor), of A blurred to 32² (a texture-free control) and of each base's
reconstruction of A (encode -> posterior mean -> decode), with the mean |vertical gradient| ("detail") and
image L1 (0-255). A sample can hardly be more real than its decoder's reconstructions: when these score like
the samples, the decoder is the limit, not the UNet (measured 2026-11-26: docs/lab/2026-11-pretraining.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bases", nargs="+", metavar="NAME=BASE", help="a diffusers base folder with a vae/, named")
    p.add_argument("--real", default="hc18:../shared/data/hc18", help="real image+mask pairs (data spec)")
    p.add_argument("--n", type=int, default=96, help="pairs per trimester, split in two halves (default 96)")
    p.add_argument("--cache", default="outputs/recon/cache", help="feature cache folder")
    p.add_argument("--trimesters", default="first,second,third", help="comma-separated (default: all three)")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args(argv)
    if a.n < 8:
        raise SystemExit(f"--n must be at least 8, not {a.n}")
    from pipeline.masks import TRIMESTERS
    wanted = [t.strip() for t in a.trimesters.split(",") if t.strip()]
    if not wanted or any(t not in TRIMESTERS for t in wanted):
        raise SystemExit(f"--trimesters {a.trimesters!r}: name some of {', '.join(TRIMESTERS)}")
    bases = {}
    for spec in a.bases:
        name, sep, path = spec.partition("=")
        if not sep or not name or not (Path(path) / "vae" / "config.json").is_file():
            raise SystemExit(f"{spec!r}: give NAME=BASE where BASE/vae/config.json exists")
        bases[name] = path

    import cv2
    import torch
    from diffusers import AutoencoderKL

    from pipeline.data import DataError, open_source
    from pipeline.diffusion.base import rgb_to_tensor, tensor_to_rgb, to_model_size
    from pipeline.diffusion.pretrain import image_detail
    from pipeline.diffusion.realism import kid_x1000, real_halves, realism_features
    from pipeline.sam.models import load_model
    try:
        src = open_source(a.real)
    except DataError as exc:
        raise SystemExit(f"--real {a.real}: {exc}")
    vaes = {k: AutoencoderKL.from_pretrained(v, subfolder="vae", torch_dtype=torch.float32).eval()
            for k, v in bases.items()}
    model = load_model("litemedsam")
    feats = lambda ims: realism_features(list(ims), 128, model, a.cache)[0]
    detail = lambda z: round(image_detail(z), 2)
    out = {}
    for t in wanted:
        idx = [i for i, m in enumerate(src.metas) if m.trimester == t]
        if len(idx) < 8:
            print(f"{t}: only {len(idx)} pairs, skipped", flush=True)
            continue
        idx = sorted(np.random.default_rng(0).choice(idx, size=min(a.n, len(idx)), replace=False))
        x = np.stack([to_model_size(src[i].image, src[i].mask, 128) for i in idx])
        ia, ib = real_halves(len(x))
        fa, fb = feats(x[ia]), feats(x[ib])
        blur = np.stack([cv2.resize(cv2.resize(im, (32, 32), interpolation=cv2.INTER_AREA), (128, 128),
                                    interpolation=cv2.INTER_CUBIC) for im in x[ia]])
        row = {"n_half": len(ia), "floor": kid_x1000(fa, fb)["kid_x1000"],
               "blur32": kid_x1000(feats(blur), fb)["kid_x1000"], "detail_real": detail(x[ia])}
        for name, vae in vaes.items():
            with torch.no_grad():
                rec = tensor_to_rgb(vae.decode(vae.encode(rgb_to_tensor(x[ia])).latent_dist.mean).sample)
            row[name] = {"kid": kid_x1000(feats(rec), fb)["kid_x1000"], "detail": detail(rec),
                         "l1": round(float(np.abs(rec[..., 0].astype(np.float32) - x[ia][..., 0]).mean()), 2)}
        out[t] = row
        print(t, json.dumps(row), flush=True)
    if a.json:
        from pipeline.fileio import atomic_write_json
        atomic_write_json(a.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
