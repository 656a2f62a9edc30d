"""The Playground tab: draw a box on an ultrasound image, see the head SAM segments, with HC and GA.

Thin wiring over pipeline.sam (the same code as `python -m pipeline segment`). The predictor is kept per
browser session, so redrawing a box on the same image runs the mask decoder only (~0.1 s), never the
image encoder again. API endpoint: segment (image, box -> mask, ellipse, HC).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import numpy as np

from pipeline.data import open_source, read_upload_gray, to_gray_uint8
from pipeline.eta import eta_text
from pipeline.fileio import atomic_save_png, atomic_write_json
from pipeline.gpu import gpu_task
from pipeline.masks import overlay
from pipeline.measure import (GA_FORMULA, biometry, box_fit, dice_verdict, draw_measurements, ellipse_record,
                              fmt_mm, hc_verdict, loose_box_warning)
from pipeline.metrics import dice
from pipeline.validate import check_array_size, check_float

from .common import bind_ctx, follow_data_tab, guarded, picture_file

TITLE = "Playground"
BASE = "base model"
_LOCK = threading.Lock()
MAX_SESSIONS = 8  # predictors kept per model (sessions beyond are re-made, encoding again)
log = logging.getLogger(__name__)
MIN_BOX_PX = 4  # the annotator's box_min_size

# gradio_image_annotation switches to "Drag boxes" after a box is drawn, so a second drag panned the image
# instead of drawing (issue 11): after every pointer-up on its canvas, go back to "Create box".
HEAD = """<script>
document.addEventListener('pointerup', (e) => {
  const root = e.target && e.target.closest ? e.target.closest('#pg-ann') : null;
  if (!root || e.target.tagName !== 'CANVAS') return;
  setTimeout(() => root.querySelector('button[aria-label="Create box"]')?.click(), 0);
}, true);
</script>"""

INTRO = """### Playground — box-prompted fetal head segmentation
Pick an image from the Data tab's source (or upload one) and **drag a box tightly around the skull** on
the left image: the mask appears on the right. Drag again for a new box (it replaces the old one): the
image is encoded once, a redraw runs the mask decoder only. Model: the base `{backend}` or any fine-tuned run from the *Fine-tune SAM* tab. Head
circumference (HC) comes from the ellipse fitted to the mask and the pixel size; gestational age (GA)
from HC by Hadlock's formula."""


def model_choices(work_dir: Path) -> list[str]:
    from pipeline.runs import list_runs
    runs = [r.name for r in list_runs(work_dir / "runs", kind="sam-finetune")
            if (r.path / "best.safetensors").is_file()]
    return [BASE] + runs


def _predictor(ctx, session: str, model_name: str):
    """This session's predictor for a model. The model comes from pipeline.sam.models.load_model, the one
    cache of models (keyed by the weights file's mtime too, so a run fine-tuned again is reloaded). The
    session's predictor (its embedding cache, which prefetch_embedding fills) is kept on that model object:
    it goes when load_model's cache lets the model go, instead of a second cache of models here that kept
    evicted or outdated models alive."""
    from pipeline.sam import SamPredictor, load_model
    from pipeline.validate import resolve_run
    checkpoint = None
    if model_name and model_name != BASE:  # a run NAME inside runs/, never a path
        checkpoint = resolve_run(ctx.work_dir / "runs", model_name)
    backend, weights = ctx.profile.sam_model()
    model = load_model(backend, checkpoint if checkpoint is not None else weights)
    with _LOCK:
        preds = model.__dict__.setdefault("_playground_predictors", OrderedDict())  # session -> SamPredictor
        pred = preds.get(session)
        if pred is None:
            pred = preds[session] = SamPredictor(model, cache_size=4)
        preds.move_to_end(session)
        while len(preds) > MAX_SESSIONS:
            preds.popitem(last=False)
    return pred


def _pixel_size(value, gt) -> float | None:
    """The pixel size typed in the field, or the sample's exact one when the field shows it rounded
    (HC18 stores 0.0691358041432; the field shows 0.069136)."""
    if value in (None, "") or float(value) == 0:  # 0: what an empty gr.Number can turn into in the browser
        return None
    if not 0 < float(value) < 10:  # named here: gr.Number's own minimum check does not name the field
        raise ValueError(f"pixel size must be a positive number of mm per pixel below 10 (e.g. 0.15), got {value}")
    exact = (gt or {}).get("pixel_size_mm")
    if exact and abs(float(value) - round(exact, 6)) < 1e-9:
        return float(exact)
    return float(value)


