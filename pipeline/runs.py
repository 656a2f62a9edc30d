"""Run folders: one folder per training run, written so that a crash or a stop loses nothing.

    runs/NAME/
      config.json         what was asked for (the run's identity; a resume must ask for the same)
      metrics.csv         one row per logged event (kind, epoch, step, loss, val_dice, ...)
      best.safetensors    the best-validation weights (+ metadata: epoch, val_dice)
      last.safetensors    the latest weights, and last_state.pt: optimizer, position, RNG, best so far
      status.json         running / stopped / done / failed, with a one-line message

Every file is written to a temporary file and moved into place (pipeline/fileio.py), so a kill leaves
either the old or the new version, never half of one. `RunDir.resume_state()` returns the saved
position and the trainer continues from there; metric rows logged after that position (work that was
lost with the kill) are dropped so curves never show a step twice.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from .data import DataError
from .fileio import atomic_write, atomic_write_json, atomic_write_text

# keys of a config that may change between a run and its resume (they do not change the result)
RESUMABLE_CHANGES = {"epochs", "device", "num_workers", "log_every", "cache_dir", "mixed_precision"}


# ----------------------------------------------------------------------------- the one resume rule
def changed_settings(old: dict, new: dict, *, may_change=RESUMABLE_CHANGES, only=None,
                     defaults: dict | None = None) -> list[str]:
    """'key: old -> new' for every setting `new` asks differently from the saved run's `old`.

    The resume rule of every resumable job (SAM fine-tuning runs, LoRAs, sweeps): a resume must ask for what
    the saved run was asked for, except the settings in `may_change` (they do not change the result). `only`
    limits the comparison to the settings that define the result (a sweep's grid may grow); `defaults` are
    the values of settings a run saved before they existed. Lists and tuples compare equal (JSON has no tuple)."""
    defaults = defaults or {}
    keys = sorted(set(old) | set(new)) if only is None else list(only)
    norm = (lambda v: list(v) if isinstance(v, (tuple, list)) else v)
    out = []
    for k in keys:
        if k in may_change:
            continue
        was, now = old.get(k, defaults.get(k)), new.get(k, defaults.get(k))
        if norm(was) != norm(now):
            out.append(f"{k}: {was!r} -> {now!r}")
    return out


def refuse_changed(what: str, old: dict, new: dict, **rule) -> None:
    """Raise DataError naming the changed settings (the first four) when `new` may not resume `old`."""
    changed = changed_settings(old, new, **rule)
    if changed:
        raise DataError(f"{what} already exists with other settings ({', '.join(changed[:4])}); choose another "
                        f"name, or the same settings to resume it")


class RunDir:
    """A run folder. `config_name` / `state_name` name its settings file and its resume state (a LoRA folder
    keeps diffusers' lora_config.json / train_state.pt names); `what` names the run in messages."""

    def __init__(self, path: str | os.PathLike, config_name: str = "config.json",
                 state_name: str = "last_state.pt", what: str = "run"):
        self.path = Path(path)
        self.config_name, self.state_name, self.what = config_name, state_name, what

    # -- identity ----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / self.config_name

    @property
    def state_path(self) -> Path:
        return self.path / self.state_name

    def exists(self) -> bool:
        return self.config_path.is_file()

    def config(self) -> dict:
        try:
            return json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise DataError(f"{self.path} is not a run folder (no {self.config_name})") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{self.config_path} is not valid JSON") from None

    def start(self, config: dict, resume: bool = True, saved: dict | None = None, write: bool = True,
              **rule) -> bool:
        """Create the run, or check that `config` may resume the existing one (refuse_changed; `rule`:
        may_change / only / defaults). Returns True when resuming from a saved state.

        A different config in an existing run folder is refused (a resume must continue the same run);
        resume=False with an existing checkpoint is refused too, so nothing is overwritten silently.
        `saved`: the settings the existing run was asked for, when they are kept elsewhere than the config
        file (a LoRA's are in its state); `write=False`: the caller writes the config file itself."""
        rule.setdefault("may_change", RESUMABLE_CHANGES)
        has_state = self.state_path.is_file()
        if saved is not None or self.exists():
            old = self.config() if saved is None else saved
            refuse_changed(f"{self.what} {self.name}", old, config, **rule)
            if not resume and has_state:
                raise DataError(f"{self.what} {self.name} already has checkpoints; resume it or choose another name")
            if write:
                atomic_write_json(self.config_path,
                                  {**old, **{k: config[k] for k in rule["may_change"] if k in config}})
            return has_state
        if write:  # write=False: nothing is made yet (a start refused later, e.g. for its data, leaves no folder)
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.config_path, config)
        return False

    # -- metrics -----------------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    def metrics(self) -> list[dict]:
        if not self.metrics_path.is_file():
            return []
        with open(self.metrics_path, newline="") as f:
            return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def log(self, rows: list[dict] | dict) -> None:
        """Append metric rows (the file is rewritten atomically; runs log hundreds of rows, not millions)."""
        rows = [rows] if isinstance(rows, dict) else list(rows)
        if not rows:
            return
        self._write_metrics(self.metrics() + [{**r, "time": r.get("time", round(time.time(), 3))} for r in rows])

    def truncate_metrics(self, after_step: int) -> None:
        """Drop rows logged after `after_step` (work lost in a kill, redone on resume)."""
        rows = self.metrics()
        kept = [r for r in rows if not (isinstance(r.get("step"), (int, float)) and r["step"] > after_step)]
        if len(kept) != len(rows):
            self._write_metrics(kept)

    def _write_metrics(self, rows: list[dict]) -> None:
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
        atomic_write_text(self.metrics_path, buf.getvalue())

    # -- checkpoints -------------------------------------------------------------------------------
    def save_weights(self, name: str, state_dict: dict, meta: dict | None = None) -> Path:
        """best / last weights as safetensors (contiguous CPU tensors, string metadata)."""
        from safetensors.torch import save_file
        sd = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        md = {k: json.dumps(v) for k, v in (meta or {}).items()}
        return atomic_write(self.path / f"{name}.safetensors", lambda tmp: save_file(sd, tmp, metadata=md))

    def weights_meta(self, name: str) -> dict:
        from safetensors import safe_open
        p = self.path / f"{name}.safetensors"
        if not p.is_file():
            return {}
        with safe_open(str(p), "pt") as f:
            return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}

    def save_state(self, state: dict[str, Any]) -> Path:
        """Trainer state for resuming (optimizer, epoch/step position, RNG, best-so-far)."""
        import torch
        return atomic_write(self.state_path, lambda tmp: torch.save(state, tmp))

    def resume_state(self) -> dict | None:
        import torch
        p = self.state_path
        if not p.is_file():
            return None
        try:
            return torch.load(str(p), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise DataError(f"{self.what} {self.name}: {self.state_name} cannot be read ({type(exc).__name__}); "
                            f"delete it to restart the run from scratch") from None

    # -- status ------------------------------------------------------------------------------------
    def set_status(self, status: str, message: str = "", **extra) -> None:
        atomic_write_json(self.path / "status.json", {"status": status, "message": message,
                                                      "time": round(time.time(), 3), **extra})

    def status(self) -> dict:
        try:
            return json.loads((self.path / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return {"status": "unknown", "message": ""}


def list_runs(root: str | os.PathLike, kind: str | None = None) -> list[RunDir]:
    """Run folders under `root` (newest first); `kind` filters on config["kind"] (e.g. "sam-finetune")."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if (p / "config.json").is_file()]
    if kind is not None:
        def _kind(r: RunDir) -> str | None:
            try:
                return r.config().get("kind")
            except DataError:
                return None
        runs = [r for r in runs if _kind(r) == kind]
    return sorted(runs, key=lambda r: r.config_path.stat().st_mtime, reverse=True)


def _num(v: str):
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
