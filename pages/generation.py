"""The Generation tab: generate image + mask pairs from a trimester prompt, check, correct, keep.

Thin wiring over pipeline.diffusion.generate (the same code as `python -m pipeline generate`).
Samples appear in the gallery as their batch finishes, with the extracted ellipse drawn and their
verdict / QC; selecting one opens it in an editable mask canvas (gr.ImageEditor: brush, eraser,
"Re-fit ellipse", "Revert to generated"; brush strokes are undone with the canvas toolbar's Undo, re-fit and
revert with "Undo re-fit / revert"), then Accept or Reject. Accepted pairs go to synthetic/NAME in the folder: layout.
API endpoint: generate.
"""
from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import numpy as np

from pipeline.config import GenerationDefaults
from pipeline.diffusion import dataset as D
from pipeline.diffusion import generate as G
from pipeline.diffusion.lora import list_loras
from pipeline.masks import TRIMESTERS, refit

from pipeline.gpu import gpu_task

from pipeline.eta import eta_text
from pipeline.readable import ellipse_markdown, generation_markdown, lora_label, lora_state, lora_warning, short_path

from .common import HEAVY, bind_ctx, guarded, picture_file, safe_name

TITLE = "Generation"
_G = GenerationDefaults()
_GC = G.GenerateConfig()  # the detail-pass and aspect defaults live in the config (one home per setting)
NO_LORA = "(none: base model only)"
MASK_RGBA = (0, 255, 0, 160)

INTRO = """### Generation — new image + mask pairs from a trimester prompt
Each sample's blue channel goes through the Ellipse Extractor (threshold 127) and gets a QC score: the Dice
between SAM's mask (prompted with the extracted mask's box) and the extracted mask. Click a sample to
correct its mask with the brush / eraser, **Re-fit ellipse**, then **Accept** or **Reject**. A brush or eraser
stroke is undone with **↶** in the canvas toolbar (↷ redoes it); a re-fit or **Revert to generated** is
undone with **Undo re-fit / revert**. Accepted pairs
are written to `synthetic/NAME` (`images/`, `masks/`, `meta/`), a dataset the SAM tabs can train on
(`folder:` source)."""


def editor_value(gray: np.ndarray, mask: np.ndarray) -> dict:
    """The ImageEditor value: the image as background, the mask as one RGBA layer, as PNG files written once
    (common.picture_file: arrays re-sent to the canvas were rewritten in Gradio's cache while being fetched)."""
    bg = np.repeat(gray[..., None], 3, axis=2)
    layer = np.zeros((*gray.shape, 4), np.uint8)
    layer[np.asarray(mask).astype(bool)] = MASK_RGBA
    return {"background": picture_file(bg), "layers": [picture_file(layer)], "composite": None}


HISTORY_LIMIT = 20  # re-fits / reverts remembered per selected sample


def push_history(history, mask: np.ndarray, limit: int = HISTORY_LIMIT) -> list:
    """The canvas's undo stack for changes made from Python (re-fit, revert). Gradio's ImageEditor undoes
    brush strokes itself (toolbar ↶/↷), but a value set from Python starts its history afresh, so the
    mask before each such change — strokes included — is kept here. The oldest entries go first."""
    return (list(history or []) + [np.asarray(mask, bool).copy()])[-limit:]


def pop_history(history) -> tuple[np.ndarray | None, list]:
    """(the mask before the last re-fit / revert, the rest of the stack); (None, []) when empty."""
    h = list(history or [])
    return (h.pop(), h) if h else (None, [])


