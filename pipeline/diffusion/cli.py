"""CLI for the diffusion half: pretrain-base, train-lora, generate (same code as the tabs)."""
from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(p, command: str) -> None:
    if command == "pretrain-base":
        from .pretrain import PretrainConfig
        d = PretrainConfig()
        p.add_argument("--out", required=True, help="output folder (diffusers layout), e.g. assets/tiny-base")
        p.add_argument("--work", default=None, help="checkpoint folder (default: .OUT-work beside --out); "
                                                     "rerunning resumes from it")
        helps = {"n_phantoms": "phantom images to pretrain on", "vae_steps": "autoencoder (VAE) training steps",
                 "unet_steps": "UNet + text encoder training steps", "vae_batch": "VAE crops per step",
                 "unet_batch": "UNet images per step", "seed": "seed of the phantoms, init and noise",
                 "ckpt_every": "save a resumable checkpoint every N steps"}
        for k, h in helps.items():
            p.add_argument(f"--{k.replace('_', '-')}", type=int, default=getattr(d, k), help=h)
        p.add_argument("--export-only", action="store_true",
                       help="save the work folder's current checkpoint to --out and exit (look at a run mid-way)")
        p.add_argument("--no-bf16", action="store_true", help="train in fp32 (bf16 autocast is ~3x faster on CPUs with AMX)")
    elif command == "train-lora":
        from .lora import add_lora_arguments
        add_lora_arguments(p)
    elif command == "generate":
        from .generate import add_generate_arguments
        add_generate_arguments(p)


def run(args) -> int:
    if args.command == "pretrain-base":
        return _pretrain(args)
    if args.command == "train-lora":
        from .lora import run_cli
        return run_cli(args)
    if args.command == "generate":
        from .generate import run_cli
        return run_cli(args)
    raise SystemExit(f"unknown command {args.command}")


def _pretrain(args) -> int:
    from tqdm import tqdm

    from .pretrain import PretrainConfig, export_checkpoint, pretrain
    if args.export_only:
        work = args.work or str(Path(args.out).parent / f".{Path(args.out).name}-work")
        print(f"exported {export_checkpoint(work, args.out)}")
        return 0
    cfg = PretrainConfig(n_phantoms=args.n_phantoms, vae_steps=args.vae_steps, unet_steps=args.unet_steps,
                         vae_batch=args.vae_batch, unet_batch=args.unet_batch, seed=args.seed,
                         ckpt_every=args.ckpt_every, bf16=not args.no_bf16)
    bar = None
    for ev in pretrain(cfg, Path(args.out), args.work):
        if ev["kind"] == "stage":
            if bar is not None:
                bar.close()
            print(f"stage {ev['stage']}: " + ", ".join(f"{k}={v}" for k, v in ev.items() if k not in ("kind", "stage")),
                  flush=True)
            bar = tqdm(total=ev.get("total"), initial=ev.get("step", 0), desc=ev["stage"], file=sys.stdout,
                       mininterval=5) if ev.get("total") else None
        elif ev["kind"] == "step" and bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{ev['loss']:.4f}", refresh=False)
        elif ev["kind"] == "done":
            if bar is not None:
                bar.close()
            print(f"saved the tiny base to {ev['out']} ({ev['minutes']:.1f} min)")
    return 0
