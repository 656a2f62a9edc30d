"""Latent calibration: put the spread of the UNet's final latents back to the encoder's before decoding.

Why: the UNet's final latents (UniPC, 20 steps) vary less than the VAE encoder's latents of real images -- per
channel about 5-15 % less standard deviation and 15-20 % less high-frequency energy (measured 2026-11-26 on
the tiny base with the default LoRAs: docs/lab/2026-11-pretraining.md, stage 8). The decoder learnt on encoder latents, so
it draws such latents smoother than real ultrasound. A fixed per-channel map, measured once per base,
restores the spread:

    z' = center + scale * (z - center)        (per latent channel; z in the UNet's scaled latent space)

It is applied to the last step's latents only (diffusers' `callback_on_step_end`), so the sampler itself is
untouched and a seed gives the same image whatever batch it is in (the map is fixed, not a batch statistic).
A base without a calibration in its sampling file (Stable Diffusion v1.5, the paper profile) is sampled as
is. The numbers live in the base's `sonosynth_sampling.json` under "latent_calibration"; measure them with
`python scripts/latent_calibration.py` (docs/lab/2026-11-pretraining.md, stage 8).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

KEY = "latent_calibration"


@dataclass(frozen=True)
class LatentCalibration:
    center: tuple[float, ...]  # per channel: the generated latents' mean (the map leaves it in place)
    scale: tuple[float, ...]  # per channel: real latents' std / generated latents' std

    def __post_init__(self):
        if len(self.center) != len(self.scale) or not self.center:
            raise ValueError("a latent calibration needs one center and one scale per latent channel "
                             f"(got {len(self.center)} and {len(self.scale)})")
        for name, vals, lo, hi in (("center", self.center, -100.0, 100.0), ("scale", self.scale, 0.5, 2.0)):
            for v in vals:
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) \
                        or not lo <= v <= hi:
                    raise ValueError(f"latent calibration {name} {v!r} is outside {lo:g}..{hi:g}")

    @property
    def channels(self) -> int:
        return len(self.scale)

    def apply(self, latents):
        """(N, C, h, w) tensor -> the calibrated tensor (same dtype and device)."""
        if latents.shape[1] != self.channels:
            raise ValueError(f"this latent calibration is for {self.channels} latent channels, "
                             f"the latents have {latents.shape[1]}")
        import torch
        c = torch.tensor(self.center, dtype=latents.dtype, device=latents.device).view(1, -1, 1, 1)
        s = torch.tensor(self.scale, dtype=latents.dtype, device=latents.device).view(1, -1, 1, 1)
        return c + s * (latents - c)

    def on_step_end(self):
        """A `callback_on_step_end` for a diffusers pipeline: calibrates the latents after the last step."""
        def callback(pipe, i, t, kwargs):
            if i == pipe.num_timesteps - 1:
                return {"latents": self.apply(kwargs["latents"])}
            return {}
        return callback

    def as_dict(self) -> dict:
        return {"center": [round(float(v), 4) for v in self.center],
                "scale": [round(float(v), 4) for v in self.scale]}

    @classmethod
    def from_dict(cls, d, where: str = "latent calibration") -> "LatentCalibration":
        if not isinstance(d, dict) or not isinstance(d.get("center"), list) or not isinstance(d.get("scale"), list):
            raise ValueError(f"{where}: expected {{\"center\": [...], \"scale\": [...]}}, got {d!r:.80}")
        try:
            return cls(tuple(d["center"]), tuple(d["scale"]))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    @classmethod
    def measure(cls, real_latents, generated_latents) -> "LatentCalibration":
        """From encoder latents of real images and the UNet's final latents (both scaled, (N, C, h, w))."""
        dims = (0, 2, 3)
        gm, gs = generated_latents.mean(dim=dims), generated_latents.std(dim=dims)
        rs = real_latents.std(dim=dims)
        return cls(tuple(float(v) for v in gm), tuple(float(v) for v in rs / gs))
