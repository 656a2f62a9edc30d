"""On-disk image-embedding cache for training: the frozen image encoder runs once per image, not once
per step.

Key = sha256(encoder identity (back-end + weights hash) + image pixels + shape), so a changed image, a
different augmentation draw, another back-end or other weights can never hit a stale entry, while a
resumed run, a second run on the same images or the Experiments sweep find theirs. Entries are fp16
safetensors (256x64x64: 2 MiB instead of 4; the decoder cannot tell — checked in the tests), written
atomically.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..fileio import atomic_write
from .models import SamModel


class EmbeddingCache:
    def __init__(self, root: str | os.PathLike, model: SamModel, dtype=torch.float16):
        self.model = model
        self.root = Path(root) / model.encoder_id.replace(":", "-")
        self.dtype = dtype
        self.hits = 0
        self.misses = 0  # = image-encoder runs

    def key(self, image: np.ndarray) -> str:
        a = np.ascontiguousarray(image)
        h = hashlib.sha256(self.model.encoder_id.encode())
        h.update(f"{a.shape}|{a.dtype}|".encode())
        h.update(a.tobytes())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, image: np.ndarray) -> torch.Tensor | None:
        p = self._path(self.key(image))
        if not p.is_file():
            return None
        from safetensors.torch import load_file
        try:
            return load_file(str(p))["embedding"]
        except Exception:  # a damaged entry is recomputed, never trusted
            return None

    def put(self, image: np.ndarray, embedding: torch.Tensor) -> None:
        from safetensors.torch import save_file
        t = {"embedding": embedding.detach().to("cpu", self.dtype).contiguous()}
        atomic_write(self._path(self.key(image)), lambda tmp: save_file(t, tmp))

    @torch.no_grad()
    def get_or_compute(self, images: Sequence[np.ndarray], batch_size: int = 4,
                       progress: Callable[[int, int], None] | None = None) -> list[torch.Tensor]:
        """Embeddings (256, 64, 64), self.dtype, on the CPU, for each image; misses go through the
        encoder in batches and are stored."""
        out: list[torch.Tensor | None] = [self.get(im) for im in images]
        self.hits += sum(e is not None for e in out)
        todo = [i for i, e in enumerate(out) if e is None]
        done = len(images) - len(todo)
        if progress:
            progress(done, len(images))
        for s in range(0, len(todo), batch_size):
            idx = todo[s:s + batch_size]
            x = torch.cat([self.model.preprocess(images[i])[0] for i in idx])
            emb = self.model.encode(x)
            self.misses += len(idx)
            for i, e in zip(idx, emb):
                e = e.to("cpu", self.dtype)
                self.put(images[i], e)
                out[i] = e
            done += len(idx)
            if progress:
                progress(done, len(images))
        return out  # type: ignore[return-value]
