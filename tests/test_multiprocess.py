"""SAM mask-decoder fine-tuning in two processes (torchrun, CPU, gloo): the processes train in step (DDP
averages their gradients: both end with the same weights) on disjoint halves of each batch, and only the
main process writes the run folder (every step logged once)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_finetune_trains_in_step_and_saves_once(tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pipeline", "finetune-sam", "--data", "phantom:24", "--n-real", "8", "--epochs", "2",
           "--n-val", "4", "--batch-size", "2", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--json"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    done = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(done) == 2  # one summary per process
    # in step: the same best validation Dice in both processes (a process that skipped the gradient
    # all-reduce, as when DDP waited for unused decoder parameters, ends with other weights)
    assert done[0]["best_val_dice"] == done[1]["best_val_dice"]
    # 8 pairs, batch 2 per process, 2 processes: 2 steps per epoch, 2 epochs
    assert done[0]["global_step"] == done[1]["global_step"] == 4
    m = pd.read_csv(out / "metrics.csv")
    assert m[m.kind == "step"]["step"].tolist() == [1, 2, 3, 4]  # written once, by the main process
    assert m[m.kind == "epoch"]["epoch"].tolist() == [0, 1, 2]
    for f in ("config.json", "best.safetensors", "last.safetensors", "last_state.pt", "status.json"):
        assert (out / f).is_file()
    assert json.loads((out / "status.json").read_text())["status"] == "done"


def test_two_process_lora_splits_each_batch_and_equals_one_process(tmp_path):
    """train-lora in two processes: each trains its half of every batch and DDP averages the gradients, so
    the LoRA equals the one-process LoRA of the same settings (to float rounding); only the main process
    writes the folder."""
    import torch
    from safetensors.torch import load_file
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT)
    args = ["-m", "pipeline", "train-lora", "--data", "phantom:40", "--trimester", "second", "--steps", "2",
            "--batch-size", "2", "--preview-every", "0"]
    two, one = tmp_path / "two", tmp_path / "one"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        *args, "--out", str(two)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("LoRA for the second trimester") == 2  # both processes trained
    r1 = subprocess.run([sys.executable, *args, "--out", str(one)], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=1200)
    assert r1.returncode == 0, r1.stderr[-3000:]
    a, b = load_file(str(two / "pytorch_lora_weights.safetensors")), load_file(str(one / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    assert json.loads((two / "lora_config.json").read_text())["status"] == "done"
    assert len((two / "loss.csv").read_text().splitlines()) == 3  # header + 2 steps
