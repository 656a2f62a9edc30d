"""The Experiments tab: the paper's Table 1 as a resumable sweep, with the table and chart filling in live.

Thin wiring over pipeline.sweep (the same code as `python -m pipeline sweep`). API endpoint: sweep.
Sweeps live in work_dir/sweeps/NAME; starting an existing name resumes it (finished cells are skipped).
"""
from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from pipeline.gpu import gpu_task

from pipeline.eta import eta_text
from pipeline.results import AUG_ORDER

from .common import HEAVY, StopRegistry, bind_ctx, follow_data_tab, guarded, safe_name

TITLE = "Experiments"
_STOP = StopRegistry()  # per browser session: the Stop button's flag

INTRO = """### Experiments — does synthetic data help segmentation when real labelled images are few?
The paper's Table 1 as a grid of training runs: augmentation **None / WA / SA / SYN** × **N_real** real
images × repeats, each evaluated on the test source(s). *SYN* trains on N_real real pairs plus
(total − N_real) synthetic pairs, from a synthetic dataset (Generation tab) or generated first with your
trimester LoRAs. Not in the paper: *SYN + WA* is SYN's set with WA's weak augmentation on every pair; *SYN
only* trains on `total` synthetic pairs and no real one; *SYN only + WA* is that set with the weak augmentation.
The segmenter is **SAM** (its decoder fine-tuned, as in the paper) or a **U-Net** trained from random weights,
which has everything to learn; the table ends with the verdict: SYN − None ± its standard error (SYN only
against None too, and the + WA arms against WA). `heldout` is the test part of the train source's seeded split: never trained on and never
used to choose a checkpoint. A sweep resumes where it stopped; re-opening a finished one does no work.
Presets: **cpu-small** (about an hour on a 2-core CPU: N_real 5/20/50, 3 repeats, 8 epochs, SYN total 100),
**cpu-unet** (the U-Net, the four arms and SYN only), **paper** (the full grid, GPU), **smoke** (2 tiny
cells to try the tab)."""


def _ints(text: str) -> list[int] | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"N_real values: expected a comma list of whole numbers such as 5,20,50, got {text!r}") from None
    if any(v < 1 for v in values):
        raise ValueError(f"N_real values: every value must be at least 1, got {text!r}")
    return values


