"""The Fine-tune SAM tab: train the mask decoder on real (+ synthetic) pairs and watch the curves live.

Thin wiring over pipeline.sam.finetune (the same code as `python -m pipeline finetune-sam`). Stop keeps
the best checkpoint and the run's position; Start with the same run name resumes it.
API endpoint: finetune_sam.
"""
from __future__ import annotations

import time

import gradio as gr

from pipeline.config import SamFinetuneDefaults

from pipeline.gpu import gpu_task

from pipeline.eta import eta_text
from pipeline.readable import gain_verdict, paired_gain

from .charts import curves_figure
from .common import CLIENT_ID_JS, HEAVY, LiveJobs, bind_ctx, follow_data_tab, guarded, safe_name

TITLE = "Fine-tune SAM"
_D = SamFinetuneDefaults()
# per browser: the running run (survives a reload), its Stop flag
_JOBS = LiveJobs("a fine-tuning run", idle="nothing is fine-tuning: there is nothing to stop",
                 stopping="⏹ stopping after the current step (the best checkpoint is kept)…")

INTRO = """### Fine-tune SAM — the mask decoder on a hybrid dataset of real and synthetic pairs
The paper's recipe: image and prompt encoders frozen, only the mask decoder trains; box prompt = the mask's
bounding box after augmentation, each side jittered by 0–20 px; Dice + cross-entropy; Adam lr 1e-5,
batch 5, 20 epochs; validation Dice every epoch on pairs held out from the real source; the best epoch is
kept. Image embeddings are computed once and cached (augmentations: a few cached views per image), so a
step costs the decoder only. Runs are saved under `runs/NAME` and appear in the Playground's model list;
Start with an existing run name resumes it."""


def _run_name(name: str) -> str:
    return safe_name(name, "run name", "sam-n20")  # blank is refused by name, never defaulted onto an existing run (issue 35)


def _n_synthetic(text) -> int | None:
    """Empty (or 0, the old meaning): all synthetic pairs; else a whole number of at least 1."""
    text = "" if text is None else str(text).strip()
    if text in ("", "0", "all"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"N synthetic: expected a whole number or nothing (all pairs), got {text!r}") from None
    if value != int(value) or value < 1:
        raise ValueError(f"N synthetic: expected a whole number of at least 1 or nothing (all pairs), got {text!r}")
    return int(value)


def synthetic_choices(work_dir) -> list[str]:
    from pipeline.diffusion.dataset import list_datasets
    return ["(none)"] + [f"folder:{p}" for p in list_datasets(work_dir / "synthetic")]


@guarded
@gpu_task  # ZeroGPU on Spaces; a no-op elsewhere
def finetune_sam(ctx, spec, n_real, synthetic, n_synthetic, aug, epochs, batch_size, lr, weight_decay, jitter,
                 aug_views, n_val, seed, run_name, request: gr.Request, progress=gr.Progress()):
    """Fine-tune the mask decoder; streams status, live curves and the final comparison. The run is a job of
    its own (common.LiveJob): a reloaded page shows it running again and its Stop still works."""
    from pipeline.sam.finetune import FinetuneConfig
    name = _run_name(run_name)
    spec = (spec or "").strip() or ctx.default_source
    syn = None if not synthetic or synthetic == "(none)" else synthetic.strip()
    cfg = FinetuneConfig(data=spec, n_real=n_real, synthetic=syn,
                         n_synthetic=_n_synthetic(n_synthetic) if syn else None, aug=aug,
                         aug_views=aug_views, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, box_jitter_px=jitter, seed=seed,
                         n_val=n_val, backend=ctx.profile.sam_model()[0], base_weights=ctx.profile.sam_model()[1],
                         cache_dir=str(ctx.work_dir / "cache" / "embeddings"))
    cfg.validate()  # raw values above: each one's range is checked here, the message names the field
    job = _JOBS.start(request, lambda stop: _finetune_body(ctx, cfg, name, stop), label=f"run `{name}`",
                      n_outputs=4)
    yield from job.follow(progress)


