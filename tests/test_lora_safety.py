"""LoRA training under bad settings and interruptions (issue 8): a resume with a changed setting is refused by
name, a non-finite loss stops the run with a message and saves nothing broken, the files of a save cannot be
left out of step by a kill between them, a closed client stream keeps the last step as Stop does, and a
SIGKILL-ed run resumes to the same LoRA as an uninterrupted one (bit-identical).

A random-weight test-size (32²) base: the weights do not matter for these plumbing checks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.data import DataError  # noqa: E402
from pipeline.diffusion.base import load_pipeline  # noqa: E402
from pipeline.diffusion.lora import WEIGHTS, LoraTrainConfig, train_lora  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def _cfg(base_dir, **kw):
    d = dict(data="phantom:12", trimester="second", n=2, steps=4, rank=4, alpha=4, lr=1e-3, batch_size=2,
             save_every=2, preview_every=0, base=str(base_dir))
    d.update(kw)
    return LoraTrainConfig(**d)


def _train(base_dir, out, **kw):
    stop = kw.pop("stop", None)
    return list(train_lora(_cfg(base_dir, **kw), out, pipe=load_pipeline(base_dir, device="cpu"), stop=stop))


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(out / WEIGHTS)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(random_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "lora"
    ev = _train(random_base, out)
    return ev[-1]["losses"], _weights(out)


def test_resume_with_a_changed_setting_is_refused_by_name(random_base, tmp_path):
    out = tmp_path / "lora"
    _train(random_base, out, stop=lambda: False, steps=2)
    before = _weights(out)
    for kw, name in [({"lr": 2e-3}, "lr: 0.001 -> 0.002"), ({"batch_size": 1}, "batch_size: 2 -> 1"),
                     ({"seed": 5}, "seed: 0 -> 5"), ({"base": str(tmp_path)}, "base:")]:
        with pytest.raises(DataError, match=f"already exists with other settings \\({name}"):
            _train(random_base, out, **kw)
    assert _same(before, _weights(out))  # nothing overwritten
    ev = _train(random_base, out, steps=3)  # more steps is a resume, not a change
    assert ev[0]["step"] == 2 and ev[-1]["kind"] == "done"


def test_an_existing_lora_is_never_silently_started_over(random_base, tmp_path):
    """resume=False (train-lora --no-resume) once started the run over and overwrote it; the one resume rule
    (runs.RunDir.start) refuses it, and a changed setting is named even then."""
    out = tmp_path / "lora"
    _train(random_base, out, steps=2)
    before, record = _weights(out), (out / "lora_config.json").read_text()
    pipe = load_pipeline(random_base, device="cpu")
    with pytest.raises(DataError, match="LoRA lora already has checkpoints; resume it or choose another name"):
        list(train_lora(_cfg(random_base, steps=2), out, resume=False, pipe=pipe))
    with pytest.raises(DataError, match="LoRA lora already exists with other settings \\(rank: 4 -> 8"):
        list(train_lora(_cfg(random_base, steps=2, rank=8, alpha=8), out, resume=False, pipe=pipe))
    assert _same(before, _weights(out)) and (out / "lora_config.json").read_text() == record


def test_nonfinite_loss_stops_with_a_message_and_keeps_the_last_good_step(random_base, tmp_path, monkeypatch):
    import torch.nn.functional as F
    real, calls = F.mse_loss, {"n": 0}

    def mse(a, b, *args, **kw):
        calls["n"] += 1
        v = real(a, b, *args, **kw)
        return v * float("nan") if calls["n"] == 3 else v
    monkeypatch.setattr(F, "mse_loss", mse)
    out = tmp_path / "lora"
    events = []
    with pytest.raises(DataError, match="LoRA training stopped at step 3: the loss is nan .* step 2 is kept"):
        for ev in train_lora(_cfg(random_base), out, pipe=load_pipeline(random_base, device="cpu")):
            events.append(ev)
    assert not any(e["kind"] == "done" for e in events)
    rec = json.loads((out / "lora_config.json").read_text())
    assert rec["status"] == "failed" and rec["steps_done"] == 2 and "loss is nan" in rec["failure"]
    assert all(torch.isfinite(v).all() for v in _weights(out).values())


def test_a_kill_between_the_files_of_a_save_cannot_leave_them_out_of_step(random_base, tmp_path, monkeypatch,
                                                                           uninterrupted):
    """train_state.pt is written first and holds everything; a kill after it and before the weights file is
    simulated by failing the weights write of the step-4 save. The resume re-makes the files from the state."""
    from pipeline.diffusion import lora as L
    out = tmp_path / "lora"
    real = L.save_lora

    def dies_at_the_last_save(unet, out_dir):
        if json.loads((out_dir / "lora_config.json").read_text()).get("steps_done") == 2 and \
                torch.load(out_dir / "train_state.pt", weights_only=False)["step"] == 4:
            raise KeyboardInterrupt("killed between train_state.pt and the weights file")
        return real(unet, out_dir)
    monkeypatch.setattr(L, "save_lora", dies_at_the_last_save)
    with pytest.raises(KeyboardInterrupt):
        _train(random_base, out)
    assert torch.load(out / "train_state.pt", weights_only=False)["step"] == 4
    assert len((out / "loss.csv").read_text().splitlines()) == 3  # files still at step 2: out of step
    monkeypatch.setattr(L, "save_lora", real)
    ev = _train(random_base, out)
    assert ev[0]["step"] == 4 and ev[-1]["kind"] == "done"
    assert len((out / "loss.csv").read_text().splitlines()) == 5
    assert json.loads((out / "lora_config.json").read_text())["steps_done"] == 4
    assert _same(_weights(out), uninterrupted[1])


def test_a_closed_client_stream_saves_like_stop_and_resumes_exactly(random_base, tmp_path, uninterrupted):
    out = tmp_path / "lora"
    gen = train_lora(_cfg(random_base, save_every=100), out, pipe=load_pipeline(random_base, device="cpu"))
    for ev in gen:
        if ev["kind"] == "step" and ev["step"] == 3:
            break
    gen.close()  # what Gradio does when the browser goes away mid-stream
    assert torch.load(out / "train_state.pt", weights_only=False)["step"] == 3
    assert json.loads((out / "lora_config.json").read_text())["status"] == "stopped"
    ev = _train(random_base, out, save_every=100)
    assert ev[0]["step"] == 3
    assert ev[-1]["losses"] == uninterrupted[0]
    assert _same(_weights(out), uninterrupted[1])


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_uninterrupted_lora(random_base, tmp_path, uninterrupted):
    out = tmp_path / "lora"
    cmd = [sys.executable, "-m", "pipeline", "train-lora", "--data", "phantom:12", "--trimester", "second",
           "--n", "2", "--steps", "4", "--rank", "4", "--alpha", "4", "--lr", "1e-3", "--batch-size", "2",
           "--save-every", "2", "--preview-every", "0", "--base", str(random_base), "--out", str(out)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", SONOSYNTH_PROFILE="tiny")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while not (out / "train_state.pt").is_file():  # step 2 is saved: kill it hard
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    state = torch.load(out / "train_state.pt", weights_only=False)  # parseable
    assert 2 <= state["step"] <= 4
    for f in ("loss.csv", "lora_config.json"):
        if (out / f).is_file():
            (json.loads if f.endswith(".json") else str)((out / f).read_text())
    ev = _train(random_base, out)
    assert ev[-1]["kind"] == "done" and ev[-1]["losses"] == uninterrupted[0]
    assert _same(_weights(out), uninterrupted[1])
    rows = (out / "loss.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert not list(out.glob(".*"))  # no temporary file left behind


def test_out_of_range_settings_are_refused_before_anything_is_written(random_base, tmp_path):
    for kw, msg in [({"lr": float("inf")}, "lr"), ({"lr": 1e30}, "lr"), ({"grad_clip": float("nan")}, "grad_clip"),
                    ({"grad_clip": -1}, "grad_clip"), ({"seed": -1}, "seed"), ({"rank": 0}, "rank")]:
        with pytest.raises(DataError, match=msg):
            _train(random_base, tmp_path / "x", **kw)
    assert not (tmp_path / "x").exists()
    np.testing.assert_equal(LoraTrainConfig(grad_clip=0).grad_clip, 0.0)  # 0 is "off", said so in the field
