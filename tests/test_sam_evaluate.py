"""One batched evaluator (pipeline/sam/evaluate.py, issue 9): the sweep's test sets and fine-tuning's validation
score a decoder with evaluate_embeddings, which must give what the predictor gives one image at a time."""
import numpy as np
import pytest

from pipeline.augment import jittered_box_for
from pipeline.data import open_source
from pipeline.metrics import dice, hc_abs_error_mm
from pipeline.sam import SamPredictor, build_model
from pipeline.sam.cache import EmbeddingCache
from pipeline.sam.evaluate import evaluate_embeddings


@pytest.fixture(scope="module")
def lite():
    return build_model("litemedsam")  # the real shipped weights


def test_batched_scores_equal_one_image_at_a_time_through_the_predictor(lite, tmp_path):
    src = open_source("phantom:5:3")
    samples = [src[i] for i in range(len(src))]
    boxes = [jittered_box_for(s.mask, np.random.default_rng([0, i]), 20) for i, s in enumerate(samples)]
    embs = EmbeddingCache(tmp_path / "cache", lite).get_or_compute([s.image for s in samples])
    masks, metas = [s.mask for s in samples], [s.meta for s in samples]
    batched = evaluate_embeddings(lite, embs, boxes, masks, metas, batch_size=2)
    pred = SamPredictor(lite)
    one_by_one = {"dice": [], "hc_abs_error_mm": []}
    for s, b in zip(samples, boxes):
        pred.set_image(s.image)
        m = pred.predict(box=b)
        one_by_one["dice"].append(dice(m, s.mask))
        one_by_one["hc_abs_error_mm"].append(hc_abs_error_mm(m, s.meta.hc_mm, s.meta.pixel_size_mm))
    assert batched["dice"] == pytest.approx(one_by_one["dice"], abs=1e-6)
    assert batched["hc_abs_error_mm"] == pytest.approx(one_by_one["hc_abs_error_mm"], abs=1e-6)
    assert min(batched["dice"]) > 0.8  # a real model on phantoms: the scores are not all one value by accident
    # Dice only without metas; the decoder is left in the mode it was in
    lite.mask_decoder.train()
    assert evaluate_embeddings(lite, embs, boxes, masks, batch_size=8)["hc_abs_error_mm"] == [None] * len(samples)
    assert lite.mask_decoder.training
    lite.mask_decoder.eval()
