"""Classifier-free guidance for the first part of the schedule only ("guidance until").

Not in the paper (which guides every step, as Stable Diffusion does). Why: on 2 CPU cores the UNet is most of a
sample's cost and guidance doubles it (an unconditional pass beside the prompted one). By the last steps the
layout (one head, its size, where it lies) is fixed and the steps refine texture; Kynkäänniemi et al. 2024
("Applying guidance in a limited interval improves sample and distribution quality in diffusion models")
found guidance at low noise levels unneeded. After the chosen fraction of the schedule the sampler runs the
prompted pass alone: with 0.6, 8 of 20 steps at half the cost. Each base's own value is measured for it and
kept in its sampling file (base.base_guidance_until); 1 (every step) is the paper's sampling.

How: diffusers' documented "dynamic classifier-free guidance" callback (set the pipeline's guidance scale to
1 and keep the prompted half of the text embeddings); it runs per step for the whole batch, so a seed gives
the same image whatever batch it is in.
"""
from __future__ import annotations

# the callback reads and replaces the text embeddings, so a pipeline call must hand them to it
TENSOR_INPUTS = ["latents", "prompt_embeds"]


def check_guidance_until(value, where: str = "guidance until") -> float:
    """A fraction of the schedule in (0, 1]; 1 guides every step (the paper)."""
    from ..validate import check_float
    return check_float(value, f"{where} (the share of the steps with classifier-free guidance; 1 = all)", 0, 1,
                       lo_open=True)


def step_after(fraction: float, n: int) -> int | None:
    """The step (0-based; a step-end callback runs after it) by which `fraction` of an n-step schedule is done,
    kept before the last step so a change there still reaches the output; None when n < 2 or fraction >= 1.
    Ellipse guidance places its points with it too."""
    if fraction >= 1 or n < 2:
        return None
    return min(n - 2, max(0, int(round(fraction * n)) - 1))


def stop_step(fraction: float, n: int) -> int | None:
    """The step (0-based) after which guidance stops in an n-step schedule; None: it never stops."""
    return step_after(fraction, n)


def on_step_end(fraction: float, then=None):
    """A `callback_on_step_end` that stops classifier-free guidance after `fraction` of the steps; `then`
    (another such callback: ellipse guidance, latent calibration) runs first, on the same step."""
    def callback(pipe, i, t, kwargs):
        out = dict(then(pipe, i, t, kwargs)) if then is not None else {}
        if i == stop_step(fraction, pipe.num_timesteps) and pipe.do_classifier_free_guidance:
            pipe._guidance_scale = 1.0  # the pipeline's own switch (diffusers docs: dynamic CFG callback)
            out["prompt_embeds"] = kwargs["prompt_embeds"].chunk(2)[-1]  # [unconditional, prompted] -> prompted
        return out
    return callback