def editor_mask(value, shape) -> np.ndarray:
    """The painted mask from an ImageEditor value (the layer's alpha), at the image's size."""
    if not value or not value.get("layers"):
        raise ValueError("nothing in the mask canvas: select a sample first")
    layer = value["layers"][0]
    if isinstance(layer, (str, Path)):  # a value this module handed out (editor_value), not the browser's
        import cv2
        layer = cv2.imread(str(layer), cv2.IMREAD_UNCHANGED)
        if layer is None:
            raise ValueError("the mask canvas's layer could not be read: select the sample again")
    layer = np.asarray(layer)
    if layer.ndim != 3 or layer.shape[2] != 4:
        raise ValueError(f"unexpected mask layer shape {layer.shape}")
    m = layer[..., 3] > 0
    if m.shape != tuple(shape):
        import cv2
        m = cv2.resize(m.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return m


def _lora_root(ctx) -> Path:
    return ctx.work_dir / "loras"


def lora_choices(ctx):
    # (label, value): the label says when a LoRA is unfinished (stopped at step 2 of 300)
    return [NO_LORA] + [(lora_label(r["name"], lora_state(r["path"])), r["name"]) for r in list_loras(_lora_root(ctx))]


def dataset_dir(ctx, name: str) -> Path:
    return ctx.work_dir / "synthetic" / safe_name(name, "dataset name", "second-200")


def items(samples, decisions):
    out = []
    for s in samples:
        d = decisions.get(s.name)
        # the verdict and QC first: a long caption wraps, and what matters must come before the name
        verdict = "✅ valid" if s.valid else f"✗ {s.extraction.reason}"
        qc = "QC n/a" if s.qc is None else f"QC {s.qc:.2f}"
        caption = f"{verdict} · {qc}" + (f" · {d.upper()}" if d else "") + f" · seed {s.seed}"
        out.append((picture_file(s.picture()), caption))
    return out


def dataset_status(ctx, folder: Path) -> str:
    c = D.counts(folder)
    return (f"`{short_path(folder, ctx.work_dir)}`: **{c['accepted']}** accepted, {c['rejected']} rejected · "
            "train on it in Fine-tune SAM (Synthetic pairs) or open it in the Data tab")


def _start_ellipse_guidance(ctx) -> str:
    """The base's own ellipse guidance as the text box shows it ("off" for a base without one)."""
    from pipeline.diffusion.base import base_ellipse_guidance
    try:
        eg = base_ellipse_guidance(ctx.profile.diffusion_base)
    except ValueError:  # reported when generating
        return ""
    return "off" if eg is None else ", ".join(f"{f:g}" for f in eg.at)


def _start_guidance_until(ctx) -> float:
    """The base's own share of guided steps (1 for a base without one, or while its sampling file is unreadable:
    that is reported when generating)."""
    from pipeline.diffusion.base import base_guidance_until
    try:
        return base_guidance_until(ctx.profile.diffusion_base)
    except ValueError:
        return 1.0


def _start_guidance(ctx) -> float:
    from pipeline.diffusion.base import base_guidance
    try:
        return base_guidance(ctx.profile.diffusion_base)
    except ValueError:  # an unreadable sampling file is reported when generating, not while building the page
        return _G.guidance


@guarded
@gpu_task  # ZeroGPU on Spaces; a no-op elsewhere
def generate(ctx, trimester, lora, n, seed, steps, scale, guidance, batch_size, threshold, qc, dataset,
             detail_lora=NO_LORA, detail_strength=_GC.detail_strength, restore_aspect=_GC.restore_aspect,
             ellipse_guidance=None, guidance_until=None, progress=gr.Progress()):
    """Generate N pairs; streams the gallery as batches finish. Returns (gallery, summary, samples...)."""
    folder = dataset_dir(ctx, dataset)
    lora_path = None if (not lora or lora == NO_LORA) else str(_lora_root(ctx) / Path(lora).name)
    detail_path = None if (not detail_lora or detail_lora == NO_LORA) else str(_lora_root(ctx) / Path(detail_lora).name)
    from pipeline.validate import check_int
    seed = None if seed in (None, "") else check_int(seed, "seed (-1: random)", -1, 2**32 - 1)
    # raw values: the config checks each one's range and names the field when it refuses
    # the dashboard's profile: its diffusion base, and its SAM for the QC score
    cfg = G.GenerateConfig.for_profile(ctx.profile, trimester=trimester, n=n, lora=lora_path,
                                       seed=None if seed == -1 else seed, steps=steps, lora_scale=scale,
                                       guidance=guidance, batch_size=batch_size, threshold=threshold, qc=bool(qc),
                                       detail_lora=detail_path,
                                       detail_strength=_GC.detail_strength if detail_strength in (None, "")
                                       else detail_strength,
                                       restore_aspect=restore_aspect or 0.0,
                                       ellipse_guidance=ellipse_guidance or None,
                                       guidance_until=None if guidance_until in (None, "") else guidance_until)
    cfg.validate()
    if lora_path is not None:
        warn = lora_warning(Path(lora_path).name, lora_state(lora_path))
        if warn:
            gr.Warning(warn)
    progress(0, desc="loading the model" + (" and SAM for QC" if qc else ""))
    samples, started = [], time.monotonic()
    for ev in D.fill(folder, cfg, decide=False):  # every raw sample saved (provenance); a person decides
        if ev["kind"] == "start":
            progress((0, ev["total"]), desc="generating", unit="images")
            started = time.monotonic()  # the estimate counts sampling, not the model loading before it
        elif ev["kind"] == "sample":
            s = ev["sample"]
            samples.append(s)
            eta = eta_text(started, ev["index"] + 1, ev["total"])
            progress((ev["index"] + 1, ev["total"]), desc=f"generating · {eta}", unit="images")
            if len(samples) % int(batch_size) == 0 or len(samples) == ev["total"]:
                summ = G.summarize(samples)
                yield (items(samples, {}), generation_markdown(summ, [x.seed for x in samples], total=ev["total"])
                       + f"\n\n{eta}", samples, {})
    summ = G.summarize(samples)
    yield (items(samples, {}), generation_markdown(summ, [x.seed for x in samples], folder, ctx.work_dir),
           samples, {})


@guarded
@gpu_task  # ZeroGPU on Spaces; a no-op elsewhere
def make_grid(ctx, trimester, lora, scales, seeds, steps, guidance, progress=gr.Progress()):
    """A LoRA strength x seed grid of the chosen LoRA: columns are strengths, rows are seeds."""
    from pipeline.diffusion.grid import GridConfig, lora_grid, parse_numbers
    lora_path = None if (not lora or lora == NO_LORA) else str(_lora_root(ctx) / Path(lora).name)
    # raw values: the config checks each one and names the field when it refuses
    cfg = GridConfig(lora=lora_path, trimester=trimester, scales=parse_numbers(scales, "LoRA strengths"),
                     seeds=parse_numbers(seeds, "seeds"), steps=steps, guidance=guidance,
                     base=ctx.profile.diffusion_base)
    cfg.validate()  # refuses a missing LoRA after checking every number
    warn = lora_warning(Path(lora_path).name, lora_state(lora_path))
    if warn:
        gr.Warning(warn)
    progress(0, desc="loading the model")
    started = time.monotonic()

    def step(k, n):
        progress((k, n), desc=f"strengths done · {eta_text(started, k, n)}", unit="strengths")
    picture, cells = lora_grid(cfg, progress=step)
    valid = " · ".join(f"{s:g}: {sum(c['valid'] for c in cells if c['scale'] == s)}/{len(cfg.seeds)}"
                       for s in cfg.scales)
    return picture, (f"{len(cfg.seeds)} seeds × {len(cfg.scales)} strengths, {cfg.steps} sampler steps, "
                     f"{time.monotonic() - started:.0f} s · valid ellipses per strength: {valid}")


def select(samples, evt: gr.SelectData):
    if not samples or evt.index is None or evt.index >= len(samples):
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    s = samples[evt.index]
    ex = s.extraction
    qc = "n/a" if s.qc is None else f"{s.qc:.3f}"
    ell = "" if ex.ellipse is None else f" · ellipse perimeter {ex.ellipse.perimeter_px():.0f} px"
    info = (f"**{s.name}** (seed {s.seed}) · extractor: **{'valid' if ex.valid else 'refused'}** "
            f"({ex.reason}) · QC {qc}{ell}")
    return evt.index, editor_value(s.gray, ex.mask), info, []  # a new sample: a new undo stack


def _selected(samples, index):
    """The sample selected in the gallery; refused when none is."""
    if index is None or not samples:
        raise ValueError("select a sample first")
    return samples[int(index)]


@guarded
def refit_mask(samples, index, value, history):
    s = _selected(samples, index)
    m = editor_mask(value, s.gray.shape)
    ex = refit(m, allow_border=True)
    if ex.ellipse is None:
        raise ValueError(f"cannot fit an ellipse: {ex.reason}")
    return (editor_value(s.gray, ex.mask), f"re-fitted ellipse: {ellipse_markdown(ex.ellipse)} "
            "(**Undo re-fit / revert** brings back the mask before it)", push_history(history, m))


@guarded
def revert_mask(samples, index, value, history):
    """Back to the mask the Ellipse Extractor gave the sample; the edited mask goes on the undo stack."""
    s = _selected(samples, index)
    m = editor_mask(value, s.gray.shape)
    return (editor_value(s.gray, s.extraction.mask),
            "reverted to the generated mask (**Undo re-fit / revert** brings your edits back)",
            push_history(history, m))


@guarded
def undo_mask(samples, index, history):
    s = _selected(samples, index)
    prev, rest = pop_history(history)
    if prev is None:
        gr.Info("no re-fit or revert to undo: brush and eraser strokes are undone with ↶ in the canvas toolbar")
        return gr.skip(), gr.skip(), rest
    return (editor_value(s.gray, prev), f"undone: the mask before the last re-fit / revert "
            f"({len(rest)} more to undo)", rest)


@guarded
def accept_one(ctx, samples, decisions, index, value, dataset):
    s = _selected(samples, index)
    folder = dataset_dir(ctx, dataset)
    m = editor_mask(value, s.gray.shape)
    edited = not np.array_equal(m, s.extraction.mask)
    D.accept(folder, s, m, edited=edited)
    decisions = {**decisions, s.name: "accepted" + (" (edited)" if edited else "")}
    return items(samples, decisions), decisions, dataset_status(ctx, folder)


@guarded
def reject_one(ctx, samples, decisions, index, dataset):
    s = _selected(samples, index)
    folder = dataset_dir(ctx, dataset)
    D.reject(folder, s, "rejected by a person")
    decisions = {**decisions, s.name: "rejected"}
    return items(samples, decisions), decisions, dataset_status(ctx, folder)


@guarded
def accept_all(ctx, samples, decisions, min_qc, dataset):
    """Accept every valid pair whose QC is at least min_qc (pairs a person already decided are kept)."""
    folder = dataset_dir(ctx, dataset)  # the name first: a bad one is refused whatever else is wrong
    if not samples:
        raise ValueError("generate some samples first")
    decisions = dict(decisions)
    n = 0
    for s in samples:
        if s.name in decisions:
            continue
        ok, reason = D.auto_verdict(s, float(min_qc))
        if ok:
            D.accept(folder, s)
            decisions[s.name] = "accepted"
            n += 1
    gr.Info(f"accepted {n} valid pair(s) with QC ≥ {float(min_qc):.2f}")
    return items(samples, decisions), decisions, dataset_status(ctx, folder)


def refresh_loras(ctx):
    return gr.Dropdown(choices=lora_choices(ctx))


def newest_lora(ctx, s):
    """The LoRA list after the LoRA tab saved one (s: its saved folders, ';'-separated)."""
    names = [Path(p).name for p in (s or "").split("\n")[0].split(";") if p]  # lora.trained_value
    ch = lora_choices(ctx)
    # select the newest LoRA only when it is finished: an unfinished one stays listed, marked
    ok = bool(names) and names[-1] in [c[1] for c in ch[1:]] and lora_state(_lora_root(ctx) / names[-1])["finished"]
    # never gr.skip() as a value: an update object inside gr.Dropdown(value=...) became the dropdown's value
    # and Generate refused "{'__type__': 'update'} is not in the list of choices" (issue 33)
    return gr.Dropdown(choices=ch, value=names[-1]) if ok else gr.Dropdown(choices=ch)


# Sampler presets (issue 33: "ellipse guidance", "guide until" and no preset). Measured on this 2-core CPU machine
# (no GPU), tiny profile, on 2026-12-07 with `/usr/bin/time -v python -m pipeline generate --trimester second
# --n 8 --lora <a 300-step LoRA>` (Paper: --ellipse-guidance off --guidance-until 1), SAM QC on; wall clock incl.
# loading (about 13-16 s of it), memory = peak resident set size, one run each: Paper 0:27, 1.67 GiB, 8/8 valid;
# the base's own 0:31, 1.81 GiB, 8/8 valid. No "quick" sampler preset: the base's own is not faster here, and
# 10 steps took 0:44 in a busier moment (single runs on a shared machine vary by more than the settings do).
SAMPLER_PRESETS = {
    "own": dict(label="This base's own (default)", what="its measured sampling: ellipse guidance, fewer guided "
                "steps (not in the paper)", time="31 s", memory="1.8 GB"),
    "paper": dict(label="Paper", what="UniPC 20 steps, every step guided, no ellipse guidance",
                  time="27 s", memory="1.7 GB"),
}


def sampler_preset_choices(ctx):
    tiny = ctx.profile.name == "tiny"
    return [(f"{p['label']}: {p['what']}" + (f" · 8 images in about {p['time']}, {p['memory']} RAM on a 2-core CPU"
                                            if tiny else ""), k) for k, p in SAMPLER_PRESETS.items()]


def apply_sampler_preset(ctx, key):
    """steps, guidance, ellipse guidance, guide until, detail LoRA, width / height for the preset."""
    if key == "paper":
        return _G.steps, _start_guidance(ctx), "off", 1.0, NO_LORA, 0.0
    if key == "own":
        return (_G.steps, _start_guidance(ctx), _start_ellipse_guidance(ctx), _start_guidance_until(ctx), NO_LORA,
                _GC.restore_aspect)
    return (gr.skip(),) * 6


def restore_lora(ctx, saved, current):
    """A reloaded page gets the LoRA this browser last chose, while it is still there and nothing else is chosen
    (the list fell back to the base model only, issue 33)."""
    names = [c[1] for c in lora_choices(ctx)[1:]]
    if saved and saved != NO_LORA and saved in names and current in (None, "", NO_LORA):
        return saved
    return gr.skip()


def build(ctx) -> None:
    # ------------------------------------------------------------------ widgets
    gr.Markdown(INTRO)
    with gr.Row():
        trimester = gr.Radio(list(TRIMESTERS), value="second", label="Trimester", elem_id="gen-trimester")
        lora = gr.Dropdown(lora_choices(ctx), value=NO_LORA, label="LoRA", allow_custom_value=False, elem_id="gen-lora")
        refresh = gr.Button("↻", size="sm", min_width=40, scale=0, elem_id="gen-lora-refresh")
        n = gr.Number(8, label="count", precision=0, minimum=1, maximum=1000, elem_id="gen-n")
        seed = gr.Number(0, label="first seed (-1: random)", precision=0, elem_id="gen-seed")
    sampler_preset = gr.Radio(sampler_preset_choices(ctx), value="own", label="Sampler preset",
                              info="sets the sampler settings below; each stays changeable there",
                              elem_id="gen-preset")
    with gr.Accordion("Sampler and extractor settings", open=False):
        with gr.Row():
            steps = gr.Number(_G.steps, label="UniPC steps", precision=0, minimum=1, elem_id="gen-steps")
            scale = gr.Slider(0, 1.5, value=_G.lora_scale, step=0.05, label="LoRA scale")
            # the base's own guidance (measured for the tiny base; SD v1.5: 7.5) is what the CLI uses too
            guidance = gr.Slider(1, 15, value=_start_guidance(ctx), step=0.5, label="guidance",
                                 info="classifier-free guidance; the default is the base's own", elem_id="gen-guidance")
            batch_size = gr.Number(8, label="batch size", precision=0, minimum=1)
            threshold = gr.Slider(0, 255, value=_G.extractor_threshold, step=1, label="extractor threshold")
            qc = gr.Checkbox(True, label="SAM QC score", elem_id="gen-qc")
        with gr.Row():
            detail_lora = gr.Dropdown(lora_choices(ctx), value=NO_LORA, label="detail LoRA (not in the paper)",
                                      info="a LoRA trained at 2× the base's size (LoRA tab: resolution) re-draws "
                                           "each sample at its size, keeping the head where the base put it",
                                      allow_custom_value=False, elem_id="gen-detail-lora")
            detail_strength = gr.Slider(0.05, 1, value=_GC.detail_strength, step=0.05, label="detail strength",
                                        info="share of the sampler's steps re-run at the detail size",
                                        elem_id="gen-detail-strength")
            restore_aspect = gr.Number(_GC.restore_aspect, label="write pairs at width / height",
                                       info="0: the generated square (paper); 1.48: HC18's 800×540, as SAM "
                                            "sees real scans", minimum=0, maximum=4, elem_id="gen-restore-aspect")
            ellipse_guidance = gr.Textbox(_start_ellipse_guidance(ctx), label="ellipse guidance (not in the paper)",
                                          info="fractions of the sampler's steps after which the mask channel is "
                                               "made an ellipse, so image and mask finish around one head; off: "
                                               "the paper's sampling. Default: the base's own",
                                          elem_id="gen-ellipse-guidance")
            guidance_until = gr.Slider(0.05, 1, value=_start_guidance_until(ctx), step=0.05,
                                       label="guide until (not in the paper)",
                                       info="share of the sampler's steps with classifier-free guidance; the "
                                            "rest run at half the cost. 1: every step (the paper). Default: the "
                                            "base's own", elem_id="gen-guidance-until")
    with gr.Accordion("LoRA strength × seed grid: what the LoRA does", open=False):
        gr.Markdown("One picture: **columns** are LoRA strengths (0 = the base model alone), **rows** are seeds "
                    "(a row keeps its starting noise, so left to right only the strength changes). Each cell "
                    "shows the extracted ellipse and the extractor's verdict. Few sampler steps: a quick look, "
                    "nothing is saved to a dataset. Uses the trimester, LoRA and guidance chosen above.")
        with gr.Row():
            grid_scales = gr.Textbox("0, 0.5, 0.9, 1.2", label="LoRA strengths (columns, up to 8)",
                                     elem_id="grid-scales")
            grid_seeds = gr.Textbox("0, 1, 2", label="seeds (rows, up to 8)", elem_id="grid-seeds")
            grid_steps = gr.Number(8, label="UniPC steps", precision=0, minimum=1, elem_id="grid-steps")
            grid_btn = gr.Button("Make the grid", elem_id="grid-start")
        grid_image = gr.Image(label="LoRA strength × seed", type="numpy", interactive=False, format="png",
                              elem_id="grid-image")
        grid_info = gr.Markdown("", elem_id="grid-info")
    with gr.Row():
        dataset = gr.Textbox("synthetic-1", label="dataset name (synthetic/NAME)", elem_id="gen-dataset")
        gen_btn = gr.Button("Generate", variant="primary", elem_id="gen-start")
    with gr.Row():
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Samples · ellipse in yellow · verdict · QC", columns=4, height=560,
                                 object_fit="contain", allow_preview=False, elem_id="gen-gallery")
            summary = gr.Markdown("", elem_id="gen-summary")
        with gr.Column(scale=2):
            info = gr.Markdown("Select a sample to edit its mask.", elem_id="gen-info")
            gr.Markdown("↶ / ↷ in the canvas toolbar undo / redo a brush or eraser stroke", elem_id="gen-undo-hint")
            editor = gr.ImageEditor(type="numpy", image_mode="RGBA", label="Mask canvas (green = head)",
                                    brush=gr.Brush(colors=["#00ff00"], color_mode="fixed", default_size=4),
                                    eraser=gr.Eraser(default_size=4), layers=False, transforms=(), sources=(),
                                    format="png", canvas_size=(ctx.profile.resolution, ctx.profile.resolution),
                                    height=420, elem_id="gen-editor")
            with gr.Row():
                refit_btn = gr.Button("Re-fit ellipse", elem_id="gen-refit")
                revert_btn = gr.Button("Revert to generated", elem_id="gen-revert")
                undo_btn = gr.Button("Undo re-fit / revert", elem_id="gen-undo")
            with gr.Row():
                accept_btn = gr.Button("Accept", variant="primary", elem_id="gen-accept")
                reject_btn = gr.Button("Reject", variant="stop", elem_id="gen-reject")
            with gr.Row(equal_height=True):
                min_qc = gr.Slider(0, 1, value=0.8, step=0.01, label="QC x", elem_id="gen-min-qc")
                accept_all_btn = gr.Button("Accept all valid above QC x", elem_id="gen-accept-all")
            ds_status = gr.Markdown("", elem_id="gen-dataset-status")
    samples = gr.State([])
    decisions = gr.State({})
    index = gr.State(None)
    history = gr.State([])  # masks before each re-fit / revert of the selected sample (push_history)

    # the module-level handlers that need this app's ctx (bind_ctx keeps what Gradio reads)
    refresh_loras_, newest_lora_, generate_, make_grid_, accept_one_, reject_one_, accept_all_ = (
        bind_ctx(f, ctx) for f in (refresh_loras, newest_lora, generate, make_grid, accept_one, reject_one,
                                   accept_all))
    refresh.click(refresh_loras_, outputs=[lora], api_visibility="private")
    refresh.click(refresh_loras_, outputs=[detail_lora], api_visibility="private")
    if ctx.tab is not None:  # the list is fresh whenever the tab is opened: no manual refresh needed
        ctx.tab.select(refresh_loras_, outputs=[lora], api_visibility="private", queue=False)
        ctx.tab.select(refresh_loras_, outputs=[detail_lora], api_visibility="private", queue=False)
    trained = ctx.shared.get("lora_trained")
    if trained is not None:
        trained.change(newest_lora_, inputs=[trained], outputs=[lora], api_visibility="private")
    # the chosen LoRA survives a reload (this browser's localStorage); its change event is when the browser
    # hands the stored value over, after the page loaded
    saved_lora = gr.BrowserState("", storage_key="sonosynth-generation-lora")
    lora.change(lambda v: v, inputs=[lora], outputs=[saved_lora], api_visibility="private", queue=False,
                show_progress="hidden")
    gr.on([saved_lora.change] + ([ctx.demo.load] if ctx.demo is not None else []), bind_ctx(restore_lora, ctx),
          inputs=[saved_lora, lora], outputs=[lora], api_visibility="private", queue=False, show_progress="hidden")
    sampler_preset.input(bind_ctx(apply_sampler_preset, ctx), inputs=[sampler_preset],
                         outputs=[steps, guidance, ellipse_guidance, guidance_until, detail_lora, restore_aspect],
                         api_visibility="private", queue=False)
    gen_btn.click(generate_, inputs=[trimester, lora, n, seed, steps, scale, guidance, batch_size, threshold, qc,
                                     dataset, detail_lora, detail_strength, restore_aspect, ellipse_guidance,
                                     guidance_until],
                  outputs=[gallery, summary, samples, decisions], api_name="generate", **HEAVY)
    grid_btn.click(make_grid_, inputs=[trimester, lora, grid_scales, grid_seeds, grid_steps, guidance],
                   outputs=[grid_image, grid_info], api_name="lora_grid", **HEAVY)
    gallery.select(select, inputs=[samples], outputs=[index, editor, info, history], api_visibility="private")
    refit_btn.click(refit_mask, inputs=[samples, index, editor, history], outputs=[editor, info, history],
                    api_visibility="private")
    revert_btn.click(revert_mask, inputs=[samples, index, editor, history], outputs=[editor, info, history],
                     api_visibility="private")
    undo_btn.click(undo_mask, inputs=[samples, index, history], outputs=[editor, info, history],
                   api_visibility="private")
    accept_btn.click(accept_one_, inputs=[samples, decisions, index, editor, dataset],
                     outputs=[gallery, decisions, ds_status], api_visibility="private")
    reject_btn.click(reject_one_, inputs=[samples, decisions, index, dataset],
                     outputs=[gallery, decisions, ds_status], api_visibility="private")
    accept_all_btn.click(accept_all_, inputs=[samples, decisions, min_qc, dataset],
                         outputs=[gallery, decisions, ds_status], api_name="accept_valid")

    # "How real is it?": the realism report on this dataset vs the loaded real data (API endpoint realism)
    from .realism_panel import build_realism_panel
    build_realism_panel(ctx, trimester=trimester, dataset=dataset, lora=lora)
