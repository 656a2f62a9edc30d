"""The realism report (pipeline/diffusion/realism.py): the feature definition against a direct encoder call,
the statistics' wiring, two halves of one real HC18 set near AUC 0.5 / KID 0, phantoms against real HC18
clearly separated, and bad inputs refused with a message before anything is encoded.

The encoder runs on few images (24 real, 11 phantoms at working size 64); the features are cached in one
folder for the module, so each image is encoded once however many tests use it.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.__main__ import main  # noqa: E402
from pipeline.data import DataError  # noqa: E402
from pipeline.diffusion import realism as R  # noqa: E402
from pipeline.masks import inject_mask  # noqa: E402
from pipeline.phantom import make_phantom  # noqa: E402

WS = 64  # working size: small, the encoder input is 256² whatever it is


@pytest.fixture(scope="module")
def model():
    from pipeline.sam.models import load_model
    torch.set_num_threads(2)
    return load_model("litemedsam", device="cpu")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("realism-cache")


@pytest.fixture(scope="module")
def real_second(hc18_root):
    """24 second-trimester HC18 images (seeded draw)."""
    return R.load_real(f"hc18:{hc18_root}", "second", max_real=24, seed=0).images


def _direct_features(model, gray: np.ndarray, ws: int) -> np.ndarray:
    """The definition written out independently: squash INTER_AREA to ws², INTER_LINEAR to 256², min-max to
    [0, 1], three equal channels, LiteMedSAM's image encoder, per-channel mean and population std."""
    small = cv2.resize(gray, (ws, ws), interpolation=cv2.INTER_AREA)
    x = cv2.resize(small, (256, 256), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    x = (x - x.min()) / max(float(x.max() - x.min()), 1e-8)
    t = torch.from_numpy(x)[None, None].repeat(1, 3, 1, 1)
    with torch.no_grad():
        emb = model.image_encoder(t)
    assert emb.shape == (1, 256, 64, 64)
    e = emb[0].reshape(256, -1).double()
    return torch.cat([e.mean(1), e.var(1, unbiased=False).sqrt()]).float().numpy()


def test_feature_definition_matches_a_direct_encoder_call(model, tmp_path):
    ph = make_phantom(3)
    rgb = inject_mask(ph.image, ph.mask)
    feats, stats = R.realism_features([ph.image, rgb], WS, model, cache_dir=tmp_path)
    assert feats.shape == (2, 512) and feats.dtype == np.float32
    want = _direct_features(model, ph.image, WS)
    np.testing.assert_allclose(feats[0], want, rtol=1e-4, atol=1e-5)
    # an in-channel sample is its gray picture (mean of R and G): the mask in B does not count
    np.testing.assert_allclose(feats[1], feats[0], rtol=1e-5, atol=1e-6)
    assert stats["encoder_runs"] == 2
    again, stats = R.realism_features([ph.image], WS, model, cache_dir=tmp_path)
    assert (stats["cache_hits"], stats["encoder_runs"]) == (1, 0)
    np.testing.assert_array_equal(again[0], feats[0])
    # another working size is another picture, hence other features
    other, _ = R.realism_features([ph.image], 128, model, cache_dir=tmp_path)
    assert np.abs(other[0] - feats[0]).max() > 1e-3


def test_kid_and_auc_wiring_on_known_features():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 512)).astype(np.float32)
    b = rng.normal(size=(30, 512)).astype(np.float32)
    # subsets of the whole (equal-sized) sets: every subset is the same, so KID is the plain unbiased MMD²
    k = R.kid_x1000(a, b, subsets=5)
    from torchmetrics.image.kid import poly_mmd
    want = float(poly_mmd(torch.from_numpy(b).double(), torch.from_numpy(a).double())) * 1000
    assert k["kid_subset_size"] == 30 and k["kid_x1000_std"] == pytest.approx(0, abs=1e-9)
    assert k["kid_x1000"] == pytest.approx(want, abs=1e-3)
    assert R.kid_x1000(a + 1.0, b)["kid_x1000"] > 50 * abs(k["kid_x1000"]) + 1
    assert R.classifier_auc(a, b)["auc"] < 0.75
    assert R.classifier_auc(a + 1.0, b)["auc"] > 0.95
    assert R.kid_x1000(a, b, seed=3) == R.kid_x1000(a, b, seed=3)  # seeded, torch's global RNG untouched


def test_two_halves_of_one_real_set_are_indistinguishable(model, cache_dir, real_second):
    h1, h2 = R.real_halves(len(real_second), seed=1)
    r = R.realism_report([real_second[i] for i in h1], [real_second[i] for i in h2], WS, "second",
                         model=model, cache_dir=cache_dir)
    g = r["generated_vs_real"]
    assert g["auc"] < 0.75, r
    assert abs(g["kid_x1000"]) < 0.1, r
    assert r["real_vs_real"]["halves"] == [6, 6]
    assert "0.5 would be indistinguishable" in r["reading"]


