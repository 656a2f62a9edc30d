"""The Data tab: choose a source, browse overlaid samples page by page, inspect one, see the charts.

Thin wiring over pipeline.browse. API endpoints: load_data, sample_detail, data_summary.
Publishes the loaded source's spec string as ctx.shared["data_spec"] (a per-session gr.State).
"""
from __future__ import annotations

import logging

import gradio as gr

from pipeline import browse
from pipeline.cli_data import summarize
from pipeline.data import DataError, open_source
from pipeline.readable import data_summary_markdown, hc_check_markdown

from .charts import data_figure
from .common import HEAVY, bind_ctx, gallery_files, guarded, picture_file

TITLE = "Data"
log = logging.getLogger(__name__)

INTRO = """### Data — look at images, head masks, trimesters and head circumferences
Pick a source and press **Load**: `phantom:N` (our own generated demo images, not patient data),
`hc18:PATH` (the HC18 challenge layout) or `folder:PATH` (`images/` + `masks/`, also the layout of the
synthetic datasets made in the Generation tab). Typed paths must lie under: {roots}.
You can also upload a dataset as a `.zip` (at most {max_mb} MB). Click a thumbnail to see it large."""


def _open(ctx, spec: str):
    browse.mark_upload_used(spec, ctx.work_dir / "uploads")  # a browsed upload is in use: not pruned for room
    return open_source(spec, ctx.allowed_roots)


def render_page(ctx, spec, page, alpha, trimester):
    src = _open(ctx, spec)
    items, shown, page, problems = browse.gallery_page(src, page, alpha, trimester)
    items = gallery_files(items)  # PNG files written once (see common.picture_file)
    label = browse.page_label(len(browse.filtered_indices(src.metas, trimester)), len(src), page)
    if problems:
        gr.Warning(f"{len(problems)} sample(s) on this page cannot be read: {problems[0]}")
    return src, items, shown, page, label, problems


@guarded
def load_data(ctx, spec, upload, alpha, trimester):
    """Open a data source (a spec string, or an uploaded dataset zip, which wins) and show page 1."""
    if upload:
        size_mb = _size_mb(upload)
        if size_mb > ctx.max_upload_mb:
            raise DataError(f"the zip is {size_mb:.0f} MB; the limit is {ctx.max_upload_mb} MB")
        spec = browse.open_upload(upload, ctx.work_dir / "uploads", quota_bytes=ctx.uploads_quota_mb * 2**20)
    spec = (spec or "").strip() or ctx.default_source
    src, items, shown, page, label, problems = render_page(ctx, spec, 0, alpha, trimester)
    img, head, info = _first_detail(src, shown, alpha)
    if src.warnings:
        gr.Warning(f"{src.spec}: {len(src.warnings)} warning(s), e.g. {src.warnings[0]}")
    summary = browse.summary(src)  # from the metadata only: cheap
    choices = browse.suggest_sources(ctx.data_roots, ctx.work_dir, ctx.default_source)
    return (spec, page, shown,
            gr.Dropdown(choices=list(dict.fromkeys([spec, *choices])), value=spec),
            _status(src, summary, problems), summary, data_figure(src.metas, src.spec), items, label,
            shown[0] + 1 if shown else None, img, head, info)


@guarded
def data_page(ctx, spec, page, alpha, trimester):
    """Show one page (0-based) of the loaded source, optionally one trimester only."""
    _, items, shown, page, label, _ = render_page(ctx, spec, int(page or 0), alpha, trimester)
    return page, shown, items, label


@guarded
def sample_detail(ctx, spec, number, alpha):
    """One sample (1-based number in the source) at full size with its metadata."""
    if number is None:
        return None, "", None
    img, info = browse.sample_detail(_open(ctx, spec), int(number) - 1, alpha)
    return picture_file(img), browse.headline(info), info


@guarded
def select_sample(ctx, spec, shown, alpha, evt: gr.SelectData):
    i = shown[evt.index] if shown and evt.index is not None and evt.index < len(shown) else None
    if i is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    img, info = browse.sample_detail(_open(ctx, spec), i, alpha)
    return i + 1, picture_file(img), browse.headline(info), info


