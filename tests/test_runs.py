"""The one resume rule (pipeline/runs.py) that SAM fine-tuning runs, LoRAs and sweeps share (issue 9)."""
import json

import pytest

from pipeline.data import DataError
from pipeline.runs import RunDir, changed_settings, refuse_changed


def test_changed_settings_names_each_change_and_skips_what_may_change():
    old = {"lr": 1e-4, "epochs": 5, "split": [0.7, 0.15, 0.15], "gone": 1}
    new = {"lr": 2e-4, "epochs": 9, "split": (0.7, 0.15, 0.15), "added": 2}
    assert changed_settings(old, new, may_change={"epochs"}) == \
        ["added: None -> 2", "gone: 1 -> None", "lr: 0.0001 -> 0.0002"]  # a tuple equals its JSON list
    assert changed_settings(old, new, may_change=(), only=["lr", "split"]) == ["lr: 0.0001 -> 0.0002"]
    # a setting saved before it existed has its default
    assert changed_settings({"lr": 1}, {"lr": 1, "hflip": True}, may_change=(), defaults={"hflip": True}) == []
    with pytest.raises(DataError, match=r"LoRA x already exists with other settings \(lr: 1 -> 2\); choose another"):
        refuse_changed("LoRA x", {"lr": 1}, {"lr": 2}, may_change=())


def test_rundir_start_refuses_a_change_and_a_start_over(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.start({"lr": 1, "epochs": 2}) is False
    with pytest.raises(DataError, match=r"run r already exists with other settings \(lr: 1 -> 3\)"):
        run.start({"lr": 3, "epochs": 2})
    assert run.start({"lr": 1, "epochs": 7}) is False  # epochs may change: no state yet, a fresh start
    assert json.loads(run.config_path.read_text()) == {"lr": 1, "epochs": 7}
    run.state_path.write_bytes(b"x")
    with pytest.raises(DataError, match="run r already has checkpoints"):
        run.start({"lr": 1, "epochs": 7}, resume=False)
    assert run.start({"lr": 1, "epochs": 7}) is True


def test_rundir_with_its_own_file_names_compares_the_saved_settings(tmp_path):
    run = RunDir(tmp_path / "l", config_name="lora_config.json", state_name="train_state.pt", what="LoRA")
    run.path.mkdir()
    run.config_path.write_text(json.dumps({"rank": 4, "steps_done": 3, "status": "stopped"}))
    with pytest.raises(DataError, match=r"LoRA l already exists with other settings \(rank: 4 -> 8\)"):
        run.start({"rank": 8}, write=False, only=["rank"], may_change=())
    assert run.start({"rank": 4}, write=False, only=["rank"], may_change=()) is False
    assert json.loads(run.config_path.read_text())["steps_done"] == 3  # write=False: the record is the caller's
    with pytest.raises(DataError, match="train_state.pt cannot be read"):
        run.state_path.write_bytes(b"not a torch file")
        run.resume_state()


def test_a_check_without_writing_makes_no_folder(tmp_path):
    run = RunDir(tmp_path / "new", config_name="lora_config.json", what="LoRA")
    assert run.start({"rank": 4}, write=False) is False and not run.path.exists()
