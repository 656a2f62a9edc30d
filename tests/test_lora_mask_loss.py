"""The mask-weighted LoRA loss (LoraTrainConfig.mask_loss_weight, not in the paper): the weights at the latent
grid follow the in-channel mask, 0 keeps the paper's plain loss, a weight changes what the LoRA learns and is
recorded, a changed weight on a resume is refused, and bad values are refused by name.

LoRA runs use a random-weight test-size (32²) base: the weights do not matter for these plumbing checks."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.data import DataError  # noqa: E402
from pipeline.diffusion.base import load_pipeline, rgb_to_tensor  # noqa: E402
from pipeline.diffusion.lora import LoraTrainConfig, mask_loss_weights, train_lora  # noqa: E402


def test_weights_follow_the_mask_at_the_latent_grid():
    rgb = np.zeros((1, 64, 64, 3), np.uint8)
    rgb[0, 16:48, 16:48, 2] = 255  # a square head
    w = mask_loss_weights(rgb_to_tensor(rgb), (8, 8), 4.0)
    assert w.shape == (1, 1, 8, 8)
    assert w[0, 0, 3, 3].item() == pytest.approx(5.0)  # inside: 1 + 4
    assert w[0, 0, 0, 0].item() == pytest.approx(1.0)  # far outside: the plain weight
    # the 2-px ring beyond the mask's edge counts partly: the cells just outside are between 1 and 5
    assert 1.0 < w[0, 0, 1, 3].item() < 5.0
    assert torch.equal(mask_loss_weights(rgb_to_tensor(np.zeros_like(rgb)), (8, 8), 4.0), torch.ones(1, 1, 8, 8))


def _train(base, out, **kw):
    cfg = LoraTrainConfig(**{**dict(data="phantom:12", trimester="second", n=2, steps=3, rank=4, alpha=4, lr=1e-3,
                                    batch_size=2, save_every=1, preview_every=0, base=str(base)), **kw})
    return list(train_lora(cfg, out, pipe=load_pipeline(base, device="cpu")))


def test_a_weight_changes_the_training_is_recorded_and_cannot_change_on_resume(random_base, tmp_path):
    plain = _train(random_base, tmp_path / "plain")
    zero = _train(random_base, tmp_path / "zero", mask_loss_weight=0)
    weighted = _train(random_base, tmp_path / "w", mask_loss_weight=4, steps=2)
    assert zero[-1]["losses"] == plain[-1]["losses"]  # 0: the paper's loss, the same run
    assert weighted[-1]["losses"] != plain[-1]["losses"][:2]
    assert json.loads((tmp_path / "w" / "lora_config.json").read_text())["mask_loss_weight"] == 4
    with pytest.raises(DataError, match="already exists with other settings \\(mask_loss_weight: 4"):
        _train(random_base, tmp_path / "w", mask_loss_weight=2)
    assert _train(random_base, tmp_path / "w", mask_loss_weight=4)[0]["step"] == 2  # the same weight resumes


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), 1000, "heavy"])
def test_bad_weights_are_refused_by_name(bad):
    with pytest.raises((DataError, ValueError), match="mask loss weight"):
        LoraTrainConfig(mask_loss_weight=bad).validate()
