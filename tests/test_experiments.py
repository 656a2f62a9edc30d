"""The Table-1 sweep: a two-cell sweep end to end, no work on re-run, resume of an interrupted cell,
summary numbers equal to the CSV's mean/std, and the paper's numbers beside ours."""
import json

import numpy as np
import pandas as pd
import pytest

from pipeline.data import DataError
from pipeline.sweep import Sweep, SweepConfig, cells, preset, report_markdown, run_sweep, synthetic_plan
from pipeline.results import summarize, table1

TRAIN = "phantom:24"


def _smoke(**over):
    return preset("smoke", train=TRAIN, **over)


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    events = list(run_sweep(_smoke(), out))
    return out, events


def test_two_cell_sweep_runs_end_to_end(finished_sweep):
    out, events = finished_sweep
    assert [e["cell"] for e in events if e["kind"] == "cell_done"] == ["none-n3-r0", "weak-n3-r0"]
    assert events[-1] == {"kind": "done", "stopped": False, "sweep": str(out)}
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 2 and set(df["augmentation"]) == {"none", "weak"}
    assert (df["test"] == "heldout").all() and (df["n_test"] == 4).all()
    assert df["dice"].between(50, 100).all()
    zs = json.loads((out / "zero_shot.json").read_text())
    assert 50 < zs["heldout"]["dice"] <= 100
    for c in ("none-n3-r0", "weak-n3-r0"):
        assert (out / "cells" / c / "run" / "best.safetensors").is_file()


def test_rerun_does_no_work(finished_sweep):
    out, _ = finished_sweep
    before = (out / "results.csv").read_text()
    events = list(run_sweep(_smoke(), out))
    kinds = {e["kind"] for e in events}
    assert "cell_start" not in kinds and "train" not in kinds
    assert events[0]["done"] == ["none-n3-r0", "weak-n3-r0"]
    assert (out / "results.csv").read_text() == before


def test_changed_identity_is_refused_but_grid_may_grow(finished_sweep):
    out, _ = finished_sweep
    with pytest.raises(DataError, match="other settings"):
        next(run_sweep(_smoke(epochs=2), out))
    grown = _smoke(augmentations=["none", "weak", "strong"])
    plan = next(run_sweep(grown, out))
    assert plan["cells"] == ["none-n3-r0", "weak-n3-r0", "strong-n3-r0"]
    assert plan["done"] == ["none-n3-r0", "weak-n3-r0"]


def test_interrupted_cell_resumes(tmp_path):
    out = tmp_path / "s"
    cfg = _smoke(augmentations=["none"], epochs=2)
    steps = []

    def stop():
        return len(steps) >= 1  # stop right after the first optimizer step

    events = []
    for ev in run_sweep(cfg, out, stop=stop):
        events.append(ev)
        if ev["kind"] == "train" and ev["event"] == "step":
            steps.append(ev["step"])
    assert events[-1]["stopped"] is True
    cell = cells(cfg)[0]
    assert not Sweep(out).is_done(cell)
    assert (out / "cells" / cell.name / "run" / "last_state.pt").is_file()
    resumed = list(run_sweep(cfg, out))
    train_events = [e for e in resumed if e["kind"] == "train"]
    assert train_events[0]["event"] in ("warning", "prepare", "resume")
    assert any(e["event"] == "resume" for e in train_events)
    first_step = next(e["step"] for e in train_events if e["event"] == "step")
    assert first_step == steps[0] + 1  # continued, not restarted
    assert Sweep(out).is_done(cell) and resumed[-1]["stopped"] is False


def test_summary_equals_csv_mean_and_std():
    rng = np.random.default_rng(0)
    rows = [dict(augmentation=a, n_real=n, repeat=r, test="heldout", n_test=10, dice=float(rng.uniform(80, 95)),
                 dice_std=1.0, hc_abs_error_mm=2.0, run="x") for a in ("none", "syn") for n in (5, 20) for r in range(3)]
    df = pd.DataFrame(rows)
    s = summarize(df)
    for _, r in s.iterrows():
        sel = df[(df.augmentation == r.augmentation) & (df.n_real == r.n_real)]["dice"]
        assert r.dice_mean == pytest.approx(sel.mean())
        assert r.dice_std == pytest.approx(sel.std(ddof=1))
        assert r.repeats == 3
    t = table1(s, "heldout")
    best5 = max(s[s.n_real == 5].dice_mean)
    bold = [c for c in t["N_real=5"] if c.startswith("**")]
    assert len(bold) == 1 and f"{best5:.2f}" in bold[0]


def test_report_of_finished_sweep(finished_sweep):
    out, _ = finished_sweep
    md = report_markdown(out, command="python -m pipeline sweep --preset smoke")
    assert "N_real=3" in md and "Zero-shot" in md
    # a phantom sweep is in none of the paper's pairs: all four are shown, each labelled, and the report says so
    assert "ours (phantom→phantom)" in md and "the paper has no phantom→phantom numbers" in md
    for pair in ("HC18→ES", "HC18→AF", "ES→ES", "ES→AF"):
        assert f"paper ({pair})" in md


def test_config_validation_and_syn_plan(tmp_path):
    with pytest.raises(DataError, match="SYN and SYN-only arms need"):
        _smoke(augmentations=["syn"]).validate()
    with pytest.raises(DataError, match="unknown augmentation"):
        _smoke(augmentations=["mixup"]).validate()
    with pytest.raises(DataError, match="unknown sweep setting"):
        SweepConfig.from_dict({"train": TRAIN, "bogus": 1})
    with pytest.raises(DataError, match="unknown preset"):
        preset("huge", train=TRAIN)
    cfg = preset("cpu-small", train="phantom:200", loras={"first": "a", "second": "b", "third": "c"})
    plan = synthetic_plan(cfg)
    assert sum(plan.values()) == cfg.total - min(cfg.n_real)
    assert plan["second"] > plan["first"] and plan["second"] > plan["third"]


def test_syn_arm_trains_loras_on_the_train_pool_generates_and_trains(tmp_path):
    """The SYN arm end to end with the shipped tiny base: trimester LoRAs trained on the train part of the
    split only, synthetic pairs generated and QC-filtered, N_real + synthetic = total."""
    from pipeline.data import open_source, split_indices
    from pipeline.diffusion.lora import LoraTrainConfig, training_images
    cfg = SweepConfig.from_dict(dict(train="phantom:60", augmentations=["syn"], n_real=[3], repeats=1, epochs=1,
                                     total=6, aug_views=1, n_val=4, test_limit=4, split=[0.5, 0.25, 0.25],
                                     train_loras=True, lora_steps=2, lora_n=2))
    out = tmp_path / "syn"
    events = list(run_sweep(cfg, out))
    assert events[-1]["stopped"] is False
    assert any(e["kind"] == "lora" for e in events) and any(e["kind"] == "generate" for e in events)
    syn = open_source(f"folder:{out / 'synthetic'}")
    assert len(syn) == 3  # total - N_real
    assert all(m.extra.get("synthetic") for m in syn.metas)
    # the LoRAs saw only train-pool images
    src = open_source("phantom:60")
    train_names = {src.metas[i].name for i in split_indices(src.metas, (0.5, 0.25, 0.25), 0)["train"]}
    for d in (out / "loras").iterdir():
        lcfg = LoraTrainConfig.from_dict(json.loads((d / "lora_config.json").read_text()))
        _, names = training_images(lcfg, 32)
        assert set(names) <= train_names
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert row["augmentation"] == "syn" and row["n_test"] == 4
