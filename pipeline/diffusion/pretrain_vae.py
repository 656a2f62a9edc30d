"""Stage 2 of `pretrain-base` (pretrain.py): the autoencoder (AutoencoderKL) on random crops (it is fully
convolutional), bf16 autocast where native. Loss: L1 + a Fourier-amplitude term + a local-contrast term (L1
alone averages speckle away; the two extra terms ask for the same texture energy); `--vae-adv-weight` adds a
patch discriminator on the image channel (the pixel terms make the decoder draw the average of the speckle a
latent allows; the discriminator asks for a sample of it). Unlabelled crops carry a random filled ellipse in
B (the VAE must carry any mask over real texture). `--vae-train decoder` keeps the encoder, so the latent
space, of `--init-base`. Resumable from vae.pt in the work folder."""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from .pretrain_run import StageRun, _save_ckpt, ema_update
from .pretrain_unet import UnetLatents


def random_ellipse_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A filled ellipse anywhere in (partly outside) the frame: the VAE learns to carry any head mask."""
    from ..masks import Ellipse
    e = Ellipse(rng.uniform(0.2, 0.8) * size, rng.uniform(0.2, 0.8) * size, rng.uniform(0.25, 0.9) * size,
                rng.uniform(0.25, 0.9) * size, rng.uniform(0, 180))
    return e.fill((size, size))


def judge_vae(vae, spec: str | None, n: int, size: int) -> dict | None:
    """Reconstruction of REAL image+mask pairs (never trained on): image L1 (0-255 scale) and mask IoU."""
    from ..data import open_source
    from .base import to_model_size
    if not spec:
        return None
    src = open_source(spec)
    idx = np.linspace(0, len(src) - 1, min(n, len(src))).round().astype(int)
    return judge_vae_pairs(vae, np.stack([to_model_size(src[int(i)].image, src[int(i)].mask, size) for i in idx]))


def judge_vae_pairs(vae, x: np.ndarray) -> dict:
    """judge_vae on (N, R, R, 3) uint8 in-channel pairs; 'detail' = mean |vertical gradient| of the image,
    which speckle dominates (a blurred reconstruction has less than the real image)."""
    import torch
    from .base import rgb_to_tensor, tensor_to_rgb
    dev = next(vae.parameters()).device
    with torch.no_grad():
        rec = tensor_to_rgb(vae.decode(vae.encode(rgb_to_tensor(x).to(dev)).latent_dist.mean).sample)
    l1 = float(np.abs(rec[..., :2].astype(np.float32) - x[..., :2]).mean())
    a, b = rec[..., 2] > 127, x[..., 2] > 127
    iou = float((a & b).sum() / max(1, (a | b).sum()))
    return {"image_l1": round(l1, 2), "mask_iou": round(iou, 4), "n": len(x),
            "detail_real": round(image_detail(x), 2), "detail_rec": round(image_detail(rec), 2)}


def image_detail(x: np.ndarray) -> float:
    """Mean |vertical gradient| of the image channel of (N, R, R, 3) uint8 in-channel pairs: speckle dominates
    it, so a blurred image has less than the real one."""
    return float(np.mean([np.abs(np.diff(im.astype(np.float32), axis=0)).mean() for im in x[..., 0]]))


# ----------------------------------------------------------------------------- losses
def vae_recon_loss(rec, x, echo_weight: float = 0.0):
    """L1 + Fourier amplitude (log) L1 + local-contrast L1: keeps speckle energy that plain L1 blurs.
    echo_weight k > 0 weighs each pixel's L1 by 1 + k * its brightness in the target image (0..1), so the bright
    skull echo costs more to lose than the dark background."""
    import torch
    import torch.nn.functional as F
    err = (rec - x).abs()
    if echo_weight > 0:
        err = err * (1 + echo_weight * (image_channel(x) + 1) / 2)
    l1 = err.mean()
    fa = torch.log1p(torch.fft.rfft2(rec.float(), norm="ortho").abs())
    fb = torch.log1p(torch.fft.rfft2(x.float(), norm="ortho").abs())
    freq = (fa - fb).abs().mean()

    def local_std(z):
        mu = F.avg_pool2d(z, 5, 1, 2)
        return (F.avg_pool2d(z * z, 5, 1, 2) - mu * mu).clamp_min(1e-6).sqrt()
    contrast = (local_std(rec.float()) - local_std(x.float())).abs().mean()
    return l1 + 0.3 * freq + 0.5 * contrast


def build_discriminator(seed: int):
    """MONAI's PatchDiscriminator (pix2pix / taming-transformers' NLayerDiscriminator) on ONE channel, the
    image (R = G): it judges texture patch by patch (receptive field 70 px); the mask channel is the pixel
    losses' job."""
    import torch
    from monai.networks.nets import PatchDiscriminator
    torch.manual_seed(seed + 101)
    return PatchDiscriminator(spatial_dims=2, num_layers_d=3, channels=32, in_channels=1, out_channels=1)


