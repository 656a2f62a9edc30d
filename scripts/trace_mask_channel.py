"""Trace the in-channel mask while sampling: after every step, how many pixels of the B channel of the sampler's
decoded clean estimate are above half (the model's current head), per seed. Shows where a headless sample
loses its head (docs/lab/2026-11-pretraining.md, 2026-11-27 late night: without classifier-free guidance every traced
first-trimester seed loses it, at guidance 3 none does).

    python scripts/trace_mask_channel.py --lora outputs/eval/run4C/lora-first --seeds 1015,2000,1001 \
        [--base assets/tiny-base] [--trimester first] [--guidance 3] [--guidance-until 0.6] [--ellipse-guidance off]

Unset settings are the base's own (base.BaseSampling.of). Each value is the estimate before that step's
ellipse guidance.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="assets/tiny-base", help="a diffusers base folder (default %(default)s)")
    p.add_argument("--lora", required=True, help="a LoRA folder")
    p.add_argument("--trimester", default="first", choices=("first", "second", "third"))
    p.add_argument("--seeds", required=True, help="comma-separated seeds, e.g. 1015,2000")
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--guidance-until", type=float, default=None)
    p.add_argument("--ellipse-guidance", default=None, help="'off' or fractions, e.g. 0.2,0.4,0.6")
    a = p.parse_args(argv)
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds: comma-separated integers, got {a.seeds!r}") from None
    if not 1 <= len(seeds) <= 64 or min(seeds) < 0:
        raise SystemExit("--seeds: 1 to 64 seeds, each >= 0")
    import torch

    from pipeline.diffusion.base import BaseSampling, prompt_for
    from pipeline.diffusion.generate import get_pipeline, run_pipeline
    try:
        sampling = BaseSampling.of(a.base, guidance=a.guidance, guidance_until=a.guidance_until,
                                   ellipse_guidance=a.ellipse_guidance)
        pipe = get_pipeline(a.base, a.lora)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise SystemExit(str(exc)) from None
    rows = {s: [] for s in seeds}
    frame = {}
    kwargs = sampling.pipe_kwargs

    def traced() -> dict:
        out = kwargs()
        then = out.get("callback_on_step_end")

        def callback(pipe, i, t, kw):
            x0 = pipe.scheduler.model_outputs[-1].float()
            with torch.no_grad():
                img = pipe.vae.decode(x0 / pipe.vae.config.scaling_factor).sample.float()
            blue = ((img[:, 2] + 1) / 2 > 0.5).sum(dim=(1, 2))
            frame["pixels"] = int(img.shape[-1] * img.shape[-2])
            for k, s in enumerate(seeds):
                rows[s].append(int(blue[k]))
            return then(pipe, i, t, kw) if then is not None else {}
        out["callback_on_step_end"] = callback
        return out
    object.__setattr__(sampling, "pipe_kwargs", traced)  # BaseSampling is frozen: wrap this instance only
    run_pipeline(pipe, prompt_for(a.trimester), seeds, 20, sampling)
    print(f"{sampling.record()}\nseed: mask pixels (of {frame['pixels']}) after steps 1..20")
    for s in seeds:
        print(s, " ".join(map(str, rows[s])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