def _finetune_body(ctx, cfg, name, stop):
    """finetune_sam's job: records for common.LiveJob ("out", the 4 outputs) / ("progress", ...) / notes."""
    from pipeline.runs import RunDir
    from pipeline.sam.finetune import finetune
    out = ctx.work_dir / "runs" / name
    run = RunDir(out)
    steps = [(r["step"], r["loss"]) for r in run.metrics() if r.get("kind") == "step"] if run.exists() else []
    epochs_ = [(r["epoch"], r["val_dice"]) for r in run.metrics() if r.get("kind") == "epoch"] if run.exists() else []
    last_plot, prep_started, train_started, first_step = 0.0, None, None, None
    scores: dict[int, list[float]] = {}  # per-image validation Dice by epoch: is the gain beyond noise?
    yield "progress", ((0,), dict(desc="preparing: loading the model and the images"))
    yield "out", ("preparing…", curves_figure(steps, epochs_, name), "", gr.skip())
    try:
        for ev in finetune(cfg, out, resume=True, stop=stop.is_set, allowed_roots=ctx.allowed_roots):
            k = ev["kind"]
            if k == "prepare":
                prep_started = prep_started or time.monotonic() - 1e-3
                eta = eta_text(prep_started, ev["done"], ev["total"])
                yield "progress", (((ev["done"], ev["total"]),),
                                   dict(desc=f"image embeddings (computed once, then cached) · {eta}", unit="images"))
                if time.monotonic() - last_plot > 1.0:
                    last_plot = time.monotonic()
                    yield "out", (f"{ev['message']} · {eta} — fine-tuning starts after this", gr.skip(), "", gr.skip())
            elif k == "warning":
                yield "warning", ev["message"]
            elif k == "resume":
                yield "info", f"{name}: {ev['message']}"
                steps = [s for s in steps if s[0] <= ev["step"]]
                epochs_ = [e for e in epochs_ if e[0] <= ev["epoch"]]
            elif k == "step":
                steps.append((ev["step"], ev["loss"]))
                total = ev["steps_per_epoch"] * ev["epochs"]
                if first_step is None:
                    first_step, train_started = ev["step"], time.monotonic()
                # validation after each epoch is part of the measured rate, so the estimate includes it
                eta = eta_text(train_started, ev["step"] - first_step, total - first_step)
                yield "progress", (((ev["step"], total),), dict(desc=f"epoch {ev['epoch']}/{ev['epochs']} · {eta}",
                                                                 unit="steps"))
                if time.monotonic() - last_plot > 1.0:
                    last_plot = time.monotonic()
                    yield "out", (f"epoch {ev['epoch']}/{ev['epochs']} · step {ev['step']}/{total} · loss {ev['loss']:.4f} · {eta}",
                           curves_figure(steps, epochs_, name), "", gr.skip())
            elif k == "epoch":
                if ev["epoch"] == 0:
                    epochs_ = []
                epochs_.append((ev["epoch"], ev["val_dice"]))
                if ev.get("val_scores"):
                    scores[ev["epoch"]] = ev["val_scores"]
                last_plot = time.monotonic()
                label = "zero-shot" if ev["epoch"] == 0 else f"epoch {ev['epoch']}"
                yield "out", (f"{label}: validation Dice {ev['val_dice']:.4f}" + (" (best so far)" if ev["best"] else ""),
                       curves_figure(steps, epochs_, name), "", gr.skip())
            elif k == "done":
                # "better" only beyond noise: the paired per-image gain must exceed two standard errors
                # (a +0.0024 Dice on 40 images was called "better than the base model" before, issue 11)
                if ev["best_epoch"] == 0:
                    verdict = "no epoch beat the base model on the validation images: the base model is kept"
                else:
                    verdict = gain_verdict(paired_gain(scores.get(0), scores.get(ev["best_epoch"])))
                final = (f" Last epoch ({epochs_[-1][0]}): {epochs_[-1][1]:.4f}."
                         if epochs_ and epochs_[-1][0] > 0 else "")
                summary = (f"**Best validation Dice {ev['best_val_dice']:.4f}** (epoch {ev['best_epoch']}, the kept "
                           f"checkpoint) vs **zero-shot {ev['zero_shot_val_dice']:.4f}** — {verdict}.{final} "
                           "The validation images also chose the epoch, so this is optimistic; the Experiments tab "
                           f"measures on held-out test images. Saved as run `{name}` (pick it in the Playground).")
                head = ("⏹ stopped: the best checkpoint is kept; press Start with the same run name to resume"
                        if ev["stopped"] else "✅ done")
                yield "out", (head, curves_figure(steps, epochs_, name), summary, name)
    except Exception as exc:
        # the status says what went wrong (it kept "preparing…" under an Error badge, issue 33)
        yield "out", (f"❌ {getattr(exc, 'message', None) or exc}", gr.skip(), gr.skip(), gr.skip())
        raise


