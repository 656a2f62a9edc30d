"""Two raw sample folders of the same seeds side by side (e.g. ellipse guidance off / on): each row shows the image
with the extracted ellipse and the mask channel, for A then B, with the Ellipse Extractor's verdict. Rows whose
verdict differs come first, then unchanged ones, up to --rows.

    python scripts/compare_raw.py OFF_RAW ON_RAW --labels off on --rows 8 --out docs/ellipse_guidance.png
"""
import argparse
import re
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.fileio import atomic_write_bytes  # noqa: E402
from pipeline.masks import extract_ellipse, overlay, split_channels  # noqa: E402


def seeds(folder: Path) -> dict[int, Path]:
    out = {}
    for f in sorted(folder.glob("*.png")):
        m = re.search(r"_s(\d+)\.png$", f.name)
        if m:
            out[int(m.group(1))] = f
    return out


def panel(path: Path, scale: int):
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    gray, blue = split_channels(rgb)
    ex = extract_ellipse(blue)
    pics = [overlay(gray, None, 0, ellipse=ex.ellipse), np.repeat(blue[..., None], 3, axis=2)]
    pics = [cv2.resize(p, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for p in pics]
    return np.concatenate(pics, 1), ex


def label(pic, text, ok):
    bar = np.full((18, pic.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text[:48], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 120, 0) if ok else (200, 0, 0), 1,
                cv2.LINE_AA)
    return np.concatenate([bar, pic], 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--labels", nargs=2, default=["A", "B"])
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--scale", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    sa, sb = seeds(Path(args.a)), seeds(Path(args.b))
    common = sorted(set(sa) & set(sb))
    if not common:
        print(f"no seed is in both {args.a} and {args.b}", file=sys.stderr)
        return 2
    rows = []
    for s in common:
        (pa, ea), (pb, eb) = panel(sa[s], args.scale), panel(sb[s], args.scale)
        row = np.concatenate([label(pa, f"{args.labels[0]} s{s}: {ea.reason.split(':')[0]}", ea.valid),
                              np.full((pa.shape[0] + 18, 6, 3), 255, np.uint8),
                              label(pb, f"{args.labels[1]}: {eb.reason.split(':')[0]}", eb.valid)], 1)
        rows.append((ea.valid == eb.valid, s, row))
    rows.sort(key=lambda r: (r[0], r[1]))
    picked = [r[2] for r in rows[:args.rows]]
    changed = sum(not r[0] for r in rows)
    im = np.concatenate(picked, 0)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    atomic_write_bytes(args.out, buf.tobytes())
    print(f"{args.out}: {len(picked)} rows; the verdict differs for {changed} of {len(common)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