def _optional_float(text, field: str) -> float | None:
    """An optional number field (empty: the preset's value); the config checks its range by name."""
    text = "" if text is None else str(text).strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{field}: expected a number or nothing (the preset's value), got {text!r}") from None


def _optional_int(text, field: str, minimum: int = 1) -> int | None:
    """An optional whole-number field: empty means "the preset's value". These are text boxes, not
    gr.Number: a Number with no value became 0 when its accordion opened, and Start then failed with
    "Value 0 is less than minimum value 1." without naming the field."""
    text = "" if text is None else str(text).strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{field}: expected a whole number or nothing (the preset's value), got {text!r}") from None
    if value != int(value) or value < minimum:
        raise ValueError(f"{field}: expected a whole number of at least {minimum}, got {text!r} "
                         "(leave it empty for the preset's value)")
    return int(value)


def _views(sweep_dir: Path):
    """(status markdown, Table-1 markdown, chart, tidy results) of a sweep folder."""
    from pipeline.sweep import Sweep, report_markdown
    from pipeline.results import figure3, load_paper_reference, paper_comparison
    sw = Sweep(sweep_dir)
    df = sw.results()
    summ = sw.summary()
    if summ.empty:
        return report_markdown(sweep_dir), figure3(summ), df
    # the chart draws the first test source; the paper's points are labelled by their own train/test pair
    paper, test = load_paper_reference(), summ["test"].iloc[0]
    fig = figure3(summ, test=test, paper=paper, comparison=paper_comparison(paper, sw.config().train, test))
    return report_markdown(sweep_dir), fig, df


def _sweeps_root(ctx) -> Path:
    return ctx.work_dir / "sweeps"


def list_sweeps(ctx) -> list[str]:
    root = _sweeps_root(ctx)
    if not root.is_dir():
        return []
    return sorted((p.name for p in root.iterdir() if (p / "sweep.json").is_file()), reverse=True)


def list_synthetic(ctx) -> list[str]:
    from pipeline.diffusion.dataset import list_datasets
    return ["(none)"] + [str(p) for p in list_datasets(ctx.work_dir / "synthetic")]


def list_lora_dirs(ctx) -> list[str]:
    from pipeline.diffusion.lora import list_loras
    return ["(none)"] + [d["path"] for d in list_loras(ctx.work_dir / "loras")]


@guarded
@gpu_task  # ZeroGPU on Spaces; a no-op elsewhere
@_STOP.job
def start(ctx, name, preset_name, train, tests, synthetic, lora_first, lora_second, lora_third, train_loras, n_real,
          repeats, epochs, augmentations, detail_resolution="", restore_aspect="", detail_first="(none)",
          detail_second="(none)", detail_third="(none)", segmenter="", request: gr.Request = None,
          progress=gr.Progress()):
    """Start (or resume) a sweep; streams status, the Table-1 markdown, the chart and the tidy CSV."""
    from pipeline.sweep import preset, run_sweep
    name = safe_name(name, "sweep name", "table1")
    loras = {t: p for t, p in (("first", lora_first), ("second", lora_second), ("third", lora_third))
             if p and p != "(none)"}
    detail = {t: p for t, p in (("first", detail_first), ("second", detail_second), ("third", detail_third))
              if p and p != "(none)"}
    over = dict(train=(train or "").strip() or ctx.default_source,
                tests=[t.strip() for t in (tests or "heldout").split(",") if t.strip()],
                synthetic=None if not synthetic or synthetic == "(none)" else f"folder:{synthetic}",
                loras=loras or None, train_loras=bool(train_loras) or None, n_real=_ints(n_real),
                repeats=_optional_int(repeats, "repeats"), epochs=_optional_int(epochs, "epochs"),
                augmentations=list(augmentations) if augmentations else None,
                detail_resolution=_optional_int(detail_resolution, "detail resolution", minimum=0),
                detail_loras=detail or None,
                restore_aspect=_optional_float(restore_aspect, "write SYN pairs at width / height"),
                segmenter=(segmenter or "").strip() or None)
    cfg = preset(preset_name, ctx.profile, **over)  # the dashboard's profile: its SAM and diffusion base
    out = _sweeps_root(ctx) / name
    stop = _STOP.flag(request)  # this call's own flag (StopRegistry.job), dropped when it ends
    status, last, cell_head = "", 0.0, ""
    total, done = 1, 0
    started, done_at_start = time.monotonic(), 0  # the estimate: mean time per cell finished in this start
    for ev in run_sweep(cfg, out, stop=stop.is_set, allowed_roots=ctx.allowed_roots):
        k = ev["kind"]
        if k == "plan":
            total, done = len(ev["cells"]), len(ev["done"])
            started, done_at_start = time.monotonic(), done
            status = f"**{name}**: {done}/{total} cells finished before this start"
            yield (status, *_views(out), gr.update(choices=list_sweeps(ctx), value=name))
        elif k == "cell_start":
            cell_head = f"**{name}**: cell {ev['index'] + 1}/{total} `{ev['cell']}`"
            eta = eta_text(started, done - done_at_start, total - done_at_start)
            status = f"{cell_head} · {eta}"
            progress((done, total), desc=f"cell {ev['cell']} · {eta}", unit="cells")
            yield status, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        elif k == "lora":
            progress((ev["step"], ev["total"]), desc=f"SYN arm: {ev['trimester']}-trimester LoRA")
            if time.monotonic() - last > 2:
                last = time.monotonic()
                yield (f"**{name}**: SYN arm — training the {ev['trimester']}-trimester LoRA on the train pool: "
                       f"step {ev['step']}/{ev['total']}", gr.skip(), gr.skip(), gr.skip(), gr.skip())
        elif k == "generate":
            progress((done, total), desc=f"generating {ev['trimester']} {ev['have']}/{ev['want']}")
            if time.monotonic() - last > 2:
                last = time.monotonic()
                yield (f"**{name}**: SYN arm — generating the synthetic set: {ev['trimester']} "
                       f"{ev['have']}/{ev['want']}", gr.skip(), gr.skip(), gr.skip(), gr.skip())
        elif k == "train":
            if cell_head:  # the elapsed time keeps counting (it read "elapsed 0 s" for a whole cell, issue 33)
                status = f"{cell_head} · {eta_text(started, done - done_at_start, total - done_at_start)}"
            if ev["event"] == "epoch":
                yield (f"{status} · epoch {ev['epoch']} · val Dice {100 * ev['val_dice']:.2f} %",
                       gr.skip(), gr.skip(), gr.skip(), gr.skip())
            elif ev["event"] == "step" and "steps" in ev and time.monotonic() - last > 2:  # the U-Net's steps
                last = time.monotonic()
                yield (f"{status} · U-Net step {ev['step']}/{ev['steps']}", gr.skip(), gr.skip(), gr.skip(),
                       gr.skip())
            elif ev["event"] == "prepare" and time.monotonic() - last > 2:
                last = time.monotonic()
                yield f"{status} · {ev['message']}", gr.skip(), gr.skip(), gr.skip(), gr.skip()
        elif k == "cell_done":
            done += 1
            eta = eta_text(started, done - done_at_start, total - done_at_start)
            progress((done, total), desc=f"{done}/{total} cells · {eta}", unit="cells")
            r = ev["rows"][0]
            status = (f"**{name}**: {done}/{total} cells · {eta} · `{ev['cell']}`: Dice {r['dice']:.2f} % "
                      f"on {r['test']}")
            yield (status, *_views(out), gr.skip())
        elif k == "done":
            msg = ("⏹ stopped — press Start with the same name to resume" if ev["stopped"]
                   else f"✅ sweep finished: {total} cells")
            yield (f"**{name}**: {msg}", *_views(out), gr.update(choices=list_sweeps(ctx), value=name))


def stop_sweep(request: gr.Request):
    _STOP.stop(request)
    return "⏹ stopping after the current training step…"


@guarded
def open_sweep(ctx, name):
    if not name:
        raise ValueError("choose a sweep to open")
    out = _sweeps_root(ctx) / safe_name(name, "sweep name", "table1")
    from pipeline.sweep import Sweep, cells
    cfg = Sweep(out).config()
    grid = cells(cfg)
    n_done = sum(Sweep(out).is_done(c) for c in grid)
    # the form takes the opened sweep's settings, so Start resumes it instead of mixing the old name
    # and source with this sweep's results
    form = (name, cfg.train, ", ".join(cfg.tests), ",".join(str(v) for v in cfg.n_real), str(cfg.repeats),
            str(cfg.epochs), list(cfg.augmentations), cfg.segmenter)
    how = f"U-Net {cfg.unet_steps} steps" if cfg.segmenter == "unet" else f"SAM, {cfg.epochs} epochs"
    return (f"**{name}**: {n_done}/{len(grid)} cells finished (train `{cfg.train}`, "
            f"{how}, SYN total {cfg.total}) — the form above now holds its settings; "
            "Start resumes it", *_views(out), *form)


def fresh_lists(ctx):
    return (gr.update(choices=list_synthetic(ctx)), *[gr.update(choices=list_lora_dirs(ctx))] * 6,
            gr.update(choices=list_sweeps(ctx)))


def build(ctx) -> None:
    """The tab's widgets and their wiring; the handlers above are module-level functions of ctx."""
    from pipeline.sweep import PRESETS
    gr.Markdown(INTRO)
    with gr.Row(equal_height=True):
        name = gr.Textbox(f"sweep-{time.strftime('%Y%m%d')}", label="Sweep name (same name = resume)", scale=2,
                          elem_id="sw-name")
        preset_dd = gr.Dropdown(sorted(PRESETS), value="cpu-small", label="Preset", scale=1, elem_id="sw-preset")
        train = gr.Textbox(ctx.default_source, label="Train source (from the Data tab; you can type another)",
                           scale=3, elem_id="sw-train")
        tests = gr.Textbox("heldout", label="Test source(s), comma separated", scale=2, elem_id="sw-tests")
    segmenter = gr.Radio([("the preset's", ""), ("SAM: fine-tune the decoder (the paper)", "sam"),
                          ("U-Net from random weights (no box)", "unet")], value="", label="Segmenter",
                         info="cpu-unet's is the U-Net, every other preset's is SAM", elem_id="sw-segmenter")
    with gr.Accordion("SYN arm and grid overrides", open=False):
        with gr.Row():
            synthetic = gr.Dropdown(list_synthetic(ctx), value="(none)", label="Synthetic dataset (folder)",
                                    allow_custom_value=False, scale=3, elem_id="sw-synthetic")
            refresh = gr.Button("↻ refresh lists", scale=0)
        with gr.Row():
            lora_dirs = list_lora_dirs(ctx)
            lf = gr.Dropdown(lora_dirs, value="(none)", label="first-trimester LoRA")
            ls = gr.Dropdown(lora_dirs, value="(none)", label="second-trimester LoRA")
            lt = gr.Dropdown(lora_dirs, value="(none)", label="third-trimester LoRA")
            train_loras = gr.Checkbox(False, label="or train the trimester LoRAs here (20 images each, train pool only)",
                                      elem_id="sw-train-loras")
        with gr.Row():
            augmentations = gr.CheckboxGroup(AUG_ORDER, value=None,
                                             label="Augmentations (empty: the preset's)", elem_id="sw-augs")
            n_real = gr.Textbox("", label="N_real values (empty: the preset's), e.g. 5,20,50", elem_id="sw-nreal")
            repeats = gr.Textbox("", label="repeats (empty: the preset's)", placeholder="e.g. 3",
                                 info="runs per cell, each with its own seed", elem_id="sw-repeats")
            epochs = gr.Textbox("", label="epochs (empty: the preset's)", placeholder="e.g. 8",
                                info="fine-tuning passes over the training pairs", elem_id="sw-epochs")
        with gr.Row():
            detail_resolution = gr.Textbox("", label="detail LoRAs at (with 'train here'; empty: none)",
                                           placeholder="e.g. 256",
                                           info="also train a LoRA per trimester at this size and re-draw each SYN "
                                                "pair at it (the detail pass; not in the paper)",
                                           elem_id="sw-detail-resolution")
            restore_aspect = gr.Textbox("", label="write SYN pairs at width / height (empty: the train scans' shape)",
                                        placeholder="e.g. 1.48; 0 = square", info="1.48 = HC18's 800×540: SAM then "
                                        "sees a synthetic pair as it sees a real scan", elem_id="sw-restore-aspect")
        with gr.Row():  # ready-made detail LoRAs (LoRA tab, resolution 256), instead of training them here
            df, ds, dt = (gr.Dropdown(lora_dirs, value="(none)", label=f"{t}-trimester detail LoRA",
                                      info="trained at 2× the base's size; needs the trimester's LoRA above"
                                      if t == "first" else None, elem_id=f"sw-detail-{t}")
                          for t in ("first", "second", "third"))
    with gr.Row():
        start_btn = gr.Button("Start / resume sweep", variant="primary", elem_id="sw-start")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="sw-stop")
    status = gr.Markdown("", elem_id="sw-status")
    with gr.Row():
        table = gr.Markdown("_no results yet_", elem_id="sw-table")
        chart = gr.Plot(label="Dice vs N_real (Figure 3)", elem_id="sw-chart")
    with gr.Accordion("Tidy results (one row per cell and test source)", open=False):
        results = gr.Dataframe(interactive=False, elem_id="sw-results")
    with gr.Row():
        past = gr.Dropdown(list_sweeps(ctx), label="Past sweeps", scale=3, elem_id="sw-past")
        open_btn = gr.Button("Open", scale=0, elem_id="sw-open")

    follow_data_tab(ctx, train)
    lists = bind_ctx(fresh_lists, ctx)
    refresh.click(lists, outputs=[synthetic, lf, ls, lt, df, ds, dt, past], api_visibility="private", queue=False)
    if ctx.tab is not None:  # LoRAs, datasets and sweeps made in other tabs are listed when this tab opens
        ctx.tab.select(lists, outputs=[synthetic, lf, ls, lt, df, ds, dt, past], api_visibility="private",
                       queue=False)
    start_btn.click(bind_ctx(start, ctx),
                    inputs=[name, preset_dd, train, tests, synthetic, lf, ls, lt, train_loras, n_real, repeats, epochs,
                            augmentations, detail_resolution, restore_aspect, df, ds, dt, segmenter],
                    outputs=[status, table, chart, results, past], api_name="sweep", **HEAVY)
    stop_btn.click(stop_sweep, outputs=[status], api_visibility="private", queue=False)
    # a refused Open: one Error badge, on the status line, which says what happened (every field kept a red
    # "Error" badge through a sweep that ran fine afterwards, issue 33)
    open_btn.click(bind_ctx(open_sweep, ctx), inputs=[past],
                   outputs=[status, table, chart, results, name, train, tests, n_real, repeats, epochs, augmentations,
                            segmenter],
                   api_name="open_sweep", show_progress_on=[status]) \
        .failure(lambda: "❌ not opened (the message at the top right says why); the form is unchanged",
                 outputs=[status], api_visibility="private", queue=False, show_progress="hidden")
