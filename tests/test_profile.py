"""The profile is explicit (issue 9): an entry point resolves it once and the library takes it as an argument.

The paper profile must reach generation's QC and the Experiments sweep (once they ran LiteMedSAM and the
tiny base under `app.py --profile paper`). Nothing is downloaded: the model loaders are replaced by fakes that
record what was asked for and stop the job there.
"""
import pytest

import app
from pipeline.config import get_profile, resolve_profile


class Requested(Exception):
    """Raised by a fake loader once it has recorded what was asked for."""


def test_resolve_profile_name_then_environment_then_tiny():
    assert resolve_profile(None, environ={}).name == "tiny"
    assert resolve_profile(None, environ={"SONOSYNTH_PROFILE": "paper"}).name == "paper"
    assert resolve_profile("tiny", environ={"SONOSYNTH_PROFILE": "paper"}).name == "tiny"  # --profile wins
    paper = resolve_profile("paper", environ={"SONOSYNTH_SAM_CHECKPOINT": "/m/sam.pth", "SONOSYNTH_SD_BASE": "/m/sd"})
    assert (paper.sam_backend, paper.sam_checkpoint, paper.diffusion_base) == ("vit_b", "/m/sam.pth", "/m/sd")
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        resolve_profile(None, environ={"SONOSYNTH_PROFILE": "huge"})


def test_the_library_reads_no_profile_from_the_environment(monkeypatch):
    import pipeline.sam.predictor as P
    monkeypatch.setenv("SONOSYNTH_PROFILE", "paper")
    assert get_profile().name == "tiny"
    asked = []

    def fake_load_model(backend, checkpoint=None, device=None):
        asked.append((backend, checkpoint))
        raise Requested
    monkeypatch.setattr(P, "load_model", fake_load_model)
    with pytest.raises(Requested):
        P.load_predictor()
    with pytest.raises(Requested):
        P.load_predictor(resolve_profile("paper", environ={"SONOSYNTH_SAM_CHECKPOINT": "/m/sam.pth"}))
    assert asked == [("litemedsam", None), ("vit_b", "/m/sam.pth")]


def _endpoint(demo, api_name):
    (fn,) = [f.fn for f in demo.fns.values() if f.api_name == api_name]
    return fn


@pytest.fixture
def paper_app(tmp_path):
    ctx = app.make_context("paper", [str(tmp_path / "data")], str(tmp_path / "work"))
    return ctx, app.build_app(ctx)


def test_paper_profile_reaches_generation_qc(paper_app, monkeypatch):
    import pipeline.diffusion.generate as G
    import pipeline.sam.predictor as P
    ctx, demo = paper_app
    asked = {}

    def fake_get_pipeline(base=None, lora=None, scale=0.9):
        asked["base"] = base
        return object()

    def fake_load_model(backend, checkpoint=None, device=None):
        asked["sam"] = (backend, checkpoint)
        raise Requested("QC model requested")
    monkeypatch.setattr(G, "get_pipeline", fake_get_pipeline)
    monkeypatch.setattr(G, "_QC_PRED", {})
    monkeypatch.setattr(P, "load_model", fake_load_model)
    generate = _endpoint(demo, "generate")
    with pytest.raises(Exception, match="QC model requested"):
        list(generate("second", None, 2, 0, 2, 0.9, 7.5, 2, 127, True, "ds"))
    assert asked == {"base": ctx.profile.diffusion_base, "sam": ("vit_b", ctx.profile.sam_checkpoint)}


def test_paper_profile_reaches_the_sweep_started_from_the_dashboard(paper_app, monkeypatch):
    import pipeline.sweep as E
    ctx, demo = paper_app
    seen = []

    def fake_run_sweep(cfg, out, stop=None, allowed_roots=None, shard=None):
        seen.append(cfg)
        raise Requested("sweep started")
        yield  # a generator, as run_sweep is
    monkeypatch.setattr(E, "run_sweep", fake_run_sweep)
    start = _endpoint(demo, "sweep")

    class Request:
        session_hash = "test"
    with pytest.raises(Exception, match="sweep started"):
        list(start("s1", "smoke", "phantom:12", "heldout", "(none)", "(none)", "(none)", "(none)", False, "", "", "",
                   [], request=Request()))
    (cfg,) = seen
    assert (cfg.backend, cfg.base_weights, cfg.diffusion_base) == \
        ("vit_b", ctx.profile.sam_checkpoint, ctx.profile.diffusion_base)


