"""`SamPredictor`: set an image once, predict many boxes. The cache is the API.

    pred = load_predictor()            # LiteMedSAM, offline
    pred.set_image(image)              # runs the image encoder (or finds the embedding in memory)
    mask = pred.predict(box=(x0, y0, x1, y1))   # bool (H, W) at the original size; decoder only

Embeddings live in a small in-memory LRU keyed by image content (sha1 of the pixels) and the encoder's
identity, so going back to an image already seen does not re-encode it either.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import torch

from ..data import DataError
from ..validate import validate_box  # noqa: F401  (its home is validate.py; imported from here by callers)
from .models import SamModel, load_model


def image_key(image: np.ndarray) -> str:
    a = np.ascontiguousarray(image)
    h = hashlib.sha1(a.tobytes())
    h.update(f"{a.shape}{a.dtype}".encode())
    return h.hexdigest()


class SamPredictor:
    def __init__(self, model: SamModel, cache_size: int = 16):
        self.model = model
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.encoder_calls = 0  # how many times the image encoder actually ran (tests, benchmarks)
        self.reset_image()

    def reset_image(self) -> None:
        self.embedding: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.image_hash: str | None = None

    @property
    def is_image_set(self) -> bool:
        return self.embedding is not None

    @torch.no_grad()
    def _embed(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int], str]:
        """(embedding, (H, W), key) of `image`, from the cache or the encoder, found under the lock."""
        img = np.asarray(image)
        if img.ndim not in (2, 3) or img.size == 0:
            raise DataError(f"expected a grayscale or RGB image, got shape {img.shape}")
        key = f"{self.model.encoder_id}:{image_key(img)}"
        with self._lock:
            emb = self._cache.get(key)
            if emb is not None:
                self._cache.move_to_end(key)
            else:
                x, _ = self.model.preprocess(img)
                emb = self.model.encode(x)
                self.encoder_calls += 1
                self._cache[key] = emb
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return emb, tuple(img.shape[:2]), key

    def set_image(self, image: np.ndarray) -> "SamPredictor":
        """Encode `image` (uint8 gray (H, W) or RGB (H, W, 3)) unless its embedding is cached."""
        emb, hw, key = self._embed(image)
        with self._lock:
            self.embedding, self.original_size, self.image_hash = emb, hw, key
        return self

    @torch.no_grad()
    def _decode(self, emb: torch.Tensor, hw: tuple[int, int], box) -> torch.Tensor:
        b = validate_box(box, hw)
        return self.model.decode(emb, self.model.box_to_input(b, hw), crop=self.model.crop_cells([hw]))

    def predict_logits(self, box) -> torch.Tensor:
        with self._lock:  # the embedding and its image size are read together
            emb, hw = self.embedding, self.original_size
        if emb is None or hw is None:
            raise DataError("no image set: call set_image(image) before predict(box=...)")
        return self._decode(emb, hw, box)

    def predict_image(self, image: np.ndarray, box) -> np.ndarray:
        """bool mask (H, W) of `image` for one box, safe when several threads share this predictor: the
        embedding is an argument of the decode, never the shared `self.embedding` another thread may have
        replaced between set_image and predict."""
        emb, hw, _ = self._embed(image)
        return self.model.logits_to_mask(self._decode(emb, hw, box), hw)

    def predict(self, box=None) -> np.ndarray:
        """bool mask (H, W) at the original size for one box (x0, y0, x1, y1) in image pixels."""
        with self._lock:
            emb, hw = self.embedding, self.original_size
        if emb is None or hw is None:
            raise DataError("no image set: call set_image(image) before predict(box=...)")
        return self.model.logits_to_mask(self._decode(emb, hw, box), hw)


def load_predictor(profile_or_backend=None, checkpoint=None, device: str | None = None) -> SamPredictor:
    """A predictor for a Profile (its back-end and base weights), a profile name ("tiny", "paper" as
    defined in config.PROFILES), a back-end ("litemedsam", "vit_b") or None (tiny), optionally with a
    fine-tuned run / weights file as `checkpoint`. No environment is read here: an entry point resolves
    the profile once (config.resolve_profile) and passes it."""
    from ..config import PROFILES, Profile, get_profile
    if isinstance(profile_or_backend, Profile):
        backend, base = profile_or_backend.sam_model()
    elif profile_or_backend in (None, "") or profile_or_backend in PROFILES:
        backend, base = get_profile(profile_or_backend or None).sam_model()
    else:  # a back-end by name: its own default weights
        backend, base = get_profile().sam_model(profile_or_backend)
    if checkpoint is None and base is not None:
        checkpoint = base  # the profile's base weights (e.g. sam_vit_b_01ec64.pth for "paper")
    return SamPredictor(load_model(backend, checkpoint, device))
