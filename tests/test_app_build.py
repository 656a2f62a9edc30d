"""app.py without a server: flags, contexts, and the guide naming the active profile."""
import gradio as gr
import pytest

import app


@pytest.mark.parametrize("profile", ["tiny", "paper"])
def test_guide_names_the_active_profile(profile, tmp_path):
    ctx = app.make_context(profile, [str(tmp_path / "data")], str(tmp_path / "work"))
    demo = app.build_app(ctx)
    texts = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown) and isinstance(b.value, str)]
    assert any(f"Profile in use: `{profile}`" in t for t in texts)
    assert isinstance(ctx.shared["data_spec"], gr.State)  # the Data tab publishes its source for later tabs
    assert (tmp_path / "work").is_dir()
    assert ctx.allowed_roots == [(tmp_path / "data").resolve(), (tmp_path / "work").resolve()]


def test_default_roots_and_unknown_profile(tmp_path, monkeypatch):
    monkeypatch.delenv("SONOSYNTH_PROFILE", raising=False)
    ctx = app.make_context(None, None, str(tmp_path))
    assert ctx.profile.name == "tiny" and ctx.data_roots == [r.resolve() for r in app.DEFAULT_DATA_ROOTS]
    with pytest.raises(ValueError, match="unknown profile"):
        app.make_context("huge", None, str(tmp_path))
