"""Fine-tuning killed MID-EPOCH resumes to exactly the uninterrupted run (issue 8): checkpoints are written
inside an epoch too (SONOSYNTH_SAVE_EVERY_S; 0 = after every step here), the data order and the box jitter
are seeded by (seed, epoch, step), so the resumed run logs the same losses and ends with the same weights."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.runs import RunDir
from pipeline.sam.finetune import FinetuneConfig, finetune

ROOT = Path(__file__).resolve().parent.parent


def _cfg(cache):
    return FinetuneConfig(data="phantom:24", n_real=12, n_val=2, epochs=2, batch_size=3, cache_dir=str(cache))


def _steps(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in RunDir(run).metrics() if r["kind"] == "step"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file
    cache = tmp_path / "cache"
    one = tmp_path / "runs" / "one"
    done = list(finetune(_cfg(cache), one))[-1]
    assert done["kind"] == "done" and done["global_step"] == 8  # 4 steps per epoch, 2 epochs

    out = tmp_path / "runs" / "two"
    cmd = [sys.executable, "-m", "pipeline", "finetune-sam", "--data", "phantom:24", "--n-real", "12", "--n-val", "2",
           "--epochs", "2", "--batch-size", "3", "--out", str(out), "--cache-dir", str(cache), "--json"]
    env = dict(os.environ, SONOSYNTH_PROFILE="tiny", PYTHONUNBUFFERED="1", SONOSYNTH_SAVE_EVERY_S="0")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    state_path = out / "last_state.pt"
    deadline = time.monotonic() + 300
    try:
        while True:  # kill it hard as soon as a checkpoint inside epoch 1 or 2 is on disk
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no mid-epoch checkpoint within 300 s"
            if state_path.is_file():
                try:
                    if torch.load(state_path, weights_only=False)["step_in_epoch"] > 0:
                        break
                except (EOFError, RuntimeError, OSError):  # replaced while being read: look again
                    pass
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    saved = torch.load(state_path, weights_only=False)  # every file parseable after the kill
    assert 0 < saved["step_in_epoch"] < 4 and saved["global_step"] < 8
    RunDir(out).metrics()
    RunDir(out).config()

    events = list(finetune(_cfg(cache), out))
    resume = next(e for e in events if e["kind"] == "resume")
    assert resume["step"] >= saved["global_step"]
    assert events[-1]["kind"] == "done" and not events[-1]["stopped"]
    assert _steps(out) == _steps(one)  # every step once, with the uninterrupted run's loss
    a, b = load_file(one / "last.safetensors"), load_file(out / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ea = [r for r in RunDir(one).metrics() if r["kind"] == "epoch"]
    eb = [r for r in RunDir(out).metrics() if r["kind"] == "epoch"]
    assert [(r["epoch"], r["val_dice"], r["train_loss"]) for r in ea] == \
        [(r["epoch"], r["val_dice"], r["train_loss"]) for r in eb]
