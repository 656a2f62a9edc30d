"""The Generation tab's LoRA list after the LoRA tab saved one (issue 33): the dropdown's value is a LoRA
name or absent, never an update object (gr.skip() inside gr.Dropdown(value=...) made Generate refuse
"{'__type__': 'update'} is not in the list of choices")."""
from __future__ import annotations

import json
from types import SimpleNamespace

from pages.generation import newest_lora
from pipeline.diffusion.lora import WEIGHTS


def _lora(root, name, done, total=300):
    d = root / "loras" / name
    d.mkdir(parents=True)
    (d / WEIGHTS).write_bytes(b"\0")
    (d / "lora_config.json").write_text(json.dumps({"steps_done": done, "steps": total, "status": "done"}))
    return d


def _value(update):
    return update.get("value") if isinstance(update, dict) else getattr(update, "value", None)


def test_a_finished_lora_is_listed_and_selected(tmp_path):
    d = _lora(tmp_path, "ux-second", 300)
    upd = newest_lora(SimpleNamespace(work_dir=tmp_path), str(d))
    assert "ux-second" in [c[1] for c in upd.choices]
    assert upd.value == "ux-second"


def test_an_unfinished_or_missing_lora_leaves_the_value_a_plain_value(tmp_path):
    d = _lora(tmp_path, "ux-first", 2)
    for s in (str(d), "", str(tmp_path / "loras" / "gone")):
        upd = newest_lora(SimpleNamespace(work_dir=tmp_path), s)
        v = upd.value
        assert not isinstance(v, dict) and "__type__" not in repr(v), f"{s!r}: value is an update object {v!r}"
        assert "ux-first" in [c[1] for c in upd.choices]
