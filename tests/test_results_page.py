"""docs/results.md is rebuilt from committed records by one command (issue 32): a finished sweep is recorded
as a study (settings, rows, zero-shot; no cells, no images) and the page equals what the records give."""
import json

import pytest

from pipeline.data import DataError
from pipeline.sweep import preset
from pipeline.sweep import record


@pytest.fixture
def finished(tmp_path):
    """A sweep folder as a finished sweep leaves it: sweep.json, results.csv, zero_shot.json and cells/
    (the rows are written here: what is tested is the record, not the training)."""
    import pandas as pd
    from pipeline.results import RESULT_COLUMNS
    from pipeline.sweep import Sweep
    out = tmp_path / "s"
    sw = Sweep(out)
    from pipeline.config import ASSETS
    sw.start(preset("smoke", train="phantom:24", diffusion_base=str(ASSETS / "tiny-base")))  # as for_profile writes it
    rows = [("none", 3, 0, "heldout", 4, 91.5, 2.0, 3.1, "cells/none-n3-r0/run"),
            ("weak", 3, 0, "heldout", 4, 92.25, 1.5, 2.9, "cells/weak-n3-r0/run")]
    pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(sw.results_path, index=False)
    (out / "zero_shot.json").write_text(json.dumps({"heldout": {"n_test": 4, "dice": 90.0, "dice_std": 1.0,
                                                                "hc_abs_error_mm": 3.0}}))
    (out / "cells" / "none-n3-r0").mkdir(parents=True)
    return out


def test_a_recorded_study_rebuilds_its_tables(finished, tmp_path):
    root = tmp_path / "records"
    d = record.export_study(finished, "smoke-phantom", "Smoke sweep on phantoms", "Two tiny cells.", root=root)
    assert sorted(p.name for p in d.iterdir()) == ["results.csv", "study.json", "sweep.json", "zero_shot.json"]
    page = record.results_page(root)
    assert "## Smoke sweep on phantoms" in page and "Two tiny cells." in page
    assert f"python -m pipeline sweep --config {d}/sweep.json --out outputs/sweeps/smoke-phantom" in page
    assert "#### Test: heldout" in page and "| None | 91.50 (1 run) |" in page and "| WA | **92.25 (1 run)** |" in page
    assert "Zero-shot (no fine-tuning): 90.00 % Dice on 4 images" in page
    # the recorded settings re-run from a clone elsewhere: no absolute path into this checkout
    cfg = json.loads((d / "sweep.json").read_text())
    assert cfg["diffusion_base"] == "assets/tiny-base", cfg["diffusion_base"]
    # the study alone rebuilds the page: the sweep folder (cells, cache) is not needed
    import shutil
    shutil.rmtree(finished / "cells")
    assert record.results_page(root) == page


def test_export_refuses_what_is_not_a_finished_sweep(tmp_path, finished):
    with pytest.raises(DataError, match="not a sweep folder"):
        record.export_study(tmp_path, "x", "t", root=tmp_path / "r")
    with pytest.raises(DataError, match="title is empty"):
        record.export_study(finished, "x", "  ", root=tmp_path / "r")
    with pytest.raises(DataError):
        record.export_study(finished, "../up", "t", root=tmp_path / "r")


def test_the_published_page_is_what_the_committed_records_give():
    assert record.PAGE.is_file(), "docs/results.md is missing: run `python -m pipeline results`"
    assert record.PAGE.read_text() == record.results_page(), \
        "docs/results.md differs from docs/results/: run `python -m pipeline results`"
    for d in record.studies():
        cfg = json.loads((d / "sweep.json").read_text())
        assert not str(cfg.get("synthetic") or "").startswith("folder:outputs"), \
            f"{d.name} reads its synthetic set from a git-ignored folder"
        absolute = [k for k, v in cfg.items() if isinstance(v, str) and v.startswith("/")]
        assert not absolute, f"{d.name}/sweep.json names absolute paths ({absolute}): a clone elsewhere cannot re-run it"


def test_the_sweep_writes_syn_pairs_at_the_train_pools_shape():
    from pipeline.sweep.synthetic import pool_aspect
    assert pool_aspect(preset("smoke", train="phantom:24")) == 1.5  # phantoms are 1.5:1
    assert pool_aspect(preset("smoke", train="phantom:24", restore_aspect=0)) == 1.5  # the rule, not the override
    assert preset("smoke", train="phantom:24").restore_aspect is None
