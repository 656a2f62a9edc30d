"""Do synthetic masks sit on the head the way real annotations do, as SAM sees them?

For each image+mask pair, LiteMedSAM is prompted with the mask's box; prints the median of area(SAM) / area(mask)
and the mean Dice, for a synthetic folder (`folder:` layout, e.g. a sweep's `synthetic/`) and for real pairs
squashed to the generator's size. A systematic difference would be a boundary bias the decoder could learn.

    python scripts/mask_bias.py outputs/sweeps/run4C-g2-n5/synthetic --real hc18:../shared/data/hc18 --n-real 48
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.data import DataError, open_source  # noqa: E402
from pipeline.diffusion.base import to_model_size  # noqa: E402
from pipeline.diffusion.generate import qc_predictor  # noqa: E402
from pipeline.masks import mask_bbox  # noqa: E402
from pipeline.metrics import dice  # noqa: E402


def stats(pred, pairs) -> str:
    ratio, d = [], []
    for gray, mask in pairs:
        pred.set_image(gray)
        sam = pred.predict(box=mask_bbox(mask)).astype(bool)
        ratio.append(sam.sum() / max(1, mask.sum()))
        d.append(dice(sam, mask))
    q1, med, q3 = np.percentile(ratio, [25, 50, 75])
    return f"n={len(ratio)} area SAM/mask median {med:.3f} (IQR {q1:.3f}-{q3:.3f}), Dice mean {np.mean(d):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("synthetic", help="folder: layout with images/ and masks/")
    ap.add_argument("--real", default="hc18:../shared/data/hc18")
    ap.add_argument("--n-real", type=int, default=48)
    ap.add_argument("--size", type=int, default=128, help="the generator's working size")
    a = ap.parse_args()
    pred = qc_predictor()
    syn = open_source(f"folder:{a.synthetic}")
    print("synthetic", stats(pred, ((s.image, s.mask.astype(bool)) for s in (syn[i] for i in range(len(syn))))),
          flush=True)
    real = open_source(a.real)
    idx = np.linspace(0, len(real) - 1, a.n_real).round().astype(int)

    def real_pairs():
        for i in idx:
            s = real[int(i)]
            rgb = to_model_size(s.image, s.mask, a.size)
            yield rgb[..., 0], rgb[..., 2] > 127
    print(f"real at {a.size}²", stats(pred, real_pairs()), flush=True)


if __name__ == "__main__":
    try:
        main()
    except (DataError, FileNotFoundError, ValueError) as e:
        sys.exit(f"mask_bias: {e}")
