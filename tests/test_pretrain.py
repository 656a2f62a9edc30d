"""Pretraining the tiny base: unlabelled real images stay apart from evaluation images, a changed setting
is refused on resume, and a run killed with SIGKILL resumes to the same weights as an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.config import ASSETS  # noqa: E402
from pipeline.data import open_source  # noqa: E402
from pipeline.diffusion.pretrain import PretrainConfig, export_checkpoint, pretrain  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ASSETS / "tiny-base"


@pytest.fixture()
def unlabelled(tmp_path):
    """A folder of 'unlabelled' images: phantom images written as PNGs (no masks), HC18's aspect."""
    d = tmp_path / "unlabelled"
    d.mkdir()
    for i, s in enumerate(open_source("phantom:3:5")):
        cv2.imwrite(str(d / f"{i:03d}_HC.png"), s.image)
    return d


def _cfg(unlabelled, **kw):
    d = dict(n_phantoms=6, vae_steps=2, vae_batch=2, vae_crop=32, unet_steps=3, unet_batch=2, ckpt_every=1,
             unlabelled=str(unlabelled), real_views=2, real_frac=0.5, threads=2, bf16=False)
    d.update(kw)
    return PretrainConfig(**d)


def _run(cfg, tmp_path, name="base"):
    return [e for e in pretrain(cfg, tmp_path / name, tmp_path / f"{name}-work")]


def test_evaluation_images_are_refused_as_unlabelled(unlabelled, tmp_path):
    cfg = _cfg(unlabelled, exclude=("phantom:3:5",), vae_steps=0, unet_steps=0)
    with pytest.raises(ValueError, match="must stay out of pretraining"):
        _run(cfg, tmp_path)
    ok = _cfg(unlabelled, exclude=("phantom:3:6",), vae_steps=0, unet_steps=0)  # other images: accepted
    assert _run(ok, tmp_path, "ok")[-1]["kind"] == "done"


def test_changed_setting_on_resume_is_refused(unlabelled, tmp_path):
    cfg = _cfg(unlabelled, vae_steps=1, unet_steps=1)
    _run(cfg, tmp_path)
    with pytest.raises(ValueError, match=r"real_frac: 0\.5 -> 0\.7"):
        _run(_cfg(unlabelled, vae_steps=1, unet_steps=1, real_frac=0.7), tmp_path)
    # a work folder from before a setting existed ran at its default: switching it on is a change too
    saved = json.loads((tmp_path / "base-work" / "config.json").read_text())
    (tmp_path / "base-work" / "config.json").write_text(json.dumps({k: v for k, v in saved.items()
                                                                    if k != "vae_adv_weight"}))
    with pytest.raises(ValueError, match=r"vae_adv_weight: 0\.0 -> 0\.5"):
        _run(_cfg(unlabelled, vae_steps=1, unet_steps=1, vae_adv_weight=0.5), tmp_path)
    more = _cfg(unlabelled, vae_steps=1, unet_steps=2)  # more steps: allowed, goes on from step 1
    ev = _run(more, tmp_path)
    assert [e["step"] for e in ev if e["kind"] == "step"] == [2]


def test_bad_settings_are_messages():
    with pytest.raises(ValueError, match="real_frac"):
        PretrainConfig(real_frac=1.5)
    with pytest.raises(ValueError, match="init_base"):
        PretrainConfig(vae_train="decoder")
    with pytest.raises(ValueError, match="unet_batch"):
        PretrainConfig(unet_batch=0)


def test_phantom_framing_and_balance_reach_the_phantoms_and_belong_to_the_recipe(tmp_path):
    from dataclasses import asdict

    from pipeline.diffusion.pretrain import _phantom_rgb, check_resume, rebuild_command
    cfg = PretrainConfig(n_phantoms=6, phantom_framing="hc18", phantom_balance=True)
    framed = [_phantom_rgb(cfg, i) for i in range(6)]
    assert [t for _, t in framed] == ["first", "second", "third"] * 2  # the trimesters in turn
    demo = [_phantom_rgb(PretrainConfig(n_phantoms=6, phantom_balance=True), i) for i in range(6)]
    assert [t for _, t in demo] == [t for _, t in framed]  # the same ages, drawn from each phantom's seed
    assert np.mean([x[..., 2] > 127 for x, _ in framed]) > 1.5 * np.mean([x[..., 2] > 127 for x, _ in demo])
    cmd = rebuild_command(cfg)
    assert "--phantom-framing hc18 --phantom-balance" in cmd and "True" not in cmd
    assert "phantom" not in rebuild_command(PretrainConfig()).replace("pretrain-base", "")
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.json").write_text(json.dumps(asdict(PretrainConfig(n_phantoms=6))))
    with pytest.raises(ValueError, match="phantom_framing: 'demo' -> 'hc18'.*phantom_balance: False -> True"):
        check_resume(cfg, work)
    with pytest.raises(ValueError, match="phantom_framing must be one of demo, hc18"):
        PretrainConfig(phantom_framing="big")


@pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file(), reason="shipped tiny base missing")
def test_sigkill_then_resume_equals_an_uninterrupted_run(unlabelled, tmp_path):
    """Decoder-only VAE + continued UNet from the shipped base, the recipe of the shipped domain base. The
    killed run is given far more steps than it can reach, so the kill always lands mid-run; both runs then go
    to three steps past the step it was killed at (unet_steps may change on a resume), so no kill window."""
    kw = dict(init_base=str(SHIPPED), vae_train="decoder")
    out, work = tmp_path / "killed", tmp_path / "killed-work"
    cmd = [sys.executable, "-m", "pipeline", "pretrain-base", "--out", str(out), "--work", str(work),
           "--n-phantoms", "6", "--vae-steps", "2", "--vae-batch", "2", "--unet-steps", "100000", "--unet-batch", "2",
           "--ckpt-every", "1", "--unlabelled", str(unlabelled), "--real-views", "2", "--real-frac", "0.5",
           "--init-base", str(SHIPPED), "--vae-train", "decoder", "--no-bf16"]
    proc = subprocess.Popen(cmd + ["--vae-crop", "32"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "2"})
    ck = work / "unet.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        # checkpoints are replaced atomically (fileio.atomic_write): a read never sees half a file
        if ck.is_file() and torch.load(ck, weights_only=False)["step"] >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = torch.load(ck, weights_only=False)["step"]
    assert 2 <= step_at_kill < 100000
    cfg = _cfg(unlabelled, **kw, unet_steps=step_at_kill + 3)
    _run(cfg, tmp_path, "ref")
    ref = torch.load(tmp_path / "ref-work" / "unet.pt", weights_only=False)
    ev = _run(cfg, tmp_path, "killed")  # resume in-process with the same settings
    assert ev[-1]["kind"] == "done" and any(e["kind"] == "step" for e in ev)  # it trained on from the checkpoint
    got = torch.load(work / "unet.pt", weights_only=False)
    assert got["step"] == ref["step"] == step_at_kill + 3
    for a, b in zip(got["ema"], ref["ema"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the exported base loads as an ordinary diffusers pipeline
    from pipeline.diffusion.base import load_pipeline
    pipe = load_pipeline(str(out), device="cpu")
    assert pipe.vae.config.scaling_factor == pytest.approx(json.loads((SHIPPED / "vae" / "config.json").read_text())
                                                           ["scaling_factor"])
    assert export_checkpoint(work, tmp_path / "exported").joinpath("model_index.json").is_file()


def test_more_latent_channels_build_a_base_that_loads_and_generates(unlabelled, tmp_path):
    """--latent-channels 8: the VAE's latent and the UNet's in/out channels follow; the result is an ordinary
    diffusers base that the generation code samples from."""
    ev = _run(_cfg(unlabelled, latent_channels=8, vae_steps=1, unet_steps=1), tmp_path)
    assert ev[-1]["kind"] == "done"
    from pipeline.diffusion.base import load_pipeline
    pipe = load_pipeline(str(tmp_path / "base"), device="cpu")
    assert pipe.vae.config.latent_channels == 8
    assert pipe.unet.config.in_channels == pipe.unet.config.out_channels == 8
    img = pipe("An ultrasound image of a fetal head, second trimester", num_inference_steps=2, height=128, width=128,
               output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 128, 128, 3) and np.isfinite(img).all()
    # resuming with another latent size would mix two recipes: refused, naming the setting
    with pytest.raises(ValueError, match="latent_channels"):
        _run(_cfg(unlabelled, latent_channels=4, vae_steps=1, unet_steps=1), tmp_path)


def test_a_stopped_run_resumes_and_counts_its_time(unlabelled, tmp_path):
    """The stop hook (what --max-minutes uses) leaves a checkpoint; the same settings go on from it, and the
    README states the time of both invocations together."""
    cfg = _cfg(unlabelled, unet_steps=3)
    calls = {"n": 0}

    def stop():  # stop at the second UNet step
        calls["n"] += 1
        return calls["n"] > cfg.vae_steps + 2
    ev = [e for e in pretrain(cfg, tmp_path / "base", tmp_path / "base-work", stop=stop)]
    assert ev[-1]["kind"] == "stopped" and ev[-1]["stage"] == "unet"
    first = json.loads((tmp_path / "base-work" / "time.json").read_text())["seconds"]
    assert first > 0
    ev = _run(cfg, tmp_path)
    assert ev[-1]["kind"] == "done"
    assert [e["step"] for e in ev if e["kind"] == "step" and e["stage"] == "unet"][0] > 1
    assert json.loads((tmp_path / "base-work" / "time.json").read_text())["seconds"] > first
    assert "minutes on a" in (tmp_path / "base" / "README.md").read_text()


def test_device_settings_are_checked():
    with pytest.raises(ValueError, match="device"):
        PretrainConfig(device="tpu")
    with pytest.raises(ValueError, match="vae_crop"):
        PretrainConfig(vae_crop=256)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            PretrainConfig(device="cuda").torch_device()


def test_readme_says_what_a_continuation_kept():
    """A continuation's README names its parent and what of it was kept (the shipped base is two of them)."""
    from pipeline.diffusion.pretrain import _readme
    unet_only = _readme(PretrainConfig(init_base="parent", vae_train="decoder", vae_steps=0, unet_steps=5), 60)
    assert "continues from the base in `parent` (its VAE kept as it was" in unet_only
    assert "the VAE of `parent` unchanged, then UNet + text encoder 5 steps" in unet_only
    decoder = _readme(PretrainConfig(init_base="parent", vae_train="decoder", vae_steps=7), 60)
    assert "the decoder retrained" in decoder and "VAE 7 steps" in decoder
    fresh = _readme(PretrainConfig(vae_steps=7), 60)
    assert "continues" not in fresh and "VAE 7 steps" in fresh


@pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file(), reason="shipped tiny base missing")
def test_adversarial_decoder_keeps_the_encoder_and_resumes_with_its_discriminator(unlabelled, tmp_path):
    """--vae-adv-weight: the decoder trains against a patch discriminator from --vae-adv-start on (the
    discriminator from step 1); the encoder, so the latent space the UNet knows, is untouched; a stopped run
    resumes to the same weights as an unstopped one (the discriminator and its optimizer are checkpointed)."""
    from diffusers import AutoencoderKL

    from pipeline.diffusion.pretrain import _readme
    kw = dict(init_base=str(SHIPPED), vae_train="decoder", vae_steps=4, unet_steps=0, vae_adv_weight=0.5,
              vae_adv_start=2)
    ev = _run(_cfg(unlabelled, **kw), tmp_path, "ref")
    steps = [e for e in ev if e["kind"] == "step" and e["stage"] == "vae"]
    assert [("g_adv" in e) for e in steps] == [False, False, True, True]
    assert all(np.isfinite(e["d_loss"]) for e in steps)
    assert all(e["adv_w"] > 0 and np.isfinite(e["adv_w"] * e["g_adv"]) for e in steps[2:])
    before = AutoencoderKL.from_pretrained(str(SHIPPED), subfolder="vae", torch_dtype=torch.float32).state_dict()
    after = torch.load(tmp_path / "ref-work" / "vae.pt", weights_only=False)["model"]
    enc = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    dec = [k for k in before if k.startswith("decoder.")]
    assert enc and all(torch.equal(before[k].float(), after[k].float()) for k in enc)
    assert any(not torch.equal(before[k].float(), after[k].float()) for k in dec)
    assert "patch discriminator" in (tmp_path / "ref" / "README.md").read_text()

    calls = {"n": 0}

    def stop():  # after the third VAE step: the discriminator has trained and pulled once
        calls["n"] += 1
        return calls["n"] > 3
    cfg = _cfg(unlabelled, **kw)
    ev = list(pretrain(cfg, tmp_path / "b", tmp_path / "b-work", stop=stop))
    assert ev[-1]["kind"] == "stopped" and ev[-1]["step"] == 3
    assert "disc" in torch.load(tmp_path / "b-work" / "vae.pt", weights_only=False)
    assert _run(cfg, tmp_path, "b")[-1]["kind"] == "done"
    got = torch.load(tmp_path / "b-work" / "vae.pt", weights_only=False)
    ref = torch.load(tmp_path / "ref-work" / "vae.pt", weights_only=False)
    for k in ("model", "disc"):
        for name, v in ref[k].items():
            torch.testing.assert_close(got[k][name], v, rtol=1e-5, atol=1e-6, msg=f"{k}.{name}")
    with pytest.raises(ValueError, match="vae_adv_weight"):
        PretrainConfig(vae_adv_weight=-0.5)
    with pytest.raises(ValueError, match="disc_lr"):
        PretrainConfig(disc_lr=0)
    assert "patch discriminator" not in _readme(PretrainConfig(vae_steps=7), 60)


def test_decoder_ema_is_what_is_saved_and_resumes(unlabelled, tmp_path):
    """--vae-ema-decay: the saved VAE holds the average of the decoder's weights, not the last step's; the
    checkpoint carries the average, so a stopped run resumes to the same average as an unstopped one."""
    from diffusers import AutoencoderKL
    kw = dict(init_base=str(SHIPPED), vae_train="decoder", vae_steps=4, unet_steps=0, vae_ema_decay=0.9,
              vae_echo_weight=2.0, vae_lr=0.05)
    _run(_cfg(unlabelled, **kw), tmp_path, "ref")
    ck = torch.load(tmp_path / "ref-work" / "vae.pt", weights_only=False)
    saved = AutoencoderKL.from_pretrained(str(tmp_path / "ref"), subfolder="vae", torch_dtype=torch.float32)
    saved = saved.state_dict()
    dec = [k for k in ck["ema"] if k.startswith("decoder.")]
    assert dec and not any(k.startswith("encoder.") for k in ck["ema"])
    # the EMA lags the trained weights; the saved (fp16) VAE is the EMA, not the last step
    moved = [k for k in dec if not torch.allclose(ck["ema"][k], ck["model"][k], atol=2e-4)]
    assert moved  # (a large lr: the warm-up keeps the first steps' changes small)
    for k in moved:
        torch.testing.assert_close(saved[k], ck["ema"][k].half().float(), rtol=1e-3, atol=1e-4)
    assert sum(float((saved[k] - ck["ema"][k]).abs().sum()) for k in moved) \
        < 0.2 * sum(float((saved[k] - ck["model"][k]).abs().sum()) for k in moved)
    assert "EMA 0.9" in (tmp_path / "ref" / "README.md").read_text()

    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 2
    cfg = _cfg(unlabelled, **kw)
    assert list(pretrain(cfg, tmp_path / "b", tmp_path / "b-work", stop=stop))[-1]["kind"] == "stopped"
    _run(cfg, tmp_path, "b")
    got = torch.load(tmp_path / "b-work" / "vae.pt", weights_only=False)
    for name, v in ck["ema"].items():
        torch.testing.assert_close(got["ema"][name], v, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="vae_ema_decay"):
        PretrainConfig(vae_ema_decay=1.0)
    with pytest.raises(ValueError, match="vae_echo_weight"):
        PretrainConfig(vae_echo_weight=-1)


def test_echo_weight_makes_a_lost_bright_echo_cost_more():
    """vae_echo_weight adds nothing to an error on the dark background and a k-weighted share to the same
    error on the bright echo."""
    from pipeline.diffusion.pretrain import vae_recon_loss
    x = -torch.ones(1, 3, 32, 32)
    x[:, :2, 10:12, :] = 1.0  # a bright echo line in the image channels
    dark, bright = x.clone(), x.clone()
    dark[:, :2, 20:22, :] = 0.0  # the same change, on the background ...
    bright[:, :2, 10:12, :] = 0.0  # ... and on the echo
    off = [float(vae_recon_loss(r, x)) for r in (dark, bright)]
    on = [float(vae_recon_loss(r, x, 2.0)) for r in (dark, bright)]
    assert on[0] == pytest.approx(off[0], rel=1e-5)
    extra_l1 = 2.0 * (2 * 32 * 2 * 1.0) / (3 * 32 * 32)  # k * |error| on the echo pixels / all pixels
    assert on[1] - off[1] == pytest.approx(extra_l1, rel=1e-3)


def test_blend_vae_is_the_weighted_mean_and_refuses_other_architectures(tmp_path):
    """blend_vae: weight 0 gives A, 1 gives B, 0.25 the weighted mean (to fp16); a weight outside [0, 1], a
    folder without a VAE and a VAE of another architecture are refused with a message, and nothing is written."""
    import shutil

    from safetensors.torch import load_file, save_file

    from pipeline.diffusion.pretrain import VAE_FILE, blend_vae
    b = tmp_path / "b"
    shutil.copytree(SHIPPED / "vae", b / "vae")
    a_w = load_file(SHIPPED / VAE_FILE)
    b_w = {k: (v.float() + 0.01 * (i % 7 + 1)).half() for i, (k, v) in enumerate(a_w.items())}
    save_file(b_w, b / VAE_FILE)
    for w, want in ((0.0, lambda k: a_w[k].float()), (1.0, lambda k: b_w[k].float()),
                    (0.25, lambda k: 0.75 * a_w[k].float() + 0.25 * b_w[k].float())):
        got = load_file(blend_vae(SHIPPED, b, w, tmp_path / f"mix{w}.safetensors"))
        assert got.keys() == a_w.keys()
        for k in list(a_w)[:20]:
            torch.testing.assert_close(got[k].float(), want(k), rtol=2e-3, atol=2e-3, msg=k)
    with pytest.raises(ValueError, match="between 0"):
        blend_vae(SHIPPED, b, 1.5, tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError, match="VAE"):
        blend_vae(SHIPPED, tmp_path, 0.5, tmp_path / "x.safetensors")
    cfg = json.loads((b / "vae" / "config.json").read_text())
    (b / "vae" / "config.json").write_text(json.dumps({**cfg, "latent_channels": 8}))
    with pytest.raises(ValueError, match="latent_channels"):
        blend_vae(SHIPPED, b, 0.5, tmp_path / "x.safetensors")
    (b / "vae" / "config.json").write_text(json.dumps(cfg))
    (b / VAE_FILE).write_bytes(b"not a safetensors file")  # a truncated download, say
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        blend_vae(SHIPPED, b, 0.5, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_blend_vae_layers_merges_only_the_named_layers(tmp_path):
    """A layer-wise merge: weights under the named prefixes come from the blend, every other one stays A's
    exactly; a prefix naming no weight (or a near miss such as 'decoder.up_blocks.1x') is refused, nothing written."""
    import shutil

    from safetensors.torch import load_file, save_file

    from pipeline.diffusion.pretrain import VAE_FILE, blend_vae
    b = tmp_path / "b"
    shutil.copytree(SHIPPED / "vae", b / "vae")
    a_w = load_file(SHIPPED / VAE_FILE)
    b_w = {k: (v.float() + 0.05).half() for k, v in a_w.items()}
    save_file(b_w, b / VAE_FILE)
    fine = ["decoder.up_blocks.3", "decoder.conv_out."]  # a trailing dot is the same prefix
    got = load_file(blend_vae(SHIPPED, b, 1.0, tmp_path / "fine.safetensors", layers=fine))
    picked = [k for k in a_w if k.startswith(("decoder.up_blocks.3.", "decoder.conv_out."))]
    assert picked and len(picked) < len(a_w) // 4
    for k in a_w:
        want = b_w[k] if k in picked else a_w[k]
        assert torch.equal(got[k], want), k
    assert not any(k.startswith("decoder.up_blocks.3") for k in a_w if k not in picked)
    for bad in (["decoder.up_blocks.1x"], ["decoder.nope"], []):
        with pytest.raises(ValueError, match="layers"):
            blend_vae(SHIPPED, b, 1.0, tmp_path / "y.safetensors", layers=bad)
    assert not (tmp_path / "y.safetensors").exists()


def test_extra_resolutions_train_the_unet_at_each_size_in_turn(unlabelled, tmp_path):
    """A base for the detail pass: the UNet trains at its own size and at a larger one, one per step, on the
    same phantoms and unlabelled views at both sizes; a kept-VAE continuation exports mid-run (no vae.pt)."""
    from pipeline.diffusion.pretrain import make_dataset, make_unlabelled
    with pytest.raises(ValueError, match="multiple of 8 above the resolution"):
        PretrainConfig(extra_resolutions=(100,))
    with pytest.raises(ValueError, match="multiple of 8 above the resolution"):
        PretrainConfig(extra_resolutions=(128,))
    with pytest.raises(ValueError, match="repeat"):
        PretrainConfig(extra_resolutions=(256, 256))
    assert PretrainConfig(unet_batch=256, extra_resolutions=(256,)).unet_sizes() == [(128, 256), (256, 64)]

    cfg = _cfg(unlabelled, resolution=32, extra_resolutions=(64,), init_base=str(SHIPPED), vae_train="decoder",
               vae_steps=0, unet_steps=2, unet_batch=8)
    seen = []
    from diffusers import UNet2DConditionModel
    orig = UNet2DConditionModel.forward

    def spy(self, sample, *a, **k):
        seen.append(tuple(sample.shape))
        return orig(self, sample, *a, **k)
    UNet2DConditionModel.forward = spy
    try:
        ev = _run(cfg, tmp_path)
    finally:
        UNet2DConditionModel.forward = orig
    assert ev[-1]["kind"] == "done"
    # step 1 at 32² (4² latents, batch 8), step 2 at 64² (8² latents, batch 2: the same pixels)
    assert [(s[0], s[2]) for s in seen] == [(8, 4), (2, 8)]
    work = tmp_path / "base-work"
    xs, tri = make_dataset(cfg, work, (32, 64))
    assert xs[32].shape == (6, 32, 32, 3) and xs[64].shape == (6, 64, 64, 3)
    small = np.stack([cv2.resize(x, (32, 32), interpolation=cv2.INTER_AREA) for x in xs[64]])
    assert np.abs(small.astype(int) - xs[32]).mean() < 8  # the same phantoms at both sizes
    rs = make_unlabelled(cfg, work, (32, 64))
    assert rs[32].shape == (6, 32, 32) and rs[64].shape == (6, 64, 64)
    assert (work / "latents_64.pt").is_file() and not (work / "vae.pt").is_file()
    assert json.loads((tmp_path / "base" / "pretrain_config.json").read_text())["extra_resolutions"] == [64]
    assert "64² at batch 2" in (tmp_path / "base" / "README.md").read_text()
    assert export_checkpoint(work, tmp_path / "exported").joinpath("vae", "config.json").is_file()
    with pytest.raises(ValueError, match="extra_resolutions"):
        _run(_cfg(unlabelled, resolution=32, extra_resolutions=(96,), init_base=str(SHIPPED), vae_train="decoder",
                  vae_steps=0, unet_steps=3, unet_batch=8), tmp_path)


def test_unet_latents_are_the_unets_one_step_estimate():
    """UnetLatents: a share 0 leaves the encoder's latents alone; at share 1 every latent is the UNet's clean
    estimate, near the latent at low noise and further from it at high noise (the shipped UNet: a real model)."""
    from pipeline.diffusion.base import rgb_to_tensor, to_model_size
    from pipeline.diffusion.pretrain import UnetLatents, init_components
    from pipeline.phantom import make_phantom
    cfg = PretrainConfig(init_base=str(SHIPPED), vae_train="decoder", vae_crop=128, vae_unet_latent_frac=1.0,
                         vae_unet_t_max=20)
    c = init_components(cfg)
    ph = [make_phantom(i, hc_mm=None) for i in range(2)]
    x = rgb_to_tensor(np.stack([to_model_size(p.image, p.mask, 128) for p in ph]))
    with torch.no_grad():
        z = c["vae"].encode(x).latent_dist.mean
    sf = float(c["vae"].config.scaling_factor)
    prompts = np.array([1, 4])

    def err(frac, t_max):
        cfg.vae_unet_latent_frac, cfg.vae_unet_t_max = frac, t_max
        u = UnetLatents(cfg, c["unet"], c["text_encoder"], c["tokenizer"], c["scheduler"], torch.device("cpu"))
        out = u(z, prompts, torch.Generator().manual_seed(0), sf)
        return float((out - z).abs().mean() / z.abs().mean())
    assert err(0.0, 20) == 0.0
    # a share swaps whole rows: each row is either the encoder's latent untouched or the UNet's estimate
    cfg.vae_unet_latent_frac = 0.5
    u = UnetLatents(cfg, c["unet"], c["text_encoder"], c["tokenizer"], c["scheduler"], torch.device("cpu"))
    z8 = z.repeat(4, 1, 1, 1)
    out = u(z8, np.tile(prompts, 4), torch.Generator().manual_seed(1), sf)
    same = [bool(torch.equal(o, r)) for o, r in zip(out, z8)]
    assert any(same) and not all(same)
    low, high = err(1.0, 20), err(1.0, 900)
    assert 0 < low < high / 2, (low, high)  # 2026-11-27: 0.046 vs 0.155


def test_decoder_on_unet_latents_trains_resumes_and_is_refused_where_it_cannot_work(unlabelled, tmp_path):
    """--vae-unet-latents: the decoder trains on the UNet's estimates (the encoder kept), a stopped run resumes to
    the same decoder as an unstopped one, a changed share is refused on resume, bad settings are refused by name."""
    kw = dict(init_base=str(SHIPPED), vae_train="decoder", vae_steps=3, unet_steps=0, vae_crop=128,
              vae_unet_latent_frac=0.5, vae_unet_t_max=100, vae_lr=0.05)
    ref = _run(_cfg(unlabelled, **kw), tmp_path, "ref")
    assert [e["step"] for e in ref if e["kind"] == "step"] == [1, 2, 3]
    ck = torch.load(tmp_path / "ref-work" / "vae.pt", weights_only=False)
    from diffusers import AutoencoderKL
    shipped = AutoencoderKL.from_pretrained(str(SHIPPED), subfolder="vae", torch_dtype=torch.float32).state_dict()
    assert all(torch.equal(ck["model"][k], shipped[k]) for k in shipped if k.startswith("encoder."))
    assert any(not torch.equal(ck["model"][k], shipped[k]) for k in shipped if k.startswith("decoder."))
    assert "50% of each batch decoded from the UNet's one-step estimate" in (tmp_path / "ref" / "README.md").read_text()

    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 1
    assert list(pretrain(_cfg(unlabelled, **kw), tmp_path / "b", tmp_path / "b-work", stop=stop))[-1]["kind"] \
        == "stopped"
    # a decoder job stopped before its UNet stage exports its decoder with the init base's UNet
    mid = torch.load(tmp_path / "b-work" / "vae.pt", weights_only=False)
    export_checkpoint(tmp_path / "b-work", tmp_path / "mid")
    exported = AutoencoderKL.from_pretrained(str(tmp_path / "mid"), subfolder="vae", torch_dtype=torch.float32)
    for k, v in exported.state_dict().items():
        torch.testing.assert_close(v, mid["model"][k].half().float(), rtol=1e-3, atol=1e-4, msg=k)
    assert json.loads((tmp_path / "mid" / "pretrain_config.json").read_text())["extra"] == {"exported_at_vae_step": 1}
    with pytest.raises(ValueError, match="vae_unet_latent_frac: 0.5 -> 0.25"):
        _run(_cfg(unlabelled, **{**kw, "vae_unet_latent_frac": 0.25}), tmp_path, "b")
    _run(_cfg(unlabelled, **kw), tmp_path, "b")
    got = torch.load(tmp_path / "b-work" / "vae.pt", weights_only=False)
    for name, v in ck["model"].items():
        torch.testing.assert_close(got["model"][name], v, rtol=1e-5, atol=1e-6, msg=name)

    for bad, match in ((dict(vae_unet_latent_frac=1.5), "vae_unet_latent_frac must be in"),
                       (dict(vae_unet_latent_frac=float("nan")), "vae_unet_latent_frac must be in"),
                       (dict(vae_unet_t_max=0), "vae_unet_t_max"),
                       (dict(vae_unet_latent_frac=0.5, vae_train="all"), "needs --vae-train decoder"),
                       (dict(vae_unet_latent_frac=0.5, vae_train="decoder", init_base="x", vae_crop=64),
                        "--vae-crop equal to the resolution")):
        with pytest.raises(ValueError, match=match):
            PretrainConfig(**bad)
