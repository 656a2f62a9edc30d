"""The LoRA timestep bias (pipeline/diffusion/timestep_bias.py): diffusers' weights, the base's own setting read
from its sampling file (the tiny base ships one; Stable Diffusion has none, so the paper's recipe stays
uniform), a resume keeping the bias its run began with, and bad values refused by name.

LoRA runs use a random-weight test-size (32²) base: the weights do not matter for these plumbing checks."""
from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")

from pipeline.data import DataError  # noqa: E402
from pipeline.diffusion.base import SAMPLING_FILE, load_pipeline  # noqa: E402
from pipeline.diffusion.lora import LoraTrainConfig, train_lora  # noqa: E402
from pipeline.diffusion.timestep_bias import (TimestepBias, base_timestep_bias,  # noqa: E402
                                              resolve_timestep_bias)

LATER = {"strategy": "later", "portion": 0.5, "multiplier": 4}


def test_weights_follow_diffusers_and_the_draws_follow_the_weights():
    w = TimestepBias("later", 0.5, 4).weights(1000)
    assert w.sum().item() == pytest.approx(1) and w[500:].sum().item() == pytest.approx(0.8)
    assert TimestepBias("earlier", 0.25, 3).weights(1000)[:250].sum().item() == pytest.approx(0.75 / 1.5)
    t = TimestepBias("later", 0.5, 4).sample(1000, 20000, torch.Generator().manual_seed(0))
    assert 0.78 < (t >= 500).float().mean().item() < 0.82 and t.min() >= 0 and t.max() <= 999


def test_no_bias_draws_exactly_as_the_paper_did():
    """Off (none, or a multiplier of 1) is the uniform torch.randint draw on the same generator: the paper's
    LoRA runs repeat bit for bit."""
    for off in (TimestepBias(), TimestepBias("later", 0.5, 1.0)):
        assert not off.active
        a = off.sample(1000, 64, torch.Generator().manual_seed(3))
        assert torch.equal(a, torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3)))
    assert "uniform" in TimestepBias().describe() and "4×" in TimestepBias("later", 0.5, 4).describe()


def test_the_shipped_bases_train_uniformly(tmp_path):
    """The tiny base declares no bias: both variants measured for it (later 0.5 ×4 and ×2, 2026-11-27) failed
    their confirmation (docs/lab/2026-11-pretraining.md); Stable Diffusion (a hub id) trains as the paper does."""
    assert base_timestep_bias(None) == TimestepBias()  # assets/tiny-base
    assert not base_timestep_bias("stable-diffusion-v1-5/stable-diffusion-v1-5").active
    (tmp_path / "model_index.json").write_text("{}")
    assert base_timestep_bias(tmp_path) == TimestepBias()  # a folder without the file


@pytest.mark.parametrize("entry,msg", [({"strategy": "sideways"}, "strategy must be one of none, earlier, later"),
                                       ({"strategy": "later", "multiplier": 0}, "multiplier must be in"),
                                       ({"strategy": "later", "portion": 1.5}, "portion must be in"),
                                       ({"strategy": "later", "multiplier": "NaN"}, "multiplier"),
                                       ({"strategy": "later", "weight": 2}, "must be"),
                                       ("later", "must be")])
def test_a_bad_entry_in_the_sampling_file_is_named_with_its_path(tmp_path, entry, msg):
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / SAMPLING_FILE).write_text(json.dumps({"lora_timestep_bias": entry}))
    with pytest.raises(ValueError, match=f"{SAMPLING_FILE}: lora_timestep_bias.*{msg}|{msg}") as e:
        base_timestep_bias(tmp_path)
    assert SAMPLING_FILE in str(e.value)


@pytest.fixture
def biased_base(random_base, tmp_path):
    d = tmp_path / "base"
    shutil.copytree(random_base, d)
    (d / SAMPLING_FILE).write_text(json.dumps({"lora_timestep_bias": LATER}))
    return d


