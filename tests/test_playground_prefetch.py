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
    demo = app.build_app(app.make_context("tiny", [str(tmp / "data")], str(tmp / "work")))
    return demo


def test_a_loaded_image_is_encoded_before_the_box(playground):
    import pages.playground as P
    from pipeline.sam.evaluate import segment
    # wired: every way an image arrives (a listed sample, an upload) is followed by the prefetch
    fns = playground.fns
    pres = [f for f in fns.values() if getattr(f.fn, "__name__", "") == "prefetch_embedding"]
    after = sorted(fns[f.trigger_after].fn.__name__ for f in pres if f.trigger_after is not None)
    assert after == ["load_sample", "load_sample", "load_upload"]
    pre = pres[0]
    assert pre.show_progress == "hidden" and pre.concurrency_id == "playground"
    s = open_source("phantom:24")[3]
    request = SimpleNamespace(session_hash="prefetch-test")
    pre.fn(s.image, P.BASE, request)
    pred = P._PREDICTORS[("prefetch-test", "None")]
    assert pred.encoder_calls == 1
    seg = segment(pred, s.image, mask_bbox(s.mask))  # what the first box does
    assert pred.encoder_calls == 1 and seg.mask.any()  # answered from the cache
    pre.fn(None, P.BASE, request)  # nothing loaded yet: nothing to do
    pre.fn(np.zeros((3, 3), np.uint8), P.BASE, request)  # a bad image: silent, the box request reports it
    assert pred.encoder_calls == 1