def _box_from_annotation(annot) -> tuple[float, float, float, float] | None:
    boxes = (annot or {}).get("boxes") or []
    if not boxes:
        return None
    b = boxes[-1]
    return (float(b["xmin"]), float(b["ymin"]), float(b["xmax"]), float(b["ymax"]))


def _export_dir(ctx) -> Path:
    return ctx.work_dir / "exports"


def _session(request) -> str:
    return getattr(request, "session_hash", None) or "api"


def _segment(pred, image, box, px):
    from pipeline.sam.evaluate import segment  # torch: imported at the first box, not when the tab is built
    return segment(pred, image, box, px)


@guarded
def list_samples(ctx, spec):
    src = open_source((spec or "").strip() or ctx.default_source, ctx.allowed_roots)
    names = src.names
    return (gr.update(choices=names, value=names[0] if names else None),
            f"{len(names)} images in `{src.spec}` (type in the Image list to find one)")


@guarded
def load_sample(ctx, spec, name):
    if not name:
        raise ValueError("pick an image first")
    src = open_source((spec or "").strip() or ctx.default_source, ctx.allowed_roots)
    s = src[src.index_of(name)]
    gt = {"name": s.name, "mask": s.mask, "hc_mm": s.meta.hc_mm, "pixel_size_mm": s.meta.pixel_size_mm}
    info = f"**{s.name}** · {s.image.shape[1]}×{s.image.shape[0]} px"
    if s.meta.hc_mm:
        info += f" · reference HC {s.meta.hc_mm:.1f} mm"
    return ({"image": np.repeat(s.image[..., None], 3, axis=2), "boxes": []}, s.image, gt,
            None if s.meta.pixel_size_mm is None else round(s.meta.pixel_size_mm, 6),
            info + " — now drag a box tightly around the skull on the left image", None, None, "")


@guarded
def load_upload(ctx, path):
    if not path:
        raise ValueError("no file uploaded")
    img = read_upload_gray(path, Path(path).name)  # DataError for a corrupt / non-image / too large file
    name = Path(path).name
    return ({"image": np.repeat(img[..., None], 3, axis=2), "boxes": []}, img,
            {"name": name, "mask": None, "hc_mm": None}, None,
            f"**{name}** (upload) · {img.shape[1]}×{img.shape[0]} px — type the pixel size for HC/GA, "
            f"then draw a box", None, None, "")  # "": the last image's Dice and HC went with it (issue 33)


def prefetch_embedding(ctx, image, model_name, request: gr.Request):
    """Encode the loaded image while the person is still drawing the box. The image encoder is the
    wait in the Playground (~1 s on 2 quiet cores, several under load: it is ~75 GFLOPs, see `bench
    sam`), the box decoder ~0.06 s; the predictor's cache, keyed by the image's pixels, then answers
    the first box as fast as a second one. A failure here is silent: the box request reports it."""
    if image is None:
        return
    session = _session(request)
    try:
        _predictor(ctx, session, model_name).set_image(image)
    except Exception as exc:  # noqa: BLE001  (the user asked for nothing yet)
        log.warning("prefetch of the image embedding failed (%s): the first box will encode it", exc)


