"""Ellipse guidance: part-way through sampling, make the in-channel mask of the model's current estimate an ellipse.

Not in the paper. Why: the tiny base's samples often show an elliptic skull in the image while the B channel
(the in-channel mask) is bean-shaped, has a second small blob or is faint; the Ellipse Extractor then refuses
the pair (first trimester, default LoRAs: 10 of 32 refused, docs/lab/2026-11-pretraining.md). The paper fits an ellipse
after sampling and keeps whatever it gets; here the fit happens WHILE sampling, so the remaining steps draw
the image and the mask around one ellipse together. The Ellipse Extractor still judges the final B channel
with all its rules; nothing is accepted by construction.

At each chosen step (a fraction of the schedule), for every image of the batch:
1. x0 = the sampler's current estimate of the clean latents (UniPC keeps it: model_outputs[-1]);
2. decode x0, take B, fit the ellipse of its largest blob (border points left out, as the extractor does);
3. B' = that ellipse filled (clipped to the frame); encode the picture with B' and with B unchanged, and
   delta = E(with B') - E(with B): the change the mask alone makes (the VAE's own error cancels);
4. shift the sampler's state by delta: its stored clean estimates by delta, its samples by alpha_t * delta
   (x_t = alpha_t * x0 + sigma_t * eps), so its multistep history stays consistent with the new x0.
An image whose B has no blob large enough to be a head is left as it is.

Only UniPC (the paper's sampler, every base's default here) is supported: the state it keeps is what step 4
shifts. diffusers' `callback_on_step_end` runs it, so a seed gives the same image whatever batch it is in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EllipseGuidance:
    # fractions of the schedule after which the mask is made an ellipse (0.2: after step 4 of 20); no default
    # here: each base's own lives in its sampling file (base.base_ellipse_guidance), measured for it
    at: tuple[float, ...]
    threshold: int = 127  # the extractor's threshold (a gray level of B)
    min_area_frac: float = 0.005  # a smaller blob is not a head: left alone

    def __post_init__(self):
        if not self.at:
            raise ValueError("ellipse guidance needs at least one point of the schedule (a fraction in (0, 1))")
        for f in self.at:
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
                raise ValueError(f"ellipse guidance points are fractions of the schedule in (0, 1), got {f!r}")

    def steps(self, n: int) -> set[int]:
        """The step indices (0-based; the callback runs after step i) for an n-step schedule."""
        from .guidance_interval import step_after
        return {s for f in self.at if (s := step_after(f, n)) is not None}

    def as_dict(self) -> dict:
        return {"at": [float(f) for f in self.at]}

    # ------------------------------------------------------------------ the projection
    def project_blue(self, blue: np.ndarray) -> np.ndarray | None:
        """B channel (H, W floats in [0, 1]) -> the filled ellipse of its largest blob (0/1 floats), or None
        when there is no blob large enough to be a head."""
        import cv2

        from ..masks import fit_contour_ellipse, fit_points
        h, w = blue.shape
        binary = (blue * 255.0 > self.threshold).astype(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if not contours:
            return None
        largest = max(contours, key=cv2.contourArea)
        if cv2.contourArea(largest) < self.min_area_frac * h * w:
            return None
        fit = fit_points(largest, (h, w))  # as the Ellipse Extractor fits: border points left out
        e = fit_contour_ellipse(fit) if len(fit) >= 5 else None
        if e is None:
            return None
        return e.fill((h, w)).astype(np.float32)

    def delta(self, vae, x0):
        """The latent change that makes each image's B channel its fitted ellipse: (N, C, h, w) like x0."""
        import torch
        sf = float(vae.config.scaling_factor)
        dtype = next(vae.parameters()).dtype
        with torch.no_grad():
            img = vae.decode(x0.to(dtype) / sf).sample.float()  # (N, 3, H, W) in about [-1, 1]
            pix = ((img + 1) / 2).clamp(0, 1)
            changed = pix.clone()
            keep = []
            for k in range(pix.shape[0]):
                ell = self.project_blue(pix[k, 2].cpu().numpy())
                if ell is not None:
                    changed[k, 2] = torch.from_numpy(ell).to(changed)
                    keep.append(k)
            out = torch.zeros_like(x0)
            if not keep:
                return out
            both = torch.cat([pix[keep], changed[keep]]) * 2 - 1
            lat = vae.encode(both.to(dtype)).latent_dist.mean.float() * sf
            out[keep] = (lat[len(keep):] - lat[:len(keep)]).to(out)
            return out

    def on_step_end(self, then=None):
        """A `callback_on_step_end` for a diffusers pipeline sampled with UniPC; `then` (another such
        callback, e.g. the latent calibration) runs after it."""
        def callback(pipe, i, t, kwargs):
            out = {}
            if i in self.steps(pipe.num_timesteps):
                sch = pipe.scheduler
                check_sampler(sch)
                d = self.delta(pipe.vae, sch.model_outputs[-1].float())
                out["latents"] = shift_sampler(sch, kwargs["latents"], d)
            if then is not None:
                out.update(then(pipe, i, t, dict(kwargs, **out)))
            return out
        return callback


def check_sampler(sch) -> None:
    if not getattr(sch.config, "predict_x0", False) or not hasattr(sch, "last_sample"):
        raise ValueError(f"ellipse guidance needs the UniPC sampler with predict_x0 (its default); this pipeline "
                         f"samples with {type(sch).__name__}")


def shift_sampler(sch, latents, d):
    """Move a UniPC sampler, just after a step, to the trajectory whose clean estimate is x0 + d: its stored
    clean estimates by d, the sample it corrects from (last_sample) and the next sample (`latents`, returned)
    by alpha_t * d at their own noise levels. UniPC's updates are linear in these, so the next corrector and
    predictor steps continue from x0 + d as if the model had predicted it (tested against an exact model)."""
    a_next = _alpha(sch, sch.step_index)
    a_last = _alpha(sch, sch.step_index - 1)
    sch.model_outputs = [m if m is None else m + d.to(m) for m in sch.model_outputs]
    sch.last_sample = sch.last_sample + (a_last * d).to(sch.last_sample)
    return latents + (a_next * d).to(latents)


def parse_ellipse_guidance(text) -> EllipseGuidance | None:
    """"off" (or "none", "0") -> None; "0.2, 0.4, 0.6" -> EllipseGuidance at those fractions; anything else is
    refused with what is expected."""
    t = str(text).strip().lower()
    if t in ("off", "none", "0", "no"):
        return None
    try:
        at = tuple(float(x) for x in t.replace(";", ",").split(",") if x.strip())
    except ValueError:
        raise ValueError(f"ellipse guidance: 'off' or fractions of the schedule such as '0.2, 0.4, 0.6', "
                         f"got {str(text)[:40]!r}") from None
    if len(at) > 10:
        raise ValueError(f"ellipse guidance: at most 10 points of the schedule, got {len(at)}")
    return EllipseGuidance(tuple(sorted(set(at))))


def _alpha(sch, index: int) -> float:
    """alpha_t of the sampler's index-th point (sigma = sqrt((1 - abar) / abar) -> alpha = 1 / sqrt(1 + sigma²))."""
    sigma = float(sch.sigmas[index])
    return 1.0 / (1.0 + sigma * sigma) ** 0.5
