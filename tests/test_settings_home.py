"""One home per setting (issue 9): the config dataclass's default is what the CLI and the tabs start from
(empty_prompt_prob once lived in three places in lora.py and three in pages/lora.py)."""
import argparse
from dataclasses import fields

import gradio as gr
import pytest

import app
from pipeline.diffusion.lora import LoraTrainConfig, add_lora_arguments
from pipeline.sam.finetune import FinetuneConfig


def _cli_defaults(add, required: list[str]) -> dict:
    p = argparse.ArgumentParser()
    add(p)
    return vars(p.parse_args(required))


def test_train_lora_cli_defaults_are_the_configs():
    d = _cli_defaults(add_lora_arguments, ["--data", "phantom:4", "--trimester", "second", "--out", "x"])
    c = LoraTrainConfig()
    for f in fields(LoraTrainConfig):
        # --data / --trimester are required; --base None means the profile's (resolved in run_cli)
        if f.name in d and f.name not in ("data", "trimester", "base"):
            assert d[f.name] == getattr(c, f.name), f.name


def test_finetune_sam_cli_defaults_are_the_configs():
    from pipeline.sam.cli import add_arguments
    d = _cli_defaults(lambda p: add_arguments(p, "finetune-sam"), ["--data", "phantom:4", "--n-real", "3", "--out", "x"])
    c = FinetuneConfig(data="phantom:4")
    named = {"aug_views": "aug_views", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
             "weight_decay": "weight_decay", "jitter": "box_jitter_px", "n_val": "n_val", "seed": "seed",
             "split_seed": "split_seed"}
    for arg, field in named.items():
        assert d[arg] == getattr(c, field), arg


@pytest.fixture(scope="module")
def widgets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("home")
    demo = app.build_app(app.make_context("tiny", [str(tmp / "data")], str(tmp / "work")))
    return {b.elem_id: b.value for b in demo.blocks.values() if isinstance(b, gr.Number) and b.elem_id}


def test_the_tabs_start_from_the_configs(widgets):
    lora, ft = LoraTrainConfig(), FinetuneConfig(data="phantom:4")
    assert widgets["lora-steps"] == lora.steps and widgets["lora-preview-every"] == lora.preview_every
    assert widgets["lora-empty-prompt"] == lora.empty_prompt_prob and widgets["lora-batch"] == lora.batch_size
    assert widgets["lora-mask-loss-weight"] == lora.mask_loss_weight
    assert widgets["ft-nval"] == ft.n_val and widgets["ft-epochs"] == ft.epochs
