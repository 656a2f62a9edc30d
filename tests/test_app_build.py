"""app.py without a server: flags, contexts, the guide naming the active profile, no model at start."""
import gc
import sys

import gradio as gr
import pytest

import app


@pytest.mark.parametrize("profile", ["tiny", "paper"])
def test_guide_names_the_active_profile(profile, tmp_path):
    ctx = app.make_context(profile, [str(tmp_path / "data")], str(tmp_path / "work"))
    before = _torch_modules_alive()
    demo = app.build_app(ctx)
    assert _torch_modules_alive() == before, "building the dashboard created a model: load it when a tab needs it"
    texts = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown) and isinstance(b.value, str)]
    assert any(f"Profile in use: `{profile}`" in t for t in texts)
    from pipeline.diffusion.lora import LoraTrainConfig  # the LoRA tab's time estimate is for the default steps
    assert any(f"{LoraTrainConfig().steps} steps (the default) take" in t for t in texts)
    assert isinstance(ctx.shared["data_spec"], gr.State)  # the Data tab publishes its source for later tabs
    assert (tmp_path / "work").is_dir()
    assert ctx.allowed_roots == [(tmp_path / "data").resolve(), (tmp_path / "work").resolve()]


def test_default_roots_and_unknown_profile(tmp_path, monkeypatch):
    monkeypatch.delenv("SONOSYNTH_PROFILE", raising=False)
    ctx = app.make_context(None, None, str(tmp_path))
    assert ctx.profile.name == "tiny" and ctx.data_roots == [r.resolve() for r in app.DEFAULT_DATA_ROOTS]
    with pytest.raises(ValueError, match="unknown profile"):
        app.make_context("huge", None, str(tmp_path))


def _torch_modules_alive() -> int:
    """torch.nn.Module objects alive now (0 when torch was never imported)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.nn.Module))