@guarded
@gpu_task  # ZeroGPU on Spaces; a no-op elsewhere
def segment_ui(ctx, annot, image, gt, pixel_size, model_name, alpha, ellipse_fit, request: gr.Request):
    """Segment the drawn box; returns overlay, result text, and the two export files."""
    if image is None:
        raise ValueError("load an image first (pick one from the list or upload one)")
    box = _box_from_annotation(annot)
    if box is None:
        raise ValueError("no box: draw a box around the head on the image first")
    session = _session(request)
    pred = _predictor(ctx, session, model_name)
    t0 = time.perf_counter()
    px = _pixel_size(pixel_size, gt)
    seg = _segment(pred, image, box, px)
    dt = time.perf_counter() - t0
    shown = seg.ellipse_mask if (ellipse_fit and seg.ellipse_mask is not None) else seg.mask
    over = draw_measurements(overlay(image, shown, float(alpha), ellipse=seg.ellipse), seg.ellipse, px)
    model_label = (f"base model ({ctx.profile.sam_backend})" if model_name in (None, "", BASE)
                   else f"fine-tuned run `{model_name}`")
    lines = [f"**Model: {model_label}** · box ({', '.join(f'{v:.0f}' for v in seg.box)}) · {dt:.2f} s "
             f"({pred.encoder_calls} image encodings this session for this model)"]
    warn = loose_box_warning(box_fit(seg.box, seg.mask, seg.ellipse_mask))
    if warn:
        lines.append(warn)
    if gt and gt.get("mask") is not None:
        d_raw = dice(seg.mask, gt["mask"])
        d_fit = dice(seg.ellipse_mask, gt["mask"]) if seg.ellipse_mask is not None else None
        lines.append(f"**Dice vs ground truth: {d_raw:.3f}** (raw mask)"
                     + (f" · {d_fit:.3f} (fitted ellipse)" if d_fit is not None else "")
                     + f" — {dice_verdict(d_raw)}")
    if seg.ellipse is None:
        lines.append("no ellipse: the mask is empty — draw the box around the head")
    else:
        m = biometry(seg.ellipse, px)
        if m["hc_mm"] is not None:
            ref = gt.get("hc_mm") if gt else None
            lines.append(f"**HC {fmt_mm(m['hc_mm'])}** · BPD {fmt_mm(m['bpd_mm'])} · OFD {fmt_mm(m['ofd_mm'])} · "
                         f"**GA {m['ga_weeks']:.1f} weeks** ({GA_FORMULA})")
            lines.append((f"reference HC {ref:.1f} mm · " if ref else "") + hc_verdict(m["hc_mm"], ref))
        else:
            lines.append("HC, BPD, OFD and GA need the pixel size (mm per pixel): type it above")
    stem = Path((gt or {}).get("name") or "image").stem
    out = _export_dir(ctx) / session[:16]
    png = atomic_save_png(out / f"{stem}_mask.png", shown)
    js = atomic_write_json(out / f"{stem}_ellipse.json",
                           {**seg.as_dict(), **ellipse_record(seg.ellipse, px, image=(gt or {}).get("name"),
                                                              model=model_name or BASE,
                                                              ellipse_fit=bool(ellipse_fit))})
    return picture_file(over), "\n\n".join(lines), [str(png), str(js)]


@guarded
@gpu_task  # ZeroGPU on Spaces; a no-op elsewhere
def segment_api(ctx, image, x0: float, y0: float, x1: float, y1: float, pixel_size_mm: float | None = None,
                model: str = BASE, ellipse_fit: bool = False) -> tuple:
    """API: segment an image (file path or array) from a box; returns the mask PNG path and a JSON of
    box, ellipse, HC (mm) and GA (weeks)."""
    if image is None:
        raise ValueError("no image given")
    if isinstance(image, (str, Path)):
        img = read_upload_gray(image, "the image")  # header checked against the pixel limit first
    else:
        check_array_size(image, "the image")
        img = to_gray_uint8(np.asarray(image))
    pred = _predictor(ctx, "api", model or BASE)
    px = None if pixel_size_mm in (None, "") else check_float(pixel_size_mm, "pixel_size_mm", 0, 10, lo_open=True)
    seg = _segment(pred, img, (x0, y0, x1, y1), px)
    shown = seg.ellipse_mask if (ellipse_fit and seg.ellipse_mask is not None) else seg.mask
    # time + a random part: two calls in the same millisecond never share (and overwrite) a file
    png = atomic_save_png(_export_dir(ctx) / "api" / f"mask_{int(time.time() * 1000)}_{uuid.uuid4().hex[:8]}.png",
                          shown)
    return str(png), {**seg.as_dict(), **ellipse_record(seg.ellipse, px, model=model or BASE,
                                                        ellipse_fit=bool(ellipse_fit))}


@guarded
@gpu_task  # ZeroGPU on Spaces; a no-op elsewhere
def export_hc18(ctx, spec, model_name, pixel_size, request: gr.Request, progress=gr.Progress()):
    """Segment every image of a data source (box: its reference mask's, else the whole image) and write
    the HC18 challenge CSV (filename, centre, semi-axes in mm, angle in rad). Returns (CSV, message)."""
    from pipeline.measure import export_folder_hc18
    spec = (spec or "").strip() or ctx.default_source
    px = _pixel_size(pixel_size, None)
    session = _session(request)
    pred = _predictor(ctx, session, model_name)
    started = time.monotonic()

    def tick(i, n):
        progress((i + 1, n), desc=f"segmenting · {eta_text(started, i + 1, n)}", unit="images")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.split(":", 1)[0])
    out = _export_dir(ctx) / session[:16] / f"hc18_{safe}_{time.strftime('%Y%m%d-%H%M%S')}.csv"
    res = export_folder_hc18(pred, spec, out, px, allowed_roots=ctx.allowed_roots, progress=tick)
    msg = f"HC18 CSV: **{res['rows']}** images segmented with the {model_name or BASE}"
    if res["skipped"]:
        msg += f"; {len(res['skipped'])} skipped (e.g. {res['skipped'][0]})"
    return res["csv"], msg


