"""The LoRA training tab: pick trimester(s), see the chosen real pairs, train with a live loss curve.

Thin wiring over pipeline.diffusion.lora (the same code as `python -m pipeline train-lora`).
API endpoint: train_lora. Publishes ctx.shared["lora_trained"] (a gr.State that changes when a LoRA is
saved) so the Generation tab refreshes its list.
"""
from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import numpy as np

from pipeline.config import LoraDefaults
from pipeline.diffusion.lora import LoraTrainConfig
from pipeline.diffusion.timestep_bias import STRATEGIES, base_timestep_bias
from pipeline.data import open_source, select_per_trimester
from pipeline.masks import TRIMESTERS, overlay

from pipeline.gpu import gpu_task

from pipeline.eta import eta_text, estimate_text
from pipeline.readable import short_path
from pipeline.validate import check_int, check_seed, check_trimester

from .charts import loss_figure
from .common import CLIENT_ID_JS, HEAVY, LiveJobs, bind_ctx, follow_data_tab, guarded, picture_file, safe_name

TITLE = "LoRA training"
_D = LoraDefaults()
_C = LoraTrainConfig()  # the tab's defaults are the config's (one home per setting, as the CLI reads them)
# per browser: the running training (survives a reload), its Stop flag
_JOBS = LiveJobs("a LoRA training", idle="nothing is training: there is nothing to stop")
# seconds per LoRA step on a 2-core CPU, tiny base (README, Diffusion: 0.126 s quiet, ~0.3 s busy) plus
# loading and encoding: what the estimate beside Start assumes before a run has measured its own rate
LORA_STEP_S = 0.3
BASE_OWN = "the base's own"  # the timestep bias left to the base (or, on a resume, to the run)

INTRO = """### LoRA training — one LoRA per trimester on a few real image + mask pairs
The diffusion model learns *in-channel* images: the ultrasound in red and green, the head mask in blue — so
previews look **yellow with a blue head** (R = G = image, B = mask). A *LoRA* is a small add-on trained on
~20 real pairs of one trimester; the base model stays unchanged. The paper's recipe: *rank* 128 (the LoRA's
size), *alpha* 128 (its strength: alpha / rank = 1), learning rate 1e-4 constant, batch 4, AdamW, clipping 1.0,
20 images per trimester chosen by a seeded draw from the Data tab's source (fewer when the source has fewer:
the field below follows the source). Base model: `{base}`. {bias}
{steps} steps (the default) take {eta} on this machine. LoRAs are saved to `loras/NAME-TRIMESTER` and appear in the
Generation tab."""


# Presets: what Start runs with, before any expert field is touched (issue 33: 15 settings and no preset).
# Time and memory: measured on this 2-core CPU machine (no GPU), tiny profile, on 2026-12-07 with
# `/usr/bin/time -v python -m pipeline train-lora --data phantom:60 --trimester second --steps N
# --preview-every 0` (wall clock incl. loading and encoding; memory = peak resident set size), one run each:
# 100 steps 0:53, 1.31 GiB; 300 steps 2:29, 1.31 GiB.
PRESETS = {
    "quick": dict(label="Quick (CPU)", steps=100, preview_every=50, time="53 s", memory="1.3 GB"),
    "paper": dict(label="Paper", steps=_C.steps, preview_every=_C.preview_every, time="2 min 30 s", memory="1.3 GB"),
}


def preset_choices(profile_name: str = "tiny"):
    """(label, value) pairs for the preset radio: each with its steps and, on the tiny profile, the measured cost."""
    out = []
    for key, p in PRESETS.items():
        cost = (f" · about {p['time']}, {p['memory']} RAM on a 2-core CPU" if profile_name == "tiny" else "")
        out.append((f"{p['label']}: {p['steps']} steps, the paper's other settings{cost}", key))
    return out


