"""The paper profile's architectures: SD v1.5 built from its published configurations (exact parameter
counts), the architecture-true reduced variant, the GPU-memory arithmetic, and (slow) the whole bench
path — LoRA step, guided UniPC generation with the saved LoRA at 0.9, Ellipse Extractor, SAM ViT-B
encoding through the cache and a cached decoder step — at reduced size, with shapes and dtypes checked."""
import pytest

from pipeline.paper_bench import (GPUS, SD15_PARAMS, estimate_gpu_memory, run_paper_bench, sd15_configs,
                                  zerogpu_check)


def _count(cfg):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    with init_empty_weights():  # meta tensors: the count without the memory
        mods = {"unet": UNet2DConditionModel(**cfg["unet"]), "vae": AutoencoderKL(**cfg["vae"]),
                "text_encoder": CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))}
    return {k: sum(p.numel() for p in m.parameters()) for k, m in mods.items()}, mods


def test_sd15_configs_give_the_published_models():
    counts, mods = _count(sd15_configs("full"))
    assert counts == SD15_PARAMS  # 859.5 M UNet, 83.7 M VAE, 123.1 M CLIP text encoder
    unet = mods["unet"]
    assert unet.config.cross_attention_dim == 768 and unet.config.sample_size == 64
    assert mods["text_encoder"].config.hidden_size == 768


def test_reduced_is_architecture_true():
    full, red = sd15_configs("full"), sd15_configs("reduced")
    for part in ("unet", "vae", "text_encoder"):
        changed = {k for k in full[part] if full[part][k] != red[part][k]}
        assert changed <= {"block_out_channels", "cross_attention_dim", "hidden_size", "intermediate_size",
                           "projection_dim"}, (part, changed)
    assert red["unet"]["block_out_channels"] == [32, 64, 128, 128]
    counts, mods = _count(red)
    assert all(counts[k] < SD15_PARAMS[k] / 10 for k in counts)
    # same blocks, same number of attention layers and heads
    _, full_mods = _count(full)
    n_attn = lambda m: sum(1 for n, _ in m.named_modules() if n.endswith(("attn1", "attn2")))  # noqa: E731
    assert n_attn(mods["unet"]) == n_attn(full_mods["unet"]) == 32
    assert mods["unet"].config.sample_size == 64 and mods["vae"].config.sample_size == 512


def test_gpu_memory_arithmetic():
    params = {**SD15_PARAMS, "lora": 25_000_000, "sam": 93_700_000, "sam_decoder": 4_058_340}
    est = estimate_gpu_memory(params, {"lora_step": 3.0, "lora_step_gradient_checkpointing": 0.5, "generate": 0.4,
                                       "sam_encode": 1.0, "sam_decoder_step": 0.05})
    lora = est["lora_step"]
    assert lora["gib_at_batch"][1] < lora["gib_at_batch"][2] < lora["gib_at_batch"][4]
    # fp32 base (4.3 GB of weights) + LoRA with AdamW, + 3 GiB per image
    assert lora["fixed_gib"] == pytest.approx((1_066_235_307 * 4 + 25e6 * 16) / 2 ** 30, abs=0.01)
    ckpt = est["lora_step_gradient_checkpointing"]["largest_batch_that_fits"]
    assert ckpt["T4 16 GB"] >= lora["largest_batch_that_fits"]["T4 16 GB"]
    assert set(lora["largest_batch_that_fits"]) == set(GPUS)


@pytest.mark.slow
def test_reduced_bench_runs_every_step_with_the_right_shapes(tmp_path):
    fig = run_paper_bench("reduced", device="cpu", lora_batch=1, work_dir=str(tmp_path))
    ph = fig["phases"]
    assert fig["resolution"] == 512 and fig["latent"] == [4, 64, 64]
    assert "RANDOM" in fig["weights"]
    for name in ("build_sd15", "lora_step", "lora_step_gradient_checkpointing", "generate", "build_sam",
                 "sam_encode", "sam_decoder_step"):
        assert ph[name]["wall_s"] > 0 and ph[name]["peak_gib"] > 0, name
    assert ph["lora_step"]["lora_rank"] == 128 and ph["lora_step"]["saved_bytes"] > 0
    assert fig["params"]["lora"] == ph["lora_step"]["lora_params"] > 0
    g = ph["generate"]
    assert g["output_shape"] == [512, 512, 3] and g["steps"] == 20 and g["lora_scale"] == 0.9
    assert g["scheduler"] == "UniPCMultistepScheduler"
    assert g["ellipse_verdict"] == "valid" or g["ellipse_verdict"].startswith("refused: ")
    assert ph["sam_encode"]["input"] == [3, 1024, 1024] and ph["sam_encode"]["embedding_shape"] == [256, 64, 64]
    assert ph["sam_encode"]["cache_entry_bytes"] == pytest.approx(256 * 64 * 64 * 2, abs=1024)  # an fp16 entry
    assert ph["sam_decoder_step"]["logits_shape"][:2] == [5, 1]
    assert ph["sam_decoder_step"]["loss"] > 0
    z = fig["zerogpu"]
    assert z["requested_s"] > 0 and len(z["handlers"]) == len(
        __import__("pipeline.paper_bench", fromlist=["HANDLER_WORK"]).HANDLER_WORK)
    assert fig["gpu_estimates"].startswith("only from --size full")  # never estimated from a reduced model


def test_zerogpu_check_arithmetic():
    phases = {"sam_encode": {"wall_s": 0.1}, "sam_decoder_step": {"wall_s": 0.03}, "generate": {"wall_s": 2.0},
              "lora_step": {"wall_s": 0.25}}
    z = zerogpu_check(phases, 120, lora_batch=4)
    h = z["handlers"]
    assert h["train_lora (LoRA training: 300 steps, batch 4)"]["needs_s"] == pytest.approx(75.0)
    assert h["generate (Generation: 8 images, 20 steps, guidance)"]["fits_requested"]
    assert not h["sweep (the paper's grid, 140 cells; upper bound)"]["fits_zerogpu_max"]
