"""`python -m pipeline bench paper [--json]`: the paper profile's models at full size, run once through our
own code path, with RANDOM weights.

No Stable Diffusion v1.5 or SAM ViT-B weights can be reached offline, but their architectures are public:
SD v1.5's UNet, VAE and CLIP text encoder are built here from the published config.json files of
runwayml/stable-diffusion-v1-5 (copied below as plain dicts, nothing is downloaded), SAM ViT-B from
segment-anything's registry. Random weights make the images meaningless, not the cost: every tensor has
its real shape, so wall time and memory are those of the paper's setup on this machine.

What runs (each the same call the dashboard / CLI makes):
  lora_step        one optimizer step of train_lora (rank 128 on to_q/to_k/to_v/to_out.0 of the UNet,
                   AdamW, 512², the latents and prompt encoded once before it, as our cached path does)
  generate         generate(): 20 UniPC steps, LoRA loaded from the saved file at scale 0.9,
                   classifier-free guidance 7.5, VAE decode, then the Ellipse Extractor on the B channel
  sam_encode       one SAM ViT-B image encoding at 1024² through the on-disk embedding cache
  sam_decoder_step one mask-decoder fine-tuning step (batch 5, DiceCE, Adam) from cached embeddings

Each phase reports wall time and peak memory: on a CPU the process's peak resident memory (VmHWM, reset
between phases) and its rise over what was resident before; on CUDA torch's peak allocation. From the
measured activation memory and the exact parameter counts, `gpu_estimates` derives the GPU memory of each
step in fp16/bf16 and which GPU fits which batch size (see estimate_gpu_memory). `--size reduced` runs the
same steps on an architecture-true reduced model (every block, layer and head; widths / 10) — the slow
test does that.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# ----------------------------------------------------------------------------- published configurations
# runwayml/stable-diffusion-v1-5, unet/config.json (diffusers 0.6.0 keys; the rest are library defaults)
SD15_UNET = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], center_input_sample=False,
    cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-05, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
# vae/config.json
SD15_VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=512,
    up_block_types=["UpDecoderBlock2D"] * 4)
# text_encoder/config.json (openai/clip-vit-large-patch14's text tower)
SD15_TEXT_ENCODER = dict(
    attention_dropout=0.0, bos_token_id=0, dropout=0.0, eos_token_id=2, hidden_act="quick_gelu", hidden_size=768,
    initializer_factor=1.0, initializer_range=0.02, intermediate_size=3072, layer_norm_eps=1e-05,
    max_position_embeddings=77, num_attention_heads=12, num_hidden_layers=12, pad_token_id=1, projection_dim=768,
    vocab_size=49408)
# scheduler/scheduler_config.json (PNDM; our pipeline swaps it for UniPC with the same schedule)
SD15_SCHEDULER = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, num_train_timesteps=1000,
                      set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, clip_sample=False)
# the parameter counts these configurations give (a test checks them: a wrong key changes them)
SD15_PARAMS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}

# SAM ViT-B (segment-anything build_sam_vit_b): 1024² input, 16² patches, 12 blocks of width 768
SAM_VIT_B_ENCODER = dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=[2, 5, 8, 11], window_size=14,
                         img_size=1024, patch_size=16, mlp_ratio=4, out_chans=256)

SIZES = ("full", "reduced")
REDUCE = 10  # reduced: every width / 10 (still a multiple of the 32 norm groups), nothing else changes


def sd15_configs(size: str = "full") -> dict:
    """The three SD v1.5 configurations; `reduced` divides every width by 10 and keeps every block, layer,
    head count, resolution (512², 64² latents) and the vocabulary: architecture-true, ~100x cheaper."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    unet, vae, text = dict(SD15_UNET), dict(SD15_VAE), dict(SD15_TEXT_ENCODER)
    if size == "reduced":
        unet["block_out_channels"] = [c // REDUCE for c in unet["block_out_channels"]]  # 32, 64, 128, 128
        vae["block_out_channels"] = [c // 4 for c in vae["block_out_channels"]]  # 32, 64, 128, 128
        text.update(hidden_size=96, intermediate_size=384, projection_dim=96)  # 12 heads of 8
        unet["cross_attention_dim"] = text["hidden_size"]
    return {"unet": unet, "vae": vae, "text_encoder": text}


def build_sd15(size: str = "full", seed: int = 0, device: str = "cpu"):
    """A StableDiffusionPipeline (UniPC, no safety checker) with SD v1.5's architecture and random weights,
    fp32 (what train_lora loads; generation moves it to the profile's dtype)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .diffusion.base import assemble_pipeline
    from .diffusion.tokenizer import build_clip_tokenizer
    cfg = sd15_configs(size)
    torch.manual_seed(seed)
    comps = dict(unet=UNet2DConditionModel(**cfg["unet"]), vae=AutoencoderKL(**cfg["vae"]),
                 text_encoder=CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])),
                 tokenizer=build_clip_tokenizer(),
                 # from_config, as from_pretrained reads it: the published file has keys PNDM does not take
                 scheduler=PNDMScheduler.from_config(SD15_SCHEDULER))
    return assemble_pipeline(comps).to(device)


def build_sam_vit_b(size: str = "full"):
    """SAM ViT-B with random weights through our SamModel wrapper (1024² geometry either way); `reduced`
    narrows the image encoder to width 96 (12 heads of 8), keeping depth, windows and global blocks."""
    from .sam.models import SamModel, build_model
    if size == "full":
        return build_model("vit_b", pretrained=False)
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT

    from .sam.fast_decoder import make_fast
    from .sam.models import _build_vit_b
    _, pe, dec = _build_vit_b()
    e = dict(SAM_VIT_B_ENCODER, embed_dim=96)
    enc = ImageEncoderViT(depth=e["depth"], embed_dim=e["embed_dim"], img_size=e["img_size"], mlp_ratio=e["mlp_ratio"],
                          norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=e["num_heads"],
                          patch_size=e["patch_size"], qkv_bias=True, use_rel_pos=True,
                          global_attn_indexes=e["global_attn_indexes"], window_size=e["window_size"],
                          out_chans=e["out_chans"])
    return SamModel("vit_b", enc, pe, make_fast(dec), 1024, "imagenet", weights_id="random-reduced",
                    source="random weights, reduced width (bench)").eval()


def n_params(module, trainable: bool = False) -> int:
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable))


# ----------------------------------------------------------------------------- measuring
def _rss_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the peak resident set (VmHWM) to the current one."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_free_memory() -> None:
    """Give freed heap memory back to the OS, so the resident set is what is live: pipeline.sam keeps up to
    1 GiB of freed blocks (mallopt), which a later phase would reuse without its resident memory rising."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the rise may then be understated
        pass


@contextmanager
def measure(record: dict, device: str):
    """Wall time, and peak memory of what runs inside: CUDA peak allocation on a GPU, else the process's
    peak resident memory and its rise over the memory resident at the start (freed heap returned first)."""
    import torch
    GiB = 2 ** 30
    _release_free_memory()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        reset = _reset_peak_rss()
        before = _rss_bytes("VmRSS")
    t0 = time.perf_counter()
    yield
    if device == "cuda":
        torch.cuda.synchronize()
    record["wall_s"] = round(time.perf_counter() - t0, 3)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
        record["peak_gib"] = round(peak / GiB, 3)
        record["rise_gib"] = round((peak - before) / GiB, 3)
        record["memory"] = "cuda max_memory_allocated"
    else:
        peak = _rss_bytes("VmHWM") if reset else None
        if peak is not None and before is not None:
            record["peak_gib"] = round(peak / GiB, 3)
            record["rise_gib"] = round((peak - before) / GiB, 3)
            record["memory"] = "process peak resident memory (VmHWM, reset before the phase)"


# ----------------------------------------------------------------------------- GPU memory estimates
# GPU memory as sold (GB = 10^9 bytes) in GiB, the unit of the estimates
GPUS = {name: gb * 1e9 / 2 ** 30 for name, gb in
        {"T4 16 GB": 16, "A10G 24 GB": 24, "ZeroGPU (H200 slice, 70 GB)": 70}.items()}
CUDA_OVERHEAD_GIB = 1.0  # CUDA context + cuDNN/cuBLAS workspaces, typically 0.5-1 GiB
FRAGMENTATION = 1.15  # the caching allocator's slack over the live tensors


def estimate_gpu_memory(params: dict, act_gib_per_image: dict, batch_sizes=(1, 2, 4, 8, 16)) -> dict:
    """GPU memory (GiB) per step in fp16/bf16 from parameter counts and measured activation memory per image.

    LoRA training as train_lora runs it on a GPU: the base in fp32 (it loads fp32 and trains under fp16
    autocast), LoRA weights fp32 with their gradient and two AdamW moments (16 bytes each), activations
    per image (measured here in 2-byte autocast, or halved from fp32) times the batch. Generation: the
    base in fp16, and activations for the guided batch (2 x images). SAM: ViT-B in fp32 (our code keeps
    weights fp32; only the decoder trains, under autocast). Each plus CUDA overhead and allocator slack.
    On a CPU the measured rise also holds the LoRA's gradient and AdamW moments (counted again in the fixed
    part) and, without step_rise_gib, the save's buffers: the estimate errs on the large side."""
    GiB = 2 ** 30
    base = params["unet"] + params["vae"] + params["text_encoder"]
    out: dict = {"assumptions": {"cuda_overhead_gib": CUDA_OVERHEAD_GIB, "allocator_slack": FRAGMENTATION}}

    def total(fixed_gib, act, b):
        return round((fixed_gib + act * b) * FRAGMENTATION + CUDA_OVERHEAD_GIB, 2)

    lora_fixed = (base * 4 + params["lora"] * 16) / GiB
    lora_fixed_fp16_base = (base * 2 + params["lora"] * 16) / GiB
    gen_fixed = base * 2 / GiB + params["lora"] * 2 / GiB
    sam_fixed = (params["sam"] * 4 + params["sam_decoder"] * 12) / GiB
    rows = {
        "lora_step": (lora_fixed, act_gib_per_image.get("lora_step")),
        "lora_step_gradient_checkpointing": (lora_fixed, act_gib_per_image.get("lora_step_gradient_checkpointing")),
        "lora_step_fp16_frozen_base": (lora_fixed_fp16_base, act_gib_per_image.get("lora_step")),
        "generate": (gen_fixed, act_gib_per_image.get("generate")),
        "sam_decoder_step": (sam_fixed, act_gib_per_image.get("sam_decoder_step")),
        "sam_encode": (sam_fixed, act_gib_per_image.get("sam_encode")),
    }
    for name, (fixed, act) in rows.items():
        if act is None:
            continue
        per_b = {b: total(fixed, act, b) for b in batch_sizes}
        fits = {gpu: max([b for b in batch_sizes if per_b[b] <= cap], default=0) for gpu, cap in GPUS.items()}
        out[name] = {"fixed_gib": round(fixed, 2), "per_image_gib": round(act, 3),
                     "gib_at_batch": per_b, "largest_batch_that_fits": fits}
    return out


# ----------------------------------------------------------------------------- ZeroGPU
ZEROGPU_DEFAULT_S = 60  # spaces.GPU without a duration
ZEROGPU_MAX_S = 300  # the most one call may request, per Hugging Face staff (undocumented, may change)

# what ONE call of each GPU handler does at paper size, in the units this bench times
HANDLER_WORK = {
    "segment (Playground: a new image, one box)": {"sam_encode": 1, "sam_decoder_forward": 1},
    "generate (Generation: 8 images, 20 steps, guidance)": {"generate_image": 8},
    "train_lora (LoRA training: 300 steps, batch 4)": {"lora_step_batch4": 300},
    "finetune_sam (N_real 20, no SYN: 60 encodings, 80 steps)": {"sam_encode": 60, "sam_decoder_step": 80},
    "finetune_sam (one SYN cell: 540 encodings, 2000 steps)": {"sam_encode": 540, "sam_decoder_step": 2000},
    # upper bound: every cell costed as a SYN cell, no embedding shared through the cache
    "sweep (the paper's grid, 140 cells; upper bound)": {"sam_encode": 140 * 540, "sam_decoder_step": 140 * 2000},
}


def zerogpu_check(phases: dict, requested_s: int, lora_batch: int) -> dict:
    """Seconds each handler needs at paper size on THIS device (from the measured phase times), against
    the duration gpu_task requests and ZeroGPU's per-call limit. Only a GPU run of this bench answers the
    question for a GPU; on a CPU it shows the scale of the work."""
    unit = {"sam_encode": phases["sam_encode"]["wall_s"], "sam_decoder_step": phases["sam_decoder_step"]["wall_s"],
            "sam_decoder_forward": phases["sam_decoder_step"]["wall_s"] / 3,  # forward only: ~1/3 of a step
            "generate_image": phases["generate"]["wall_s"],
            # linear in the batch (an upper bound); the save is every 50 steps, not every step
            "lora_step_batch4": phases["lora_step"].get("step_only_s", phases["lora_step"]["wall_s"]) * 4 / lora_batch}
    out = {"requested_s": requested_s, "zerogpu_default_s": ZEROGPU_DEFAULT_S, "zerogpu_max_s": ZEROGPU_MAX_S,
           "unit_s": {k: round(v, 3) for k, v in unit.items()}, "handlers": {}}
    for name, work in HANDLER_WORK.items():
        need = sum(n * unit[u] for u, n in work.items())
        out["handlers"][name] = {"needs_s": round(need, 1), "fits_requested": need <= requested_s,
                                 "fits_zerogpu_max": need <= ZEROGPU_MAX_S}
    return out


# ----------------------------------------------------------------------------- the bench
def run_paper_bench(size: str = "full", device: str | None = None, lora_batch: int | None = None,
                    gradient_checkpointing: bool = True, work_dir: str | None = None,
                    progress_path: str | None = None) -> dict:
    """Run every phase once and return the figures (see the module docstring). With `progress_path`, the
    figures so far are written there (atomically) after every phase: a run cut short still reports."""
    import torch

    from .process import OMP_WAIT_POLICY_CHOICE
    from .diffusion.base import base_resolution, to_model_size
    from .diffusion.generate import GenerateConfig, generate, resolve_precision
    from .diffusion.lora import WEIGHTS, LoraTrainConfig, train_lora
    from .gpu import best_device
    from .masks import extract_ellipse
    from .phantom import make_phantom

    device = device or best_device()
    on_gpu = device == "cuda"
    # on a CPU one image at 512² already needs several GB of activations for the backward pass; the paper's
    # batch 4 is then estimated from it (estimate_gpu_memory), on a GPU it is run as is
    B = lora_batch or (4 if on_gpu else 1)
    fig: dict = {"size": size, "device": device, "weights": "RANDOM (no SD v1.5 / SAM ViT-B weights offline): "
                 "times and memory are real, images and masks are noise",
                 "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "omp_wait_policy": OMP_WAIT_POLICY_CHOICE, "load_average_start": round(os.getloadavg()[0], 2)}
    phases: dict = {}
    params: dict = {}

    def checkpoint():
        if progress_path:
            from .fileio import atomic_write_json
            atomic_write_json(progress_path, {**fig, "phases": phases, "params": params, "finished": False})
    tmp_ctx = tempfile.TemporaryDirectory(dir=work_dir)
    tmp = Path(tmp_ctx.name)
    try:
        # -- SAM ViT-B: one 1024² encoding through the embedding cache, one cached decoder step -----------
        from .augment import jittered_box_for
        from .sam.cache import EmbeddingCache
        from .sam.finetune import decoder_loss, dice_ce_loss, use_bf16
        rec: dict = {}
        with measure(rec, device):
            sam = build_sam_vit_b(size).to(device)
        phases["build_sam"] = rec
        sam.image_encoder.requires_grad_(False)
        sam.prompt_encoder.requires_grad_(False)
        params["sam"] = n_params(sam)
        params["sam_decoder"] = n_params(sam.mask_decoder)
        p = make_phantom(0)
        img = np.repeat(p.image[..., None], 3, axis=2) if p.image.ndim == 2 else p.image
        cache = EmbeddingCache(tmp / "sam_cache", sam)
        rec = {}
        with measure(rec, device):
            emb = cache.get_or_compute([img])[0]
        rec.update(input=[3, sam.img_size, sam.img_size], embedding_shape=list(emb.shape),
                   cache_entry_bytes=sum(f.stat().st_size for f in (tmp / "sam_cache").rglob("*.safetensors")))
        phases["sam_encode"] = rec
        B_sam = 5
        cached = cache.get(img)  # read back from disk, as a training step gets it
        rng = np.random.default_rng(0)
        boxes = np.concatenate([sam.box_to_input(jittered_box_for(p.mask, rng), p.mask.shape) for _ in range(B_sam)])
        target = torch.from_numpy(np.stack([sam.mask_to_lowres(p.mask)] * B_sam)).float().to(device)
        crop = sam.crop_cells([p.mask.shape] * B_sam)  # as finetune(): the loss covers the image, not the padding
        dec = sam.mask_decoder.train()
        opt = torch.optim.Adam(dec.parameters(), lr=1e-5, weight_decay=0.0)
        loss_fn = dice_ce_loss()
        bf16 = use_bf16("auto", torch.device(device))
        rec = {}
        with measure(rec, device):
            e = cached.to(device, torch.float32)[None].expand(B_sam, -1, -1, -1)
            logits, loss = decoder_loss(sam, e, boxes, target, crop, loss_fn, bf16)  # finetune()'s step
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        rec.update(batch_size=B_sam, mixed_precision="bf16" if bf16 else "no", logits_shape=list(logits.shape),
                   loss=round(float(loss.detach()), 4))
        phases["sam_decoder_step"] = rec
        del sam, cache, dec, opt, logits, loss, cached, e
        checkpoint()

        rec = {}
        with measure(rec, device):
            pipe = build_sd15(size, device=device)
        phases["build_sd15"] = rec
        res = base_resolution(pipe)
        params.update(unet=n_params(pipe.unet), vae=n_params(pipe.vae), text_encoder=n_params(pipe.text_encoder))
        checkpoint()
        fig["resolution"] = res
        fig["latent"] = [pipe.unet.config.in_channels, res // pipe.vae_scale_factor, res // pipe.vae_scale_factor]

        # -- LoRA: one optimizer step at the paper's settings, through train_lora ---------------------------
        images = np.stack([to_model_size(p.image, p.mask, res) for p in (make_phantom(i) for i in range(B))])
        mp = "fp16" if on_gpu else ("bf16" if resolve_precision("auto", "cpu") == "bf16" else "no")
        for name, ckpt in (("lora_step", False), ("lora_step_gradient_checkpointing", True)):
            if ckpt and not gradient_checkpointing:
                continue
            if ckpt:
                pipe.unet.delete_adapters("default")  # a fresh LoRA on the same base
                pipe.unet.enable_gradient_checkpointing()
            cfg = LoraTrainConfig(steps=1, batch_size=B, rank=128, alpha=128, save_every=1, preview_every=0,
                                  hflip=False, mixed_precision=mp, names=[f"phantom_{i}" for i in range(B)])
            out = tmp / name
            enc, step = {}, {}
            gen = train_lora(cfg, out, resume=False, pipe=pipe, images=images)
            with measure(enc, device):  # up to "start": latents + prompt encoded once, LoRA attached
                ev = next(gen)
            assert ev["kind"] == "start", ev
            at, peak_at_step = {}, None
            with measure(step, device):  # the optimizer step, then the save of the LoRA it made
                t0 = time.perf_counter()
                for e in gen:
                    at[e["kind"]] = time.perf_counter() - t0
                    if e["kind"] == "step":  # the peak so far is the step's: the save's buffers come after
                        peak_at_step = (torch.cuda.max_memory_allocated() if on_gpu else _rss_bytes("VmHWM"))
            if "step" not in at:
                raise RuntimeError(f"the LoRA step did not run: {sorted(at)}")
            step["step_only_s"] = round(at["step"], 3)  # forward, backward, AdamW
            step["save_s"] = round(at.get("saved", at["step"]) - at["step"], 3)  # LoRA file + resumable state
            if peak_at_step is not None and "peak_gib" in step:
                before = step["peak_gib"] - step["rise_gib"]
                step["step_rise_gib"] = round(peak_at_step / 2 ** 30 - before, 3)
            params["lora"] = n_params(pipe.unet, trainable=True)
            phases[name] = {**step, "encode_once": enc, "batch_size": B, "mixed_precision": mp,
                            "lora_rank": 128, "lora_params": params["lora"],
                            "saved_bytes": (out / WEIGHTS).stat().st_size}
            if ckpt:
                pipe.unet.disable_gradient_checkpointing()
            checkpoint()

        # -- generation with the saved LoRA at 0.9, guidance, 20 UniPC steps; Ellipse Extractor ----------
        pipe.unet.delete_adapters("default")
        lora_dir = tmp / "lora_step"
        if on_gpu:
            pipe.to(dtype=torch.float16)  # load_pipeline: fp16 weights on CUDA
        # frozen, as after training: CPU autocast would otherwise cache a bf16 copy of every weight that
        # requires grad, and count it as activation memory
        for m in (pipe.unet, pipe.vae, pipe.text_encoder):
            m.requires_grad_(False)
        pipe.load_lora_weights(str(lora_dir), weight_name=WEIGHTS, adapter_name="lora0")
        pipe.set_adapters(["lora0"], adapter_weights=[0.9])
        gcfg = GenerateConfig(trimester="second", n=1, steps=20, guidance=7.5, lora=str(lora_dir), lora_scale=0.9,
                              seed=0, batch_size=1, qc=False)
        rec = {}
        with measure(rec, device):
            samples = [e["sample"] for e in generate(gcfg, pipe=pipe) if e["kind"] == "sample"]
        smp = samples[0]
        t0 = time.perf_counter()
        ex = extract_ellipse(smp.blue, threshold=gcfg.threshold)
        rec.update(images=1, steps=20, guidance=7.5, lora_scale=0.9, scheduler=type(pipe.scheduler).__name__,
                   precision=resolve_precision(gcfg.precision, pipe.device), output_shape=list(smp.rgb.shape),
                   ellipse_extractor_s=round(time.perf_counter() - t0, 4),
                   ellipse_verdict="valid" if ex.valid else f"refused: {ex.reason}")
        phases["generate"] = rec
        checkpoint()

    finally:
        tmp_ctx.cleanup()

    fig["phases"] = phases
    fig["params"] = params
    fig["finished"] = True
    fig["load_average_end"] = round(os.getloadavg()[0], 2)
    # activation memory per image in 2-byte precision: what rose over the resident weights, per image;
    # measured fp32 activations are halved (on a CPU without native bf16 the LoRA step runs fp32)
    def per_image(name, n, factor):
        ph = phases.get(name, {})
        r = ph.get("step_rise_gib", ph.get("rise_gib"))  # without the save's buffers where known
        return None if r is None else max(r, 0.0) / n * factor
    lora_factor = 1.0 if phases.get("lora_step", {}).get("mixed_precision") in ("fp16", "bf16") else 0.5
    gen_factor = 1.0 if phases["generate"]["precision"] in ("bf16", "float16") else 0.5
    act = {"lora_step": per_image("lora_step", B, lora_factor),
           "lora_step_gradient_checkpointing": per_image("lora_step_gradient_checkpointing", B, lora_factor),
           # the whole rise per image: the UNet sees 2 inputs per image (guidance) but the VAE decoder,
           # which may set the peak at 512², sees one: never halved, an upper bound
           "generate": per_image("generate", 1, gen_factor),
           "sam_encode": per_image("sam_encode", 1, 1.0),  # SAM runs as measured (fp32 encoder)
           "sam_decoder_step": per_image("sam_decoder_step", B_sam, 1.0)}
    from .gpu import DEFAULT_DURATION_S
    fig["zerogpu"] = zerogpu_check(phases, DEFAULT_DURATION_S, B)
    if size == "full":
        fig["gpu_estimates"] = estimate_gpu_memory(params, act)
    else:
        fig["gpu_estimates"] = "only from --size full (the reduced model's memory says nothing about SD v1.5)"
    return fig


def run_bench(args) -> dict:
    import torch
    torch.set_num_threads(min(2, torch.get_num_threads()) if not torch.cuda.is_available() else torch.get_num_threads())
    size = getattr(args, "size", None) or "full"
    return run_paper_bench(size=size, lora_batch=getattr(args, "lora_batch", None),
                           gradient_checkpointing=not getattr(args, "no_checkpointing", False),
                           progress_path=getattr(args, "progress", None))


if __name__ == "__main__":  # python -m pipeline.paper_bench reduced
    import sys
    print(json.dumps(run_paper_bench(sys.argv[1] if len(sys.argv) > 1 else "reduced"), indent=1))
