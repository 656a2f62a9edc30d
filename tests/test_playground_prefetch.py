"""The Playground encodes a loaded image before the box is drawn: the first box is then answered from the
predictor's cache (no encoder run), like a second box."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import app
from pipeline.data import open_source
from pipeline.masks import mask_bbox


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pg")
    ctx = app.make_context("tiny", [str(tmp / "data")], str(tmp / "work"))
    return app.build_app(ctx), ctx


def test_a_loaded_image_is_encoded_before_the_box(playground):
    import pages.playground as P
    from pipeline.sam.evaluate import segment
    demo, ctx = playground
    # wired: every way an image arrives (a listed sample, an upload) is followed by the prefetch
    fns = demo.fns
    pres = [f for f in fns.values() if getattr(f.fn, "__name__", "") == "prefetch_embedding"]
    after = sorted(fns[f.trigger_after].fn.__name__ for f in pres if f.trigger_after is not None)
    assert after == ["load_sample", "load_sample", "load_upload"]
    pre = pres[0]
    assert pre.show_progress == "hidden" and pre.concurrency_id == "playground"
    s = open_source("phantom:24")[3]
    request = SimpleNamespace(session_hash="prefetch-test")
    pre.fn(s.image, P.BASE, request)
    pred = P._predictor(ctx, "prefetch-test", P.BASE)  # the session's predictor the prefetch filled
    assert pred.encoder_calls == 1
    seg = segment(pred, s.image, mask_bbox(s.mask))  # what the first box does
    assert pred.encoder_calls == 1 and seg.mask.any()  # answered from the cache
    pre.fn(None, P.BASE, request)  # nothing loaded yet: nothing to do
    pre.fn(np.zeros((3, 3), np.uint8), P.BASE, request)  # a bad image: silent, the box request reports it
    assert pred.encoder_calls == 1


def test_the_playground_keeps_no_model_cache_of_its_own(playground):
    """The Playground's predictors use the model of pipeline.sam.models.load_model's cache (one cache of
    models); a session's predictor lives on that model, so it goes with it and a reloaded model gets new ones."""
    import pages.playground as P
    from pipeline.sam import load_model
    from pipeline.sam import models as M
    _, ctx = playground
    a, b = P._predictor(ctx, "s-a", P.BASE), P._predictor(ctx, "s-b", P.BASE)
    assert a is P._predictor(ctx, "s-a", None) and a is not b  # per session; None and "" are the base too
    assert a.model is b.model is load_model(ctx.profile.sam_backend, ctx.profile.sam_checkpoint)
    assert not hasattr(P, "_PREDICTORS")
    saved = dict(M._MODELS)
    try:
        M._MODELS.clear()  # models.py let the model go: the Playground holds no copy of it
        c = P._predictor(ctx, "s-a", P.BASE)
        assert c is not a and c.model is not a.model and c.encoder_calls == 0
    finally:
        M._MODELS.clear()
        M._MODELS.update(saved)
