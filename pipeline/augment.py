"""The classic baselines WA (weak) and SA (strong augmentation), and the SAM box jitter.

Parameters are the seed code's albumentations pipelines. The fix over the seed code: the SAM box prompt
is computed AFTER augmentation, from the augmented mask (its bounding box), so it stays aligned with
the head after a flip, rotation or elastic warp; then each side is jittered outwards by 0-20 px in
original-image pixels (MedSAM's protocol) and clipped inside the image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AUGMENTATIONS = ("none", "weak", "strong")


def build_augmentation(name: str):
    """albumentations Compose for "weak" (WA) or "strong" (SA); None for "none"."""
    import albumentations as A
    name = {"wa": "weak", "sa": "strong"}.get(str(name).lower(), str(name).lower())
    if name == "none":
        return None
    if name == "weak":
        ts = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.Rotate(limit=15, p=0.5),
              A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.5),
              A.Blur(blur_limit=3, p=0.3), A.GaussNoise(std_range=(0.05, 0.1), p=0.3)]
    elif name == "strong":
        ts = [A.Rotate(limit=45, p=0.5),
              A.HueSaturationValue(hue_shift_limit=30, sat_shift_limit=40, val_shift_limit=30, p=0.5),
              A.ElasticTransform(alpha=120, sigma=12, p=0.5),
              A.CoarseDropout(num_holes_range=(5, 15), hole_height_range=(0.1, 0.1),
                              hole_width_range=(0.1, 0.1), fill=0, p=0.5)]
    else:
        raise ValueError(f"unknown augmentation {name!r}: choose none, weak (WA) or strong (SA)")
    return A.Compose(ts)


@dataclass
class AugmentedPair:
    image: np.ndarray  # uint8 (H, W, 3): HueSaturationValue needs colour, and SAM takes RGB anyway
    mask: np.ndarray  # bool (H, W)
    box: tuple[int, int, int, int]  # tight box of the AUGMENTED mask (x0, y0, x1, y1)


def augment_pair(image: np.ndarray, mask: np.ndarray, augmentation, seed: int) -> AugmentedPair | None:
    """Augment (image, mask) with a seeded draw; the box comes from the augmented mask.
    None when the augmented mask is empty (the head rotated or warped out of view)."""
    from .masks import mask_bbox
    img = np.asarray(image)
    rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    m = np.asarray(mask).astype(np.uint8)
    if augmentation is not None:
        # Compose.set_random_seed gives every transform the SAME seed, so their p-draws coincide
        # (all or none fire, half the draws are the identity); give each its own seed instead.
        ss = np.random.SeedSequence([int(seed) % (2**63), 0x5A])
        augmentation.set_random_seed(int(ss.generate_state(1)[0]))
        for t, child in zip(augmentation.transforms, ss.spawn(len(augmentation.transforms))):
            t.set_random_seed(int(child.generate_state(1)[0]))
        out = augmentation(image=np.ascontiguousarray(rgb), mask=m)
        rgb, m = out["image"], out["mask"]
    box = mask_bbox(m > 0)
    if box is None:
        return None
    return AugmentedPair(np.ascontiguousarray(rgb), m > 0, box)


def jitter_box(box, hw: tuple[int, int], rng: np.random.Generator, max_px: int = 20) -> tuple[int, int, int, int]:
    """Enlarge each side of `box` by an independent 0..max_px pixels, then clip inside the (H, W) image.
    The jittered box still contains the original box, so it still bounds the mask."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    d = rng.integers(0, max_px + 1, size=4) if max_px > 0 else np.zeros(4, int)
    h, w = hw
    return (max(0, x0 - int(d[0])), max(0, y0 - int(d[1])), min(w, x1 + int(d[2])), min(h, y1 + int(d[3])))


def jittered_box_for(mask: np.ndarray, rng: np.random.Generator, max_px: int = 20):
    """The evaluation protocol: the ground-truth mask's bounding box, each side jittered by 0..max_px."""
    from .masks import mask_bbox
    b = mask_bbox(mask)
    return None if b is None else jitter_box(b, mask.shape[:2], rng, max_px)
