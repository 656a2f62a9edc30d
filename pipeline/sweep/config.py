"""A sweep's settings: SweepConfig (what a finished cell means, the SYN arm's sources, the models of a
profile), the named grids (presets) and the checks run before a sweep folder is made."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
import json

from ..config import SamFinetuneDefaults
from ..data import DataError, open_source
from ..diffusion.lora import LoraTrainConfig
from ..arms import ARMS, AUG_ORDER, AUG_TO_FINETUNE, PAPER_ARMS, SYN_ARMS, n_synthetic

_D = SamFinetuneDefaults()
_L = LoraTrainConfig()  # the SYN arm's LoRAs train with the LoRA config's defaults unless the sweep sets them
HELDOUT = "heldout"
SEGMENTERS = ("sam", "unet")  # SAM's decoder fine-tuned from the profile's weights; a U-Net from random weights


@dataclass
class SweepConfig:
    train: str  # the real train source (hc18:/folder:/phantom)
    tests: list[str] = field(default_factory=lambda: [HELDOUT])  # "heldout" and/or other sources
    augmentations: list[str] = field(default_factory=lambda: list(PAPER_ARMS))
    n_real: list[int] = field(default_factory=lambda: [5, 10, 20, 50, 100, 300, 500])
    repeats: int = 5
    total: int = _D.total_train  # SYN: N_real + synthetic = total
    synthetic: str | None = None  # a folder: dataset of synthetic pairs for SYN
    loras: dict[str, str] | None = None  # trimester -> LoRA folder: generate the synthetic set first
    train_loras: bool = False  # or train the trimester LoRAs here, on the train pool only (never test)
    lora_steps: int = _L.steps
    lora_n: int = _L.n  # the paper's 20 images per trimester
    generate_min_qc: float = 0.8
    generate_seed: int = 1000
    # the detail pass (generate.py, not in the paper): trimester -> a LoRA trained at 2x the base's size, or
    # with train_loras, the size to train them at (0: no detail pass); and the width/height the SYN pairs are
    # written at (0: the generated square, the paper; 1.48: HC18's 800x540; None: the train pool's own shape,
    # synthetic.pool_aspect, so SAM sees a synthetic pair as it sees the scans it is tested on)
    detail_loras: dict[str, str] | None = None
    detail_resolution: int = 0
    detail_strength: float = 0.5
    restore_aspect: float | None = None
    epochs: int = _D.epochs
    batch_size: int = _D.batch_size
    lr: float = _D.lr
    test_limit: int | None = None  # evaluate on at most this many images per test source
    aug_views: int = _D.aug_views
    n_val: int = _D.n_val
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    seed: int = 0  # repeat r trains with seed + r
    eval_seed: int = 0  # the jittered test boxes
    backend: str = "litemedsam"
    base_weights: str | None = None
    diffusion_base: str | None = None  # the SYN arm's LoRAs train and generate on it (None: the tiny base)
    # the segmenter every cell trains: "sam" (epochs, batch_size, lr, aug_views above) or "unet" (pipeline/unet.py,
    # from random weights at 256², counted in steps so every arm of a cell gets the same number of updates)
    segmenter: str = "sam"
    unet_steps: int = 300
    unet_batch_size: int = 8
    unet_lr: float = 1e-3
    unet_val_every: int = 25

    # settings that define what a finished cell means: they may not change within a sweep folder
    IDENTITY = ("train", "total", "epochs", "batch_size", "lr", "aug_views", "n_val", "split", "split_seed",
                "seed", "eval_seed", "backend", "base_weights", "test_limit", "segmenter", "unet_steps",
                "unet_batch_size", "unet_lr", "unet_val_every")

    @classmethod
    def for_profile(cls, profile, **settings) -> "SweepConfig":
        """A sweep with the profile's SAM (back-end, base weights) and diffusion base unless `settings`
        name them: the one way the dashboard and the CLI make one, so a sweep started under the paper
        profile never fine-tunes LiteMedSAM or generates its SYN set with the tiny base."""
        backend, weights = profile.sam_model(settings.get("backend"))
        return cls.from_dict({"backend": backend, "diffusion_base": profile.diffusion(), "base_weights": weights,
                              **settings})

    @classmethod
    def defaults(cls) -> dict:
        """The settings a sweep has when it names none (for sweep.json files older than a setting)."""
        from dataclasses import MISSING
        out = {}
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default
            elif f.default_factory is not MISSING:
                out[f.name] = f.default_factory()
        out["split"] = list(out["split"])
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "SweepConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(f"unknown sweep setting(s): {', '.join(unknown)}")
        d = dict(d)
        if "split" in d:
            d["split"] = tuple(d["split"])
        return cls(**d)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["split"] = list(self.split)
        return d

    def validate(self) -> None:
        bad = [a for a in self.augmentations if a not in AUG_ORDER]
        if bad:
            raise DataError(f"unknown augmentation(s) {bad}: choose from {', '.join(AUG_ORDER)}")
        if not self.n_real or min(self.n_real) < 1:
            raise DataError("n_real needs at least one value, each at least 1")
        if self.segmenter not in SEGMENTERS:
            raise DataError(f"segmenter must be one of {', '.join(SEGMENTERS)}, got {self.segmenter!r}")
        if set(self.augmentations) & set(SYN_ARMS):
            if any(ARMS[a].hybrid for a in self.augmentations) and max(self.n_real) > self.total:
                raise DataError(f"SYN keeps N_real + synthetic = total ({self.total}); N_real "
                                f"{max(self.n_real)} is larger")
            if not self.synthetic and not self.loras and not self.train_loras:
                raise DataError("the SYN and SYN-only arms need a synthetic dataset (synthetic: folder:PATH), the "
                                "trimester LoRAs to generate one (loras: {first: DIR, ...}), or "
                                "train_loras: true to train them on the train pool first")
        if not self.tests:
            raise DataError("give at least one test source (heldout = the train source's test split)")
        from ..validate import check_float, check_int, check_seed
        # every numeric setting has a checked range, refused with the field's name (never clamped)
        self.n_real = [check_int(v, "N_real", 1, 100_000) for v in self.n_real]
        self.repeats = check_int(self.repeats, "repeats", 1, 1000)
        from ..sam.finetune import FinetuneConfig
        FinetuneConfig.check_training(self)  # epochs, batch_size, lr, aug_views, n_val: a cell is a fine-tuning run
        self.total = check_int(self.total, "total (SYN)", 1, 1_000_000)
        self.lora_steps = check_int(self.lora_steps, "lora_steps", 1, 1_000_000)
        if self.segmenter == "unet":  # the U-Net's own ranges, from its config (one home per range)
            u = self.unet_config(n_real=1, augmentation="none", synthetic=None)
            u.validate()
            self.unet_steps, self.unet_batch_size, self.unet_lr, self.unet_val_every = \
                u.steps, u.batch_size, u.lr, u.val_every
        self.lora_n = check_int(self.lora_n, "lora_n", 1, 10_000)
        self.generate_min_qc = check_float(self.generate_min_qc, "generate_min_qc", 0, 1)
        self.detail_resolution = check_int(self.detail_resolution, "detail_resolution (0 = no detail pass)", 0, 2048)
        if self.detail_resolution and (self.detail_resolution % 8 or not self.train_loras):
            raise DataError("detail_resolution trains the detail LoRAs with train_loras, at a multiple of 8 "
                            f"(got {self.detail_resolution}{'' if self.train_loras else ' without train_loras'}); "
                            "with your own LoRAs give detail_loras instead")
        if self.detail_loras and set(self.detail_loras) - set(self.loras or {}):
            raise DataError("detail_loras needs a base-size LoRA (loras) for each of its trimesters: "
                            f"{sorted(set(self.detail_loras) - set(self.loras or {}))} have none")
        self.detail_strength = check_float(self.detail_strength, "detail_strength", 0, 1, lo_open=True)
        if self.restore_aspect is not None:
            self.restore_aspect = check_float(self.restore_aspect, "restore_aspect (width/height; 0 = square)", 0, 4)
        if self.restore_aspect is not None and 0 < self.restore_aspect < 0.25:
            raise DataError(f"restore_aspect must be 0 (square) or 0.25-4, got {self.restore_aspect:g}")
        if self.test_limit is not None:
            self.test_limit = check_int(self.test_limit, "test_limit", 1, 1_000_000)
        for k in ("seed", "split_seed", "eval_seed", "generate_seed"):
            setattr(self, k, check_seed(getattr(self, k), k))

    def n_synthetic(self, augmentation: str, n_real: int) -> int | None:
        """How many synthetic pairs a cell trains on (pipeline/arms.py): SYN tops N_real up to `total`."""
        return n_synthetic(augmentation, n_real, self.total)

    def unet_config(self, n_real: int, augmentation: str, synthetic: str | None, repeat: int = 0):
        """The U-Net run of one cell (pipeline/unet.py), with the same split, val part and seeds as SAM's."""
        from ..unet import UnetConfig
        return UnetConfig(data=self.train, n_real=n_real, aug=AUG_TO_FINETUNE[augmentation],
                          synthetic=synthetic if augmentation in SYN_ARMS else None,
                          n_synthetic=self.n_synthetic(augmentation, n_real) if augmentation in SYN_ARMS else None,
                          steps=self.unet_steps, batch_size=self.unet_batch_size, lr=self.unet_lr,
                          val_every=self.unet_val_every, seed=self.seed + repeat, split_seed=self.split_seed,
                          split=tuple(self.split), n_val=self.n_val)

    def check_sources(self, allowed_roots=None) -> None:
        """Open every source the sweep names (train, tests, synthetic) and check the LoRAs it is given, so a
        bad one is refused BEFORE the sweep folder is created (a test folder outside the allowed roots was
        once refused only after a whole cell had trained, and the folder stayed listed)."""
        open_source(self.train, allowed_roots)
        for spec in self.tests:
            if spec != HELDOUT:
                open_source(spec, allowed_roots)
        if self.synthetic:
            open_source(self.synthetic, allowed_roots)
        for tri, d in {**(self.loras or {}), **{f"{t} (detail)": d for t, d in (self.detail_loras or {}).items()}}.items():
            _check_lora_pool(self, tri, d)
        from ..diffusion.generate import lora_working_size
        for t, d in (self.detail_loras or {}).items():  # refused now, not when the SYN arm starts generating
            main, detail = lora_working_size(self.loras[t]), lora_working_size(d)
            if main is not None and detail is not None and detail <= main:
                raise DataError(f"{t}-trimester detail LoRA {Path(d).name} was trained at {detail}², not above "
                                f"the {main}² of {Path(self.loras[t]).name}: a detail LoRA is trained at 2x the "
                                f"base's size (train-lora --resolution 256 on the tiny base)")


