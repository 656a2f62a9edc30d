"""The synthetic dataset's one owner (pipeline/diffusion/dataset.py, issue 9): the fill loop the Generation tab,
`python -m pipeline generate` and the sweep's SYN arm share, and counting its trimester mix by metadata.

A fake pipeline returns in-channel images whose blue channel holds a head ellipse or nothing, so the verdicts
are known without a diffusion model."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.diffusion import dataset as D
from pipeline.diffusion.generate import GenerateConfig
from pipeline.masks import Ellipse, inject_mask


class FakePipe:
    """Even seeds: a valid head ellipse in the blue channel; odd seeds: an empty blue channel (refused)."""
    device = "cpu"
    scheduler = SimpleNamespace()

    def __call__(self, prompts, num_inference_steps, guidance_scale, generator, output_type, **kw):
        # kw: callback_on_step_end (the base's latent calibration) has no latents to act on here
        out = []
        for g in generator:
            seed = g.initial_seed()
            gray = np.full((128, 128), 60, np.uint8)
            mask = Ellipse(64, 64, 40, 30, 10).fill((128, 128)) if seed % 2 == 0 else np.zeros((128, 128), bool)
            out.append(inject_mask(gray, mask).astype(np.float32) / 255)
        return SimpleNamespace(images=np.stack(out))


def _fill(folder, trimester="second", n=6, seed=0, **kw):
    cfg = GenerateConfig(trimester=trimester, n=n, seed=seed, qc=False, batch_size=4)
    return [ev for ev in D.fill(folder, cfg, pipe=FakePipe(), **kw) if ev["kind"] == "sample"]


def test_fill_saves_every_raw_sample_and_decides_each_one(tmp_path):
    evs = _fill(tmp_path)
    assert [ev["accepted"] for ev in evs] == [True, False] * 3
    assert len(list((tmp_path / "raw").glob("*.png"))) == 6
    c = D.counts(tmp_path)
    assert (c["accepted"], c["rejected"], c["trimesters"]["second"]) == (3, 3, 3)
    rejected = json.loads(next((tmp_path / "rejected" / "meta").glob("*.json")).read_text())
    assert rejected["verdict"] == "rejected" and rejected["reason"]


def test_fill_stops_accepting_at_want_and_a_person_decides_without_it(tmp_path):
    evs = _fill(tmp_path / "a", want=2)
    assert sum(ev["accepted"] for ev in evs) == 2
    assert [ev["reason"] for ev in evs][4] == D.NOT_NEEDED  # the third valid one is not needed
    evs = _fill(tmp_path / "b", decide=False)
    assert "accepted" not in evs[0] and not (tmp_path / "b" / "images").exists()
    assert len(list((tmp_path / "b" / "raw").glob("*.png"))) == 6


def test_counts_read_the_trimester_from_the_metadata_not_the_file_name(tmp_path):
    ds = tmp_path / "ds"
    _fill(ds, "first", n=2, seed=10)
    _fill(ds, "third", n=4, seed=20)
    (ds / "meta" / "renamed.json").write_text(json.dumps({"trimester": "second"}))
    (ds / "meta" / "broken.json").write_text("{")
    assert D.counts(ds)["trimesters"] == {"first": 1, "second": 1, "third": 2, "unknown": 1}
    (tmp_path / "not-a-dataset").mkdir()
    assert D.list_datasets(tmp_path) == [ds] and D.list_datasets(tmp_path / "none") == []


def test_accept_refuses_an_empty_mask(tmp_path):
    (ev,) = _fill(tmp_path, n=1, decide=False)
    with pytest.raises(ValueError, match="the mask is empty"):
        D.accept(tmp_path, ev["sample"], np.zeros_like(ev["sample"].extraction.mask))


def test_a_sweeps_synthetic_set_is_not_finished_with_a_base_that_now_samples_differently(tmp_path, monkeypatch):
    """The SYN set records how its base samples (guidance, latent calibration); resuming it after the base's
    sonosynth_sampling.json changed is refused before any sample is drawn, and nothing is lost."""
    import shutil

    import pipeline.sweep as E
    from pipeline.config import resolve_profile
    from pipeline.data import DataError
    from pipeline.diffusion.base import SAMPLING_FILE, resolve_base
    base = tmp_path / "base"
    shutil.copytree(resolve_base(None), base)  # the shipped base: guidance 2 and a calibration
    (base / SAMPLING_FILE).unlink()
    (base / SAMPLING_FILE).write_text(json.dumps({"guidance": 2.0}))
    drawn = []

    def fake_fill(out, gcfg, **kw):
        drawn.append(gcfg.seed)
        raise KeyboardInterrupt  # stop after the state is recorded, as a killed sweep would
        yield
    monkeypatch.setattr(D, "fill", fake_fill)
    syn = E.preset("smoke", resolve_profile("tiny"), train="phantom:12", augmentations=["syn"])
    syn.diffusion_base = str(base)
    syn.loras = {t: str(tmp_path / t) for t in ("first", "second", "third")}
    out = tmp_path / "synthetic"
    with pytest.raises(KeyboardInterrupt):
        list(E.generate_synthetic(syn, out))
    state = json.loads((out / "generation_state.json").read_text())
    # the sampling, and how the pairs are written: the phantom pool's 1.5 aspect, 256² (issue 32)
    assert state["sampling"] == {"guidance": 2.0, "latent_calibration": None, "detail_strength": None,
                                 "restore_aspect": 1.5, "out_size": 256} and len(drawn) == 1
    with pytest.raises(KeyboardInterrupt):  # the same base: resumes
        list(E.generate_synthetic(syn, out))
    assert len(drawn) == 2
    cal = {"center": [0.0] * 4, "scale": [1.1] * 4}
    (base / SAMPLING_FILE).write_text(json.dumps({"guidance": 2.0, "latent_calibration": cal}))
    with pytest.raises(DataError, match="now samples at .*latent_calibration.*start a new sweep folder"):
        list(E.generate_synthetic(syn, out))
    assert len(drawn) == 2 and json.loads((out / "generation_state.json").read_text()) == state  # kept
    (base / SAMPLING_FILE).write_text(json.dumps({"guidance": 2.0, "ellipse_guidance": {"at": [0.2, 0.4]}}))
    with pytest.raises(DataError, match="now samples at .*ellipse_guidance.*start a new sweep folder"):
        list(E.generate_synthetic(syn, out))
    assert len(drawn) == 2 and json.loads((out / "generation_state.json").read_text()) == state
    (base / SAMPLING_FILE).write_text(json.dumps({"guidance": 2.0, "guidance_until": 0.6}))
    with pytest.raises(DataError, match="now samples at .*guidance_until.*start a new sweep folder"):
        list(E.generate_synthetic(syn, out))
    assert len(drawn) == 2 and json.loads((out / "generation_state.json").read_text()) == state
