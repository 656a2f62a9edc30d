"""Fine-tuning runs: a killed run resumes from its checkpoint, Stop keeps the best, curves never repeat."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.data import DataError
from pipeline.runs import RunDir
from pipeline.sam.finetune import FinetuneConfig, finetune

ROOT = Path(__file__).resolve().parent.parent


def _cfg(cache, epochs=3, **kw):
    return FinetuneConfig(data="phantom:12", n_real=6, n_val=1, epochs=epochs, batch_size=3, cache_dir=str(cache), **kw)


def test_kill_and_resume_continues_from_the_checkpoint(tmp_path):
    """The killed run is given far more epochs than it can reach, so the kill always lands mid-run (no kill
    window); the resumes then finish two epochs past the one it was killed after (epochs may change)."""
    out, cache = tmp_path / "runs" / "r", tmp_path / "cache"
    cmd = [sys.executable, "-m", "pipeline", "finetune-sam", "--data", "phantom:12", "--n-real", "6",
           "--n-val", "1", "--epochs", "5000", "--batch-size", "3", "--out", str(out), "--cache-dir", str(cache), "--json"]
    env = dict(os.environ, SONOSYNTH_PROFILE="tiny", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    state_path = out / "last_state.pt"
    deadline = time.monotonic() + 300
    try:
        while not state_path.is_file():  # epoch 1 is checkpointed: kill it hard, mid-training
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert RunDir(out).status()["status"] == "running"  # killed: nobody wrote "stopped" or "done"
    saved = torch.load(state_path, weights_only=False)
    assert 1 <= saved["epoch"] < 5000 and saved["step_in_epoch"] == 0
    E = saved["epoch"] + 2

    # resume in-process, then press Stop after one step
    steps = []
    gen = finetune(_cfg(cache, epochs=E), out, stop=lambda: len(steps) >= 1)
    events = []
    for ev in gen:
        events.append(ev)
        if ev["kind"] == "step":
            steps.append(ev)
    resume = next(e for e in events if e["kind"] == "resume")
    assert resume["epoch"] == saved["epoch"] and resume["step"] == saved["global_step"]
    assert steps[0]["step"] == saved["global_step"] + 1  # continues, does not restart
    done = events[-1]
    assert done["kind"] == "done" and done["stopped"] and done["encoder_runs"] == 0  # embeddings from disk
    assert RunDir(out).status()["status"] == "stopped"
    assert (out / "best.safetensors").is_file()
    mid = torch.load(state_path, weights_only=False)
    assert mid["global_step"] == saved["global_step"] + 1 and mid["step_in_epoch"] == 1

    # resume again to the end
    events = list(finetune(_cfg(cache, epochs=E), out))
    done = events[-1]
    assert done["kind"] == "done" and not done["stopped"] and done["global_step"] == E * 2
    rows = RunDir(out).metrics()
    step_rows = [r["step"] for r in rows if r["kind"] == "step"]
    assert step_rows == list(range(1, 2 * E + 1))  # every step once: nothing lost, nothing twice
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == list(range(E + 1))
    assert RunDir(out).status()["status"] == "done"
    meta = RunDir(out).weights_meta("best")
    assert meta["val_dice"] == pytest.approx(done["best_val_dice"])

    # the run folder loads as a checkpoint; a different config is refused, not overwritten
    from pipeline.sam import load_model
    m = load_model(None, out, device="cpu")
    assert m.decoder_source.endswith("best.safetensors")
    with pytest.raises(DataError, match="already exists with other settings"):
        next(finetune(_cfg(cache, aug="weak"), out))


def test_the_sam_bench_times_finetunes_own_step(monkeypatch):
    """sam/bench.py once re-coded the decoder step it times (issue 34): it calls finetune.decoder_loss, the
    forward half finetune() runs, with finetune's crop of the targets (the loss never sees the padding)."""
    import argparse

    import pipeline.sam.finetune as F
    from pipeline.sam.bench import run_bench

    class Timed(Exception):
        pass
    seen = []

    def spy(model, emb, boxes, target, crop, loss_fn, bf16, decoder=None):
        logits, loss = real(model, emb, boxes, target, crop, loss_fn, bf16, decoder)
        seen.append((tuple(emb.shape), tuple(target.shape), tuple(logits.shape), crop))
        raise Timed
    real = F.decoder_loss
    monkeypatch.setattr(F, "decoder_loss", spy)
    with pytest.raises(Timed):
        run_bench(argparse.Namespace(repeats=1))
    ((emb, target, logits, crop),) = seen
    assert emb[0] == target[0] == logits[0] == 5 and logits[1:] == (1, crop[0] * 4, crop[1] * 4)
    assert target[1:] == (256, 256)  # the full low-res frame: decoder_loss cuts it as finetune() does