@guarded
def first_shown_detail(ctx, spec, shown, alpha, trimester):
    if not shown:
        return None, None, f"no {trimester} trimester sample in this source", None
    img, info = browse.sample_detail(_open(ctx, spec), shown[0], alpha)
    return shown[0] + 1, picture_file(img), browse.headline(info), info


@guarded
def data_summary(ctx, spec, progress=gr.Progress()):
    """The data-summary CLI command: loads every sample to check HC from the masks against the CSV."""
    def tick(i, n):
        if i % 10 == 0 or i == n - 1:
            progress((i + 1, n), desc="loading masks", unit="images")
    out = summarize(spec, ctx.allowed_roots, progress=tick)
    problems = out.pop("problems")
    out["problems"] = problems[:50]
    return out


def first_page(ctx, spec, alpha, trimester):
    """Page 1 of the loaded source under a new trimester filter."""
    return data_page(ctx, spec, 0, alpha, trimester)


def previous_page(ctx, spec, page, alpha, trimester):
    return data_page(ctx, spec, (page or 0) - 1, alpha, trimester)


def next_page(ctx, spec, page, alpha, trimester):
    return data_page(ctx, spec, (page or 0) + 1, alpha, trimester)


def load_refused(spec):
    return (f"❌ not loaded (the message at the top right says why) — still showing `{spec}`; fix the source "
            "and press **Load** again")


def restore_last(ctx, saved, current, alpha, trimester):
    """A reloaded (or new) page of this browser starts a new session at the default source: load the last source
    this browser loaded instead, so the LoRA and Fine-tune tabs follow it again (a reload fell back to the
    default and LoRA training then refused "already exists with other settings (data: hc18 → phantom:24)",
    issue 33). A source that no longer opens is only offered, with the reason."""
    skip = (gr.skip(),) * 13
    if not saved or saved == current:
        return skip
    try:
        out = load_data.__wrapped__(ctx, saved, None, alpha, trimester)
    except Exception as exc:  # noqa: BLE001 - said on the status line, the default source stays loaded
        return (*skip[:3], gr.update(value=saved),
                f"This page started with the default source `{ctx.default_source}`. Your last source in this "
                f"browser, `{saved}`, could not be opened again ({exc}): it is in the box above.", *skip[5:])
    status = out[4] + f"\n\n↺ restored: the last source this browser loaded (**Load** another any time)."
    return (*out[:4], status, *out[5:])


