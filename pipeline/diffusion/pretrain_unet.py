"""Stage 3 of `pretrain-base` (pretrain.py): the UNet and the tiny CLIP text encoder, trained together on the
frozen VAE's cached latents. Prompts: each phantom's trimester prompt, 10 % empty (classifier-free guidance),
UNLABELLED_PROMPT for an unlabelled view; min-SNR-5 weighted epsilon loss; EMA of the weights, which is what
the base keeps. Resumable from unet.pt in the work folder."""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from ..fileio import atomic_write_json
from ..masks import TRIMESTERS
from .pretrain_run import StageRun, _save_ckpt, ema_update

UNLABELLED_PROMPT = "An ultrasound image of a fetal head"


def prompt_ids(tok, dev):
    """Token ids of the prompts pretraining conditions on: 0..2 the trimester prompts, 3 empty, 4 unlabelled."""
    from .base import prompt_for
    return tok([prompt_for(t) for t in TRIMESTERS] + ["", UNLABELLED_PROMPT], padding="max_length",
               max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids.to(dev)


class UnetLatents:
    """Swaps a share of a decoder batch's latents for the (frozen) UNet's one-step clean estimate of them, noised
    to a random level: z_t = sqrt(a_t) z + sqrt(1 - a_t) e, z0 = (z_t - sqrt(1 - a_t) e_hat) / sqrt(a_t), with the
    trimester prompt for phantoms and the unlabelled caption for real views (the conditions the UNet learnt)."""

    def __init__(self, cfg, unet, te, tok, sched, dev):
        import torch
        if sched.config.prediction_type != "epsilon":
            raise ValueError(f"vae_unet_latent_frac needs an epsilon-predicting scheduler, not "
                             f"{sched.config.prediction_type!r}")
        self.frac, self.t_max, self.unet = float(cfg.vae_unet_latent_frac), int(cfg.vae_unet_t_max), unet.eval()
        with torch.no_grad():
            self.text = te.eval()(prompt_ids(tok, dev))[0]
        self.alphas = sched.alphas_cumprod.to(dev)

    def __call__(self, z, prompt_idx: np.ndarray, g=None, sf: float = 1.0):
        import torch
        n = z.shape[0]
        pick = (torch.rand(n, generator=g) < self.frac).to(z.device)
        t = torch.randint(1, self.t_max + 1, (n,), generator=g).to(z.device)
        noise = torch.randn(z.shape, generator=g).to(z.device, z.dtype)
        rows = pick.nonzero().flatten()  # the UNet runs on the picked rows only (all draws made above, as before)
        if len(rows) == 0:
            return z
        a = self.alphas[t[rows]].view(-1, 1, 1, 1).to(z.dtype)
        prompts = self.text[torch.as_tensor(prompt_idx, device=z.device)[rows]]
        with torch.no_grad():
            zt = a.sqrt() * z.detach()[rows] * sf + (1 - a).sqrt() * noise[rows]
            eps = self.unet(zt, t[rows], encoder_hidden_states=prompts).sample.to(z.dtype)
            z0 = (zt - (1 - a).sqrt() * eps) / a.sqrt() / sf
        return z.index_put((rows,), z0)


def encode_all(vae, rgb: np.ndarray, chunk: int = 64) -> dict:
    """Posterior mean and std of every image, on the CPU (the cache is device-independent)."""
    import torch
    from .base import rgb_to_tensor
    means, stds = [], []
    dev = next(vae.parameters()).device
    with torch.no_grad():
        for i in range(0, len(rgb), chunk):
            d = vae.encode(rgb_to_tensor(rgb[i:i + chunk]).to(dev)).latent_dist
            means.append(d.mean.float().cpu()); stds.append(d.std.float().cpu())
    return {"mean": torch.cat(means), "std": torch.cat(stds)}


def latent_scaling(cfg, vae, lat: dict) -> float:
    """SD's convention: latents * scaling_factor have unit variance. A kept encoder keeps its factor (the
    init base's UNet was trained at that scale)."""
    if cfg.vae_train == "decoder":
        return float(vae.config.scaling_factor)
    return float(1.0 / lat["mean"].std())


def encode_latents(run: StageRun, vae, sizes: tuple[int, ...], data_at: dict, real_at: dict | None):
    """The latents once (the VAE is frozen from here): posterior mean and std of every phantom and unlabelled
    view, at every size, cached in the work folder; the latent scaling factor, set on the VAE's config.
    -> ({size: latents on the run's device}, scaling factor)."""
    import torch
    lat_at = {}
    for s in sizes:
        lat_path = run.work / ("latents.pt" if s == sizes[0] else f"latents_{s}.pt")
        if lat_path.is_file():
            lat = torch.load(lat_path, map_location="cpu")
        else:
            lat = encode_all(vae, data_at[s])
            if real_at is not None:  # unlabelled: R = G = image, B = 0 (no mask)
                rs = real_at[s]
                rl = encode_all(vae, np.concatenate([np.repeat(rs[..., None], 2, axis=3),
                                                     np.zeros_like(rs)[..., None]], axis=3))
                lat.update(real_mean=rl["mean"], real_std=rl["std"])
            _save_ckpt(lat_path, lat)
        lat_at[s] = lat
    sf = latent_scaling(run.cfg, vae, lat_at[sizes[0]])
    vae.register_to_config(scaling_factor=sf)
    atomic_write_json(run.work / "scaling_factor.json", {"scaling_factor": sf})
    return {s: {k: v.to(run.dev) for k, v in lat.items()} for s, lat in lat_at.items()}, sf


class _UnetState:
    """The UNet stage's trainable parts, optimizer, EMA and position, from unet.pt when there is one."""

    def __init__(self, run: StageRun, unet, te):
        import torch
        self.run, self.unet, self.te = run, unet, te
        self.params = list(unet.parameters()) + list(te.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=run.cfg.unet_lr, weight_decay=1e-2)
        self.ema = [p.detach().clone() for p in self.params]
        self.step = 0
        self.ck = run.work / "unet.pt"
        if self.ck.is_file():
            ck = torch.load(self.ck, weights_only=False, map_location=run.dev)
            unet.load_state_dict(ck["unet"]); te.load_state_dict(ck["te"]); self.opt.load_state_dict(ck["opt"])
            self.ema = ck["ema"]; self.step = ck["step"]; run.g.set_state(ck["rng"].cpu())

    def save(self) -> None:
        _save_ckpt(self.ck, {"unet": self.unet.state_dict(), "te": self.te.state_dict(), "opt": self.opt.state_dict(),
                             "ema": self.ema, "step": self.step, "rng": self.run.g.get_state()})
        self.run.clock()


def _unet_step(run: StageRun, st: _UnetState, sched, ids, snr, lat: dict, batch: int, tri_t, sf: float) -> float:
    """One UNet + text encoder step on a batch of cached latents of one size; every random draw comes from the
    CPU generator run.g (the same stream on any device), then moves. -> the loss."""
    import torch
    cfg, dev, g = run.cfg, run.dev, run.g
    n_real = int(round(batch * run.real_frac))
    idx = torch.randint(len(run.data), (batch - n_real,), generator=g)
    mu, sd = lat["mean"][idx.to(dev)], lat["std"][idx.to(dev)]
    which = tri_t[idx].clone()
    if n_real:
        ridx = torch.randint(len(lat["real_mean"]), (n_real,), generator=g).to(dev)
        mu, sd = torch.cat([mu, lat["real_mean"][ridx]]), torch.cat([sd, lat["real_std"][ridx]])
        which = torch.cat([which, torch.full((n_real,), 4)])
    z = (mu + sd * torch.randn(mu.shape, generator=g).to(dev)) * sf
    if torch.rand((), generator=g) < 0.5:  # heads face either way in real scans
        z = z.flip(3)
    noise = torch.randn(z.shape, generator=g).to(dev)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(z),), generator=g).to(dev)
    noisy = sched.add_noise(z, noise, t)
    which[torch.rand(len(z), generator=g) < cfg.uncond_prob] = 3
    which = which.to(dev)
    for pg in st.opt.param_groups:
        pg["lr"] = cfg.unet_lr * min(1.0, (st.step + 1) / 100)
    with torch.autocast(**run.amp):
        emb = st.te(ids)[0]  # 4 prompts through the encoder, then gathered: cheap and trains it
        pred = st.unet(noisy, t, encoder_hidden_states=emb[which]).sample
    w = torch.clamp(snr[t], max=cfg.min_snr_gamma) / snr[t]  # min-SNR weighting (Hang et al. 2023)
    loss = (w * ((pred.float() - noise) ** 2).mean(dim=(1, 2, 3))).mean()
    st.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(st.params, 1.0)
    st.opt.step()
    return float(loss.detach())


