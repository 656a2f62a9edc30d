"""Timestep bias for LoRA training: which noise levels a LoRA spends its steps on.

The paper's recipe (diffusers' train_text_to_image_lora.py) draws every training timestep uniformly. diffusers'
SDXL script offers a bias (`--timestep_bias_strategy / _portion / _multiplier`, its `generate_timestep_weights`):
the share `portion` of the timesteps at the noisy end ("later") or the clean end ("earlier") is drawn
`multiplier` times as often. The same three settings, with the same meaning, here.

Why it is here: the tiny base's first-trimester samples that come out without a head had one part-way, which
the UNet erased between t ≈ 650 and t ≈ 450 (docs/lab/2026-11-pretraining.md, 2026-11-27 afternoon); a LoRA that spends
more of its steps at t ≥ 500 might learn the head's presence more firmly. Measured on the tiny base
(2026-11-27 evening): it does on the first trimester (+8 and +11 valid of 192 over three LoRA draws), but at
the cost of second-trimester masks, QC and third-trimester realism, so the tiny base declares none. A base
declares its own, measured for it, in its SAMPLING_FILE under "lora_timestep_bias"; a base without the entry
(Stable Diffusion v1.5, the tiny base) trains uniformly, as the paper does.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

STRATEGIES = ("none", "earlier", "later")


@dataclass(frozen=True)
class TimestepBias:
    strategy: str = "none"  # diffusers' defaults: no bias, a quarter of the schedule, multiplier 1
    portion: float = 0.25
    multiplier: float = 1.0

    def __post_init__(self):
        check_timestep_bias(self.strategy, self.portion, self.multiplier)

    @property
    def active(self) -> bool:
        """False draws uniformly with the paper's call (torch.randint), so its runs repeat exactly."""
        return self.strategy != "none" and self.multiplier != 1.0

    def weights(self, num_timesteps: int):
        """Per-timestep draw probabilities (diffusers' generate_timestep_weights for earlier/later)."""
        import torch
        w = torch.ones(num_timesteps)
        n = max(1, int(self.portion * num_timesteps))
        if self.strategy == "later":
            w[num_timesteps - n:] *= self.multiplier
        elif self.strategy == "earlier":
            w[:n] *= self.multiplier
        return w / w.sum()

    def sample(self, num_timesteps: int, n: int, generator):
        """n training timesteps drawn from the seeded CPU generator."""
        import torch
        if not self.active:
            return torch.randint(0, num_timesteps, (n,), generator=generator)
        return torch.multinomial(self.weights(num_timesteps), n, replacement=True, generator=generator)

    def describe(self) -> str:
        if not self.active:
            return "uniform (the paper)"
        end = "noisiest" if self.strategy == "later" else "cleanest"
        return f"the {end} {self.portion:.0%} of the timesteps drawn {self.multiplier:g}× as often"


def check_timestep_bias(strategy, portion, multiplier, where: str = "") -> tuple[str, float, float]:
    """The three settings checked, each refused with its name (and `where`, e.g. a file, when given)."""
    from ..data import DataError
    from ..validate import check_float
    at = f"{where}: " if where else ""
    if strategy not in STRATEGIES:
        raise DataError(f"{at}timestep bias strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r:.40}")
    portion = check_float(portion, f"{at}timestep bias portion", 0, 1, lo_open=True)
    multiplier = check_float(multiplier, f"{at}timestep bias multiplier", 0, 1000, lo_open=True)
    return strategy, portion, multiplier


def check_asked_timestep_bias(strategy, portion, multiplier) -> tuple:
    """The values a user set checked as check_timestep_bias does; an unset one (None) stays None."""
    d = TimestepBias()
    checked = check_timestep_bias(d.strategy if strategy is None else strategy,
                                  d.portion if portion is None else portion,
                                  d.multiplier if multiplier is None else multiplier)
    return tuple(None if v is None else c for v, c in zip((strategy, portion, multiplier), checked))


def base_timestep_bias(base: str | os.PathLike | None = None) -> TimestepBias:
    """The LoRA timestep bias measured for a base (its SAMPLING_FILE's "lora_timestep_bias": {"strategy",
    "portion", "multiplier"}), else none: a hub id or a folder without the entry trains as the paper does."""
    from .base import sampling_record
    found = sampling_record(base)
    if found is None or found[1].get("lora_timestep_bias") is None:
        return TimestepBias()
    f, rec = found
    tb = rec["lora_timestep_bias"]
    if not isinstance(tb, dict) or set(tb) - {"strategy", "portion", "multiplier"}:
        raise ValueError(f"{f}: lora_timestep_bias must be {{\"strategy\", \"portion\", \"multiplier\"}}, "
                         f"got {tb!r:.80}")
    d = TimestepBias()
    return TimestepBias(*check_timestep_bias(tb.get("strategy", d.strategy), tb.get("portion", d.portion),
                                             tb.get("multiplier", d.multiplier), f"{f}: lora_timestep_bias"))


# the settings of a LoRA run saved before the bias existed: it drew its timesteps uniformly
UNBIASED = {f"timestep_bias_{k}": v for k, v in asdict(TimestepBias()).items()}


def resolve_timestep_bias(asked: dict, base, saved: dict | None, base_size: bool = True) -> dict:
    """The three LoRA settings (UNBIASED's keys) a run trains with: each asked value (not None) wins; else a
    resumed run's own (so a run keeps the bias it began with, and one begun before the setting existed stays
    uniform); else the base's own (base_timestep_bias) for a LoRA at the base's own size (`base_size`), the
    LoRAs it was measured for. A LoRA at another size, the detail pass's, trains uniformly: the detail pass
    re-runs only the last part of the schedule, the clean end a "later" bias would starve."""
    if all(asked.get(k) is not None for k in UNBIASED):
        own = None
    elif saved is not None:
        own = {k: saved.get(k, v) for k, v in UNBIASED.items()}
    elif not base_size:
        own = dict(UNBIASED)
    else:
        b = base_timestep_bias(base)
        own = {"timestep_bias_strategy": b.strategy, "timestep_bias_portion": b.portion,
               "timestep_bias_multiplier": b.multiplier}
    out = {k: asked[k] if asked.get(k) is not None else own[k] for k in UNBIASED}
    s, p, m = check_timestep_bias(*out.values())
    return {"timestep_bias_strategy": s, "timestep_bias_portion": p, "timestep_bias_multiplier": m}
