"""Ellipse guidance (pipeline/diffusion/ellipse_guidance.py, not in the paper): the mask channel's ellipse fit
part-way through sampling, the shift of UniPC's state that carries it, the settings and where they come from.
What it does to valid rates, QC and realism is measured in docs/lab/2026-11-pretraining.md (stage 10)."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.diffusion import generate as G  # noqa: E402
from pipeline.diffusion.ellipse_guidance import (EllipseGuidance, check_sampler, parse_ellipse_guidance,  # noqa: E402
                                                 shift_sampler)
from pipeline.masks import Ellipse, extract_ellipse  # noqa: E402


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def _disc(shape, cx, cy, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.float32)


def test_the_mask_channel_becomes_the_ellipse_of_its_largest_blob():
    eg = EllipseGuidance((0.5,))
    # a bean (two overlapping discs): refused by the extractor as drawn, its projection is a valid ellipse
    bean = np.maximum(_disc((128, 128), 50, 64, 22), _disc((128, 128), 82, 56, 16))
    assert not extract_ellipse((bean * 255).astype(np.uint8)).valid
    out = eg.project_blue(bean)
    ex = extract_ellipse((out * 255).astype(np.uint8))
    assert ex.valid, ex.reason
    assert abs(out.sum() - bean.sum()) < 0.1 * bean.sum()  # about the blob's own area and place
    assert abs(ex.ellipse.cx - np.nonzero(bean)[1].mean()) < 3
    # two heads: only the larger stays
    two = np.maximum(_disc((128, 128), 40, 64, 20), _disc((128, 128), 100, 64, 10))
    out = eg.project_blue(two)
    assert out[64, 100] == 0 and out[64, 40] == 1 and extract_ellipse((out * 255).astype(np.uint8)).valid
    # a head cut by the frame: fitted to its visible arc, filled and clipped to the frame
    e = Ellipse(10, 64, 70, 50, 0)
    cut = e.fill((128, 128)).astype(np.float32)
    out = eg.project_blue(cut)
    assert np.logical_xor(out > 0.5, cut > 0.5).sum() < 0.03 * cut.sum()
    # nothing that could be a head: left alone
    assert eg.project_blue(np.zeros((128, 128), np.float32)) is None
    assert eg.project_blue(_disc((128, 128), 64, 64, 3)) is None  # under min_area_frac
    assert eg.project_blue(_disc((128, 128), 64, 64, 20) * 0.4) is None  # fainter than the threshold


def test_settings_are_parsed_checked_and_named_when_refused():
    assert parse_ellipse_guidance("off") is None and parse_ellipse_guidance("None") is None
    assert parse_ellipse_guidance("0.6, 0.2,0.4").at == (0.2, 0.4, 0.6)
    assert EllipseGuidance((0.2, 0.4, 0.6)).steps(20) == {3, 7, 11}  # after steps 4, 8 and 12 of 20
    assert EllipseGuidance((0.01, 0.99)).steps(5) == {0, 3}  # never after the last step
    assert parse_ellipse_guidance("0.5, 0.5").at == (0.5,)
    for bad, msg in (("0.2, 1.5", "fractions of the schedule in"), ("early", "'off' or fractions"),
                     (",".join(str(i / 20) for i in range(1, 13)), "at most 10"), ("nan", "fractions")):
        with pytest.raises(ValueError, match=msg):
            parse_ellipse_guidance(bad)
    with pytest.raises(ValueError, match="at least one"):
        EllipseGuidance(())
    with pytest.raises(ValueError, match="ellipse guidance"):
        G.GenerateConfig(ellipse_guidance="0, 2").validate()  # refused before any model loads
    G.GenerateConfig(ellipse_guidance="off").validate()


def _exact_run(shift_at: int, d, how: str = "state"):
    """UniPC (the tiny base's scheduler) driven by a model that predicts the clean latents x0 exactly: the
    trajectory keeps one noise, eps = (x - alpha_t x0) / sigma_t, at every step. At step `shift_at` the clean
    latents become x0 + d. Returns the noise implied at each later step (against x0 + d) and the first one."""
    from diffusers import UniPCMultistepScheduler

    from pipeline.diffusion.base import resolve_base
    sch = UniPCMultistepScheduler.from_pretrained(resolve_base(None), subfolder="scheduler")
    sch.set_timesteps(20)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 4, 8, 8, generator=g)
    x = torch.randn(1, 4, 8, 8, generator=g)
    abar = sch.alphas_cumprod
    implied, before = [], None
    for i, t in enumerate(sch.timesteps):
        a, s = abar[t].sqrt(), (1 - abar[t]).sqrt()
        x = sch.step((x - a * x0) / s, t, x).prev_sample
        if i + 1 >= len(sch.timesteps):
            break
        tn = sch.timesteps[i + 1]
        an, sn = abar[tn].sqrt(), (1 - abar[tn]).sqrt()
        if i == shift_at:
            before = (x - an * x0) / sn
            check_sampler(sch)
            x = shift_sampler(sch, x, d) if how == "state" else x + an * d
            x0 = x0 + d
        elif i > shift_at:
            implied.append((x - an * x0) / sn)
    return before, implied


def test_shifting_the_sampler_state_continues_the_trajectory_of_the_new_clean_estimate():
    """The check of the shift's arithmetic: after it, UniPC continues from x0 + d with the same noise, step after
    step, exactly as if the model had predicted x0 + d all along. Shifting only the latents (what a plain
    callback would do) is undone by UniPC's next corrector step, which starts again from the stored sample."""
    d = torch.full((1, 4, 8, 8), 0.7)
    before, implied = _exact_run(5, d)
    assert len(implied) == 13
    for e in implied:
        assert (e - before).abs().max() < 1e-3
    before, naive = _exact_run(5, d, how="latents")
    assert (naive[0] - before).abs().max() > 0.05


def test_a_pipeline_with_another_sampler_is_refused():
    from diffusers import DDIMScheduler
    with pytest.raises(ValueError, match="UniPC"):
        check_sampler(DDIMScheduler())


def test_the_bases_own_guidance_is_used_recorded_and_asked_for_settings_win(random_base, tmp_path, monkeypatch):
    import shutil

    from pipeline.diffusion.base import SAMPLING_FILE, base_ellipse_guidance
    assert base_ellipse_guidance(random_base) is None  # no sampling file: the paper's sampling (SD v1.5 too)
    assert base_ellipse_guidance("someone/some-model") is None
    b = tmp_path / "base"
    shutil.copytree(random_base, b)
    (b / SAMPLING_FILE).write_text(json.dumps({"guidance": 2.0, "ellipse_guidance": {"at": [0.5]}}))
    assert base_ellipse_guidance(b).at == (0.5,)
    assert base_ellipse_guidance(b, "off") is None and base_ellipse_guidance(b, "0.3").at == (0.3,)
    # the random test base draws no head: give every estimate a head so the guidance has something to do
    calls = []

    def head(self, blue):
        calls.append(blue.shape)
        return _disc(blue.shape, blue.shape[1] / 2, blue.shape[0] / 2, blue.shape[0] / 4)
    monkeypatch.setattr(EllipseGuidance, "project_blue", head)
    G.clear_pipelines()
    # fp32: under bf16 autocast (the default on a CPU with native bf16) a batch's kernels differ from a single
    # image's by a few gray levels, so "the same image in any batch" is checked where it is exact
    run = dict(base=str(b), n=2, steps=4, qc=False, seed=3, batch_size=2, precision="weights")
    on = list(G.generate(G.GenerateConfig(**run)))
    assert on[0]["params"]["ellipse_guidance"] == [0.5] and on[1]["sample"].params["ellipse_guidance"] == [0.5]
    assert len(calls) == 2  # once per image, after step 2 of 4
    off = list(G.generate(G.GenerateConfig(**run, ellipse_guidance="off")))
    assert off[0]["params"]["ellipse_guidance"] is None and len(calls) == 2
    assert not np.array_equal(on[1]["sample"].rgb, off[1]["sample"].rgb)
    # the same seed gives the same image in any batch
    one = list(G.generate(G.GenerateConfig(**{**run, "n": 1, "seed": 4, "batch_size": 1})))
    assert np.abs(one[1]["sample"].rgb.astype(int) - on[2]["sample"].rgb.astype(int)).max() <= 1
    for text, msg in (('{"ellipse_guidance": [0.5]}', "ellipse_guidance must be"),
                      ('{"ellipse_guidance": {"at": [1.5]}}', "fractions of the schedule")):
        (b / SAMPLING_FILE).write_text(text)
        with pytest.raises(ValueError, match=msg):
            base_ellipse_guidance(b)
    G.clear_pipelines()