def build(ctx) -> None:
    roots = ctx.allowed_roots
    # the module-level handlers, each a function of this app's ctx (bind_ctx keeps what Gradio reads)
    (load_data_, data_page_, sample_detail_, select_sample_, first_shown_detail_, data_summary_, first_page_,
     previous_page_, next_page_, restore_last_) = (bind_ctx(f, ctx) for f in (
        load_data, data_page, sample_detail, select_sample, first_shown_detail, data_summary, first_page,
        previous_page, next_page, restore_last))

    # ------------------------------------------------------------------ widgets
    initial = _initial(ctx)
    spec_state = gr.State(ctx.default_source)  # per session: the loaded source
    page_state = gr.State(0)
    shown_state = gr.State(initial["shown"])  # source indices of the thumbnails on screen
    ctx.shared["data_spec"] = spec_state
    # a new browser tab (or a reload) starts a new session at the default source: the last one is loaded again
    last_spec = gr.BrowserState("", storage_key="sonosynth-last-data-source")

    gr.Markdown(INTRO.format(roots=", ".join(f"`{r}`" for r in roots), max_mb=ctx.max_upload_mb))
    with gr.Row(equal_height=True):
        source = gr.Dropdown(choices=browse.suggest_sources(ctx.data_roots, ctx.work_dir, ctx.default_source),
                             value=ctx.default_source, allow_custom_value=True, label="Data source",
                             info="phantom[:N[:SEED]] · hc18:PATH · folder:PATH", scale=4, elem_id="data-source")
        upload = gr.File(label="…or upload a dataset zip", file_types=[".zip"], type="filepath", height=90,
                         scale=2, elem_id="data-upload")
        load_btn = gr.Button("Load", variant="primary", scale=1, elem_id="data-load")
    status = gr.Markdown(initial["status"], elem_id="data-status")
    plot = gr.Plot(initial["figure"], label="Trimesters and head circumferences", elem_id="data-chart")
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                trimester = gr.Radio(list(browse.FILTERS), value="all", label="Show trimester", scale=3)
                alpha = gr.Slider(0, 1, value=0.4, step=0.05, label="Mask opacity", scale=2)
            gallery = gr.Gallery(initial["items"], label="Samples (mask tinted; T1/T2/T3 = trimester, HC in mm)",
                                 columns=4, height=620, object_fit="contain", allow_preview=False,
                                 elem_id="data-gallery")
            with gr.Row(equal_height=True):
                prev_btn = gr.Button("◀ Previous", size="sm", scale=1, min_width=90)
                page_md = gr.Markdown(initial["label"], elem_id="data-page-label")
                next_btn = gr.Button("Next ▶", size="sm", scale=1, min_width=90)
        with gr.Column(scale=2):
            number = gr.Number(initial["number"], label="Sample #", info="click a thumbnail, or type a number "
                               "and press Enter", precision=0, minimum=1, elem_id="data-sample-number")
            detail = gr.Image(initial["detail"], label="Selected sample · ellipse in yellow", type="numpy",
                              interactive=False, height=400, elem_id="data-detail")
            headline = gr.Markdown(initial["headline"], elem_id="data-headline")
            with gr.Accordion("All metadata", open=False):
                info = gr.JSON(initial["info"], label="Metadata", elem_id="data-info")
    with gr.Accordion("Summary and HC check", open=False):
        summary_md = gr.Markdown(data_summary_markdown(initial["summary"]), elem_id="data-summary-text")
        check_btn = gr.Button("Check HC against the masks (loads every sample)", elem_id="data-check")
        check_md = gr.Markdown("", elem_id="data-check-text")
        with gr.Accordion("The same as JSON (for scripts)", open=False):
            summary_json = gr.JSON(initial["summary"], label="Summary (from the metadata)")
            check_json = gr.JSON(label="data-summary: HC from each mask (fitted ellipse × pixel size) vs reference")

    # ------------------------------------------------------------------ events
    # errors: a toast, and one "Error" badge on the status line (not on every output, which keep their view)
    loading = gr.on([load_btn.click, upload.upload], load_data_,
                    inputs=[source, upload, alpha, trimester],
                    outputs=[spec_state, page_state, shown_state, source, status, summary_json, plot, gallery,
                             page_md, number, detail, headline, info],
                    api_name="load_data", concurrency_limit=2, concurrency_id="data", show_progress="minimal",
                    show_progress_on=[status, gallery])
    # a refused zip leaves the upload box too: it would otherwise win over the next typed source and be sent
    # again with every Load (issue 35); the .then chain below left it there after a refusal (seen in chromium)
    loading.failure(lambda: None, outputs=[upload], api_visibility="private", show_progress="hidden")
    # a refused source: the status line says so (the last good status stayed under the new error, issue 33)
    loading.failure(load_refused, inputs=[spec_state], outputs=[status], api_visibility="private", queue=False,
                    show_progress="hidden")
    loading \
        .then(lambda: None, outputs=[upload], api_visibility="private", show_progress="hidden") \
        .then(lambda s: s, inputs=[spec_state], outputs=[last_spec], api_visibility="private",
              show_progress="hidden")  # remembered in this browser (localStorage) for the next page it opens
    page_io = dict(outputs=[page_state, shown_state, gallery, page_md], concurrency_limit=2,
                   concurrency_id="data", show_progress="minimal", show_progress_on=[gallery])
    # the detail panel follows the filter: it shows the first sample still on screen, never one filtered out
    trimester.change(first_page_, inputs=[spec_state, alpha, trimester],
                     api_visibility="private", **page_io) \
        .then(first_shown_detail_, inputs=[spec_state, shown_state, alpha, trimester],
              outputs=[number, detail, headline, info], api_visibility="private", show_progress_on=[detail])
    prev_btn.click(previous_page_,
                   inputs=[spec_state, page_state, alpha, trimester], api_visibility="private", **page_io)
    next_btn.click(next_page_,
                   inputs=[spec_state, page_state, alpha, trimester], api_visibility="private", **page_io)
    number.submit(sample_detail_, inputs=[spec_state, number, alpha], outputs=[detail, headline, info],
                  api_name="sample_detail", show_progress_on=[detail])
    alpha.release(data_page_, inputs=[spec_state, page_state, alpha, trimester], api_visibility="private",
                  **page_io) \
        .then(sample_detail_, inputs=[spec_state, number, alpha], outputs=[detail, headline, info],
              api_visibility="private", show_progress_on=[detail])
    gallery.select(select_sample_, inputs=[spec_state, shown_state, alpha],
                   outputs=[number, detail, headline, info], api_visibility="private", show_progress_on=[detail])
    # the browser hands the stored value over after the page loaded: its change event is the moment
    # (demo.load alone saw it still empty); saving a newly loaded source changes it too, hence `current`
    triggers = [last_spec.change] + ([ctx.demo.load] if getattr(ctx, "demo", None) is not None else [])
    gr.on(triggers, restore_last_, inputs=[last_spec, spec_state, alpha, trimester],
          outputs=[spec_state, page_state, shown_state, source, status, summary_json, plot, gallery, page_md,
                   number, detail, headline, info], api_visibility="private", show_progress="hidden",
          concurrency_limit=2, concurrency_id="data")
    check_btn.click(data_summary_, inputs=[spec_state], outputs=[check_json], api_name="data_summary", **HEAVY) \
        .then(hc_check_markdown, inputs=[check_json], outputs=[check_md], api_visibility="private",
              show_progress="hidden")
    summary_json.change(data_summary_markdown, inputs=[summary_json], outputs=[summary_md], api_visibility="private",
                        show_progress="hidden")


