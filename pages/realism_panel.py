"""The Generation tab's "How real is it?" panel (API endpoint `realism`).

Its own module so that the Generation page keeps one call to it: the panel compares the current synthetic
dataset (synthetic/NAME) with the loaded real data (the Data tab's source) of the same trimester, leaving out
the real images the dataset's LoRAs trained on, with `pipeline.diffusion.realism.realism_report` — the same
code as `python -m pipeline realism`.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from pipeline.data import DataError
from pipeline.diffusion import realism as RL

from .common import HEAVY, bind_ctx, guarded, safe_name

HELP = """**How real is it?** compares the synthetic dataset named above with the real images of the same
trimester from the Data tab's source (without those its LoRA trained on): KID ×1000 (0 = same distribution)
and a classifier's AUC (0.5 = it cannot tell them apart), beside the same numbers for two halves of the real
set. LiteMedSAM features at the generator's working size; see `python -m pipeline realism --help`."""


@guarded
def how_real(ctx, dataset_name, tri, lora_name, data_spec, progress=gr.Progress()):
    """KID ×1000 and classifier AUC of synthetic/NAME vs the loaded real data of the trimester."""
    folder = ctx.work_dir / "synthetic" / safe_name(dataset_name, "dataset name", "second-200")
    if not (folder / "images").is_dir() or not any((folder / "images").iterdir()):
        raise DataError(f"synthetic/{folder.name} has no accepted pairs yet: generate and accept some first")
    # the LoRAs the dataset's samples record; else the one chosen above (a LoRA folder that exists: the
    # "no LoRA" choice is none, LoRA names are checked words)
    loras = RL.recorded_loras(folder)
    if not loras and lora_name:
        chosen = ctx.work_dir / "loras" / Path(str(lora_name)).name
        if (chosen / "lora_config.json").is_file():
            loras = [str(chosen)]
    spec = data_spec or ctx.default_source
    progress(0, desc="loading images")
    size = RL.recorded_working_size(folder, ctx.profile.resolution)  # 256² pairs compared at 256²
    r = RL.realism_report(str(folder), spec, size, tri, exclude_lora=loras,
                          cache_dir=ctx.work_dir / "cache" / "realism", allowed_roots=ctx.allowed_roots,
                          progress=lambda what, d, t: progress((d, t), desc=f"encoding {what} images",
                                                               unit="images"))
    return RL.report_markdown(r), r


def build_realism_panel(ctx, trimester, dataset, lora=None) -> None:
    """Widgets and the `realism` endpoint. trimester / dataset / lora: the Generation tab's components."""
    spec_state = ctx.shared.get("data_spec")

    with gr.Accordion("How real is it? (realism report)", open=False):
        gr.Markdown(HELP)
        btn = gr.Button("How real is it?", elem_id="gen-realism")
        out = gr.Markdown("", elem_id="gen-realism-report")
        raw = gr.JSON(label="report (JSON)", visible=False)
    if spec_state is None:  # no Data tab in this build: the default source
        spec_state = gr.State(ctx.default_source)
    inputs = [dataset, trimester, lora if lora is not None else gr.State(None), spec_state]
    btn.click(bind_ctx(how_real, ctx), inputs=inputs, outputs=[out, raw], api_name="realism", **HEAVY)