def apply_preset(key):
    """The preset's values into the fields it sets (the other fields keep the paper's values)."""
    p = PRESETS.get(key)
    if p is None:
        return gr.skip(), gr.skip()
    return p["steps"], p["preview_every"]


def _unset_if_zero(value):
    """A bias portion or multiplier field: 0 (its default; neither can be 0) or empty leaves it to the base,
    as resolution 0 does. A browser sends an empty number field as 0."""
    return None if value in (None, "") or (isinstance(value, (int, float)) and value == 0) else value


def _bias_sentence(own) -> str:
    if not own.active:
        return "Its LoRAs draw their training timesteps uniformly, as the paper's do."
    return (f"Not in the paper: this base's LoRAs train with its own *timestep bias*, {own.describe()} (measured "
            f"for it, in its sonosynth_sampling.json; the paper draws them uniformly: `none` below).")


def _default_n(spec: str, allowed_roots) -> tuple[int, str]:
    """The images-per-trimester field's first value for the tab's first source and its default trimester
    (second): the paper's 20, or what the source has."""
    from pipeline.data import images_per_trimester_available, open_source
    try:
        best, note = images_per_trimester_available(open_source(spec, allowed_roots).metas, ["second"],
                                                    _D.n_per_trimester)
    except Exception:  # the source's own errors are shown when the user acts on it
        return _D.n_per_trimester, ""
    return (best, note) if best >= 1 else (_D.n_per_trimester, "")


def _safe_name(name: str) -> str:
    return safe_name(name, "LoRA name")  # blank is refused by name, never defaulted onto an existing run (issue 35)


@guarded
def show_selection(ctx, spec, trimesters, n, seed):
    """The real pairs each chosen trimester's LoRA will train on (mask tinted)."""
    if not trimesters:
        raise ValueError("pick at least one trimester")
    src = open_source((spec or "").strip() or ctx.default_source, ctx.allowed_roots)
    sel = select_per_trimester(src.metas, check_int(n, "images per trimester", 1, 10_000), check_seed(seed),
                               trimesters=list(trimesters))
    items = []
    for t in trimesters:
        for i in sel[t]:
            s = src[i]
            items.append((picture_file(overlay(s.image, s.mask, 0.35)), f"{t} · {s.name}"))
    return items, f"{len(items)} pairs from `{src.spec}`"


@guarded
@gpu_task  # ZeroGPU on Spaces; a no-op elsewhere
def train_lora(ctx, spec, trimesters, name, n, steps, rank, alpha, lr, batch_size, grad_clip, seed, preview_every,
               empty_prompt_prob, resolution=_C.resolution, mask_loss_weight=_C.mask_loss_weight,
               timestep_bias=BASE_OWN, timestep_bias_portion=None,
               timestep_bias_multiplier=None, request: gr.Request = None, progress=gr.Progress()):
    """Train one LoRA per chosen trimester; streams status, the live loss curve and previews. The training runs
    in a job of its own (common.LiveJob): a reloaded page shows it running again and its Stop still works."""
    if not trimesters:
        raise ValueError("pick at least one trimester")
    name = _safe_name(name)
    spec = (spec or "").strip() or ctx.default_source
    preview_every = check_int(preview_every, "preview every N steps", 0, 1_000_000)
    for t in trimesters:
        check_trimester(t)
    args = (ctx, spec, list(trimesters), name, n, steps, rank, alpha, lr, batch_size, grad_clip, seed, preview_every,
            empty_prompt_prob, resolution, mask_loss_weight, timestep_bias, timestep_bias_portion,
            timestep_bias_multiplier)
    job = _JOBS.start(request, lambda stop: _train_body(*args, stop=stop),
                      label=", ".join(f"`{name}-{t}`" for t in trimesters), n_outputs=4)
    yield from job.follow(progress)


