"""BaseSampling (pipeline/diffusion/base.py): a base's sampling settings (guidance, its interval, ellipse guidance,
latent calibration) resolved in one place, with asked-for parts winning, and every sampler of the project
(generate, the LoRA previews, the sweep's synthetic set) drawing through it."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.diffusion import generate as G  # noqa: E402
from pipeline.diffusion.base import SAMPLING_FILE, BaseSampling, load_pipeline  # noqa: E402
from pipeline.diffusion.calibration import LatentCalibration  # noqa: E402
from pipeline.diffusion.ellipse_guidance import EllipseGuidance  # noqa: E402

CAL = {"center": [0.1, -0.2, 0.0, 0.3], "scale": [1.1, 0.9, 1.0, 1.0]}
OWN = {"guidance": 2.5, "guidance_until": 0.5, "ellipse_guidance": {"at": [0.5]}, "latent_calibration": CAL}


@pytest.fixture()
def own_base(random_base, tmp_path):
    b = tmp_path / "base"
    shutil.copytree(random_base, b)
    (b / SAMPLING_FILE).write_text(json.dumps(OWN))
    return b


def test_the_bases_own_settings_and_asked_for_parts_win(random_base, own_base):
    s = BaseSampling.of(own_base)
    assert (s.guidance, s.guidance_until, s.ellipse.at) == (2.5, 0.5, (0.5,))
    assert s.calibration == LatentCalibration.from_dict(CAL)
    assert s.record() == {"guidance": 2.5, "latent_calibration": CAL, "ellipse_guidance": [0.5],
                          "guidance_until": 0.5}
    asked = BaseSampling.of(own_base, guidance=3, guidance_until=1, ellipse_guidance="off", calibrate=False)
    assert asked == BaseSampling(3.0)
    # no sampling file (SD v1.5, a hub id): Stable Diffusion's guidance, every step, nothing else: the paper
    from pipeline.config import GenerationDefaults
    for b in (random_base, "someone/some-model"):
        assert BaseSampling.of(b) == BaseSampling(GenerationDefaults().guidance)
    with pytest.raises(ValueError, match="guidance until"):
        BaseSampling.of(own_base, guidance_until=1.5)
    (own_base / SAMPLING_FILE).write_text(json.dumps({**OWN, "guidance_until": "soon"}))
    with pytest.raises(ValueError, match=f"{SAMPLING_FILE}: guidance_until"):
        BaseSampling.of(own_base)


def test_a_synthetic_sets_record_names_only_the_parts_that_are_on():
    """Sets begun before ellipse guidance and the guidance interval existed recorded guidance and calibration
    only; a base that has neither must still match them (the sweep refuses to finish a set otherwise)."""
    assert BaseSampling(7.5).set_record() == {"guidance": 7.5, "latent_calibration": None}
    full = BaseSampling(2.0, 0.6, EllipseGuidance((0.2, 0.4)), LatentCalibration.from_dict(CAL))
    assert full.set_record() == {"guidance": 2.0, "latent_calibration": CAL, "ellipse_guidance": [0.2, 0.4],
                                 "guidance_until": 0.6}


def test_pipe_kwargs_are_fresh_callbacks_each_call():
    assert BaseSampling(2.0).pipe_kwargs() == {"guidance_scale": 2.0}
    full = BaseSampling(2.0, 0.6, EllipseGuidance((0.5,)), LatentCalibration.from_dict(CAL))
    a, b = full.pipe_kwargs(), full.pipe_kwargs()
    assert set(a) == {"guidance_scale", "callback_on_step_end", "callback_on_step_end_tensor_inputs"}
    assert a["callback_on_step_end"] is not b["callback_on_step_end"]
    assert "prompt_embeds" in a["callback_on_step_end_tensor_inputs"]


def _count(pipe, monkeypatch):
    """UNet batch sizes per call, and how many images ellipse guidance projected."""
    sizes, projected = [], []
    handle = pipe.unet.register_forward_pre_hook(lambda m, args, kwargs: sizes.append(int(args[0].shape[0])),
                                                 with_kwargs=True)
    monkeypatch.setattr(EllipseGuidance, "project_blue", lambda self, blue: projected.append(1) or None)
    return sizes, projected, handle


def test_generation_and_the_lora_previews_sample_the_same_way(own_base, monkeypatch):
    """The LoRA previews used to take the base's guidance and calibration only, so they drew unlike generate()
    once ellipse guidance and the guidance interval existed; both now sample through BaseSampling."""
    from pipeline.diffusion.lora import LoraTrainConfig, preview
    steps = 4  # guidance stops after step 2 of 4 (until 0.5); ellipse guidance after step 2 (at 0.5)
    G.clear_pipelines()
    cfg = G.GenerateConfig(base=str(own_base), trimester="second", n=2, steps=steps, qc=False, seed=0, batch_size=2,
                           precision="weights")  # fp32, as the previews
    pipe = G.get_pipeline(str(own_base))
    sizes, projected, handle = _count(pipe, monkeypatch)
    try:
        ev = list(G.generate(cfg))
    finally:
        handle.remove()
    assert ev[0]["params"]["guidance"] == 2.5 and ev[1]["sample"].params["latent_calibration"] == CAL
    assert sizes == [4, 4, 2, 2] and len(projected) == 2
    G.clear_pipelines()

    pipe = load_pipeline(own_base, device="cpu")
    sizes, projected, handle = _count(pipe, monkeypatch)
    try:
        imgs = preview(pipe, LoraTrainConfig(base=str(own_base), trimester="second", preview_seeds=(0, 1)), steps)
    finally:
        handle.remove()
    assert sizes == [4, 4, 2, 2] and len(projected) == 2
    # and the very images: a preview at scale 0.9 without a LoRA is generate()'s sample of the same seed
    assert np.abs(imgs[1].astype(int) - ev[2]["sample"].rgb.astype(int)).max() <= 1
