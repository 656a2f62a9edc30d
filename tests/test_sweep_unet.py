"""The sweep's second segmenter (a MONAI U-Net from random weights) and the SYN-only arm (issue 32): the grid,
resume rules, a tiny U-Net sweep end to end on phantoms, and the SYN-vs-None verdict."""
import json

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.data import DataError, open_source
from pipeline.results import summarize, verdict, verdict_lines
from pipeline.sweep import Sweep, SweepConfig, cells, preset, report_markdown, run_sweep
from pipeline.sweep.grid import Cell

TRAIN = "phantom:24"


def _unet(**over):
    base = dict(train=TRAIN, segmenter="unet", augmentations=["none"], n_real=[3], repeats=1, total=6, n_val=4,
                test_limit=4, split=[0.5, 0.25, 0.25], unet_steps=4, unet_val_every=2, unet_batch_size=2)
    return SweepConfig.from_dict({**base, **over})


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory):
    """Six pairs written as a synthetic dataset (images/ + masks/ + meta/), from phantoms of another seed."""
    root = tmp_path_factory.mktemp("syn") / "set"
    for d in ("images", "masks", "meta"):
        (root / d).mkdir(parents=True)
    src = open_source("phantom:6:77")
    for i in range(len(src)):
        s = src[i]
        cv2.imwrite(str(root / "images" / f"syn{i}.png"), s.image)
        cv2.imwrite(str(root / "masks" / f"syn{i}.png"), s.mask.astype(np.uint8) * 255)
        (root / "meta" / f"syn{i}.json").write_text(json.dumps({"synthetic": True, "trimester": "second"}))
    return f"folder:{root}"


def test_syn_only_is_one_cell_per_repeat_after_the_syn_cells():
    cfg = preset("cpu-unet", train="phantom:200", synthetic="folder:/nowhere")
    grid = cells(cfg)
    for r in range(cfg.repeats):
        mine = [c for c in grid if c.repeat == r]
        assert mine[-1] == Cell("syn-only", 0, r)
        assert [c.augmentation for c in mine].count("syn-only") == 1
        assert mine.index(Cell("syn", min(cfg.n_real), r)) < mine.index(Cell("syn-only", 0, r))
    assert cfg.n_synthetic("syn-only", 0) == cfg.total and cfg.n_synthetic("syn", 5) == cfg.total - 5
    assert cfg.n_synthetic("none", 5) is None


def test_syn_weak_trains_the_syn_arms_hybrid_set_with_the_weak_augmentation():
    cfg = preset("cpu-unet", train="phantom:200", synthetic="folder:/nowhere",
                 augmentations=["none", "weak", "syn", "syn-weak", "syn-only"])
    mine = [c.augmentation for c in cells(cfg) if c.repeat == 0]
    assert mine.index("syn") < mine.index("syn-weak") < mine.index("syn-only")
    syn, syn_wa = (cfg.unet_config(5, a, "folder:/nowhere") for a in ("syn", "syn-weak"))
    assert (syn.aug, syn_wa.aug) == ("none", "weak")
    assert syn_wa.synthetic == syn.synthetic and syn_wa.n_synthetic == syn.n_synthetic == cfg.total - 5
    with pytest.raises(DataError, match="N_real 500 is larger"):
        preset("cpu-unet", train="phantom:200", synthetic="folder:/nowhere", augmentations=["syn-weak"],
               n_real=[500]).validate()


def test_syn_only_weak_is_syn_onlys_set_with_the_weak_augmentation_one_cell_per_repeat():
    cfg = preset("cpu-unet", train="phantom:200", synthetic="folder:/nowhere", n_real=[5, 20],
                 augmentations=["none", "weak", "syn", "syn-only", "syn-only-weak"])
    cfg.validate()
    for r in range(cfg.repeats):
        mine = [c for c in cells(cfg) if c.repeat == r]
        assert mine[-2:] == [Cell("syn-only", 0, r), Cell("syn-only-weak", 0, r)]  # whatever N_real, once
    only, only_wa = (cfg.unet_config(0, a, "folder:/nowhere") for a in ("syn-only", "syn-only-weak"))
    assert (only.aug, only_wa.aug) == ("none", "weak")
    assert only_wa.n_real == 0 and only_wa.synthetic == only.synthetic
    assert only_wa.n_synthetic == only.n_synthetic == cfg.total
    # a synthetic-only arm never limits N_real: only the hybrid arms keep N_real + synthetic = total
    preset("cpu-unet", train="phantom:200", synthetic="folder:/nowhere", augmentations=["none", "syn-only-weak"],
           n_real=[500]).validate()


