"""A LoRA strength x seed grid (AUTOMATIC1111's X/Y plot): what the LoRA does, in one labelled picture.

    python -m pipeline lora-grid --lora outputs/loras/hc18-second --trimester second \
        --scales 0,0.5,0.9,1.2 --seeds 0,1,2 --out grid.png

Columns are LoRA strengths (the adapter weight given to set_adapters; 0 = the base model alone), rows are
seeds. A seed keeps its starting noise across a row (one seeded generator per image, as in generation), so
reading a row left to right shows only what the LoRA's strength changes. Each cell is the generated
image (gray) with the ellipse the Ellipse Extractor found drawn on it and its verdict underneath
("valid" / the refusal). Few sampler steps by default (8): a grid is a look, not a dataset, and it must
be quick on a CPU. Nothing is written to a synthetic dataset.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..config import GenerationDefaults, add_profile_argument, resolve_profile
from ..masks import TRIMESTERS
from ..validate import check_trimester

_G = GenerationDefaults()
MAX_AXIS = 8  # at most 8 strengths and 8 seeds: 64 images is already minutes on a CPU
GRID_STEPS = 8


@dataclass
class GridConfig:
    lora: str | None = None  # a LoRA folder (or .safetensors); required
    trimester: str = "second"
    scales: tuple[float, ...] = (0.0, 0.5, 0.9, 1.2)
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = GRID_STEPS
    guidance: float | None = None  # None: the base's own (base.base_guidance)
    threshold: int = _G.extractor_threshold
    base: str | None = None  # a diffusers folder or hub id; None: the tiny base (the CLI and tab pass the profile's)
    precision: str = "auto"
    cells: list[dict] = field(default_factory=list)  # filled in: one record per image

    def validate(self) -> None:
        from ..validate import check_float, check_int
        from .generate import PRECISIONS
        check_trimester(self.trimester)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        self.scales = tuple(check_float(s, "LoRA strength", 0, 4) for s in _as_list(self.scales, "LoRA strengths"))
        self.seeds = tuple(check_int(s, "seed", 0, 2**32 - 1) for s in _as_list(self.seeds, "seeds"))
        for name, vals in (("LoRA strengths", self.scales), ("seeds", self.seeds)):
            if not 1 <= len(vals) <= MAX_AXIS:
                raise ValueError(f"give 1 to {MAX_AXIS} {name} (got {len(vals)})")
            if len(set(vals)) != len(vals):
                raise ValueError(f"the {name} repeat a value: {', '.join(f'{v:g}' for v in vals)}")
        self.steps = check_int(self.steps, "steps", 1, 1000)
        if self.guidance is not None:
            self.guidance = check_float(self.guidance, "guidance", 0, 50)
        self.threshold = check_int(self.threshold, "the extractor threshold (a gray level)", 0, 255)
        if not self.lora:  # last: every number is checked even when no LoRA was picked yet
            raise ValueError("pick a LoRA: the grid shows what a LoRA changes")


def _as_list(v, what: str) -> list:
    """A list from a list/tuple or from text such as "0, 0.5, 0.9" (the CLI and the tab's text field)."""
    if isinstance(v, str):
        parts = [p for p in v.replace(";", ",").replace(" ", ",").split(",") if p]
        try:
            return [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"{what}: expected numbers separated by commas, got {v!r}") from None
    if isinstance(v, (int, float)):
        return [v]
    return list(v or [])


def parse_numbers(text: str, what: str) -> list[float]:
    return _as_list(text, what)


def lora_grid(cfg: GridConfig, progress=None) -> tuple[np.ndarray, list[dict]]:
    """(the labelled grid picture (H, W, 3) uint8, one record per cell {scale, seed, valid, reason}).

    One sampler call per strength with every seed in it; the strength is set on the shared pipeline and
    the images made under the generation lock, so a generation running at the same time never sees
    another strength."""
    from .base import BaseSampling, prompt_for, resolve_base
    from .generate import _LOCK, get_pipeline, make_sample, run_pipeline
    cfg.validate()
    sampling = BaseSampling.of(cfg.base, cfg.guidance)  # otherwise sampled as generate() samples by default
    prompt = prompt_for(cfg.trimester)
    params = {"prompt": prompt, "trimester": cfg.trimester, "steps": int(cfg.steps),
              "base": str(cfg.base or resolve_base(None)), "lora": str(cfg.lora), "threshold": int(cfg.threshold),
              **sampling.record()}
    cells: list[list] = []
    records: list[dict] = []
    for j, scale in enumerate(cfg.scales):
        with _LOCK:  # the strength is pipeline state: set and used without another request in between
            p = get_pipeline(cfg.base, cfg.lora, scale)
            images = run_pipeline(p, prompt, list(cfg.seeds), cfg.steps, sampling, cfg.precision)
        col = []
        for seed, im in zip(cfg.seeds, images):
            rgb = (np.clip(im, 0, 1) * 255).round().astype(np.uint8)
            smp = make_sample(rgb, int(seed), {**params, "scale": float(scale)}, cfg.threshold, None, cfg.lora)
            col.append(smp)
            records.append({"scale": float(scale), "seed": int(seed), "valid": bool(smp.valid),
                            "reason": smp.extraction.reason})
        cells.append(col)
        if progress is not None:
            progress(j + 1, len(cfg.scales))
    cfg.cells = records
    return compose(cells, cfg.scales, cfg.seeds), records


def compose(cells: list[list], scales, seeds) -> np.ndarray:
    """cells[column][row] (GeneratedSample) -> one picture: a header row naming each column's strength,
    a left column naming each row's seed, each cell's verdict under its image."""
    import cv2
    pics = [[c.picture() for c in col] for col in cells]
    h, w = pics[0][0].shape[:2]
    cell = max(128, w)  # small bases (128²) are drawn at least 128 px wide so the labels stay readable
    head, left, foot = 28, 70, 18
    H = head + len(seeds) * (cell + foot)
    W = left + len(scales) * cell
    out = np.full((H, W, 3), 255, np.uint8)
    font, fs = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    for j, scale in enumerate(scales):
        label = "base (0)" if scale == 0 else f"LoRA {scale:g}"
        cv2.putText(out, label, (left + j * cell + 6, 19), font, fs, (0, 0, 0), 1, cv2.LINE_AA)
    for i, seed in enumerate(seeds):
        y0 = head + i * (cell + foot)
        cv2.putText(out, f"seed {int(seed)}", (4, y0 + cell // 2), font, fs, (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(len(scales)):
            pic = pics[j][i]
            if pic.shape[:2] != (cell, cell):
                pic = cv2.resize(pic, (cell, cell), interpolation=cv2.INTER_NEAREST)
            x0 = left + j * cell
            out[y0:y0 + cell, x0:x0 + cell] = pic[..., :3]
            ok = cells[j][i].valid
            # a refusal's name only ("two heads", "open shape"): its explanation is in the .json / the reason
            text = "valid" if ok else cells[j][i].extraction.reason.split(":")[0]
            cv2.putText(out, text[:24], (x0 + 4, y0 + cell + 13), font, 0.38,
                        (0, 128, 0) if ok else (200, 0, 0), 1, cv2.LINE_AA)
    return out


# ----------------------------------------------------------------------------- CLI
def add_arguments(p, command: str = "lora-grid") -> None:
    d = GridConfig()
    p.add_argument("--lora", required=True, help="LoRA folder from train-lora (or its .safetensors)")
    p.add_argument("--trimester", choices=TRIMESTERS, default=d.trimester, help="the trimester named in the prompt")
    p.add_argument("--scales", default=",".join(f"{s:g}" for s in d.scales),
                   help=f"LoRA strengths, the columns (0 = the base model alone; at most {MAX_AXIS})")
    p.add_argument("--seeds", default=",".join(str(s) for s in d.seeds), help=f"seeds, the rows (at most {MAX_AXIS})")
    p.add_argument("--steps", type=int, default=d.steps,
                   help="UniPC sampler steps (fewer than generation's 20: a quick look)")
    p.add_argument("--guidance", type=float, default=d.guidance, help="classifier-free guidance (default: the base's own)")
    p.add_argument("--base", default=None, help="diffusers folder or hub id (default: the profile's base)")
    p.add_argument("--out", required=True, help="the grid picture (.png); a .json with each cell's verdict beside it")
    add_profile_argument(p)


def run(args) -> int:
    from ..fileio import atomic_save_png, atomic_write_json
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file, got {out.name!r}")
    profile = resolve_profile(args.profile)
    cfg = GridConfig(lora=args.lora, trimester=args.trimester, scales=parse_numbers(args.scales, "--scales"),
                     seeds=[int(s) if float(s).is_integer() else s for s in parse_numbers(args.seeds, "--seeds")],
                     steps=args.steps, guidance=args.guidance, base=profile.diffusion(args.base))
    cfg.validate()  # every setting checked before the model loads
    t0 = time.time()
    picture, cells = lora_grid(cfg, progress=lambda k, n: print(f"strength {k}/{n}", flush=True))
    atomic_save_png(out, picture)
    atomic_write_json(out.with_suffix(".json"), {**asdict(cfg), "seconds": round(time.time() - t0, 2)})
    valid = {f"{s:g}": sum(c["valid"] for c in cells if c["scale"] == s) for s in cfg.scales}
    print(f"{out} ({len(cfg.seeds)} seeds x {len(cfg.scales)} strengths, {time.time() - t0:.1f} s); valid ellipses "
          f"per strength: " + json.dumps(valid))
    return 0
