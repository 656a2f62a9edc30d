"""Print the filled head's share of the frame per trimester in a data source's train pool: the numbers behind
pipeline/phantom.py's HC18_HEAD_AREA (the "hc18" phantom framing), and the demo phantoms' for comparison.

    python scripts/head_area.py [--data hc18:../shared/data/hc18]

Only the default split's train pool is read (split_indices(..., (0.7, 0.15, 0.15), seed 0)["train"], the pool
the LoRAs draw from): never its test part. Per trimester: n, median share, standard deviation of its log.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import numpy as np

    from pipeline.data import DataError, open_source, split_indices
    from pipeline.masks import TRIMESTERS, trimester_from_ga
    from pipeline.phantom import PhantomSpec, make_phantom, phantom_plan
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="hc18:../shared/data/hc18", help="annotated data spec (default %(default)s)")
    a = p.parse_args(argv)
    try:
        src = open_source(a.data)
    except (DataError, FileNotFoundError) as exc:
        raise SystemExit(str(exc))
    share = {t: [] for t in TRIMESTERS}
    for i in split_indices(src.metas, (0.7, 0.15, 0.15), 0)["train"]:
        t = src.metas[i].trimester
        if t in share:
            share[t].append(float(src[i].mask.mean()))
    demo = {t: [] for t in TRIMESTERS}
    for i, (ga, hc) in enumerate(phantom_plan(300, 0)):
        ph = make_phantom(i, hc_mm=hc, spec=PhantomSpec(size=(288, 192)))
        demo[trimester_from_ga(ga)].append(float(ph.mask.mean()))
    for t in TRIMESTERS:
        v = np.array(share[t])
        if not len(v):
            print(f"{t}: no annotated images in the train pool")
            continue
        print(f"{t}: n {len(v)}, median share {np.median(v):.3f}, log-sd {np.log(v).std():.2f}; "
              f"demo phantoms' median {np.median(demo[t]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