def image_channel(x):
    """(N, 3, H, W) in-channel tensor -> (N, 1, H, W): the image, the mean of R and G."""
    return x[:, :2].mean(dim=1, keepdim=True)


def adaptive_weight(rec_loss, adv_loss, last_weight) -> float:
    """latent-diffusion's LPIPSWithDiscriminator.calculate_adaptive_weight (deliberate copy, 2026-11-26): the
    ratio of the two losses' gradient norms at the decoder's last layer, so the adversarial pull stays in
    proportion to the reconstruction's whatever their scales (no per-dataset tuning of the weight)."""
    import torch
    g_rec = torch.autograd.grad(rec_loss, last_weight, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv_loss, last_weight, retain_graph=True)[0]
    return float((g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4))


def vae_trainable(vae, which: str) -> list:
    """The VAE parameters that train: all, or the decoder side only (encoder frozen = latent space kept)."""
    if which == "all":
        return list(vae.parameters())
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    return list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())


def _param_names(model, params) -> list[str]:
    """The names of `params` in `model`, in the order of `params` (EMA checkpoints key by name)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for p in params]


# ----------------------------------------------------------------------------- the stage
class _VaeState:
    """The VAE stage's trainable parameters, optimizer, optional discriminator, EMA and position, from vae.pt
    when there is one (with both random streams)."""

    def __init__(self, run: StageRun, vae):
        import torch
        cfg, dev = run.cfg, run.dev
        self.run, self.vae, self.ck = run, vae, run.work / "vae.pt"
        self.params = vae_trainable(vae, cfg.vae_train)
        self.opt = torch.optim.AdamW(self.params, lr=cfg.vae_lr, weight_decay=0.0)
        self.disc = self.d_opt = self.adv = None
        if cfg.vae_adv_weight > 0 and cfg.vae_steps > 0:
            from monai.losses import PatchAdversarialLoss
            self.disc = build_discriminator(cfg.seed).to(dev).train()
            self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999))
            self.adv = PatchAdversarialLoss(criterion="least_squares")
        self.step = 0
        self.ema = [p.detach().clone() for p in self.params] if cfg.vae_ema_decay > 0 else None
        self.ema_names = _param_names(vae, self.params)
        if self.ck.is_file():
            ck = torch.load(self.ck, weights_only=False, map_location=dev)
            vae.load_state_dict(ck["model"]); self.opt.load_state_dict(ck["opt"]); self.step = ck["step"]
            run.g.set_state(ck["rng"].cpu())
            if "rng_np" in ck:
                run.rng_np.bit_generator.state = ck["rng_np"]
            if self.disc is not None and "disc" in ck:
                self.disc.load_state_dict(ck["disc"]); self.d_opt.load_state_dict(ck["d_opt"])
            if self.ema is not None and "ema" in ck:
                self.ema = [ck["ema"][n].to(dev) for n in self.ema_names]

    def save(self) -> None:
        state = {"model": self.vae.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                 "rng": self.run.g.get_state(), "rng_np": self.run.rng_np.bit_generator.state}
        if self.ema is not None:  # the averaged weights, by parameter name (what the saved VAE will be)
            state["ema"] = dict(zip(self.ema_names, self.ema))
        if self.disc is not None:
            state.update(disc=self.disc.state_dict(), d_opt=self.d_opt.state_dict())
        _save_ckpt(self.ck, state)
        self.run.clock()


def _vae_batch(run: StageRun, n_real: int):
    """One step's crops, all at one random offset: phantoms, then unlabelled views with a random ellipse (or
    no mask) in B, randomly mirrored. -> (x on the run's device, phantom indices)."""
    import torch
    from .base import rgb_to_tensor
    cfg, g, c = run.cfg, run.g, run.cfg.vae_crop
    oy, ox = (int(v) for v in torch.randint(cfg.resolution - c + 1, (2,), generator=g))
    idx = torch.randint(len(run.data), (cfg.vae_batch - n_real,), generator=g)
    crops = [run.data[idx.numpy(), oy:oy + c, ox:ox + c]]
    if n_real:
        ridx = torch.randint(len(run.real), (n_real,), generator=g).numpy()
        rgb = np.repeat(run.real[ridx][..., None], 3, axis=3)
        for j in range(n_real):
            rgb[j, ..., 2] = random_ellipse_mask(run.rng_np, cfg.resolution) * 255 \
                if run.rng_np.random() < cfg.vae_real_ellipse_prob else 0
        crops.append(rgb[:, oy:oy + c, ox:ox + c])
    x = rgb_to_tensor(np.concatenate(crops)).to(run.dev)
    if torch.rand((), generator=g) < 0.5:
        x = x.flip(3)
    return x, idx


def _vae_step(run: StageRun, st: _VaeState, x, idx, n_real: int, unet_latents) -> tuple[float, float, dict]:
    """One VAE step (and one discriminator step with --vae-adv-weight). -> (loss, image L1, extra losses)."""
    import torch
    cfg, vae, amp = run.cfg, st.vae, run.amp
    for pg in st.opt.param_groups:
        pg["lr"] = cfg.vae_lr * min(1.0, (st.step + 1) / 50)
    with torch.autocast(**amp):
        post = vae.encode(x).latent_dist
        z = post.sample(generator=run.g)
        if unet_latents is not None:
            z = unet_latents(z, np.concatenate([run.tri[idx.numpy()], np.full(n_real, 4)]), run.g,
                             float(vae.config.scaling_factor))
        rec = vae.decode(z).sample
    rec = rec.float()
    rl = vae_recon_loss(rec, x, cfg.vae_echo_weight)
    loss = rl + 1e-4 * (post.kl().float().mean() / x[0].numel())
    extra = {}
    if st.disc is not None and st.step >= cfg.vae_adv_start:
        with torch.autocast(**amp):
            g_adv = st.adv(st.disc(image_channel(rec))[-1].float(), target_is_real=True, for_discriminator=False)
        w = cfg.vae_adv_weight * adaptive_weight(rl, g_adv, vae.decoder.conv_out.weight)
        loss = loss + w * g_adv
        extra.update(g_adv=float(g_adv.detach()), adv_w=w)
    st.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(st.params, 1.0)
    st.opt.step()
    if st.disc is not None:  # the discriminator: real crops vs their reconstructions
        with torch.autocast(**amp):
            d_loss = 0.5 * (st.adv(st.disc(image_channel(rec.detach()))[-1].float(), target_is_real=False,
                                   for_discriminator=True)
                            + st.adv(st.disc(image_channel(x))[-1].float(), target_is_real=True, for_discriminator=True))
        st.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        st.d_opt.step()
        extra["d_loss"] = float(d_loss.detach())
    return float(loss.detach()), float((rec - x).detach().abs().mean()), extra


def train_vae(run: StageRun, comps: dict) -> Iterator[dict]:
    """The stage as a generator of {"kind": "stage" | "step" | "judge" | "stopped"} events; returns True when
    every step is done (the VAE then frozen, holding its EMA weights when averaged), False when stopped."""
    import torch
    cfg, vae = run.cfg, comps["vae"]
    st = _VaeState(run, vae)
    yield {"kind": "stage", "stage": "vae", "step": st.step, "total": cfg.vae_steps, "train": cfg.vae_train,
           "judge_before": judge_vae(vae.eval(), cfg.judge, cfg.judge_n, cfg.resolution) if st.step == 0 else None}
    vae.train()
    if cfg.vae_train == "decoder":
        vae.encoder.eval(); vae.quant_conv.eval()
    n_real = int(round(cfg.vae_batch * run.real_frac))
    unet_latents = (UnetLatents(cfg, comps["unet"], comps["text_encoder"], comps["tokenizer"], comps["scheduler"],
                                run.dev) if cfg.vae_unet_latent_frac > 0 and st.step < cfg.vae_steps else None)
    while st.step < cfg.vae_steps:
        if run.stopped():
            st.save()
            yield {"kind": "stopped", "stage": "vae", "step": st.step}
            return False
        x, idx = _vae_batch(run, n_real)
        loss, l1, extra = _vae_step(run, st, x, idx, n_real, unet_latents)
        st.step += 1
        if st.ema is not None:
            ema_update(st.ema, st.params, cfg.vae_ema_decay, st.step)
        if not math.isfinite(loss):
            raise FloatingPointError(f"VAE loss is not finite at step {st.step}: the run is stopped, its last "
                                     f"checkpoint ({st.ck}) is kept; lower --vae-lr")
        yield {"kind": "step", "stage": "vae", "step": st.step, "total": cfg.vae_steps, "loss": loss, "l1": l1, **extra}
        if st.step % cfg.ckpt_every == 0 or st.step == cfg.vae_steps:
            st.save()
    if st.ema is not None:  # the saved VAE (and what the UNet's latents come from) is the average
        with torch.no_grad():
            for p, e in zip(st.params, st.ema):
                p.copy_(e)
    vae.eval().requires_grad_(False)
    judged = judge_vae(vae, cfg.judge, cfg.judge_n, cfg.resolution)
    if judged:
        yield {"kind": "judge", "stage": "vae", **judged}
    return True
