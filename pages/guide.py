"""The landing tab: a short guide for a non-programmer."""
from __future__ import annotations

import gradio as gr

TITLE = "Guide"

GUIDE = """
## SonoSynth Lab — synthetic training data for fetal head ultrasound

This dashboard reproduces, and lets you check on your own data, the method of *Diffusion Model-based
Data Augmentation for Fetal Head Ultrasound Segmentation* (Wang et al.): a diffusion model learns a few
real images **together with their head masks** (the mask rides in the blue channel), generates new
image–mask pairs, and those pairs help SAM segment fetal heads when real labelled images are few.

**Workflow, left to right:**

| Tab | What it is for |
|---|---|
| **Data** | Choose a data source (our phantoms, or your HC18 / folder dataset) and look at images, masks, trimesters and head circumferences. |
| **LoRA training** | Teach the diffusion model one trimester from ~20 real image+mask pairs. |
| **Generation** | Generate new pairs, check the extracted ellipse masks, correct them by hand, accept the good ones into a synthetic dataset. |
| **Fine-tune SAM** | Train SAM's mask decoder on real + synthetic pairs and watch the curves. |
| **Playground** | Draw a box on an image and see the head SAM segments, with HC and gestational age. |
| **Experiments** | Run the paper's Table 1 comparison (none / weak / strong augmentation / synthetic) on your data. |

**Profile in use: `{profile}`** — {profile_help}

The phantom images are made by our own generator for demonstration. They are not real patient data.
"""

PROFILE_HELP = {
    "tiny": "runs offline on a CPU: LiteMedSAM (pretrained on medical images) and a small diffusion model "
            "with Stable Diffusion's architecture, pretrained by us on phantoms, at 128×128.",
    "paper": "the paper's setup: SAM ViT-B and Stable Diffusion v1.5 at 512×512; needs a GPU and the "
             "model weights (local files, or downloaded when the machine is online).",
}


def build(ctx) -> None:
    gr.Markdown(GUIDE.format(profile=ctx.profile.name, profile_help=PROFILE_HELP.get(ctx.profile.name, "")))