def train_unet(run: StageRun, comps: dict, lat_at: dict, sf: float, sizes: tuple[int, ...]) -> Iterator[dict]:
    """The stage as a generator of {"kind": "stage" | "step" | "stopped"} events; returns True when every step
    is done (the EMA weights then in the UNet and text encoder), False when stopped (checkpoint saved)."""
    import torch
    cfg, unet, te, sched = run.cfg, comps["unet"], comps["text_encoder"], comps["scheduler"]
    ids = prompt_ids(comps["tokenizer"], run.dev)
    st = _UnetState(run, unet, te)
    batch_at = dict(cfg.unet_sizes())
    alphas = sched.alphas_cumprod.to(run.dev)
    snr = alphas / (1 - alphas)
    tri_t = torch.from_numpy(run.tri)
    yield {"kind": "stage", "stage": "unet", "step": st.step, "total": cfg.unet_steps, "scaling_factor": sf}
    unet.train(); te.train()
    while st.step < cfg.unet_steps:
        if run.stopped():
            st.save()
            yield {"kind": "stopped", "stage": "unet", "step": st.step}
            return False
        size = sizes[st.step % len(sizes)]  # one size per step, in turn
        loss = _unet_step(run, st, sched, ids, snr, lat_at[size], batch_at[size], tri_t, sf)
        st.step += 1
        if not math.isfinite(loss):
            raise FloatingPointError(f"UNet loss is not finite at step {st.step}: the run is stopped, its last "
                                     f"checkpoint ({st.ck}) is kept; lower the learning rate")
        ema_update(st.ema, st.params, cfg.ema_decay, st.step)
        yield {"kind": "step", "stage": "unet", "step": st.step, "total": cfg.unet_steps, "loss": loss}
        if st.step % cfg.ckpt_every == 0 or st.step == cfg.unet_steps:
            st.save()
    with torch.no_grad():  # the base keeps the EMA weights
        for p, e in zip(st.params, st.ema):
            p.copy_(e)
    unet.eval(); te.eval()
    return True