def test_syn_only_needs_a_synthetic_source_and_a_known_segmenter():
    with pytest.raises(DataError, match="SYN-only arms need"):
        _unet(augmentations=["syn-only"]).validate()
    with pytest.raises(DataError, match="segmenter must be one of sam, unet"):
        _unet(segmenter="resnet").validate()
    with pytest.raises(DataError, match="U-Net steps"):
        _unet(unet_steps=0).validate()


def test_old_sweep_json_without_a_segmenter_resumes_and_a_changed_segmenter_is_refused(tmp_path):
    cfg = preset("smoke", train=TRAIN)
    sweep = Sweep(tmp_path / "s")
    sweep.start(cfg)
    old = json.loads(sweep.config_path.read_text())
    for k in ("segmenter", "unet_steps", "unet_batch_size", "unet_lr", "unet_val_every"):
        old.pop(k)  # a sweep.json written before the U-Net existed
    sweep.config_path.write_text(json.dumps(old))
    sweep.start(cfg)  # same sweep: resumes
    with pytest.raises(DataError, match="segmenter"):
        sweep.start(preset("smoke", train=TRAIN, segmenter="unet"))


def test_a_finished_synthetic_set_too_small_for_the_grid_is_not_ready(tmp_path):
    sweep = Sweep(tmp_path / "s")
    sweep.synthetic_marker.parent.mkdir(parents=True)
    sweep.synthetic_marker.write_text(json.dumps({"plan": {"first": 2, "second": 10}}))
    assert sweep.synthetic_ready({"first": 2, "second": 10}) == f"folder:{sweep.path / 'synthetic'}"
    assert sweep.synthetic_ready({"first": 2, "second": 11}) is None  # grown with SYN only: generate more
    assert sweep.synthetic_ready() is not None


def test_unet_sweep_end_to_end_with_syn_and_syn_only(tmp_path, synthetic_folder):
    cfg = _unet(augmentations=["none", "syn", "syn-only"], synthetic=synthetic_folder)
    out = tmp_path / "u"
    events = list(run_sweep(cfg, out))
    assert events[-1]["stopped"] is False
    done = [e for e in events if e["kind"] == "cell_done"]
    assert [e["cell"] for e in done] == ["none-n3-r0", "syn-n3-r0", "syn-only-n0-r0"]
    assert all(e["seconds"] > 0 for e in done)
    df = pd.read_csv(out / "results.csv")
    assert set(df["augmentation"]) == {"none", "syn", "syn-only"}
    assert (df["n_test"] == 4).all() and df["dice"].between(0, 100).all()
    res = json.loads((out / "cells" / "syn-only-n0-r0" / "result.json").read_text())
    assert res["segmenter"] == "unet"
    run_cfg = json.loads((out / "cells" / "syn-only-n0-r0" / "run" / "config.json").read_text())
    assert run_cfg["kind"] == "unet" and run_cfg["n_real"] == 0 and run_cfg["n_synthetic"] == cfg.total
    syn_cfg = json.loads((out / "cells" / "syn-n3-r0" / "run" / "config.json").read_text())
    assert syn_cfg["n_synthetic"] == cfg.total - 3
    # a U-Net sweep has no zero-shot reference; its report names the segmenter
    assert Sweep(out).zero_shot() == {}
    md = report_markdown(out)
    assert "SYN only" in md and "Zero-shot" not in md
    # re-running does no work
    again = list(run_sweep(cfg, out))
    assert not [e for e in again if e["kind"] == "cell_start"]


