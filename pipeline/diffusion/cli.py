"""CLI for the diffusion half: pretrain-base, train-lora, generate (same code as the tabs)."""
from __future__ import annotations

import sys
import time
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
                 "unet_batch": "UNet images per step", "vae_crop": "VAE training crop size (px)",
                 "seed": "seed of the phantoms, init and noise",
                 "ckpt_every": "save a resumable checkpoint every N steps"}
        for k, h in helps.items():
            p.add_argument(f"--{k.replace('_', '-')}", type=int, default=getattr(d, k), help=h)
        p.add_argument("--phantom-framing", choices=("demo", "hc18"), default=d.phantom_framing,
                       help="how large a trimester's phantom heads are: demo (9 / 13 / 19 %% of the frame) or hc18 "
                            "(drawn from HC18's own shares, 14 / 33 / 34 %%; default %(default)s)")
        p.add_argument("--phantom-balance", action="store_true",
                       help="the three trimesters in turn among the phantoms (default: gestational age uniform over "
                            "11.5-40 weeks, so 8 %% first-trimester phantoms)")
        p.add_argument("--export-only", action="store_true",
                       help="save the work folder's current checkpoint to --out and exit (look at a run mid-way)")
        p.add_argument("--no-bf16", action="store_true",
                       help="train in fp32 (default: bf16 autocast only where the CPU has native bf16 — AMX or "
                            "AVX512-BF16 — where it is ~3x faster; elsewhere it is far slower)")
        p.add_argument("--unlabelled", default=None, metavar="DIR",
                       help="folder of UNLABELLED real ultrasound images to learn the look from (e.g. "
                            "../shared/data/hc18/test_set); never a folder of annotated or evaluation images")
        p.add_argument("--exclude", action="append", default=[], metavar="SPEC",
                       help="data source whose images must not be among the unlabelled ones (checked pixel for "
                            "pixel; repeatable), e.g. hc18:../shared/data/hc18")
        p.add_argument("--init-base", default=None, metavar="DIR", help="start from this base folder's weights")
        p.add_argument("--vae-train", choices=("all", "decoder"), default=d.vae_train,
                       help="train the whole VAE, or only its decoder (keeps --init-base's latent space)")
        p.add_argument("--real-views", type=int, default=d.real_views, help="seeded views per unlabelled image")
        p.add_argument("--real-frac", type=float, default=d.real_frac,
                       help="share of each batch from unlabelled images (default %(default)s)")
        p.add_argument("--vae-lr", type=float, default=d.vae_lr, help="VAE learning rate (default %(default)s)")
        p.add_argument("--unet-lr", type=float, default=d.unet_lr, help="UNet learning rate (default %(default)s)")
        p.add_argument("--judge", default=None, metavar="SPEC",
                       help="real image+mask pairs to REPORT the VAE's reconstruction on (never trained on)")
        p.add_argument("--latent-channels", type=int, default=d.latent_channels,
                       help="VAE latent channels (SD: 4; more keeps more speckle; default %(default)s)")
        p.add_argument("--vae-adv-weight", type=float, default=d.vae_adv_weight,
                       help="factor on the adaptive weight of a patch discriminator's loss on the decoded image "
                            "(0 = off; latent-diffusion used 0.5; default %(default)s): pixel losses alone make "
                            "the decoder blur speckle")
        p.add_argument("--vae-adv-start", type=int, default=d.vae_adv_start,
                       help="VAE step from which the discriminator pulls on the decoder (default %(default)s)")
        p.add_argument("--disc-lr", type=float, default=d.disc_lr,
                       help="discriminator learning rate (default %(default)s)")
        p.add_argument("--vae-ema-decay", type=float, default=d.vae_ema_decay,
                       help="save an EMA of the VAE's trained weights with this decay (0 = off; default %(default)s)")
        p.add_argument("--vae-echo-weight", type=float, default=d.vae_echo_weight,
                       help="weigh the VAE's pixel L1 by 1 + this x the target's brightness, so the bright skull "
                            "echo is kept (0 = off; default %(default)s)")
        p.add_argument("--vae-unet-latents", type=float, default=d.vae_unet_latent_frac, metavar="FRAC",
                       help="share of each decoder batch decoded from the init base's UNet's one-step estimate of "
                            "its noised latent instead of the encoder's latent, so the decoder learns the latents "
                            "it will decode when sampling (needs --vae-train decoder; 0 = off; default %(default)s)")
        p.add_argument("--vae-unet-t-max", type=int, default=d.vae_unet_t_max,
                       help="highest noise level (of 1000) of those estimates (default %(default)s)")
        p.add_argument("--ema-decay", type=float, default=d.ema_decay, help="UNet EMA decay (default %(default)s)")
        p.add_argument("--extra-resolutions", type=int, nargs="+", default=list(d.extra_resolutions), metavar="R",
                       help="further sizes the UNet also trains at, one per step in turn with the same pixels per "
                            "batch (e.g. 256: a base for the detail pass); the base keeps its own size")
        p.add_argument("--device", default=d.device, help="auto (CUDA where there is one), cpu or cuda[:N]")
        p.add_argument("--workers", type=int, default=d.workers, help="processes drawing the phantoms")
        p.add_argument("--max-minutes", type=float, default=None,
                       help="stop after this many minutes with a checkpoint; the same command resumes")
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
        return _generate(args)
    raise SystemExit(f"unknown command {args.command}")