PRESETS: dict[str, dict] = {
    # the paper's grid (GPU): 4 augmentations x 7 N_real x 5 repeats, 20 epochs, total 500
    "paper": dict(n_real=[5, 10, 20, 50, 100, 300, 500], repeats=5, epochs=20, total=500, aug_views=4,
                  n_val=40),
    # finishes in about an hour on a 2-core CPU with LiteMedSAM (cached embeddings): fewer N_real values,
    # 3 repeats, 8 epochs instead of 20, SYN total 100 instead of 500, 2 cached augmented views per image
    "cpu-small": dict(n_real=[5, 20, 50], repeats=3, epochs=8, total=100, aug_views=2, n_val=30),
    # the from-scratch U-Net on a 2-core CPU: the paper's four arms and SYN only, 3 repeats, SYN total 100,
    # 400 optimizer steps of 8 pairs at 256² per cell (the sweep prints each cell's minutes). 400, not 200,
    # chosen on validation (docs/lab/2026-12-07-unet-steps.md): None's best comes by step 50 whatever the
    # length, SYN's still climbs at 400; 400 keeps a cell near the 10-minute goal on this CPU
    "cpu-unet": dict(segmenter="unet", augmentations=[*PAPER_ARMS, "syn-only"], n_real=[5, 20, 50], repeats=3,
                     total=100, n_val=30, unet_steps=400, unet_val_every=25),
    # a smoke test: two cells on tiny data
    "smoke": dict(augmentations=["none", "weak"], n_real=[3], repeats=1, epochs=1, total=6, aug_views=1,
                  n_val=4, test_limit=4, split=(0.5, 0.25, 0.25)),
}


