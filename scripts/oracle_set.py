"""A perfect generator's synthetic set, for a control arm: real annotated pairs in the SYN arm's place.

Writes a `folder:` dataset (images/, masks/, meta/) holding as many real pairs per trimester as the sweep's
SYN arm would generate (`synthetic_plan`), drawn from the TRAIN part of the sweep's split only, never a pair
that any real cell of the preset uses (every N_real subset of every repeat), never a validation or test
pair. `--size 128` squashes each pair to the generator's working size, as a generated pair is; `--size 0`
keeps the full image; `--restore-aspect` resizes a squashed pair back to the
source's aspect ratio (how SAM sees real images: letterboxed, not stretched to a square). Run the sweep with `--synthetic DIR` and compare:

    SYN with our generator  vs  SYN with real pairs at 128² (the best any 128² generator could do)
                            vs  SYN with real pairs at full size (what 95 more annotations would do)

    python scripts/oracle_set.py --out outputs/oracle/real128 --size 128
    python -m pipeline sweep --preset cpu-small --train hc18:../shared/data/hc18 --augmentations syn \\
        --n-real 5 --synthetic folder:outputs/oracle/real128 --out outputs/sweeps/oracle128-n5
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.data import DataError, nested_subsets, open_source, split_indices  # noqa: E402
from pipeline.diffusion.base import to_model_size  # noqa: E402
from pipeline.fileio import atomic_save_png  # noqa: E402
from pipeline.masks import TRIMESTERS  # noqa: E402
from pipeline.sweep.config import preset  # noqa: E402
from pipeline.sweep.synthetic import synthetic_plan  # noqa: E402


def oracle_indices(cfg, metas, seed: int) -> dict[str, list[int]]:
    """Per trimester, the train-part indices standing in for the SYN arm's generated pairs."""
    parts = split_indices(metas, cfg.split, cfg.split_seed)
    used = set()
    for r in range(cfg.repeats):  # every real cell's pairs: repeat r trains with seed + r
        for idx in nested_subsets(parts["train"], cfg.n_real, cfg.seed + r).values():
            used.update(idx)
    plan = synthetic_plan(cfg)
    rng = np.random.default_rng(seed)
    out = {}
    for t in TRIMESTERS:
        want = plan.get(t, 0)
        pool = [i for i in parts["train"] if metas[i].trimester == t and i not in used]
        if want > len(pool):
            raise DataError(f"{t} trimester: the SYN arm needs {want} pairs, the train part holds only "
                            f"{len(pool)} that no real cell uses")
        out[t] = sorted(int(i) for i in rng.choice(pool, size=want, replace=False)) if want else []
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="a new folder (refused if it holds anything)")
    ap.add_argument("--train", default="hc18:../shared/data/hc18", help="the sweep's train source")
    ap.add_argument("--preset", default="cpu-small", help="the sweep's preset (split, N_real, repeats, total)")
    ap.add_argument("--size", type=int, default=128, help="square working size; 0 keeps the full image")
    ap.add_argument("--restore-aspect", action="store_true",
                    help="after the squash to size², resize back to the source image's aspect ratio (short side = size)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.size < 0 or (0 < a.size < 16) or a.size > 4096:
        raise DataError(f"--size must be 0 (full image) or 16-4096, got {a.size}")
    if a.restore_aspect and not a.size:
        raise DataError("--restore-aspect needs a --size: a full-size pair already has its aspect")
    label = "full size" if not a.size else f"{a.size}²" + (", aspect restored" if a.restore_aspect else "")
    out = Path(a.out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} already holds files: give a new folder")
    cfg = preset(a.preset, train=a.train, train_loras=True)
    src = open_source(cfg.train)
    picks = oracle_indices(cfg, src.metas, a.seed)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("images", "masks", "meta"):
        (tmp / sub).mkdir(parents=True)
    for t, idx in picks.items():
        for i in idx:
            s = src[i]
            if s.mask is None:
                raise DataError(f"{s.name} in {cfg.train} has no mask: the control arm needs annotated pairs")
            stem = Path(s.name).stem
            if a.size:
                rgb = to_model_size(s.image, s.mask, a.size)
                gray, mask = rgb[..., 0], rgb[..., 2] > 127
                if a.restore_aspect:
                    h, w = s.image.shape[:2]
                    hw = (a.size, round(a.size * w / h)) if w >= h else (round(a.size * h / w), a.size)
                    gray = cv2.resize(gray, hw[::-1], interpolation=cv2.INTER_CUBIC)
                    mask = cv2.resize(mask.astype(np.uint8), hw[::-1], interpolation=cv2.INTER_NEAREST) > 0
            else:
                gray, mask = s.image, s.mask.astype(bool)
            atomic_save_png(tmp / "images" / f"{stem}.png", gray)
            atomic_save_png(tmp / "masks" / f"{stem}.png", (mask * 255).astype(np.uint8))
            (tmp / "meta" / f"{stem}.json").write_text(json.dumps(
                {"trimester": t, "origin": f"real {cfg.train} pair (oracle control), {label}"}))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    print(f"{out}: {', '.join(f'{t} {len(v)}' for t, v in picks.items())} real pairs "
          f"({label}) from the train part, none used by a real cell")


if __name__ == "__main__":
    try:
        main()
    except (DataError, FileNotFoundError, ValueError) as e:
        sys.exit(f"oracle_set: {e}")