def refresh_models(ctx, current):
    ch = model_choices(ctx.work_dir)
    return gr.update(choices=ch, value=current if current in ch else BASE)


def on_draw(ctx, annot_v, image, gt, pixel_size, model_name, alpha_v, fit, request: gr.Request):
    # the annotator fires on mouse-down too, with a zero-size box: only a finished box is a request
    boxes = (annot_v or {}).get("boxes") or []
    if image is None or not boxes:
        return gr.skip(), gr.skip(), gr.skip()
    b = boxes[-1]
    if min(b["xmax"] - b["xmin"], b["ymax"] - b["ymin"]) < MIN_BOX_PX:
        return gr.skip(), gr.skip(), gr.skip()
    return segment_ui(ctx, annot_v, image, gt, pixel_size, model_name, alpha_v, fit, request)


def build(ctx) -> None:
    from gradio_image_annotation import image_annotator

    from pipeline.data import DataError

    # ------------------------------------------------------------------ widgets
    gr.Markdown(INTRO.format(backend=ctx.profile.sam_backend))
    try:
        initial = open_source(ctx.default_source, ctx.allowed_roots).names
    except DataError:
        initial = []
    with gr.Row(equal_height=True):
        source = gr.Textbox(ctx.default_source, label="Data source (from the Data tab; you can type another)",
                            scale=3, elem_id="pg-source")
        sample = gr.Dropdown(initial, value=initial[0] if initial else None, label="Image", scale=2, elem_id="pg-sample", allow_custom_value=False,
                             num_choices_shown=100_000)  # every image listed (Gradio's default: the first 100)
        load_btn = gr.Button("Load image", scale=1, elem_id="pg-load")
        upload = gr.File(label="…or upload an image", file_types=["image"], type="filepath", scale=2,
                         elem_id="pg-upload", height=90)
    with gr.Row(equal_height=True):
        model = gr.Dropdown(model_choices(ctx.work_dir), value=BASE, label="Model (base or a fine-tuned run)",
                            scale=3, elem_id="pg-model")
        refresh = gr.Button("↻ runs", scale=0, min_width=80)
        pixel = gr.Number(None, label="pixel size (mm per pixel)", scale=2, elem_id="pg-pixel",
                          info="needed for HC, BPD, OFD and GA; HC18 images bring their own")
        alpha = gr.Slider(0, 1, 0.45, step=0.05, label="mask opacity", scale=2, elem_id="pg-alpha")
        ellipse_fit = gr.Checkbox(False, label="show fitted ellipse as the mask", scale=2, elem_id="pg-ellipse")
    info = gr.Markdown("Pick an image and press *Load image*.", elem_id="pg-info")
    with gr.Row():
        # disable_edit_boxes: no label dialog after every box (one label only); HEAD below keeps the
        # annotator in "Create box" mode, so every drag draws a new box (single_box replaces the old one)
        # side by side (each in a column: the annotator alone takes the whole row and pushed the overlay below)
        with gr.Column(scale=1, min_width=320):
            annot = image_annotator(None, label="Drag a box tightly around the skull", label_list=["head"],
                                    label_colors=["#00c8ff"], single_box=True, sources=[], image_type="numpy",
                                    elem_id="pg-ann", box_min_size=MIN_BOX_PX, height=480, disable_edit_boxes=True,
                                    show_remove_button=False)
        with gr.Column(scale=1, min_width=320):
            result_img = gr.Image(label="Mask overlay · HC / BPD / OFD drawn on it", type="numpy",
                                  interactive=False, elem_id="pg-result", height=480)
    with gr.Row():
        segment_btn = gr.Button("Segment the box", variant="primary", elem_id="pg-segment")
    result = gr.Markdown("", elem_id="pg-metrics")
    files = gr.File(label="Export: mask PNG + ellipse JSON (centre, axes, angle in px and mm; HC, BPD, OFD, GA)",
                    file_count="multiple", elem_id="pg-files")
    with gr.Accordion("Export the HC18 challenge CSV for the whole data source", open=False):
        gr.Markdown("Segments every image of the source above with the chosen model (box: the reference mask's "
                    "bounding box, or the whole image) and writes `filename,center_x_mm,center_y_mm,"
                    "semi_axes_a_mm,semi_axes_b_mm,angle_rad`. The pixel size comes from the source (HC18's CSV) "
                    "or the pixel size field above.")
        with gr.Row(equal_height=True):
            hc18_btn = gr.Button("Write the HC18 CSV", elem_id="pg-hc18")
            hc18_file = gr.File(label="HC18 CSV", elem_id="pg-hc18-file")
        hc18_msg = gr.Markdown("", elem_id="pg-hc18-msg")
    image_state = gr.State(None)  # the grayscale image being segmented
    gt_state = gr.State(None)  # {"name", "mask" (or None), "hc_mm"}

    # the module-level handlers, each a function of this app's ctx (bind_ctx keeps what Gradio reads)
    (list_samples_, load_sample_, load_upload_, prefetch_embedding_, segment_ui_, segment_api_, export_hc18_,
     refresh_models_, on_draw_) = (bind_ctx(f, ctx) for f in (
        list_samples, load_sample, load_upload, prefetch_embedding, segment_ui, segment_api, export_hc18,
        refresh_models, on_draw))
    followed = follow_data_tab(ctx, source)
    if followed is not None:
        followed.then(list_samples_, inputs=[source], outputs=[sample, info], api_visibility="private")
    source.submit(list_samples_, inputs=[source], outputs=[sample, info], api_visibility="private")
    # every way an image arrives is followed by its encoding in the background (prefetch_embedding_)
    prefetch = dict(fn=prefetch_embedding_, inputs=[image_state, model], outputs=None, api_visibility="private",
                    show_progress="hidden", concurrency_limit=4, concurrency_id="playground")
    gr.on([load_btn.click], load_sample_, inputs=[source, sample],
          outputs=[annot, image_state, gt_state, pixel, info, result_img, files, result], api_visibility="private"
          ).success(**prefetch)
    sample.input(load_sample_, inputs=[source, sample],
                 outputs=[annot, image_state, gt_state, pixel, info, result_img, files, result], api_visibility="private"
                 ).success(**prefetch)
    upload.upload(load_upload_, inputs=[upload], outputs=[annot, image_state, gt_state, pixel, info, result_img, files, result],
                  api_visibility="private").success(**prefetch)
    model.input(**prefetch)  # another model has its own predictor (and cache)
    refresh.click(refresh_models_, inputs=[model], outputs=[model], api_visibility="private")
    if ctx.tab is not None:  # runs fine-tuned meanwhile are listed whenever the tab is opened
        ctx.tab.select(refresh_models_, inputs=[model], outputs=[model], api_visibility="private", queue=False)
    finished = ctx.shared.get("sam_run_finished")  # the Fine-tune tab's finished run: list it at once
    if finished is not None:
        finished.change(refresh_models_, inputs=[model], outputs=[model], api_visibility="private")
    seg_inputs = [annot, image_state, gt_state, pixel, model, alpha, ellipse_fit]
    seg_outputs = [result_img, result, files]

    annot.change(on_draw_, inputs=seg_inputs, outputs=seg_outputs, api_visibility="private",
                 concurrency_limit=4, concurrency_id="playground", trigger_mode="always_last")
    segment_btn.click(segment_ui_, inputs=seg_inputs, outputs=seg_outputs, api_visibility="private",
                      concurrency_limit=4, concurrency_id="playground")
    for w in (alpha, ellipse_fit):
        w.change(on_draw_, inputs=seg_inputs, outputs=seg_outputs, api_visibility="private",
                 concurrency_limit=4, concurrency_id="playground", trigger_mode="always_last")
    # the named API endpoint: image + box in, mask + JSON out (components hidden from the page)
    with gr.Row(visible=False):
        # a File, not an Image: gr.Image opens (and may decode) the upload with PIL before the handler runs,
        # so a corrupt or oversized image got Gradio's generic error instead of a message saying what is wrong
        api_image = gr.File(type="filepath", label="image")
        api_box = [gr.Number(label=n) for n in ("x0", "y0", "x1", "y1")]
        api_pixel = gr.Number(None, label="pixel_size_mm")
        api_model = gr.Textbox(BASE, label="model")
        api_fit = gr.Checkbox(False, label="ellipse_fit")
        api_mask = gr.Image(type="filepath", label="mask")
        api_json = gr.JSON(label="segmentation")
        api_btn = gr.Button("segment")
    hc18_btn.click(export_hc18_, inputs=[source, model, pixel], outputs=[hc18_file, hc18_msg], api_name="export_hc18",
                   concurrency_limit=1, concurrency_id="heavy")
    api_btn.click(segment_api_, inputs=[api_image, *api_box, api_pixel, api_model, api_fit],
                  outputs=[api_mask, api_json], api_name="segment", concurrency_limit=4,
                  concurrency_id="playground")