def _pretrain(args) -> int:
    from tqdm import tqdm

    from .pretrain import PretrainConfig, export_checkpoint, pretrain
    if args.export_only:
        work = args.work or str(Path(args.out).parent / f".{Path(args.out).name}-work")
        print(f"exported {export_checkpoint(work, args.out)}")
        return 0
    cfg = PretrainConfig(n_phantoms=args.n_phantoms, phantom_framing=args.phantom_framing,
                         phantom_balance=args.phantom_balance, vae_steps=args.vae_steps, unet_steps=args.unet_steps,
                         vae_batch=args.vae_batch, unet_batch=args.unet_batch, vae_crop=args.vae_crop, seed=args.seed,
                         ckpt_every=args.ckpt_every, bf16=False if args.no_bf16 else "auto",
                         unlabelled=args.unlabelled, exclude=tuple(args.exclude), init_base=args.init_base,
                         vae_train=args.vae_train, real_views=args.real_views, real_frac=args.real_frac,
                         vae_lr=args.vae_lr, unet_lr=args.unet_lr, judge=args.judge,
                         latent_channels=args.latent_channels, ema_decay=args.ema_decay, device=args.device,
                         vae_adv_weight=args.vae_adv_weight, vae_adv_start=args.vae_adv_start, disc_lr=args.disc_lr,
                         vae_ema_decay=args.vae_ema_decay, vae_echo_weight=args.vae_echo_weight,
                         vae_unet_latent_frac=args.vae_unet_latents, vae_unet_t_max=args.vae_unet_t_max,
                         workers=args.workers, extra_resolutions=tuple(args.extra_resolutions))
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise SystemExit(f"--max-minutes must be positive, not {args.max_minutes}")
    t0 = time.time()
    stop = (lambda: time.time() - t0 > args.max_minutes * 60) if args.max_minutes else None
    bar = None
    for ev in pretrain(cfg, Path(args.out), args.work, stop=stop):
        if ev["kind"] == "stage":
            if bar is not None:
                bar.close()
            print(f"stage {ev['stage']}: " + ", ".join(f"{k}={v}" for k, v in ev.items() if k not in ("kind", "stage")),
                  flush=True)
            bar = tqdm(total=ev.get("total"), initial=ev.get("step", 0), desc=ev["stage"], file=sys.stdout,
                       mininterval=5) if ev.get("total") else None
        elif ev["kind"] == "step" and bar is not None:
            bar.update(1)
            adv = {k: f"{ev[k]:.3f}" for k in ("g_adv", "adv_w", "d_loss") if k in ev}
            bar.set_postfix(loss=f"{ev['loss']:.4f}", **adv, refresh=False)
        elif ev["kind"] == "judge":
            print(f"\nVAE on real pairs it never trained on: " + ", ".join(f"{k}={v}" for k, v in ev.items()
                                                                        if k not in ("kind", "stage")), flush=True)
        elif ev["kind"] == "stopped":
            if bar is not None:
                bar.close()
            print(f"\nstopped after {args.max_minutes} min at {ev['stage']} step {ev['step']} with a checkpoint; "
                  f"the same command resumes", flush=True)
        elif ev["kind"] == "done":
            if bar is not None:
                bar.close()
            print(f"saved the tiny base to {ev['out']} ({ev['minutes']:.1f} min)")
    return 0


def _generate(args) -> int:
    from dataclasses import asdict

    from tqdm import tqdm

    from ..config import resolve_profile
    from ..fileio import atomic_write_json
    from .generate import GenerateConfig, summarize
    profile = resolve_profile(args.profile)
    cfg = GenerateConfig.for_profile(profile, trimester=args.trimester, n=args.n, lora=args.lora,
                         base=profile.diffusion(args.base), seed=None if args.seed is not None and args.seed < 0 else args.seed, steps=args.steps,
                         lora_scale=args.scale, guidance=args.guidance, batch_size=args.batch_size,
                         threshold=args.threshold, qc=not args.no_qc, precision=args.precision,
                         calibrate=not args.no_calibration, detail_lora=args.detail_lora,
                         detail_strength=args.detail_strength, restore_aspect=args.restore_aspect,
                         out_size=args.out_size, ellipse_guidance=args.ellipse_guidance, guidance_until=args.guidance_until)
    from .dataset import fill  # the fill loop files what generate() draws (dataset.py imports generate)
    out = Path(args.out)
    samples, accepted = [], 0
    bar = tqdm(total=cfg.n, desc="generate", file=sys.stdout)
    t0 = time.time()
    for ev in fill(out, cfg, min_qc=args.min_qc):
        if ev["kind"] != "sample":
            continue
        samples.append(ev["sample"])
        accepted += ev["accepted"]
        bar.update(1)
        bar.set_postfix(valid=sum(s.valid for s in samples), accepted=accepted, refresh=False)
    bar.close()
    summary = {**summarize(samples), "accepted": accepted, "seconds": round(time.time() - t0, 2),
               "config": asdict(cfg), "min_qc": args.min_qc}
    atomic_write_json(out / "generation_summary.json", summary)
    print(f"{accepted}/{len(samples)} pairs accepted into {out} ({summary['valid']} valid ellipses"
          + (f", mean QC {summary['mean_qc']:.3f}" if summary["mean_qc"] is not None else "") + ")")
    return 0

