"""`python -m pipeline bench diffusion [--json]`: LoRA step time (cached vs reference) and generation
throughput (batched vs one call per image), on the profile's base (tiny: assets/tiny-base).

- lora_step_cached_s: median seconds per LoRA step with latents + prompt embedding encoded once;
- lora_step_reference_s: the same step done the way diffusers' train_text_to_image_lora.py does it: its
  dataset decodes the stored image, transforms it and tokenizes the caption on every fetch, then the step
  re-encodes images (VAE) and prompt (text encoder);
- lora_step_reference_encode_only_s: the reference without the per-step decode/transform/tokenize (VAE +
  text encoder only), so the speedup can be read both ways (lora_speedup, lora_speedup_encode_only);
- omp_wait_policy: how OpenMP threads waited (chosen at start-up from the load, see pipeline/__init__.py);
  spinning (quiet machine) vs passive (busy machine) changes these small-op-bound timings ~1.8x;
- gen_single_img_per_s: one pipeline call per image (the seed code's loop);
- gen_batched_img_per_s: one call for the whole batch (per-image seeded generators);
- gen_batched_unfused_img_per_s, gen_fused_speedup: the same batch with the LoRA left in peft's layers
  instead of fused into the weights as get_pipeline does (interleaved pairs; the median ratio);
- gen_guidance: the guidance generate() uses by default (the base's own, base.base_guidance);
- gen_ellipse_guidance: the ellipse guidance generate() uses by default (base.base_ellipse_guidance), part of
  every generation call timed here; gen_batched_ellipse_off_img_per_s and gen_ellipse_guidance_cost: the same
  batch without it (interleaved pairs; the median share of throughput it costs);
- gen_guidance_until: the share of the steps generate() guides by default (base.base_guidance_until); below 1,
  gen_batched_guided_every_step_img_per_s and gen_guidance_until_speedup: the same batch guided at every
  step (interleaved pairs; the median ratio).
- pair_s_own_size, pair_s_default, pair_default_cost: seconds per finished pair (sampled, extracted, QC'd
  and written) at the sample's own size (128² on the tiny base) and at the default out_size (256²), and the
  median ratio of the two (interleaved rounds).
`--resolution R` trains (cached steps only) and samples (batched only) at R² instead of the base's own size:
what a larger working size would cost on this machine. Timings only: a base samples well only at its size.
Both generation modes run in the same precision (gen_precision: bf16 autocast on CPUs with native bf16,
as generate() does by default; `--precision weights` for fp32): batching is what is compared.
Training images are 20 phantoms (no real data needed); generation uses the LoRA trained here, scale 0.9.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace

import numpy as np


def _step_times(cfg, out, images, pipe) -> list[float]:
    from .lora import train_lora
    times, last = [], None
    for ev in train_lora(cfg, out, resume=False, pipe=pipe, images=images):
        if ev["kind"] == "step":
            now = time.perf_counter()
            if last is not None:
                times.append(now - last)
            last = now
    return times


def run_bench(args) -> dict:
    import torch

    from ..process import OMP_WAIT_POLICY_CHOICE
    from ..data import open_source
    from .base import BaseSampling, base_resolution, load_pipeline, prompt_for, to_model_size
    from .generate import clear_pipelines, get_pipeline, resolve_precision, run_pipeline
    from .lora import WEIGHTS, LoraTrainConfig
    torch.set_num_threads(2)
    repeats = max(int(getattr(args, "repeats", 5) or 5), 3)
    src = open_source("phantom:20")
    base = getattr(args, "base", None) or None
    probe = load_pipeline(base)
    native = base_resolution(probe)
    res = int(getattr(args, "resolution", None) or native)
    if res % 8 or not 32 <= res <= 2048:
        from ..data import DataError
        raise DataError(f"--resolution must be a multiple of 8 from 32 to 2048, got {res}")
    other = res != native  # cost only: the reference pipelines and the unfused A/B are at the base's size
    images = np.stack([to_model_size(s.image, s.mask, res) for s in src])
    del probe
    fig: dict = {"base": str(base or "profile default"), "resolution": res, "base_resolution": native,
                 "threads": torch.get_num_threads(), "omp_wait_policy": OMP_WAIT_POLICY_CHOICE}
    size = res if other else None
    with tempfile.TemporaryDirectory() as tmp:
        steps = repeats * 3 + 2
        for name, cached, decodes in (("reference", False, True), ("reference_encode_only", False, False),
                                      ("cached", True, True)):
            if other and not cached:
                continue
            cfg = LoraTrainConfig(steps=steps, cached=cached, reference_decodes=decodes, save_every=1_000_000,
                                  preview_every=0, names=[f"phantom_{i}" for i in range(len(images))])
            # fresh base each time: add_adapter must start from clean weights
            t = _step_times(cfg, f"{tmp}/lora_{name}", images, load_pipeline(base, dtype=torch.float32))
            fig[f"lora_step_{name}_s"] = float(np.median(t[1:]))  # first interval: warm-up
        if not other:
            fig["lora_speedup"] = fig["lora_step_reference_s"] / fig["lora_step_cached_s"]
            fig["lora_speedup_encode_only"] = fig["lora_step_reference_encode_only_s"] / fig["lora_step_cached_s"]
        fig["lora_300_steps_min"] = 300 * fig["lora_step_cached_s"] / 60

        clear_pipelines()
        pipe = get_pipeline(base, f"{tmp}/lora_cached", 0.9)
        prompt = prompt_for("second")
        n = 8

        precision = getattr(args, "precision", None) or "auto"
        fig["gen_precision"] = resolve_precision(precision, pipe.device)

        sampling = BaseSampling.of(base)  # what generate() uses by default
        fig["gen_guidance"] = sampling.guidance
        fig["gen_ellipse_guidance"] = sampling.record()["ellipse_guidance"]
        fig["gen_guidance_until"] = sampling.guidance_until

        def call(seeds, how=sampling, p=pipe):  # the call generate() makes, in the same precision for all modes
            run_pipeline(p, prompt, seeds, 20, how, precision, size)
        call([0])  # warm-up
        single, batched = [], []
        for r in range(max(1, repeats // 2)):
            if not other:
                t0 = time.perf_counter()
                for s in range(n):
                    call([s])
                single.append(n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            call(list(range(n)))
            batched.append(n / (time.perf_counter() - t0))
        fig["gen_batch_size"] = n
        fig["gen_batched_img_per_s"] = float(np.median(batched))
        def against_default(other_call) -> list[tuple[float, float]]:
            """(img/s of other_call, img/s of the default call) for the batch, interleaved pairs, so a change
            in load hits both."""
            pairs = []
            for r in range(max(1, repeats // 2)):
                t0 = time.perf_counter()
                other_call(list(range(n)))
                o = n / (time.perf_counter() - t0)
                t0 = time.perf_counter()
                call(list(range(n)))
                pairs.append((o, n / (time.perf_counter() - t0)))
            return pairs

        if sampling.ellipse is not None:  # what the base's ellipse guidance costs: the same batch without it
            pairs = against_default(lambda s: call(s, replace(sampling, ellipse=None)))
            fig["gen_batched_ellipse_off_img_per_s"] = float(np.median([w for w, _ in pairs]))
            fig["gen_ellipse_guidance_cost"] = float(np.median([1 - g / w for w, g in pairs]))
        if sampling.guidance_until < 1:  # what stopping guidance early saves: the same batch guided every step
            pairs = against_default(lambda s: call(s, replace(sampling, guidance_until=1.0)))
            fig["gen_batched_guided_every_step_img_per_s"] = float(np.median([f for f, _ in pairs]))
            fig["gen_guidance_until_speedup"] = float(np.median([g / f for f, g in pairs]))
        if other:
            clear_pipelines()
            return fig
        fig["gen_single_img_per_s"] = float(np.median(single))
        fig["gen_speedup"] = fig["gen_batched_img_per_s"] / fig["gen_single_img_per_s"]
        # get_pipeline fuses the LoRA into the weights; the same batch through peft's unfused LoRA layers
        unfused = load_pipeline(base)
        unfused.load_lora_weights(f"{tmp}/lora_cached", weight_name=WEIGHTS, adapter_name="u")
        unfused.set_adapters(["u"], adapter_weights=[0.9])
        pairs = against_default(lambda s: call(s, p=unfused))
        fig["gen_batched_unfused_img_per_s"] = float(np.median([u for u, _ in pairs]))
        fig["gen_fused_speedup"] = float(np.median([f / u for u, f in pairs]))
        fig.update(_pair_cost(base, f"{tmp}/lora_cached", precision, n, max(1, repeats // 2)))
        clear_pipelines()
    return fig


def _pair_cost(base, lora: str, precision: str, n: int, rounds: int) -> dict:
    """Seconds per finished pair (sampling, Ellipse Extractor, SAM QC, written to a dataset folder) at the
    sample's own size (out_size 0: 128² on the tiny base) and at the default out_size (256²), interleaved
    rounds so a change in load hits both; pair_default_cost is the median ratio (goal, issue 32: <= 2)."""
    from .dataset import fill
    from .generate import GenerateConfig
    default = GenerateConfig().out_size
    own, big = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds + 1):  # round 0: warm-up (the QC model loads)
            for size, acc in ((0, own), (default, big)):
                cfg = GenerateConfig(trimester="second", n=n, lora=lora, base=base, seed=100 * r, batch_size=n,
                                     precision=precision, out_size=size)
                t0 = time.perf_counter()
                for _ in fill(f"{tmp}/s{size}_{r}", cfg, min_qc=0.0):
                    pass
                if r:
                    acc.append((time.perf_counter() - t0) / n)
    return {"pair_out_size": default, "pair_s_own_size": float(np.median(own)),
            "pair_s_default": float(np.median(big)),
            "pair_default_cost": float(np.median([b / o for o, b in zip(own, big)]))}