def preset(name: str, profile=None, **overrides) -> SweepConfig:
    """A named grid with `overrides` (None: the preset's value), for `profile`'s models when given."""
    if name not in PRESETS:
        raise DataError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    settings = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return SweepConfig.from_dict(settings) if profile is None else SweepConfig.for_profile(profile, **settings)


def _check_lora_pool(cfg: SweepConfig, trimester: str, lora_dir: str) -> None:
    """A LoRA trained on the sweep's own train source must have chosen its images from the train part of
    the same split: one chosen among all images (the LoRA tab's default) may have seen test images, and
    synthetic pairs made from it would leak them into the result."""
    p = Path(lora_dir) / "lora_config.json"
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        raise DataError(f"{trimester}-trimester LoRA {lora_dir}: no readable lora_config.json") from None
    if rec.get("data") != cfg.train:
        return  # trained on another source: it cannot have seen this source's test part
    if rec.get("pool") != "train" or list(rec.get("split") or []) != list(cfg.split) \
            or rec.get("split_seed") != cfg.split_seed:
        raise DataError(f"{trimester}-trimester LoRA {Path(lora_dir).name} chose its images among "
                        f"{'all images' if rec.get('pool') != 'train' else 'another split'} of {cfg.train}, so it "
                        f"may have seen test images: train it on the train pool (train-lora --pool train) or "
                        f"let the sweep train the LoRAs (train_loras)")