def _train_body(ctx, spec, trimesters, name, n, steps, rank, alpha, lr, batch_size, grad_clip, seed, preview_every,
                empty_prompt_prob, resolution, mask_loss_weight, timestep_bias, timestep_bias_portion,
                timestep_bias_multiplier, stop):
    """train_lora's job: records for common.LiveJob ("out", the 4 outputs) / ("progress", ...) / ("info", ...)."""
    previews, saved = [], []
    for t in trimesters:
        out = ctx.work_dir / "loras" / f"{name}-{t}"
        try:
            # raw values: the config checks each one's range and names the field when it refuses
            cfg = LoraTrainConfig(data=spec, trimester=t, n=n, steps=steps, rank=rank, alpha=alpha, lr=lr,
                                  batch_size=batch_size, grad_clip=grad_clip, selection_seed=seed, seed=seed,
                                  preview_every=preview_every, base=ctx.profile.diffusion_base,
                                  save_every=max(10, preview_every or 50),
                                  empty_prompt_prob=_C.empty_prompt_prob if empty_prompt_prob in (None, "")
                                  else empty_prompt_prob,
                                  resolution=_C.resolution if resolution in (None, "") else resolution,
                                  mask_loss_weight=_C.mask_loss_weight if mask_loss_weight in (None, "")
                                  else mask_loss_weight,
                                  timestep_bias_strategy=None if timestep_bias in (None, "", BASE_OWN)
                                  else timestep_bias,
                                  timestep_bias_portion=_unset_if_zero(timestep_bias_portion),
                                  timestep_bias_multiplier=_unset_if_zero(timestep_bias_multiplier))
            cfg.validate()
            yield from _train_one(ctx, cfg, t, out, previews, saved, stop)
        except Exception as exc:
            # the status says what went wrong (it kept "second: preparing…" under an Error badge, issue 33)
            yield "out", (f"❌ **{t}**: {getattr(exc, 'message', None) or exc}", gr.skip(), gr.skip(), gr.skip())
            raise
        if stop.is_set():
            return
    yield "out", (f"✅ saved {len(saved)} LoRA(s): " + ", ".join(f"`{Path(s).name}`" for s in saved)
                  + " — chosen in the Generation tab", gr.skip(), previews, trained_value(saved))


def _train_one(ctx, cfg, t, out, previews, saved, stop):
    from pipeline.diffusion.lora import train_lora as run
    losses, last_plot, started, first_step = [], 0.0, time.monotonic(), None
    yield "progress", ((0,), dict(desc=f"{t}: loading the base and encoding the images once"))
    yield "out", (f"**{t}**: preparing…", loss_figure([]), previews, gr.skip())
    for ev in run(cfg, out, resume=True, stop=stop.is_set, allowed_roots=ctx.allowed_roots):
        k = ev["kind"]
        if k == "start":
            losses = list(ev["losses"])
            if ev["step"]:
                yield "info", f"{t}: resuming {out.name} at step {ev['step']}"
            yield "out", (f"**{t}**: training on {ev['n_images']} images; timesteps: {ev['timestep_bias']}",
                          loss_figure(losses, f"{out.name} loss"), previews, gr.skip())
        elif k == "step":
            losses.append(ev["loss"])
            if first_step is None:  # the rate is measured from the first step on (after loading/encoding)
                first_step, started = ev["step"], time.monotonic()
            eta = eta_text(started, ev["step"] - first_step, ev["total"] - first_step)
            yield "progress", (((ev["step"], ev["total"]),), dict(desc=f"{t} trimester LoRA · {eta}", unit="steps"))
            if time.monotonic() - last_plot > 1.0 or ev["step"] == ev["total"]:
                last_plot = time.monotonic()
                yield "out", (f"**{t}**: step {ev['step']}/{ev['total']} · loss {ev['loss']:.4f} · {eta}",
                              loss_figure(losses, f"{out.name} loss"), previews, gr.skip())
        elif k == "preview":
            previews[:0] = [(picture_file(im), f"{t} · step {ev['step']} · seed {s}")
                            for im, s in zip(ev["images"], cfg.preview_seeds)]
            yield "out", (f"**{t}**: step {ev['step']} · preview at seeds {list(cfg.preview_seeds)}",
                          loss_figure(losses, f"{out.name} loss"), list(previews), gr.skip())
        elif k == "stopped":
            yield "out", (f"⏹ stopped at step {ev['step']}: the LoRA of that step is saved in "
                          f"`{short_path(out, ctx.work_dir)}` — it is **unfinished**; press Start again with the "
                          f"same name to resume", loss_figure(losses, f"{out.name} loss"), list(previews),
                          trained_value([str(out)]))
            stop.set()
            return
        elif k == "done":
            saved.append(str(out))


