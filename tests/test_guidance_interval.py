"""Classifier-free guidance for the first part of the schedule only (pipeline/diffusion/guidance_interval.py, not
in the paper): where it stops, that the unconditional pass really stops there, the settings and where they come
from. What it does to valid rates, QC, realism and speed is measured in docs/lab/2026-11-pretraining.md (stage 11)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.diffusion import generate as G  # noqa: E402
from pipeline.diffusion.guidance_interval import check_guidance_until, stop_step  # noqa: E402


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def test_the_stop_step_and_the_accepted_values():
    assert stop_step(0.6, 20) == 11  # guided steps 1-12, then 8 steps with the prompted pass alone
    assert stop_step(1.0, 20) is None and stop_step(0.5, 1) is None  # every step guided
    assert stop_step(0.01, 20) == 0 and stop_step(0.99, 5) == 3  # at least one guided, never after the last
    assert check_guidance_until(1) == 1.0 and check_guidance_until("0.6") == 0.6
    for bad in (0, -0.1, 1.5, float("nan"), "soon"):
        with pytest.raises(ValueError, match="share of the steps with classifier-free guidance"):
            check_guidance_until(bad)
    with pytest.raises(ValueError, match="guidance until"):
        G.GenerateConfig(guidance_until=1.2).validate()  # refused before any model loads


def _unet_batches(pipe):
    """Record the batch size of every UNet call the pipeline makes."""
    sizes = []
    handle = pipe.unet.register_forward_pre_hook(lambda m, args, kwargs: sizes.append(int(args[0].shape[0])),
                                                 with_kwargs=True)
    return sizes, handle


def test_the_unconditional_pass_stops_after_the_share_and_a_seed_keeps_its_image(random_base):
    from pipeline.diffusion.base import BaseSampling, load_pipeline
    pipe = load_pipeline(random_base)
    sizes, handle = _unet_batches(pipe)
    try:
        a = G.run_pipeline(pipe, "x", [1, 2], 10, BaseSampling(3.0, 0.6), "weights")
        assert sizes == [4] * 6 + [2] * 4  # 6 of 10 steps with [unconditional, prompted], then prompted alone
        sizes.clear()
        full = G.run_pipeline(pipe, "x", [1, 2], 10, BaseSampling(3.0), "weights")
        assert sizes == [4] * 10
        sizes.clear()
        G.run_pipeline(pipe, "x", [1, 2], 10, BaseSampling(1.0, 0.6), "weights")  # unguided anyway: nothing to stop
        assert sizes == [2] * 10
        # the stop changes the last steps only; the pipeline's own guidance is back for the next call
        assert not np.array_equal(a, full)
        sizes.clear()
        again = G.run_pipeline(pipe, "x", [1, 2], 10, BaseSampling(3.0), "weights")
        assert sizes == [4] * 10 and np.array_equal(again, full)
        one = G.run_pipeline(pipe, "x", [2], 10, BaseSampling(3.0, 0.6), "weights")
        assert np.abs(one[0] - a[1]).max() < 1e-4  # a seed gives its image whatever batch it is in
    finally:
        handle.remove()


def test_the_bases_own_value_is_used_recorded_and_an_asked_value_wins(random_base, tmp_path):
    from pipeline.diffusion.base import SAMPLING_FILE, base_guidance_until
    assert base_guidance_until(random_base) == 1.0  # no sampling file: every step, as the paper
    assert base_guidance_until("someone/some-model") == 1.0  # a hub id: SD v1.5's sampling
    b = tmp_path / "base"
    shutil.copytree(random_base, b)
    (b / SAMPLING_FILE).write_text(json.dumps({"guidance": 2.0, "guidance_until": 0.5}))
    assert base_guidance_until(b) == 0.5 and base_guidance_until(b, 1) == 1.0
    G.clear_pipelines()
    run = dict(base=str(b), n=2, steps=4, qc=False, seed=3, batch_size=2)
    ev = list(G.generate(G.GenerateConfig(**run)))
    assert ev[0]["params"]["guidance_until"] == 0.5 and ev[1]["sample"].params["guidance_until"] == 0.5
    full = list(G.generate(G.GenerateConfig(**run, guidance_until=1)))
    assert full[0]["params"]["guidance_until"] == 1.0
    assert not np.array_equal(ev[1]["sample"].rgb, full[1]["sample"].rgb)
    for text in ('{"guidance_until": 0}', '{"guidance_until": "half"}', '{"guidance_until": 2}'):
        (b / SAMPLING_FILE).write_text(text)
        with pytest.raises(ValueError, match=f"{SAMPLING_FILE}: guidance_until"):
            base_guidance_until(b)
    G.clear_pipelines()
