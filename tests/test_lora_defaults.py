"""The LoRA tab's default run works: its images-per-trimester field follows the source (the offline
phantom:24 has 17 second-trimester images; the paper's 20 used to refuse to start)."""
from __future__ import annotations

import gradio as gr
import pytest

import app
from pipeline.data import images_per_trimester_available, open_source, select_per_trimester


def test_available_images_per_trimester_caps_at_the_source():
    metas = open_source("phantom:24").metas
    n, note = images_per_trimester_available(metas, ["second"], 20)
    assert n == 17 and "17 second-trimester" in note and "paper: 20" in note
    assert images_per_trimester_available(metas, ["second", "first"], 20)[0] == 4  # the shortest one counts
    assert images_per_trimester_available(open_source("phantom:40").metas, ["second"], 20) == (20, "")
    assert images_per_trimester_available(metas, [], 20) == (20, "")


@pytest.fixture(scope="module")
def lora_tab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora-tab")
    ctx = app.make_context("tiny", [str(tmp / "data")], str(tmp / "work"))
    demo = app.build_app(ctx)
    n_field = next(b for b in demo.blocks.values() if isinstance(b, gr.Number) and b.elem_id == "lora-n")
    fit = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "fit_n")
    return ctx, n_field, fit


def test_the_tab_default_run_can_start_on_the_default_source(lora_tab):
    from pipeline.diffusion.lora import LoraTrainConfig, training_images
    ctx, n_field, _ = lora_tab
    assert ctx.default_source == "phantom:24"
    assert n_field.value == 17  # not 20: phantom:24 has 17 second-trimester images
    # what Start does with the defaults: the config accepts them and the seeded draw finds the images
    cfg = LoraTrainConfig(data=ctx.default_source, trimester="second", n=n_field.value)
    cfg.validate()
    images, names = training_images(cfg, 64, ctx.allowed_roots)
    assert len(images) == len(names) == 17
    select_per_trimester(open_source(ctx.default_source).metas, n_field.value, 0, trimesters=["second"])


def test_the_field_follows_the_source_and_only_lowers_a_typed_value(lora_tab):
    _, _, fit = lora_tab
    n, msg = fit("phantom:40", ["second"], 17, True)  # the tab's own value: back to the paper's 20
    assert n == 20 and msg == ""
    n, msg = fit("phantom:24", ["second", "first"], 17, True)
    assert n == 4 and "4 first-trimester" in msg
    n, msg = fit("phantom:24", ["second"], 25, False)  # typed by the user: lowered, and said so
    assert n == 17 and "lowered from 25 to 17" in msg
    n, msg = fit("phantom:40", ["second"], 5, False)  # a typed value the source can give is kept (left alone)
    assert isinstance(n, type(gr.skip())) and msg == ""
    n, msg = fit("folder:/nonexistent", ["second"], 5, False)  # a bad source: Show/Start explain it
    assert isinstance(n, type(gr.skip()))