def build(ctx) -> None:
    """The tab's widgets and their wiring; the handlers above are module-level functions of ctx."""
    gr.Markdown(INTRO)
    with gr.Row(equal_height=True):
        source = gr.Textbox(ctx.default_source, label="Real pairs: data source (from the Data tab)", scale=3,
                            elem_id="ft-source")
        n_real = gr.Number(_D.n_real, label="N_real (real training pairs)", precision=0, minimum=0, scale=1,
                           elem_id="ft-nreal")
        synthetic = gr.Dropdown(synthetic_choices(ctx.work_dir), value="(none)", allow_custom_value=True,
                                label="Synthetic pairs (folder: dataset, optional)", scale=3, elem_id="ft-synthetic")
        # a text box, not gr.Number: an empty Number turns into 0 in the browser (issue 11)
        n_syn = gr.Textbox("", label="N synthetic (empty: all)", placeholder="all", scale=1, elem_id="ft-nsyn")
    with gr.Row(equal_height=True):
        aug = gr.Radio(["none", "weak", "strong"], value="none", label="Classic augmentation (WA = weak, SA = strong)",
                       scale=3, elem_id="ft-aug")
        run_name = gr.Textbox("sam-run", label="Run name (an existing one resumes)", scale=2, elem_id="ft-name")
    with gr.Accordion("Hyper-parameters (paper defaults)", open=False):
        with gr.Row():
            epochs = gr.Number(_D.epochs, label="epochs", precision=0, minimum=1, elem_id="ft-epochs")
            batch_size = gr.Number(_D.batch_size, label="batch size", precision=0, minimum=1)
            lr = gr.Number(_D.lr, label="learning rate (Adam)")
            wd = gr.Number(_D.weight_decay, label="weight decay", minimum=0)
        with gr.Row():
            jitter = gr.Number(_D.box_jitter_px, label="box jitter (max px per side)", precision=0, minimum=0)
            views = gr.Number(_D.aug_views, label="cached augmented views per image", precision=0, minimum=1)
            n_val = gr.Number(_D.n_val, label="validation pairs (held out)", precision=0, minimum=1, elem_id="ft-nval")
            seed = gr.Number(0, label="seed", precision=0)
    with gr.Row():
        start_btn = gr.Button("Start fine-tuning", variant="primary", elem_id="ft-start")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="ft-stop")
        refresh = gr.Button("↻ synthetic datasets", elem_id="ft-refresh")
    status = gr.Markdown("", elem_id="ft-status")
    plot = gr.Plot(curves_figure([], []), label="Live curves", elem_id="ft-curves")
    summary = gr.Markdown("", elem_id="ft-summary")
    finished = gr.State("")  # the finished run's name (other tabs may listen)
    ctx.shared["sam_run_finished"] = finished

    follow_data_tab(ctx, source)
    refresh.click(lambda: gr.Dropdown(choices=synthetic_choices(ctx.work_dir)), outputs=[synthetic],
                  api_visibility="private")
    if ctx.tab is not None:  # a dataset accepted in the Generation tab is listed when this tab is opened
        ctx.tab.select(lambda: gr.Dropdown(choices=synthetic_choices(ctx.work_dir)), outputs=[synthetic],
                       api_visibility="private", queue=False)
    # trigger_mode "multiple": a second press while fine-tuning reaches refuse_if_running (Gradio ignored it)
    start_btn.click(_JOBS.refuse_if_running, api_visibility="private", concurrency_limit=None, trigger_mode="multiple") \
        .success(bind_ctx(finetune_sam, ctx),
                    inputs=[source, n_real, synthetic, n_syn, aug, epochs, batch_size, lr, wd, jitter, views, n_val,
                            seed, run_name],
                    outputs=[status, plot, summary, finished], api_name="finetune_sam", **HEAVY)
    stop_btn.click(_JOBS.stop_handler, outputs=[status], api_visibility="private", queue=False)
    if ctx.demo is not None:  # a reloaded page shows the run still going (and Stop reaches it)
        client_id = gr.Textbox(visible=False)
        ctx.demo.load(_JOBS.attach_handler, inputs=[client_id], outputs=[status, plot, summary, finished],
                      js=CLIENT_ID_JS, api_visibility="private", concurrency_limit=None, show_progress="hidden")
