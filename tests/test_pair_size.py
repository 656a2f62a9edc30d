"""Pairs are made at the segmenter's input size (issue 32): a 128² sample is written at 256², its mask the
Ellipse Extractor's ellipse re-drawn at 256² (smooth), not the 128² mask's pixels blown up."""
import numpy as np
import pytest

from pipeline.config import GenerationDefaults
from pipeline.diffusion import generate as G
from pipeline.masks import Ellipse, extract_ellipse


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_upsample_pair_redraws_the_ellipse_at_the_new_size():
    truth = Ellipse(130.0, 120.0, 150.0, 110.0, 25.0)  # at 256²
    small = Ellipse((truth.cx + 0.5) / 2 - 0.5, (truth.cy + 0.5) / 2 - 0.5, truth.width / 2, truth.height / 2, 25.0)
    blue = small.fill((128, 128)).astype(np.uint8) * 255
    gray = np.tile(np.linspace(0, 255, 128, dtype=np.float32), (128, 1)).astype(np.uint8)
    ex = extract_ellipse(blue, threshold=127)
    big_gray, big = G.upsample_pair(gray, ex, 256)
    assert big_gray.shape == (256, 256) and big.mask.shape == (256, 256) and big.valid == ex.valid
    want = truth.fill((256, 256))
    nearest = np.kron(ex.mask, np.ones((2, 2), bool))  # the 128² mask's pixels blown up
    assert _iou(big.mask, want) > 0.985
    assert _iou(big.mask, want) > _iou(nearest, want)
    assert big.ellipse.width == pytest.approx(2 * ex.ellipse.width)


def test_upsample_pair_keeps_a_refused_sample_refused_and_the_aspect():
    ex = extract_ellipse(np.zeros((128, 192), np.uint8), threshold=127)
    g, big = G.upsample_pair(np.zeros((128, 192), np.uint8), ex, 256)
    assert g.shape == (256, 384) and not big.mask.any() and not big.valid and big.reason == ex.reason


def test_the_default_pair_is_written_at_256_on_the_tiny_base(tmp_path):
    from pipeline.diffusion.dataset import fill
    assert GenerationDefaults().out_size == 256 and G.GenerateConfig().out_size == 256
    cfg = G.GenerateConfig(trimester="second", n=2, seed=0, steps=2, qc=False)
    evs = [e for e in fill(tmp_path / "set", cfg, min_qc=0.0) if e["kind"] == "sample"]
    smp = [e["sample"] for e in evs]
    assert all(s.gray.shape == (256, 256) and s.extraction.mask.shape == (256, 256) for s in smp)
    assert all(s.rgb.shape[:2] == (128, 128) for s in smp)  # raw/: the sample as drawn
    assert smp[0].params["out_size"] == 256
    with pytest.raises(ValueError, match="out_size"):
        G.GenerateConfig(out_size=-1).validate()