def test_a_paper_sweep_fine_tunes_vit_b_and_makes_its_syn_set_with_the_paper_models(tmp_path, monkeypatch):
    """run_sweep itself: the SAM it builds, the base its LoRAs train on, the base and QC SAM it generates with."""
    import pipeline.diffusion.generate as G
    import pipeline.diffusion.lora as L
    import pipeline.sweep as E
    import pipeline.sam.finetune as F
    import pipeline.sam.models as M
    paper = resolve_profile("paper", environ={"SONOSYNTH_SAM_CHECKPOINT": "/m/sam.pth", "SONOSYNTH_SD_BASE": "/m/sd"})
    asked = {}

    def fake_build_model(backend="litemedsam", weights=None, device=None):
        asked["finetune"] = (backend, weights)
        raise Requested
    monkeypatch.setattr(M, "build_model", fake_build_model)
    # and where fine-tuning bound it at import: patching models alone left the fake bound in finetune for every
    # later test when this test was the first to import it (test_experiments failed after it)
    monkeypatch.setattr(F, "build_model", fake_build_model)
    cfg = E.preset("smoke", paper, train="phantom:12")
    with pytest.raises(Requested):
        list(E.run_sweep(cfg, tmp_path / "sweep"))
    assert asked["finetune"] == ("vit_b", "/m/sam.pth")

    def fake_train_lora(lcfg, out, **kw):
        asked["lora_base"] = lcfg.base
        raise Requested
        yield
    monkeypatch.setattr(L, "train_lora", fake_train_lora)
    syn = E.preset("smoke", paper, train="phantom:12", augmentations=["syn"], train_loras=True)
    with pytest.raises(Requested):
        list(E.train_trimester_loras(syn, tmp_path / "loras"))
    assert asked["lora_base"] == "/m/sd"

    def fake_generate(gcfg, stop=None, pipe=None, predictor=None):
        asked["generate"] = (gcfg.base, gcfg.sam, gcfg.sam_weights)
        raise Requested
        yield
    monkeypatch.setattr(G, "generate", fake_generate)
    syn.loras = {t: str(tmp_path / t) for t in ("first", "second", "third")}
    with pytest.raises(Requested):
        list(E.generate_synthetic(syn, tmp_path / "synthetic"))
    assert asked["generate"] == ("/m/sd", "vit_b", "/m/sam.pth")


def test_a_config_file_naming_another_backend_gets_no_paper_weights():
    from pipeline.sweep import SweepConfig
    paper = get_profile("paper")
    cfg = SweepConfig.for_profile(paper, train="phantom:12", backend="litemedsam")
    assert (cfg.backend, cfg.base_weights, cfg.diffusion_base) == ("litemedsam", None, paper.diffusion_base)
    tiny = SweepConfig.for_profile(get_profile("tiny"), train="phantom:12")
    assert (tiny.backend, tiny.base_weights) == ("litemedsam", None)  # what a tiny sweep always ran


def test_one_home_for_the_profile_to_models_rule():
    """Profile.sam_model / Profile.diffusion resolve back-end, weights and base for every caller (issue 34: the
    rule was written five ways, in generate.py, sweep/config.py, sam/cli.py, pages/finetune.py and
    pages/playground.py, and predictor.py a sixth)."""
    from pathlib import Path
    paper = resolve_profile("paper", environ={"SONOSYNTH_SAM_CHECKPOINT": "/m/sam.pth", "SONOSYNTH_SD_BASE": "/m/sd"})
    assert paper.sam_model() == ("vit_b", "/m/sam.pth")
    assert paper.sam_model("litemedsam") == ("litemedsam", None)  # another back-end: its own default weights
    assert get_profile("tiny").sam_model() == ("litemedsam", None)
    assert paper.diffusion() == "/m/sd" and paper.diffusion("/other") == "/other"
    root = Path(__file__).resolve().parents[1]
    written = [str(p.relative_to(root)) for p in [*root.glob("pipeline/**/*.py"), *root.glob("pages/*.py"), root / "app.py"]
               if p.name != "config.py" and ("sam_checkpoint if" in p.read_text() or ".sam_checkpoint" in p.read_text())]
    assert written == []
    from pipeline.diffusion.generate import GenerateConfig
    from pipeline.sweep.config import SweepConfig
    g = GenerateConfig.for_profile(paper)
    assert (g.base, g.sam, g.sam_weights) == ("/m/sd", "vit_b", "/m/sam.pth")
    assert GenerateConfig.for_profile(paper, sam="litemedsam").sam_weights is None
    s = SweepConfig.for_profile(paper, train="phantom:8")
    assert (s.backend, s.base_weights, s.diffusion_base) == ("vit_b", "/m/sam.pth", "/m/sd")


def test_a_missing_base_or_lora_is_refused_by_name_never_replaced(tmp_path):
    """A named diffusion base or LoRA that is not there stops the job with a message naming what was looked
    for; nothing falls back to the tiny base (issue 34)."""
    from pipeline.diffusion.base import resolve_base
    from pipeline.diffusion.generate import GenerateConfig, generate
    missing = tmp_path / "no-such-base"
    with pytest.raises(FileNotFoundError, match=f"diffusion base not found: {missing}"):
        resolve_base(missing)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        next(generate(GenerateConfig(base=str(missing), trimester="second", n=1, qc=False)))
    lora = tmp_path / "no-such-lora"
    with pytest.raises(FileNotFoundError, match=f"no LoRA weights at {lora}"):
        next(generate(GenerateConfig(lora=str(lora), trimester="second", n=1, qc=False)))
    assert resolve_base(get_profile("paper").diffusion("a/b")) == "a/b"  # a hub id is passed on as named
