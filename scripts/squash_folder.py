"""Squash every image of a folder to SIZE² (INTER_AREA), as the model sees it, into another folder.

    python scripts/squash_folder.py ../shared/data/hc18/test_set /tmp/test_set_256 256

Stage 9 of the tiny base (docs/lab/2026-11-pretraining.md) pretrained on the HC18 test set squashed so: 9.6 MiB instead of
43, so the images fit, with the repository, into the 64 MiB a GPU machine is sent. View 0 at 256² and 128²
is then what the full-size image gives; the seeded zoom/rotation views are drawn on the squashed image.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import cv2

    from pipeline.data import read_gray
    from pipeline.diffusion.pretrain import unlabelled_files
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or not args[2].isdigit() or not 8 <= int(args[2]) <= 2048:
        raise SystemExit("usage: python scripts/squash_folder.py SRC DST SIZE (SIZE 8..2048)")
    src, dst, size = Path(args[0]), Path(args[1]), int(args[2])
    if dst.resolve() == src.resolve():
        raise SystemExit("DST must be another folder than SRC: the originals are never overwritten")
    dst.mkdir(parents=True, exist_ok=True)
    files = unlabelled_files(src)
    for f in files:
        g = cv2.resize(read_gray(f), (size, size), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(dst / (f.stem + ".png")), g, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{len(files)} images squashed to {size}² in {dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