def test_asked_values_win_then_the_runs_own_then_the_bases(biased_base):
    base = biased_base  # its own: later, 0.5, 4
    unset = {"timestep_bias_strategy": None, "timestep_bias_portion": None, "timestep_bias_multiplier": None}
    assert resolve_timestep_bias(unset, base, None) == {"timestep_bias_strategy": "later",
                                                        "timestep_bias_portion": 0.5, "timestep_bias_multiplier": 4}
    mult2 = resolve_timestep_bias({**unset, "timestep_bias_multiplier": 2}, base, None)
    assert mult2["timestep_bias_strategy"] == "later" and mult2["timestep_bias_multiplier"] == 2
    assert resolve_timestep_bias({**unset, "timestep_bias_strategy": "none"}, base, None)["timestep_bias_strategy"] == "none"
    # a LoRA at another size than the base's (the detail pass's) is not the one the bias was measured for
    assert resolve_timestep_bias(unset, base, None, base_size=False)["timestep_bias_strategy"] == "none"
    assert resolve_timestep_bias({**unset, "timestep_bias_strategy": "later", "timestep_bias_multiplier": 2}, base,
                                 None, base_size=False)["timestep_bias_multiplier"] == 2  # unless asked
    # a run saved before the setting existed trained uniformly, and keeps doing so on a resume
    old = resolve_timestep_bias(unset, base, {"lr": 1e-4})
    assert old == {"timestep_bias_strategy": "none", "timestep_bias_portion": 0.25, "timestep_bias_multiplier": 1.0}
    with pytest.raises(DataError, match="multiplier"):
        resolve_timestep_bias({**unset, "timestep_bias_multiplier": -1}, base, None)
    with pytest.raises(DataError, match="strategy"):
        LoraTrainConfig(timestep_bias_strategy="sideways").validate()


def _train(base, out, **kw):
    cfg = LoraTrainConfig(**{**dict(data="phantom:12", trimester="second", n=2, steps=3, rank=4, alpha=4, lr=1e-3,
                                    batch_size=2, save_every=1, preview_every=0, base=str(base)), **kw})
    return list(train_lora(cfg, out, pipe=load_pipeline(base, device="cpu")))


def test_a_new_lora_trains_with_the_bases_bias_and_records_it(biased_base, random_base, tmp_path):
    ev = _train(biased_base, tmp_path / "a")
    rec = json.loads((tmp_path / "a" / "lora_config.json").read_text())
    assert (rec["timestep_bias_strategy"], rec["timestep_bias_portion"], rec["timestep_bias_multiplier"]) == \
        ("later", 0.5, 4.0)
    assert "4×" in ev[0]["timestep_bias"]
    # the bias changes what the LoRA trains on; asking for none gives the base without the file's run exactly
    detail = _train(biased_base, tmp_path / "d", resolution=64)  # a detail LoRA: uniform
    assert json.loads((tmp_path / "d" / "lora_config.json").read_text())["timestep_bias_strategy"] == "none"
    assert "uniform" in detail[0]["timestep_bias"]
    plain = _train(random_base, tmp_path / "b")
    none = _train(biased_base, tmp_path / "c", timestep_bias_strategy="none")
    assert ev[-1]["losses"] != plain[-1]["losses"] and none[-1]["losses"] == plain[-1]["losses"]


def test_a_lora_begun_before_the_setting_resumes_uniform_and_a_changed_bias_is_refused(biased_base, tmp_path):
    out = tmp_path / "old"
    _train(biased_base, out, steps=2, timestep_bias_strategy="none")
    for f in ("lora_config.json",):  # make it a run saved before the setting existed
        rec = json.loads((out / f).read_text())
        for k in ("timestep_bias_strategy", "timestep_bias_portion", "timestep_bias_multiplier"):
            rec.pop(k)
        (out / f).write_text(json.dumps(rec))
    state = torch.load(out / "train_state.pt", weights_only=False)
    for k in ("timestep_bias_strategy", "timestep_bias_portion", "timestep_bias_multiplier"):
        state["config"].pop(k)
    torch.save(state, out / "train_state.pt")
    ev = _train(biased_base, out, steps=3)  # unset: the run's own (uniform), not the base's
    assert ev[0]["step"] == 2 and ev[-1]["kind"] == "done" and "uniform" in ev[0]["timestep_bias"]
    assert json.loads((out / "lora_config.json").read_text())["timestep_bias_strategy"] == "none"
    with pytest.raises(DataError, match="already exists with other settings \\(timestep_bias_strategy"):
        _train(biased_base, out, steps=4, timestep_bias_strategy="later")