def test_phantoms_are_clearly_separated_from_real(model, cache_dir, real_second):
    phantoms = R.load_generated("phantom:16", "second")
    assert len(phantoms.images) == 11 and phantoms.notes  # 5 of another trimester left out
    r = R.realism_report(phantoms.images, real_second, WS, "second", model=model, cache_dir=cache_dir)
    g, f = r["generated_vs_real"], r["real_vs_real"]
    assert g["auc"] > 0.9, r
    # the floor of 6 + 6 real images is noisy (the unbiased estimate may dip below 0): a margin, not a ratio
    assert g["kid_x1000"] > f["kid_x1000"] + 0.1, r
    assert "tells them apart easily" in r["reading"]
    assert r["real"]["n"] == 24 and r["generated"]["n"] == 11
    md = R.report_markdown(r)
    assert "KID ×1000" in md and "real vs real" in md


def test_generated_folder_in_channel_and_trimester_filter(tmp_path):
    ds = tmp_path / "syn"
    (ds / "images").mkdir(parents=True)
    (ds / "meta").mkdir()
    for i, tri in enumerate(["second", "second", "third"]):
        ph = make_phantom(i)
        rgb = inject_mask(ph.image, ph.mask)
        cv2.imwrite(str(ds / "images" / f"s{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        (ds / "meta" / f"s{i}.json").write_text(json.dumps({"trimester": tri}))
    s = R.load_generated(str(ds), "second")
    assert s.names == ["s0.png", "s1.png"] and "1 of 3" in s.notes[0]
    np.testing.assert_array_equal(s.images[0], make_phantom(0).image)  # mean(R, G), not the mask
    assert len(R.load_generated(f"folder:{ds}", None).images) == 3
    plain = tmp_path / "plain"
    plain.mkdir()
    cv2.imwrite(str(plain / "a.png"), make_phantom(5).image)
    assert R.load_generated(str(plain), "first").images[0].shape == make_phantom(5).image.shape


def test_lora_training_images_left_out_of_the_real_set(hc18_root, tmp_path):
    spec = f"hc18:{hc18_root}"
    every = R.load_real(spec, "third", max_real=10_000)
    lora = tmp_path / "lora"
    lora.mkdir()
    trained = every.names[:20]
    (lora / "lora_config.json").write_text(json.dumps({"names": trained, "trimester": "third", "data": spec}))
    names, _ = R.lora_training_names(lora)
    kept = R.load_real(spec, "third", exclude=names, max_real=10_000)
    assert len(kept.names) == len(every.names) - 20 and not set(kept.names) & set(trained)
    assert "20 third-trimester images the LoRA trained on left out" in kept.notes[0]
    drawn = R.load_real(spec, "third", exclude=names, max_real=12, seed=4)
    assert len(drawn.names) == 12 and drawn.names == R.load_real(spec, "third", names, 12, 4).names


@pytest.mark.parametrize("gen, real, kw, message", [
    ("/no/such/folder", "phantom:40", {}, "path not found"),
    ("phantom:4", "phantom:40", {}, "only 1 generated image"),
    ("phantom:40", "phantom:12", {}, "only 7 real image"),
    ("phantom:40", "phantom:40", {"trimester": "fourth"}, "unknown trimester"),
    ("phantom:40", "phantom:40", {"exclude_lora": "/no/such/lora"}, "LoRA folder not found"),
    ("phantom:40", "phantom:40", {"working_size": 0}, "working size"),
    ("nonsense:x", "phantom:40", {}, "unknown data source"),
])
def test_bad_inputs_refused_before_encoding(gen, real, kw, message, monkeypatch):
    def no_encoder(*a, **k):
        raise AssertionError("the encoder ran for a refused input")
    monkeypatch.setattr(R, "realism_features", no_encoder)
    kw = {"trimester": "second", **kw}
    with pytest.raises((DataError, ValueError), match=message):
        R.realism_report(gen, real, kw.pop("working_size", 64), **kw)


def test_too_few_arrays_and_empty_folder(tmp_path, monkeypatch):
    def no_encoder(*a, **k):
        raise AssertionError("the encoder ran for a refused input")
    monkeypatch.setattr(R, "realism_features", no_encoder)
    img = make_phantom(0).image
    with pytest.raises(DataError, match="only 1 generated image"):
        R.realism_report([img], [img] * 12, 64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        R.realism_report(str(tmp_path / "empty"), [img] * 12, 64)
    bad = tmp_path / "lora"
    bad.mkdir()
    with pytest.raises(DataError, match="no lora_config.json"):
        R.realism_report([img] * 6, "phantom:40", 64, "second", exclude_lora=bad)


def test_cli_refuses_with_one_error_line(capsys, tmp_path):
    rc = main(["realism", "--generated", str(tmp_path / "missing"), "--real", "phantom:40", "--trimester", "second"])
    err = capsys.readouterr().err
    assert rc == 2 and "path not found" in err and "Traceback" not in err


def _fake_features(images, working_size, model=None, cache_dir=None, batch_size=8, progress=None):
    """Stand-in for the encoder in wiring tests: a feature that depends on the pixels (mean, std)."""
    f = np.zeros((len(images), 512), np.float32)
    for i, im in enumerate(images):
        g = R.to_feature_input(R.as_gray(im), working_size).astype(np.float32)
        f[i, 0], f[i, 1] = g.mean() / 255, g.std() / 255
        f[i, 2:] = np.random.default_rng(i).normal(size=510) * 0.01
    if progress:
        progress(len(images), len(images))
    return f, {"cache_hits": 0, "encoder_runs": len(images), "encoder": "fake"}


def test_generation_tab_panel_runs_the_report(tmp_path, monkeypatch):
    """The panel's handler (endpoint `realism`) in an in-process app: synthetic/NAME vs the loaded real data
    of the trimester, the dataset's recorded LoRA's images left out, and a clear refusal for an empty set."""
    from app import build_app, make_context
    monkeypatch.setattr(R, "realism_features", _fake_features)
    ctx = make_context("tiny", [str(tmp_path)], str(tmp_path / "work"))
    demo = build_app(ctx)
    fn = next(f for f in demo.fns.values() if f.api_name == "realism").fn
    ds = ctx.work_dir / "synthetic" / "set1"
    (ds / "images").mkdir(parents=True)
    (ds / "meta").mkdir()
    lora = ctx.work_dir / "loras" / "l1"
    lora.mkdir(parents=True)
    (lora / "lora_config.json").write_text(json.dumps({"names": ["phantom_0_0000", "phantom_0_0005", "phantom_0_0001"],
                                                      "trimester": "second"}))
    for i in range(6):
        ph = make_phantom(100 + i)
        cv2.imwrite(str(ds / "images" / f"g{i}.png"), ph.image)
        (ds / "meta" / f"g{i}.json").write_text(json.dumps({"trimester": "second", "lora": str(lora)}))
    md, rep = fn("set1", "second", None, "phantom:40")
    assert rep["generated"]["n"] == 6 and rep["real"]["excluded_lora_images"] == 2
    # phantom:40 holds 30 second-trimester images; 0000 and 0005 are two of them, 0001 is of another trimester
    assert rep["real"]["n"] == 28 and rep["working_size"] == ctx.profile.resolution
    assert "real vs real" in md and "0.5 would be indistinguishable" in md
    # pairs drawn at 256² (a detail pass or a base that knows 256²) are compared at 256², not squashed to 128²
    (ds / "meta" / "g0.json").write_text(json.dumps({"trimester": "second", "lora": str(lora), "detail_size": 256}))
    assert fn("set1", "second", None, "phantom:40")[1]["working_size"] == 256
    (ds / "meta" / "g0.json").write_text(json.dumps({"trimester": "second", "lora": str(lora), "size": "big"}))
    assert fn("set1", "second", None, "phantom:40")[1]["working_size"] == ctx.profile.resolution
    with pytest.raises(Exception, match="no accepted pairs yet"):
        fn("set2", "second", None, "phantom:40")


def test_the_papers_samples_are_measured_as_a_reference(model, cache_dir, real_second, tmp_path):
    """The report measures a reference set against the same real set (default: the paper's own SD v1.5
    samples, ../shared/reference/paper_synthetic, where present) and prints it beside ours."""
    ref = tmp_path / "paper_synthetic"
    ref.mkdir()
    import cv2
    for i in range(6):
        cv2.imwrite(str(ref / f"T2syn{i}.png"), real_second[i])  # real images as the reference: near the floor
    phantoms = R.load_generated("phantom:16", "second").images
    r = R.realism_report(phantoms, real_second, WS, "second", model=model, cache_dir=cache_dir, reference=ref)
    rr = r["reference_vs_real"]
    assert rr["n"] == 6 and rr["source"] == str(ref)
    assert rr["auc"] < r["generated_vs_real"]["auc"]
    md = R.report_markdown(r)
    assert "| reference: the paper's SD v1.5 samples (6) vs real |" in md
    assert R.realism_report(phantoms, real_second, WS, "second", model=model, cache_dir=cache_dir,
                            reference=None)["reference_vs_real"] is None
    if R.default_reference() is None:
        pytest.skip("../shared/reference/paper_synthetic is not here: the default reference is not checked")
    auto = R.realism_report(phantoms, real_second, WS, "second", model=model, cache_dir=cache_dir)
    assert auto["reference_vs_real"]["n"] == 10