def trained_value(folders) -> str:
    """The `trained` state's value once a LoRA is saved: its folders, ';'-separated, then a line with the time.
    Set only when a run ends (a preview's half-trained LoRA is not one to pick), and never the same string
    twice, so the Generation tab hears every saved LoRA: a run that ended on the same folder as a preview (or
    the same name trained again) left the state unchanged and the LoRA unchosen (issue 33)."""
    return ";".join(folders) + f"\n{time.time_ns()}"


def fit_n(ctx, spec, trimesters, n, n_auto, saved=None):
    """Images per trimester that the source can give for the ticked trimesters: the paper's 20 (or
    the most the source has) while the field holds the tab's own value; a value the user typed is
    only lowered, and only when the source cannot give it. A default run on the offline phantom:24
    (17 second-trimester images) used to refuse to start with n = 20."""
    from pipeline.data import images_per_trimester_available
    try:
        src = open_source((spec or "").strip() or ctx.default_source, ctx.allowed_roots)
    except Exception:  # a half-typed or bad source: Show/Start say what is wrong with it
        return gr.skip(), gr.skip()
    picked = [t for t in (trimesters or []) if t in TRIMESTERS]
    best, note = images_per_trimester_available(src.metas, picked, _D.n_per_trimester)
    if best < 1:
        return gr.skip(), f"⚠️ {note.split(', so')[0]}: pick another trimester or source"
    if n_auto and isinstance((saved or {}).get("n"), (int, float)):  # the form this browser last started with
        n, n_auto = saved["n"], False
    current = int(n) if isinstance(n, (int, float)) and np.isfinite(n) else None
    new = best if (n_auto or current is None) else min(current, best)
    if current is not None and new == current:
        return gr.skip(), (f"ℹ️ {note}" if note and new == best else "")
    if not n_auto and current is not None:
        note = (f"the source has only {best} images for one of the ticked trimesters, so images per "
                f"trimester was lowered from {current} to {best}")
    return new, (f"ℹ️ {note}" if note else "")


FORM = ("trimesters", "name", "n", "steps", "rank", "alpha", "lr", "batch_size", "grad_clip", "seed", "preview_every",
        "empty_prompt_prob", "resolution", "mask_loss_weight", "timestep_bias", "timestep_bias_portion",
        "timestep_bias_multiplier", "preset")  # the settings Start remembers in the browser (the source follows the Data tab)


def save_form(*values):
    return dict(zip(FORM, values))


def restore_form(saved, done):
    """A reloaded page gets the settings this browser last pressed Start with (it fell back to the defaults and
    Start then refused "already exists with other settings", issue 33); once per page, and only while the
    user has not typed a number yet."""
    if done or not isinstance(saved, dict) or not saved:
        return (gr.skip(),) * (len(FORM) + 2)
    return (*(saved[k] if k in saved else gr.skip() for k in FORM), False if "n" in saved else gr.skip(), True)


