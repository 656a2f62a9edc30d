"""CLI for the SAM commands (same code as the Playground and Fine-tune SAM tabs):

    python -m pipeline segment --image PATH --box X0 Y0 X1 Y1 [--checkpoint RUN] [--pixel-size MM] --out MASK.png
    python -m pipeline evaluate --data SPEC [--checkpoint RUN] [--limit N] [--seed S] [--ellipse-fit] --json
    python -m pipeline finetune-sam --data SPEC --n-real N [--synthetic SPEC] [--aug none|weak|strong]
                                    [--epochs 20] [--seed S] --out RUN
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..config import SamFinetuneDefaults, add_profile_argument, resolve_profile

_D = SamFinetuneDefaults()


def _model_args(p) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="a fine-tuning run folder or weights file (default: the profile's base model)")
    p.add_argument("--backend", choices=["litemedsam", "vit_b"], default=None,
                   help="SAM back-end (default: the profile's: tiny -> litemedsam, paper -> vit_b)")
    add_profile_argument(p)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")


def add_arguments(p, command: str) -> None:
    if command == "segment":
        p.add_argument("--image", required=True, help="an image file (PNG/JPEG/...)")
        p.add_argument("--box", required=True, nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"),
                       help="box prompt in image pixels")
        p.add_argument("--pixel-size", type=float, default=None, help="mm per pixel, for HC and GA")
        p.add_argument("--out", required=True, help="mask PNG to write (a JSON with box, ellipse, HC beside it)")
        p.add_argument("--ellipse-fit", action="store_true", help="write the fitted filled ellipse as the mask")
        _model_args(p)
    elif command == "export-hc18":
        p.add_argument("--data", required=True, help="hc18:PATH, folder:PATH or phantom[:N[:SEED]]")
        p.add_argument("--out", required=True, help="the CSV to write")
        p.add_argument("--pixel-size", type=float, default=None,
                       help="mm per pixel for images whose source gives none (default: skip them)")
        _model_args(p)
    elif command == "evaluate":
        p.add_argument("--data", required=True, help="hc18:PATH, folder:PATH or phantom[:N[:SEED]]")
        p.add_argument("--limit", type=int, default=None, help="evaluate the first N samples")
        p.add_argument("--seed", type=int, default=0, help="seed of the box jitter")
        p.add_argument("--jitter", type=int, default=_D.box_jitter_px, help="max px added to each box side")
        p.add_argument("--ellipse-fit", action="store_true",
                       help="replace each predicted mask by its fitted filled ellipse")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.add_argument("--split", choices=["all", "train", "val", "test"], default="all",
                       help="evaluate one part of the seeded subject-grouped split (as finetune-sam uses)")
        p.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split")
        p.add_argument("--per-sample", default=None, help="also write per-sample scores to this JSON file")
        _model_args(p)
    elif command == "finetune-sam":
        p.add_argument("--data", required=True, help="real pairs: hc18:PATH, folder:PATH or phantom[:N[:SEED]]")
        p.add_argument("--n-real", type=int, required=True, help="N_real real pairs (nested seeded subsets)")
        p.add_argument("--synthetic", default=None, help="synthetic pairs: folder:PATH")
        p.add_argument("--n-synthetic", type=int, default=None, help="use N synthetic pairs (default all)")
        p.add_argument("--aug", choices=["none", "weak", "strong"], default="none",
                       help="classic augmentation baseline: WA (weak) or SA (strong)")
        p.add_argument("--aug-views", type=int, default=_D.aug_views, help="cached augmented views per image")
        p.add_argument("--recompute", action="store_true",
                       help="no embedding cache: fresh augmentation and encoder pass every step (slow)")
        p.add_argument("--epochs", type=int, default=_D.epochs, help="passes over the training pairs")
        p.add_argument("--batch-size", type=int, default=_D.batch_size, help="pairs per step")
        p.add_argument("--lr", type=float, default=_D.lr, help="Adam learning rate")
        p.add_argument("--weight-decay", type=float, default=_D.weight_decay, help="Adam weight decay")
        p.add_argument("--jitter", type=int, default=_D.box_jitter_px, help="max px added to each box side")
        p.add_argument("--n-val", type=int, default=_D.n_val, help="validation pairs held out (val split)")
        p.add_argument("--seed", type=int, default=0, help="seed of the data order, views and jitter")
        p.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split")
        p.add_argument("--cache-dir", default=None, help="embedding cache (default <out>/../../cache/embeddings)")
        p.add_argument("--out", required=True, help="the run folder (resumed when it exists)")
        p.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run")
        p.add_argument("--json", action="store_true", help="print the final summary as JSON")
        p.add_argument("--backend", choices=["litemedsam", "vit_b"], default=None,
                       help="SAM back-end (default: the profile's)")
        p.add_argument("--base-weights", default=None, help="base weights file (default: the back-end's)")
        p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
        add_profile_argument(p)


def _predictor(args):
    from .predictor import load_predictor
    if args.backend:
        return load_predictor(args.backend, args.checkpoint, args.device)
    return load_predictor(resolve_profile(args.profile), args.checkpoint, args.device)


def run(args) -> int:
    return {"segment": _segment, "evaluate": _evaluate, "finetune-sam": _finetune,
            "export-hc18": _export_hc18}[args.command](args)


def _export_hc18(args) -> int:
    from tqdm import tqdm
    from ..measure import export_folder_hc18
    bar = tqdm(total=None, desc="segment", unit="img", file=sys.stderr, disable=None)

    def progress(i, n):
        bar.total = n
        bar.update(i + 1 - bar.n)
    res = export_folder_hc18(_predictor(args), args.data, args.out, args.pixel_size, progress=progress)
    bar.close()
    for s in res["skipped"][:20]:
        print(f"skipped {s}", file=sys.stderr)
    print(f"wrote {res['rows']} rows to {res['csv']} ({len(res['skipped'])} skipped)")
    return 0


def _segment(args) -> int:
    from ..data import read_gray
    from ..fileio import atomic_save_png, atomic_write_json
    from .evaluate import segment
    image = read_gray(args.image)
    seg = segment(_predictor(args), image, args.box, args.pixel_size)
    out = Path(args.out)
    mask = seg.ellipse_mask if (args.ellipse_fit and seg.ellipse_mask is not None) else seg.mask
    atomic_save_png(out, mask)
    from ..measure import ellipse_record
    info = {"image": str(args.image), "checkpoint": args.checkpoint, **seg.as_dict(),
            "ellipse_fit": bool(args.ellipse_fit),
            **ellipse_record(seg.ellipse, args.pixel_size)}  # px and mm, BPD / OFD, the GA formula
    atomic_write_json(out.with_suffix(".json"), info)
    print(json.dumps(info))
    return 0


def _evaluate(args) -> int:
    from tqdm import tqdm
    from ..fileio import atomic_write_json
    from .evaluate import evaluate
    pred = _predictor(args)
    bar = tqdm(total=None, desc="evaluate", unit="img", file=sys.stderr, disable=None)

    def progress(i, n):
        bar.total = n
        bar.update(i - bar.n)
    res = evaluate(pred, args.data, args.limit, args.seed, args.ellipse_fit, args.jitter, progress=progress,
                   split=args.split, split_seed=args.split_seed)
    bar.close()
    per = res.pop("per_sample")
    if args.per_sample:
        atomic_write_json(args.per_sample, per)
    if args.json:
        print(json.dumps(res))
    else:
        hc = res["hc_abs_error_mm_median"]
        print(f"n={res['n']}  Dice {res['dice_mean']:.4f} ± {res['dice_std']:.4f}  "
              f"HC |error| median {'n/a' if hc is None else f'{hc:.2f} mm'}")
    return 0


def config_from_args(args):
    from .finetune import FinetuneConfig
    prof = resolve_profile(args.profile)
    backend, weights = prof.sam_model(args.backend)
    base = args.base_weights or weights
    return FinetuneConfig(data=args.data, n_real=args.n_real, synthetic=args.synthetic,
                          n_synthetic=args.n_synthetic, aug=args.aug, aug_views=args.aug_views,
                          cache_embeddings=not args.recompute, epochs=args.epochs, batch_size=args.batch_size,
                          lr=args.lr, weight_decay=args.weight_decay, box_jitter_px=args.jitter,
                          seed=args.seed, split_seed=args.split_seed, n_val=args.n_val, backend=backend,
                          base_weights=base, cache_dir=args.cache_dir, device=args.device)


def _finetune(args) -> int:
    from tqdm import tqdm
    from .finetune import finetune
    cfg = config_from_args(args)
    prep = bar = None
    summary = {}
    for ev in finetune(cfg, args.out, resume=not args.no_resume):
        k = ev["kind"]
        if k == "prepare":
            if prep is None:
                prep = tqdm(total=ev["total"], desc="embeddings", unit="img", file=sys.stderr)
            prep.update(ev["done"] - prep.n)
        elif k in ("warning", "resume"):
            print(f"{k}: {ev['message']}", file=sys.stderr)
        elif k == "step":
            if bar is None:
                if prep is not None:
                    prep.close()
                bar = tqdm(total=ev["steps_per_epoch"] * ev["epochs"], initial=ev["step"] - 1,
                           desc="fine-tune", unit="step", file=sys.stderr)
            bar.update(1)
            bar.set_postfix(epoch=ev["epoch"], loss=f"{ev['loss']:.4f}")
        elif k == "epoch":
            msg = f"epoch {ev['epoch']}: val Dice {ev['val_dice']:.4f}" + (" (best)" if ev["best"] else "")
            if bar is not None:
                bar.write(msg, file=sys.stderr)
            else:
                print(msg, file=sys.stderr)
        elif k == "done":
            summary = ev
    if bar:
        bar.close()
    line = (f"best val Dice {summary['best_val_dice']:.4f} (epoch {summary['best_epoch']}), zero-shot "
            f"{summary['zero_shot_val_dice']:.4f}; run folder {summary['run_dir']}"
            + ("  [stopped: run again to resume]" if summary.get("stopped") else ""))
    print(json.dumps(summary) if args.json else line)
    return 0
