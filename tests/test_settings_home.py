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


def test_a_request_reads_the_base_sampling_file_once(tmp_path, monkeypatch):
    """BaseSampling.of parsed the sampling file four times per generation request (issue 34): now once."""
    import json
    import pipeline.diffusion.base as B
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / B.SAMPLING_FILE).write_text(json.dumps({"guidance": 2.5, "guidance_until": 0.5,
                                                        "ellipse_guidance": {"at": [0.5]}}))
    reads = []
    real = B.sampling_record
    monkeypatch.setattr(B, "sampling_record", lambda base=None: reads.append(base) or real(base))
    s = B.BaseSampling.of(tmp_path)
    assert (s.guidance, s.guidance_until, s.ellipse.at, s.calibration) == (2.5, 0.5, (0.5,), None)
    assert reads == [tmp_path]
    assert B.base_sizes(tmp_path, 128, B.sampling_record(tmp_path)) == [128] and len(reads) == 2


def test_no_page_holds_a_paragraph_on_one_line():
    """pages/guide.py once held a 1,143-character line of prose (issue 34): text a person edits wraps."""
    from pathlib import Path
    long = [f"{p.name}:{i}" for p in (Path(__file__).resolve().parents[1] / "pages").glob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if len(line) > 600]
    assert long == []


@pytest.mark.parametrize("name,bad", [("epochs", 0), ("batch_size", 2000), ("lr", 0.0), ("aug_views", 65),
                                      ("n_val", 0), ("n_val", 10**6)])
def test_the_sweep_takes_its_training_ranges_from_finetune_config(name, bad):
    """SweepConfig once restated FinetuneConfig's ranges (issue 34): one home, FinetuneConfig.check_training."""
    from pipeline.data import DataError
    from pipeline.sweep.config import SweepConfig

    def refusal(cfg):
        with pytest.raises(DataError) as e:
            cfg.validate()
        return str(e.value)
    ft = refusal(FinetuneConfig(data="phantom:4", **{name: bad}))
    sw = refusal(SweepConfig(train="phantom:4", augmentations=["none"], **{name: bad}))
    assert ft == sw and name.split("_")[0] in ft
