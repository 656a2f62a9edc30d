"""The working size beyond the base's own (issue 12): a LoRA trained at another square size records it, the
detail pass (generate.py: a base-size sample re-drawn at the detail LoRA's size, img2img) and pairs written
at the scans' aspect ratio (restore_aspect), and the sweep settings that carry them to the SYN arm.

A random test-size base (32²) stands in for the tiny base: these are plumbing tests, the weights do not
matter. What the detail pass does to realism and valid rates is measured in docs/results.md."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.data import DataError  # noqa: E402
from pipeline.diffusion import dataset as D  # noqa: E402
from pipeline.diffusion import generate as G  # noqa: E402
from pipeline.diffusion.base import restore_aspect  # noqa: E402
from pipeline.diffusion.lora import LoraTrainConfig, train_lora  # noqa: E402
from pipeline.masks import Ellipse  # noqa: E402


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def _lora(base, out, resolution=0, steps=2):
    cfg = LoraTrainConfig(data="phantom:24", trimester="second", n=3, steps=steps, rank=4, alpha=4, lr=1e-3,
                          batch_size=2, save_every=1, preview_every=0, base=str(base), resolution=resolution)
    evs = list(train_lora(cfg, out))
    assert evs[-1]["kind"] == "done"
    return json.loads((out / "lora_config.json").read_text())


@pytest.fixture(scope="module")
def loras(random_base, tmp_path_factory):
    d = tmp_path_factory.mktemp("loras")
    return {"base_size": d / "base-size", "detail": d / "detail",
            "records": (_lora(random_base, d / "base-size"), _lora(random_base, d / "detail", resolution=64))}


def test_a_lora_trains_at_its_resolution_records_it_and_a_finished_one_stays_done(random_base, loras):
    own, detail = loras["records"]
    assert (own["resolution"], own["working_size"]) == (0, 32)  # the test base's own size
    assert (detail["resolution"], detail["working_size"]) == (64, 64)
    assert G.lora_working_size(loras["detail"]) == 64 and G.lora_working_size(loras["base_size"]) == 32
    # run again with nothing left to do: still "done" (it once flipped back to "training")
    again = LoraTrainConfig(data="phantom:24", trimester="second", n=3, steps=2, rank=4, alpha=4, lr=1e-3,
                            batch_size=2, save_every=1, preview_every=0, base=str(random_base), resolution=64)
    list(train_lora(again, loras["detail"]))
    assert json.loads((loras["detail"] / "lora_config.json").read_text())["status"] == "done"
    # resuming at another size is refused by name, nothing is trained
    with pytest.raises(DataError, match="resolution"):
        list(train_lora(LoraTrainConfig(**{**again.__dict__, "resolution": 128, "names": []}), loras["detail"]))
    for bad in (100, 16, 4096, -8):
        with pytest.raises(DataError, match="resolution"):
            LoraTrainConfig(resolution=bad).validate()


def test_the_detail_pass_redraws_each_sample_at_the_detail_loras_size(random_base, loras):
    G.clear_pipelines()
    cfg = G.GenerateConfig(trimester="second", n=2, seed=7, base=str(random_base), steps=4, qc=False,
                           lora=str(loras["base_size"]), detail_lora=str(loras["detail"]), detail_strength=0.5)
    a = [e["sample"] for e in G.generate(cfg) if e["kind"] == "sample"]
    assert [s.rgb.shape for s in a] == [(64, 64, 3)] * 2
    assert a[0].params["detail_size"] == 64 and a[0].params["detail_strength"] == 0.5
    b = [e["sample"] for e in G.generate(cfg) if e["kind"] == "sample"]
    np.testing.assert_array_equal(a[0].rgb, b[0].rgb)  # a seed gives the same pair
    # the detail pass starts from the base-size sample: a stronger pass draws a different picture
    c = [e["sample"] for e in G.generate(G.GenerateConfig(**{**cfg.__dict__, "detail_strength": 1.0}))
         if e["kind"] == "sample"]
    assert np.abs(c[0].rgb.astype(int) - a[0].rgb).mean() > 0.5
    plain = [e["sample"] for e in G.generate(G.GenerateConfig(**{**cfg.__dict__, "detail_lora": None}))
             if e["kind"] == "sample"]
    assert plain[0].rgb.shape == (32, 32, 3) and plain[0].params["detail_size"] is None


def test_a_lora_used_at_a_size_it_did_not_train_at_is_refused_with_what_to_do(random_base, loras):
    G.clear_pipelines()
    base = dict(trimester="second", n=1, seed=1, base=str(random_base), steps=2, qc=False)
    with pytest.raises(ValueError, match="use it as the detail LoRA"):
        next(e for e in G.generate(G.GenerateConfig(**base, lora=str(loras["detail"]))) if e["kind"] == "sample")
    with pytest.raises(ValueError, match="trained above the 32² the first pass draws at"):
        next(G.generate(G.GenerateConfig(**base, lora=str(loras["base_size"]), detail_lora=str(loras["base_size"]))))
    with pytest.raises(ValueError, match="without pipe"):
        next(G.generate(G.GenerateConfig(**base, detail_lora=str(loras["detail"])), pipe=G.get_pipeline(str(random_base))))
    for bad in (dict(detail_strength=0), dict(detail_strength=1.5), dict(restore_aspect=0.1),
                dict(restore_aspect=9), dict(restore_aspect=float("nan"))):
        with pytest.raises(Exception, match="detail strength|restore aspect"):
            G.GenerateConfig(**base, **bad).validate()


def test_a_base_pretrained_at_a_larger_size_samples_a_lora_of_that_size_there(random_base, loras, tmp_path):
    """pretrain-base --extra-resolutions: the base's sampling file lists the sizes its UNet knows, and a LoRA
    trained at one of them draws there directly (no detail pass); other sizes are still refused."""
    import shutil
    from pipeline.diffusion.base import base_sizes
    two = tmp_path / "two-size-base"
    shutil.copytree(random_base, two)
    (two / "sonosynth_sampling.json").write_text(json.dumps({"sizes": [64]}))
    assert base_sizes(str(two), 32) == [32, 64] and base_sizes(str(random_base), 32) == [32]
    G.clear_pipelines()
    cfg = G.GenerateConfig(trimester="second", n=2, seed=3, base=str(two), steps=3, qc=False, lora=str(loras["detail"]))
    a = [e["sample"] for e in G.generate(cfg) if e["kind"] == "sample"]
    assert [s.rgb.shape for s in a] == [(64, 64, 3)] * 2
    assert a[0].params["size"] == 64 and a[0].params["detail_size"] is None
    # the same LoRA on the base that only knows 32² is refused, naming the way to a base that knows 64²
    with pytest.raises(ValueError, match="extra-resolutions"):
        next(e for e in G.generate(G.GenerateConfig(**{**cfg.__dict__, "base": str(random_base)})) if e["kind"] == "sample")
    # a detail pass must go above the size the first pass draws at
    with pytest.raises(ValueError, match="trained above the 64² the first pass draws at"):
        next(G.generate(G.GenerateConfig(**{**cfg.__dict__, "detail_lora": str(loras["detail"])})))
    (two / "sonosynth_sampling.json").write_text(json.dumps({"sizes": ["big"]}))
    with pytest.raises(ValueError, match="'sizes' must be a list"):
        base_sizes(str(two), 32)
    G.clear_pipelines()


def test_restore_aspect_writes_the_pair_at_the_scans_shape_and_keeps_the_raw_square(tmp_path):
    from test_synthetic_dataset import FakePipe  # a known ellipse in the blue channel for even seeds
    cfg = G.GenerateConfig(trimester="second", n=2, seed=0, qc=False, batch_size=2, restore_aspect=1.5,
                           out_size=0)  # the sample's own 128², as the numbers below are
    evs = [e for e in D.fill(tmp_path, cfg, pipe=FakePipe()) if e["kind"] == "sample"]
    assert [e["accepted"] for e in evs] == [True, False]
    name = evs[0]["sample"].name
    from pipeline.data import read_gray
    img, mask = read_gray(tmp_path / "images" / f"{name}.png"), read_gray(tmp_path / "masks" / f"{name}.png")
    assert img.shape == mask.shape == (128, 192)
    square = Ellipse(64, 64, 40, 30, 10).fill((128, 128)).sum()
    assert abs((mask > 127).sum() / square - 1.5) < 0.03  # the head stretched with the frame, not cropped
    meta = json.loads((tmp_path / "meta" / f"{name}.json").read_text())
    assert meta["written_size"] == [192, 128] and meta["restore_aspect"] == 1.5
    assert read_gray(tmp_path / "raw" / f"{name}.png").shape == (128, 128)
    # portrait and identity
    g, m = restore_aspect(np.zeros((64, 64), np.uint8), np.ones((64, 64), bool), 0.5)
    assert g.shape == m.shape == (128, 64) and m.all()
    assert restore_aspect(np.zeros((64, 64), np.uint8), np.ones((64, 64), bool), 1.0)[0].shape == (64, 64)


def test_sweep_settings_for_the_detail_pass_are_checked_and_reach_generation(tmp_path, monkeypatch):
    from pipeline.sweep import preset
    from pipeline.sweep import synthetic as S
    for bad, msg in ((dict(detail_resolution=256), "train_loras"),
                     (dict(train_loras=True, detail_resolution=100), "multiple of 8"),
                     (dict(loras={"second": "a"}, detail_loras={"first": "b"}), "first"),
                     (dict(train_loras=True, restore_aspect=0.1), "restore_aspect"),
                     (dict(train_loras=True, detail_strength=0), "detail_strength")):
        with pytest.raises(DataError, match=msg):
            preset("smoke", train="phantom:12", augmentations=["syn"], **bad).validate()
    asked = {}

    class Requested(Exception):
        pass

    def fake_generate(gcfg, stop=None, pipe=None, predictor=None):
        asked["cfg"] = gcfg
        raise Requested
        yield
    monkeypatch.setattr(G, "generate", fake_generate)
    cfg = preset("smoke", train="phantom:12", augmentations=["syn"], loras={"second": "l2"},
                 detail_loras={"second": "d2"}, detail_strength=0.4, restore_aspect=1.48)
    with pytest.raises(Requested):
        list(S.generate_synthetic(cfg, tmp_path / "synthetic"))
    g = asked["cfg"]
    assert (g.lora, g.detail_lora, g.detail_strength, g.restore_aspect) == ("l2", "d2", 0.4, 1.48)
    state = json.loads((tmp_path / "synthetic" / "generation_state.json").read_text())
    assert state["sampling"]["restore_aspect"] == 1.48
    # the same set asked for another way is refused, not mixed
    cfg.restore_aspect = 0.0
    cfg.detail_loras = None
    with pytest.raises(DataError, match="begun with"):
        list(S.generate_synthetic(cfg, tmp_path / "synthetic"))


def test_train_loras_with_a_detail_resolution_trains_both_sizes_on_the_same_images(tmp_path, monkeypatch):
    from pipeline.diffusion import lora as L
    from pipeline.sweep import preset
    from pipeline.sweep import synthetic as S
    asked = []

    def fake_train_lora(lcfg, out, **kw):
        asked.append((lcfg.trimester, lcfg.resolution, lcfg.pool, lcfg.n, str(out)))
        yield {"kind": "done", "step": lcfg.steps, "path": str(out), "losses": []}
    monkeypatch.setattr(L, "train_lora", fake_train_lora)
    cfg = preset("smoke", train="phantom:24", augmentations=["syn"], train_loras=True, detail_resolution=256)
    cfg.validate()
    list(S.train_trimester_loras(cfg, tmp_path / "loras"))
    plain = [a for a in asked if a[1] == 0]
    detail = [a for a in asked if a[1] == 256]
    assert plain and [a[0] for a in plain] == [a[0] for a in detail]  # one detail LoRA per trimester
    assert all(a[2] == "train" for a in asked) and len({a[3] for a in asked}) == 1  # same pool, same count
    assert cfg.detail_loras == {t: str(tmp_path / "loras" / f"{t}-256") for t, *_ in detail}


def test_a_ready_made_detail_lora_not_above_its_trimesters_lora_is_refused_before_the_sweep_starts(loras):
    """The Experiments tab and `sweep --detail-loras` take ready-made detail LoRAs: one trained at the base-size
    LoRA's size (or below) is refused by check_sources, before any cell runs, not when the SYN arm generates."""
    from pipeline.sweep import preset
    ok = preset("smoke", train="phantom:12", augmentations=["syn"], loras={"second": str(loras["base_size"])},
                detail_loras={"second": str(loras["detail"])})
    ok.check_sources()  # 64² above 32²: accepted
    swapped = preset("smoke", train="phantom:12", augmentations=["syn"], loras={"second": str(loras["detail"])},
                     detail_loras={"second": str(loras["base_size"])})
    with pytest.raises(DataError, match=r"second-trimester detail LoRA base-size was trained at 32², not above "
                                        r"the 64²"):
        swapped.check_sources()