def _status(src, s: dict, problems=()) -> str:
    """The line above the chart: what was loaded (s = browse.summary(src)), per trimester, any warnings."""
    t = s["trimesters"]
    if s["phantom"] == s["n"]:
        kind = "phantom images made by our generator (not patient data)"
    else:
        kind = "images" + (f" ({s['synthetic']} synthetic)" if s["synthetic"] else "")
    lines = [f"**{s['n']}** {kind} from `{src.spec}` — first {t['first']}, second {t['second']}, "
             f"third {t['third']}" + (f", unknown {t['unknown']}" if t["unknown"] else "") + " trimester."]
    warns = [*src.warnings, *problems]
    if warns:
        more = " …" if len(warns) > 5 else ""
        lines.append(f"\n⚠️ {len(warns)} warning(s): " + "; ".join(warns[:5]) + more)
    return "\n".join(lines)


def _initial(ctx) -> dict:
    """What a new session sees before pressing anything: page 1 of the default source."""
    try:
        src = open_source(ctx.default_source, ctx.allowed_roots)
        items, shown, page, _ = browse.gallery_page(src, 0, 0.4)
        items = gallery_files(items)
        summary = browse.summary(src)
        status = _status(src, summary) + " Type or pick another source and press **Load**."
        img, head, info = _first_detail(src, shown, 0.4)
        return dict(items=items, shown=shown, label=browse.page_label(len(src), len(src), page),
                    figure=data_figure(src.metas, src.spec), summary=summary, status=status,
                    number=1, detail=img, headline=head, info=info)
    except DataError as exc:  # a misconfigured default must not stop the app from starting
        log.warning("default data source %s: %s", ctx.default_source, exc)
        return dict(items=[], shown=[], label="", figure=None, summary=None, number=None, detail=None,
                    headline="", info=None, status=f"⚠️ default source `{ctx.default_source}`: {exc}")


def _first_detail(src, shown, alpha):
    """The detail panel for the first thumbnail; a sample that cannot be read must not fail the load."""
    if not shown:
        return None, "", None
    try:
        img, info = browse.sample_detail(src, shown[0], alpha)
        return picture_file(img), browse.headline(info), info
    except DataError as exc:
        return None, f"⚠️ sample #{shown[0] + 1}: {exc}", None


def _size_mb(path) -> float:
    import os
    return os.path.getsize(path) / 2**20
