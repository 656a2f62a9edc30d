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

### Quick start — three steps, about 5 minutes on a CPU

1. **Playground** → *Load image* → drag a box around the head on the left image. The head mask appears on
   the right with its head circumference (HC), gestational age (GA) and a verdict on how far it is from the
   reference. *Export* saves the mask PNG, the ellipse (JSON) and, for a whole folder, the HC18 challenge CSV.
2. **Fine-tune SAM** → keep the defaults, press *Start fine-tuning*. The curves show SAM's mask decoder
   learning from 20 real pairs; the result says whether it beats the base model by more than chance.
3. **Playground** again → choose your new run in *Model* and draw the same box: compare.

Then, for the paper's method: **LoRA training** (one LoRA per trimester, ~20 real pairs) → **Generation**
(new image + mask pairs with that LoRA; accept the good ones into a synthetic dataset) → **Fine-tune SAM**
with that dataset as *Synthetic pairs* → **Experiments** (the whole comparison as a table).
Use the **Data** tab first to pick your own data (an HC18 folder, or `images/` + `masks/`).

### Words used on the tabs

| Word | Meaning |
|---|---|
| **in-channel image** | the training image of the diffusion model: the ultrasound in red and green, the head mask in **blue**. That is why LoRA previews and raw samples look **yellow** (image, R = G) with a **blue** head (mask, B). |
| **LoRA** | a small add-on to the diffusion model that teaches it one trimester from a few real pairs, leaving the base model unchanged. |
| **rank** | the size of the LoRA (how many directions it may change per layer); the paper uses 128. |
| **alpha** | the LoRA's strength: its update is scaled by alpha / rank (paper: 128 / 128 = 1). |
| **UniPC** | the sampler that turns noise into an image in few steps (20 here, as in the paper). |
| **guidance** | how strongly a sample follows its trimester prompt (classifier-free guidance). Each base has its own default: 7.5 for Stable Diffusion v1.5, a lower measured value for the tiny base (higher guidance makes its heads too large and its images less real). |
| **latent calibration** | not a control: before drawing the image, the tiny base widens the spread of the sampler's last latents to that of real images' latents (the sampler draws them a little too smooth), which makes its samples more real. Measured for the base; Stable Diffusion v1.5 has none. Each sample's record lists it. |
| **ellipse guidance** | not in the paper: at a few points of the sampler's run (0.2, 0.4, 0.6 of its steps on the tiny base) the blue channel of the picture-so-far is replaced by the ellipse of its largest blob, and the sampler goes on from there, so image and mask finish around one head instead of a bean or two blobs. The Ellipse Extractor still judges the finished sample. Each base has its own setting (off for Stable Diffusion v1.5: the paper's sampling); type `off` to compare. |
| **guide until** | not in the paper: the share of the sampler's steps that use classifier-free guidance (an extra pass without the prompt that pushes the picture towards it). The last steps only refine texture, so the tiny base stops guiding after 0.6 of them and samples faster with the same valid masks; 1 guides every step, as the paper does (Stable Diffusion v1.5's setting). |
| **Ellipse Extractor** | reads the blue channel of a generated sample, thresholds it and fits an ellipse: that is the sample's head mask. |
| **QC** | quality check of a generated pair: the Dice between SAM's mask and the extracted ellipse (1 = identical). |
| **Dice** | overlap of two masks, from 0 (none) to 1 (identical). |
| **HC / BPD / OFD** | head circumference, biparietal diameter (short axis), occipito-frontal diameter (long axis), in mm. |
| **GA** | gestational age in weeks, from HC by Hadlock's formula (1984). |
| **N_real** | how many real labelled pairs a fine-tuning run uses. |
| **heldout** | the test part of the training source's seeded split: never trained on, never used to choose a checkpoint. |
| **None / WA / SA / SYN** | no augmentation / weak classic augmentation (flips, ±15° rotation, brightness/contrast, blur, noise) / strong (±45° rotation, elastic warps, colour shifts, cut-out holes) / synthetic pairs from the diffusion model added to the real ones (the paper's method). |
| **epoch** | one pass over all training pairs. |
| **working size** | the square size the diffusion model draws at (128×128 on the tiny base, 512×512 for Stable Diffusion v1.5); it limits what synthetic pairs can do for SAM (below the table). |

**What the working size means for SYN.** On HC18, even real annotated pairs squashed to 128×128 in SYN's
place left LiteMedSAM at its zero-shot Dice, while at 256×256 they matched no augmentation and at full size
beat it by a point (docs/results.md). On the tiny profile at 128×128, expect SYN to keep the zero-shot
decoder rather than beat None. With the **detail pass** (a second LoRA per trimester trained at 256×256
re-draws each sample at that size, and pairs written at the scans' width/height: Generation tab, or the
Experiments tab's "detail LoRAs at" and "width / height" fields) SYN beat None on HC18, 96.49 vs 96.32 %
Dice, at several times the generation time. A base pretrained at a larger size too (`pretrain-base
--extra-resolutions 256`, recorded as `"sizes"` in its `sonosynth_sampling.json`) lets a LoRA trained at that
size draw there directly; the one built on 2026-11-27 draws one head at 256×256 but not yet an elliptic one,
so it is not shipped (docs/lab/2026-11-pretraining.md, stage 9).

**Profile in use: `{profile}`** — {profile_help}

The phantom images are made by our own generator for demonstration. They are not real patient data.
"""

PROFILE_HELP = {
    "tiny": "runs offline on a CPU: LiteMedSAM (pretrained on medical images) and a small diffusion model "
            "with Stable Diffusion's architecture, pretrained by us on phantoms and on unlabelled ultrasound "
            "(the HC18 test-set images, never an annotated one), at 128×128.",
    "paper": "the paper's setup: SAM ViT-B and Stable Diffusion v1.5 at 512×512; needs a GPU and the "
             "model weights (local files, or downloaded when the machine is online).",
}


def build(ctx) -> None:
    gr.Markdown(GUIDE.format(profile=ctx.profile.name, profile_help=PROFILE_HELP.get(ctx.profile.name, "")),
                elem_id="guide-text")  # app.CSS: its tables' first column keeps whole words