def test_unet_test_scores_are_the_unet_modules_own(tmp_path):
    """The sweep scores a U-Net cell with pipeline.unet.evaluate_unet on the sweep's test images."""
    from pipeline.sweep.testset import _test_sets
    from pipeline.unet import evaluate_unet, load_unet
    cfg = _unet()
    out = tmp_path / "u"
    list(run_sweep(cfg, out))
    model = load_unet(out / "cells" / "none-n3-r0" / "run")
    ts = _test_sets(cfg, None, None)[0]
    direct = evaluate_unet(model, ts.samples)
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert row["dice"] == pytest.approx(100 * np.mean(direct["dice"]), abs=1e-3)


def _summary(rows):
    return summarize(pd.DataFrame(rows, columns=["augmentation", "n_real", "repeat", "test", "dice",
                                                 "hc_abs_error_mm"]))


def test_verdict_is_the_difference_of_means_against_two_standard_errors():
    rows = [("none", 5, r, "t", d, None) for r, d in enumerate([90.0, 91.0, 92.0])]
    rows += [("syn", 5, r, "t", d, None) for r, d in enumerate([94.0, 95.0, 96.0])]
    rows += [("syn-only", 0, r, "t", d, None) for r, d in enumerate([90.0, 92.0, 91.5])]
    rows += [("weak", 5, r, "t", d, None) for r, d in enumerate([85.0, 86.0, 84.0])]
    rows += [("syn-weak", 5, r, "t", d, None) for r, d in enumerate([85.0, 86.0, 87.0])]
    rows += [("syn-only-weak", 0, r, "t", d, None) for r, d in enumerate([80.0, 81.0, 82.0])]
    s = _summary(rows)
    v = verdict(s, "t", 5)
    assert v["diff"] == pytest.approx(4.0)
    assert v["se"] == pytest.approx(np.sqrt(1 / 3 + 1 / 3))  # sample std 1.0 in both arms
    assert v["word"] == "helps"
    assert verdict(s, "t", 5, "weak")["word"] == "hurts"
    assert verdict(s, "t", 5, "syn-only", arm_n_real=0)["word"] == "no difference"
    assert verdict(s, "t", 10) is None
    lines = verdict_lines(s, "t")
    assert lines[0] == "N_real 5: SYN − None = +4.00 ± 0.82 (SE) Dice points over 3 vs 3 repeats: **helps**"
    assert "SYN only − None" in lines[1] and "no difference" in lines[1]
    # SYN + WA is weighed against WA: do the synthetic pairs add anything to the weak augmentation?
    assert lines[2] == "N_real 5: SYN + WA − WA = +1.00 ± 0.82 (SE) Dice points over 3 vs 3 repeats: **no difference**"
    # SYN only + WA too: can WA on synthetic pairs alone stand in for WA on the real ones?
    assert lines[3] == "N_real 5: SYN only + WA − WA = -4.00 ± 0.82 (SE) Dice points over 3 vs 3 repeats: **hurts**"
    assert len(lines) == 4
    one = _summary([("none", 5, 0, "t", 90.0, None), ("syn", 5, 0, "t", 99.0, None)])
    assert verdict(one, "t", 5)["word"] == "too few repeats to tell"


def test_real_share_draws_that_share_of_each_batch_from_the_real_pairs():
    from pipeline.unet import UnetConfig, draw_batch
    origins = ["real"] * 5 + ["synthetic"] * 95
    for step in range(20):
        idx = draw_batch(origins, 8, 0.5, np.random.default_rng([0, 7, step]))
        assert len(idx) == 8 and sum(origins[i] == "real" for i in idx) == 4, idx
    # the default is the paper's uniform draw over the hybrid set, the same draw as before real_share existed
    rng_a, rng_b = np.random.default_rng([0, 7, 3]), np.random.default_rng([0, 7, 3])
    assert list(draw_batch(origins, 8, None, rng_a)) == list(rng_b.choice(100, size=8, replace=False))
    # one origin only (None, SYN only): uniform whatever the share
    assert sorted(set(draw_batch(["real"] * 3, 8, 0.5, np.random.default_rng(0)))) == [0, 1, 2]
    with pytest.raises(DataError, match="real_share"):
        UnetConfig(data=TRAIN, real_share=1.5).validate()
