"""scripts/oracle_set.py: the control arm's real pairs never leak a validation, test or real-cell pair."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("oracle_set", ROOT / "scripts" / "oracle_set.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_oracle_pairs_come_from_the_train_part_and_no_real_cell_uses_them(hc18_root):
    from pipeline.data import nested_subsets, open_source, split_indices
    from pipeline.sweep.config import preset
    from pipeline.sweep.synthetic import synthetic_plan
    cfg = preset("cpu-small", train=f"hc18:{hc18_root}", train_loras=True)
    metas = open_source(cfg.train).metas
    picks = _script().oracle_indices(cfg, metas, seed=0)
    assert {t: len(v) for t, v in picks.items() if v} == synthetic_plan(cfg)  # the SYN arm's trimester mix
    parts = split_indices(metas, cfg.split, cfg.split_seed)
    chosen = [i for v in picks.values() for i in v]
    assert len(set(chosen)) == len(chosen) == cfg.total - min(cfg.n_real)
    assert set(chosen) <= set(parts["train"])
    for r in range(cfg.repeats):
        for real in nested_subsets(parts["train"], cfg.n_real, cfg.seed + r).values():
            assert not set(real) & set(chosen)
    for t, idx in picks.items():
        assert all(metas[i].trimester == t for i in idx)


def test_oracle_folder_holds_squashed_and_aspect_restored_pairs(hc18_root, tmp_path):
    from pipeline.data import open_source
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "scripts" / "oracle_set.py"),  # noqa: E731
                                     "--train", f"hc18:{hc18_root}", *a], capture_output=True, text=True, cwd=ROOT)
    r = run("--out", str(tmp_path / "a"), "--size", "64", "--restore-aspect")
    assert r.returncode == 0, r.stderr
    syn = open_source(f"folder:{tmp_path / 'a'}")
    assert len(syn) == 95
    s = syn[0]
    assert s.image.shape == (64, 95) and s.mask.shape == (64, 95)  # 800x540 back to its aspect, short side 64
    assert 0.01 < s.mask.mean() < 0.9 and s.meta.trimester in ("first", "second", "third")
    assert not (tmp_path / "a.partial").exists()
    # refused with a message, nothing overwritten
    r = run("--out", str(tmp_path / "a"), "--size", "64")
    assert r.returncode != 0 and "already holds files" in r.stderr
    assert open_source(f"folder:{tmp_path / 'a'}")[0].image.shape == (64, 95)
    r = run("--out", str(tmp_path / "b"), "--size", "3")
    assert r.returncode != 0 and "--size" in r.stderr and not (tmp_path / "b").exists()
    r = run("--out", str(tmp_path / "c"), "--size", "0", "--restore-aspect")
    assert r.returncode != 0 and "needs a --size" in r.stderr and not (tmp_path / "c").exists()


def test_squashed_pairs_match_what_the_generator_trains_on(hc18_root, tmp_path):
    from pipeline.data import open_source
    from pipeline.diffusion.base import to_model_size
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "oracle_set.py"), "--train", f"hc18:{hc18_root}",
                        "--out", str(tmp_path / "s"), "--size", "32"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    syn = open_source(f"folder:{tmp_path / 's'}")
    real = open_source(f"hc18:{hc18_root}")
    s = syn[0]
    orig = real[real.index_of(next(n for n in real.names if Path(n).stem == Path(s.name).stem))]
    rgb = to_model_size(orig.image, orig.mask, 32)
    assert np.array_equal(s.image, rgb[..., 0]) and np.array_equal(s.mask, rgb[..., 2] > 127)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