def build(ctx) -> None:
    """The tab's widgets and their wiring; the handlers above are module-level functions of ctx."""
    gr.Markdown(INTRO.format(base=ctx.profile.diffusion_base, steps=_C.steps,
                             bias=_bias_sentence(base_timestep_bias(ctx.profile.diffusion_base)),
                             eta=estimate_text(_C.steps * LORA_STEP_S)))
    n0, n0_note = _default_n(ctx.default_source, ctx.allowed_roots)
    with gr.Row(equal_height=True):
        source = gr.Textbox(ctx.default_source, label="Data source (from the Data tab; you can type another)",
                            scale=3, elem_id="lora-source")
        trimesters = gr.CheckboxGroup(list(TRIMESTERS), value=["second"], label="Trimester(s): one LoRA each",
                                      scale=2, elem_id="lora-trimesters")
        name = gr.Textbox("lora", label="LoRA name", scale=1, elem_id="lora-name")
    preset = gr.Radio(preset_choices(ctx.profile.name), value="paper", label="Preset",
                      info="sets the steps; every setting stays changeable in the folded settings below",
                      elem_id="lora-preset")
    with gr.Accordion("Hyper-parameters (paper defaults)", open=False):
        with gr.Row():
            n = gr.Number(n0, label="images per trimester", precision=0, minimum=1, elem_id="lora-n",
                          info="paper: 20; follows the source when it has fewer")
            steps = gr.Number(_C.steps, label="steps", precision=0, minimum=1, elem_id="lora-steps")
            rank = gr.Number(_D.rank, label="rank", precision=0, minimum=1,
                             info="the LoRA's size: directions it may change per layer (paper: 128)")
            alpha = gr.Number(_D.alpha, label="alpha", precision=0, minimum=1,
                              info="the LoRA's strength: its update is scaled by alpha / rank")
        with gr.Row():
            lr = gr.Number(_D.lr, label="learning rate (constant)")
            batch_size = gr.Number(_D.batch_size, label="batch size", precision=0, minimum=1, elem_id="lora-batch")
            grad_clip = gr.Number(_D.grad_clip, label="gradient clipping")
            seed = gr.Number(_C.seed, label="seed (selection and training)", precision=0)
            preview_every = gr.Number(_C.preview_every, label="preview every N steps (0: none)", precision=0, minimum=0,
                                      elem_id="lora-preview-every")
            empty_prompt_prob = gr.Number(_C.empty_prompt_prob, label="empty-prompt share (caption dropout; 0 = paper)",
                                          minimum=0, maximum=0.95, elem_id="lora-empty-prompt")
            resolution = gr.Number(_C.resolution, label="resolution (0 = the base's own)", precision=0, minimum=0,
                                   maximum=2048, elem_id="lora-resolution",
                                   info="2× the base's size (256 on the tiny base) makes a detail LoRA for the "
                                        "Generation tab; alone, a base sampled above its size draws several heads")
        with gr.Row():
            mask_loss_weight = gr.Number(_C.mask_loss_weight, label="mask loss weight (0 = paper)", minimum=0,
                                         maximum=100, elem_id="lora-mask-loss-weight",
                                         info="the error on the head counts 1 + this many times")
            own = base_timestep_bias(ctx.profile.diffusion_base)  # the paper profile's hub id: uniform
            timestep_bias = gr.Dropdown([BASE_OWN, *STRATEGIES], value=BASE_OWN, label="timestep bias (none = paper)",
                                        elem_id="lora-timestep-bias",
                                        info=f"which noise levels the LoRA trains on most; this base's own: "
                                             f"{own.describe()}")
            timestep_bias_portion = gr.Number(0, label="bias portion (0: the base's own)", minimum=0,
                                              maximum=1, elem_id="lora-timestep-bias-portion",
                                              info="share of the timesteps favoured")
            timestep_bias_multiplier = gr.Number(0, label="bias multiplier (0: the base's own)", minimum=0,
                                                 elem_id="lora-timestep-bias-multiplier",
                                                 info="how many times as often they are drawn")
    with gr.Row():
        show_btn = gr.Button("Show the chosen images", elem_id="lora-show")
        start_btn = gr.Button("Start training", variant="primary", elem_id="lora-start")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="lora-stop")
    status = gr.Markdown("", elem_id="lora-status")
    with gr.Row():
        plot = gr.Plot(loss_figure([]), label="Live loss", elem_id="lora-loss")
        previews = gr.Gallery(label="Previews at fixed seeds, newest first (yellow = image in R+G, blue = head mask in B)",
                              columns=4, height=320,
                              object_fit="contain", elem_id="lora-previews")
    selection = gr.Gallery(label="Training pairs (mask tinted)", columns=10, height=260, object_fit="contain",
                           elem_id="lora-selection")
    sel_info = gr.Markdown(f"ℹ️ {n0_note}" if n0_note else "", elem_id="lora-sel-info")
    n_auto = gr.State(True)  # the field holds the tab's own value (False once the user types a number)
    trained = gr.State("")  # the saved LoRA folder(s); the Generation tab listens to its changes
    ctx.shared["lora_trained"] = trained

    form = [trimesters, name, n, steps, rank, alpha, lr, batch_size, grad_clip, seed, preview_every,
            empty_prompt_prob, resolution, mask_loss_weight, timestep_bias, timestep_bias_portion,
            timestep_bias_multiplier, preset]  # FORM
    saved_form = gr.BrowserState({}, storage_key="sonosynth-lora-form")  # what Start was last pressed with
    form_restored = gr.State(False)
    fit = dict(fn=bind_ctx(fit_n, ctx), inputs=[source, trimesters, n, n_auto, saved_form], outputs=[n, sel_info],
               api_visibility="private", concurrency_limit=2, concurrency_id="data")
    n.input(lambda: False, outputs=[n_auto], api_visibility="private", queue=False)
    preset.input(apply_preset, inputs=[preset], outputs=[steps, preview_every], api_visibility="private",
                 queue=False)
    source.blur(**fit)
    source.submit(**fit)
    trimesters.change(**fit)
    follows = follow_data_tab(ctx, source)
    if follows is not None:
        follows.then(**fit)
    show_btn.click(bind_ctx(show_selection, ctx), inputs=[source, trimesters, n, seed],
                   outputs=[selection, sel_info], api_name="lora_selection", concurrency_limit=2, concurrency_id="data")
    # trigger_mode "multiple": a second press while training reaches refuse_if_running (Gradio ignored it)
    start_btn.click(_JOBS.refuse_if_running, api_visibility="private", concurrency_limit=None, trigger_mode="multiple") \
        .success(bind_ctx(train_lora, ctx),
                    inputs=[source, trimesters, name, n, steps, rank, alpha, lr, batch_size, grad_clip, seed,
                            preview_every, empty_prompt_prob, resolution, mask_loss_weight, timestep_bias,
                            timestep_bias_portion, timestep_bias_multiplier],
                    outputs=[status, plot, previews, trained], api_name="train_lora", **HEAVY)
    start_btn.click(save_form, inputs=form, outputs=[saved_form], api_visibility="private", queue=False,
                    show_progress="hidden")
    stop_btn.click(_JOBS.stop_handler, outputs=[status], api_visibility="private", queue=False)
    # the browser hands the stored value over after the page loaded: its change event is the moment
    gr.on([saved_form.change] + ([ctx.demo.load] if ctx.demo is not None else []), restore_form,
          inputs=[saved_form, form_restored], outputs=[*form, n_auto, form_restored], api_visibility="private",
          queue=False, show_progress="hidden")
    if ctx.demo is not None:  # a reloaded page shows the training still running (and Stop reaches it)
        client_id = gr.Textbox(visible=False)
        ctx.demo.load(_JOBS.attach_handler, inputs=[client_id], outputs=[status, plot, previews, trained],
                      js=CLIENT_ID_JS, api_visibility="private", concurrency_limit=None, show_progress="hidden")
