"""Measure a base's latent calibration (pipeline/diffusion/calibration.py) and print it as JSON.

    python scripts/latent_calibration.py --base assets/tiny-base --lora-prefix outputs/eval/run4C/lora- \
        [--real hc18:../shared/data/hc18] [--seed 0] [--n 32] [--json out.json]

Per trimester, the encoder latents (posterior mean, scaled) of the images each LoRA trained on against the
UNet's final latents of N samples with that LoRA (seeds SEED..SEED+N-1, at the base's guidance, UniPC 20
steps, LoRA scale 0.9); pooled over the three trimesters, per channel: center = the generated mean,
scale = real std / generated std. Only LoRA training images are read: never an image the realism report
compares against. Paste the printed "latent_calibration" into the base's sonosynth_sampling.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="assets/tiny-base", help="a diffusers base folder")
    p.add_argument("--lora-prefix", required=True, help="LoRA folders PREFIX{first,second,third}")
    p.add_argument("--real", default="hc18:../shared/data/hc18", help="the data the LoRAs trained on (data spec)")
    p.add_argument("--seed", type=int, default=0, help="first seed of the samples (default 0: not an eval seed)")
    p.add_argument("--n", type=int, default=32, help="samples per trimester (default 32)")
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args(argv)
    if not 4 <= a.n <= 1000:
        raise SystemExit(f"--n must be 4..1000, not {a.n}")
    if a.seed < 0:
        raise SystemExit(f"--seed must be >= 0, not {a.seed}")
    from pipeline.data import DataError, open_source
    from pipeline.masks import TRIMESTERS
    from pipeline.diffusion.realism import lora_training_names
    loras = {t: f"{a.lora_prefix}{t}" for t in TRIMESTERS}
    try:
        names = {t: lora_training_names(d)[0] for t, d in loras.items()}
        src = open_source(a.real)
    except DataError as exc:
        raise SystemExit(str(exc))

    import torch

    from pipeline.diffusion.base import base_guidance, prompt_for, rgb_to_tensor, to_model_size
    from pipeline.diffusion.calibration import KEY, LatentCalibration
    from pipeline.diffusion.generate import get_pipeline
    guidance = base_guidance(a.base)
    real, gen, per = [], [], {}
    for t in TRIMESTERS:
        try:
            idx = [src.index_of(n) for n in names[t]]
        except (KeyError, ValueError, DataError) as exc:
            raise SystemExit(f"{loras[t]} trained on images that {a.real} does not hold ({exc})")
        try:
            pipe = get_pipeline(a.base, loras[t], 0.9)
        except (FileNotFoundError, ValueError) as exc:
            raise SystemExit(str(exc))
        res = int(pipe.unet.config.sample_size) * pipe.vae_scale_factor
        x = [to_model_size(src[i].image, src[i].mask, res) for i in idx]
        with torch.no_grad():
            zr = pipe.vae.encode(rgb_to_tensor(x)).latent_dist.mean * pipe.vae.config.scaling_factor
            gens = [torch.Generator("cpu").manual_seed(a.seed + s) for s in range(a.n)]
            zg = pipe([prompt_for(t)] * a.n, num_inference_steps=20, guidance_scale=guidance, generator=gens,
                      output_type="latent").images
        per[t] = LatentCalibration.measure(zr, zg).as_dict()
        print(t, json.dumps(per[t]), flush=True)
        real.append(zr)
        gen.append(zg)
    cal = LatentCalibration.measure(torch.cat(real), torch.cat(gen))
    out = {KEY: cal.as_dict(), "per_trimester": per,
           "measured": f"scripts/latent_calibration.py --base {a.base} --lora-prefix {a.lora_prefix} "
                       f"--seed {a.seed} --n {a.n}: the LoRAs' {sum(len(v) for v in names.values())} training "
                       f"images vs {a.n} samples per trimester, guidance {guidance:g}"}
    print(json.dumps(out, indent=1))
    if a.json:
        from pipeline.fileio import atomic_write_json
        atomic_write_json(a.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
