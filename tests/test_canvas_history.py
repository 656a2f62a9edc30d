"""Undo in the Generation tab's mask canvas: brush strokes are undone by Gradio's ImageEditor toolbar (the
browser test clicks it); a re-fit or a revert sets the canvas from Python, which starts the editor's history
afresh, so those are undone from the tab's own stack (these tests, and the browser test end to end)."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

import app
from pages.generation import HISTORY_LIMIT, editor_mask, editor_value, pop_history, push_history
from pipeline.masks import Ellipse


def test_push_and_pop_keep_the_order_and_a_limit():
    masks = [np.full((4, 4), i % 2 == 0) for i in range(HISTORY_LIMIT + 3)]
    h = []
    for m in masks:
        h = push_history(h, m)
    assert len(h) == HISTORY_LIMIT  # the oldest went first
    prev, h = pop_history(h)
    assert np.array_equal(prev, masks[-1]) and len(h) == HISTORY_LIMIT - 1
    assert pop_history([]) == (None, [])
    m = np.zeros((4, 4), bool)
    h = push_history([], m)
    m[0, 0] = True  # the stack keeps a copy, not the caller's array
    assert not h[0].any()


@pytest.fixture(scope="module")
def handlers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen-tab")
    demo = app.build_app(app.make_context("tiny", [str(tmp / "data")], str(tmp / "work")))
    fns = {getattr(f.fn, "__name__", ""): f.fn for f in demo.fns.values()}
    return fns["refit_mask"], fns["revert_mask"], fns["undo_mask"]


def test_refit_and_revert_are_undone_in_order(handlers):
    refit_mask, revert_mask, undo_mask = handlers
    gray = np.full((128, 128), 90, np.uint8)
    generated = Ellipse(64, 64, 40, 30, 0.3).fill((128, 128))
    s = SimpleNamespace(gray=gray, extraction=SimpleNamespace(mask=generated))
    painted = generated.copy()
    painted[2:6, 4:40] = True  # a stroke in a corner, away from the head
    v, info, h = refit_mask([s], 0, editor_value(gray, painted), [])
    refitted = editor_mask(v, gray.shape)
    assert not refitted[2:6, 4:40].any() and "Undo" in info and len(h) == 1  # the fit dropped the stroke
    v, info, h = revert_mask([s], 0, v, h)
    assert np.array_equal(editor_mask(v, gray.shape), generated) and len(h) == 2
    v, info, h = undo_mask([s], 0, h)  # back to the re-fitted mask
    assert np.array_equal(editor_mask(v, gray.shape), refitted) and "1 more" in info
    v, info, h = undo_mask([s], 0, h)  # back to the painted mask, stroke included
    assert np.array_equal(editor_mask(v, gray.shape), painted) and h == []
    v, info, h = undo_mask([s], 0, h)  # nothing left: the canvas is left as it is
    assert isinstance(v, type(gr.skip())) and h == []
    with pytest.raises(Exception, match="select a sample first"):
        undo_mask([s], None, [])
