"""Samples, data sources named by one spec string, and seeded selections and splits.

One vocabulary from loader to metric: a `Sample` is a grayscale uint8 image (H, W), a filled bool head
mask (H, W) and `SampleMeta` (source, name, pixel size mm, head circumference mm, trimester).

Data sources, by spec string (CLI, app and config all use the same strings):
    hc18:PATH      the official HC18 layout: training_set/NNN_HC.png + NNN_HC_Annotation.png (a thin
                   ellipse outline, filled here by fitting the ellipse) + training_set_pixel_size_and_HC.csv
    folder:PATH    images/ + masks/ (mask by stem, stem_Annotation or stem_mask; outlines are detected
                   and filled) + optional meta/NAME.json; the layout of synthetic datasets too
    phantom[:N[:SEED]]    N phantoms from our own generator (offline demo data, never presented as real)
"""
from __future__ import annotations

import csv
import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import DataError  # noqa: F401  (its home; callers import it from here)
from .masks import (TRIMESTERS, Ellipse, fill_outline, hadlock_ga_weeks, looks_like_outline,
                    trimester_from_hc)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TIFF_EXTS = (".tif", ".tiff")  # the one kind whose header may lie anywhere in the file (its IFD offset)
MASK_SUFFIXES = ("", "_Annotation", "_mask")
DEFAULT_PHANTOM_N = 24


@dataclass
class SampleMeta:
    source: str
    name: str
    pixel_size_mm: float | None = None
    hc_mm: float | None = None
    trimester: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ga_weeks(self) -> float | None:
        return hadlock_ga_weeks(self.hc_mm)

    def as_dict(self) -> dict:
        ga = self.ga_weeks
        return {"source": self.source, "name": self.name, "pixel_size_mm": self.pixel_size_mm,
                "hc_mm": None if self.hc_mm is None else round(self.hc_mm, 2),
                "ga_weeks": None if ga is None else round(ga, 1),
                "trimester": self.trimester, **self.extra}


@dataclass
class Sample:
    image: np.ndarray  # uint8 (H, W)
    mask: np.ndarray | None  # bool (H, W), filled head; None for an unlabelled image
    meta: SampleMeta
    ellipse: Ellipse | None = None  # the annotation's ellipse, when the annotation is one

    @property
    def name(self) -> str:
        return self.meta.name


# ----------------------------------------------------------------------------- reading files
def read_image(path: str | os.PathLike, what: str | None = None) -> np.ndarray:
    """Decode an image file as OpenCV does (any depth/channels), after checking the size its header states
    against the one pixel limit (pipeline.validate.MAX_IMAGE_PIXELS): OpenCV would decode a bomb in full."""
    import cv2

    from .validate import image_header_size
    path = Path(path)
    what = what or path.name
    if not path.is_file():
        raise DataError(f"image file not found: {what}")
    size = path.stat().st_size
    if not size:
        raise DataError(f"cannot read {what}: the file is empty")
    # the header first (its first MiB), so a large file that is no image, or more bytes than its pixels need,
    # is refused before it is read into memory (a TIFF may keep its header at the end: read whole, bounded)
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    if size > HEAD_BYTES and path.suffix.lower() in TIFF_EXTS:
        w, h = image_header_size(path, what)  # PIL seeks to the header wherever it is, reads no pixel
    else:
        w, h = image_header_size(head, what)
    if size > encoded_limit(w, h):
        raise DataError(f"cannot read {what}: the file holds {_mib(size)}, more than a {w}x{h} image needs "
                        f"({_mib(encoded_limit(w, h))}): re-save it")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"cannot read {what}: the file is corrupt or not an image")
    return img


def read_gray(path: str | os.PathLike, what: str | None = None) -> np.ndarray:
    """Read an image file as uint8 grayscale; DataError with the file name when it cannot be read."""
    return to_gray_uint8(read_image(path, what), what or Path(path).name)


def read_upload_gray(path: str | os.PathLike, what: str = "the uploaded image", tries: int = 4,
                     wait_s: float = 0.25) -> np.ndarray:
    """read_gray for a file a web server just received. Identical uploads share one cache path, and a second
    client's upload of the same file may be rewriting it while the first reads it (seen: 4 of 160 parallel
    requests read a half-written file as corrupt), so a failed read is retried a few times before it is
    reported. A file that is really broken is reported after ~1 s."""
    import time
    for attempt in range(tries):
        try:
            return read_gray(path, what)
        except DataError:
            if attempt == tries - 1:
                raise
            time.sleep(wait_s)
    raise AssertionError("unreachable")


def check_inside(path: Path, allowed_roots: Sequence[str | os.PathLike] | None, what: str) -> Path:
    """Refuse a file that a link takes outside the allowed data folders (a dataset root being allowed
    does not make every file under it so: images/ may be a symlink to anywhere)."""
    if allowed_roots is None:
        return path
    real = path.resolve()
    roots = [Path(r).resolve() for r in allowed_roots]
    if not any(real == r or r in real.parents for r in roots):
        raise DataError(f"{what} links outside the allowed data folders: refused")
    return real


def to_gray_uint8(img: np.ndarray, what: str = "image") -> np.ndarray:
    import cv2
    img = np.asarray(img)
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[..., :3]
        if img.shape[2] == 3:
            img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2GRAY) if img.dtype == np.uint8 \
                else img.mean(axis=2)
        else:
            img = img[..., 0]
    if img.ndim != 2:
        raise DataError(f"{what}: unsupported image shape {img.shape}")
    if img.dtype == np.uint8:
        return img
    if img.dtype == bool:
        return img.astype(np.uint8) * 255
    f = img.astype(np.float64)
    lo, hi = float(np.nanmin(f)), float(np.nanmax(f))
    if img.dtype == np.uint16 and hi > 255:
        return (f / 257.0).round().clip(0, 255).astype(np.uint8)
    if hi <= 1.0 and lo >= 0.0:
        return (f * 255).round().clip(0, 255).astype(np.uint8)
    return f.round().clip(0, 255).astype(np.uint8)


def mask_from_array(arr: np.ndarray, image_shape: tuple[int, int], what: str) -> tuple[np.ndarray, Ellipse | None]:
    """Binarise a mask image, check its size, fill it if it is an outline; returns (bool mask, ellipse?)."""
    m = to_gray_uint8(arr, what) > 127
    if m.shape != tuple(image_shape):
        raise DataError(f"{what}: mask size {m.shape[1]}x{m.shape[0]} does not match image size "
                        f"{image_shape[1]}x{image_shape[0]}")
    if not m.any():
        raise DataError(f"{what}: the mask is empty (no foreground pixel)")
    if looks_like_outline(m):
        try:
            filled, e = fill_outline(m)
        except ValueError as exc:
            raise DataError(f"{what}: {exc}") from None
        return filled, e
    return m, None


# ----------------------------------------------------------------------------- data sources
class DataSource(Sequence):
    """A list of samples: cheap metadata for all (`metas`), pixels loaded on access (`source[i]`)."""

    def __init__(self, spec: str, metas: list[SampleMeta], warnings: list[str] | None = None):
        self.spec = spec
        self.metas = metas
        self.warnings = warnings or []
        self._index = {m.name: i for i, m in enumerate(metas)}

    def __len__(self) -> int:
        return len(self.metas)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        return self._load(i % len(self))

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.metas]

    def index_of(self, name: str) -> int:
        if name not in self._index:
            raise DataError(f"no sample named {name!r} in {self.spec}")
        return self._index[name]

    def subset(self, indices: Sequence[int]) -> "SubsetSource":
        return SubsetSource(self, list(indices))

    def _load(self, i: int) -> Sample:
        raise NotImplementedError


class SubsetSource(DataSource):
    def __init__(self, parent: DataSource, indices: list[int]):
        super().__init__(parent.spec, [parent.metas[i] for i in indices], parent.warnings)
        self.parent, self.indices = parent, indices

    def _load(self, i: int) -> Sample:
        return self.parent[self.indices[i]]


class HC18Source(DataSource):
    CSV = "training_set_pixel_size_and_HC.csv"

    def __init__(self, spec: str, root: Path, strict: bool = False, allowed_roots=None):
        root = Path(root)
        img_dir = root / "training_set" if (root / "training_set").is_dir() else root
        csv_path = root / self.CSV if (root / self.CSV).is_file() else img_dir / self.CSV
        if not img_dir.is_dir():
            raise DataError(f"HC18 folder not found: {root}")
        self.allowed_roots = allowed_roots
        img_dir = check_inside(img_dir, allowed_roots, "training_set/")
        if csv_path.is_file():
            check_inside(csv_path, allowed_roots, self.CSV)
        images = sorted(p for p in img_dir.iterdir()
                        if p.suffix.lower() == ".png" and not p.stem.endswith("_Annotation"))
        if not images:
            raise DataError(f"no HC18 images (NNN_HC.png) in {img_dir}")
        rows = _read_hc18_csv(csv_path) if csv_path.is_file() else None
        warnings: list[str] = []
        if rows is None:
            msg = f"{self.CSV} not found in {root}: pixel size, HC and trimester are unknown"
            if strict:
                raise DataError(msg)
            warnings.append(msg)
        metas = []
        for p in images:
            row = rows.get(p.name) if rows is not None else None
            if rows is not None and row is None:
                msg = f"{p.name} has no row in {self.CSV}: its pixel size, HC and trimester are unknown"
                if strict:
                    raise DataError(msg)
                warnings.append(msg)
            px, hc = row if row else (None, None)
            subject = re.match(r"(\d+)", p.stem)
            metas.append(SampleMeta(spec, p.name, px, hc, trimester_from_hc(hc),
                                    {"subject": subject.group(1) if subject else p.stem}))
        self.img_dir = img_dir
        super().__init__(spec, metas, warnings)

    def _load(self, i: int) -> Sample:
        meta = self.metas[i]
        img_path = self.img_dir / meta.name
        ann_path = img_path.with_name(img_path.stem + "_Annotation.png")
        image = read_gray(check_inside(img_path, self.allowed_roots, meta.name), meta.name)
        if not ann_path.is_file():
            raise DataError(f"annotation missing for {meta.name}: expected {ann_path.name}")
        outline = read_gray(check_inside(ann_path, self.allowed_roots, ann_path.name), ann_path.name)
        if outline.shape != image.shape:
            raise DataError(f"{ann_path.name}: mask size {outline.shape[1]}x{outline.shape[0]} does not "
                            f"match image size {image.shape[1]}x{image.shape[0]}")
        if not (outline > 127).any():
            raise DataError(f"{ann_path.name}: the annotation is empty")
        try:
            mask, e = fill_outline(outline)
        except ValueError as exc:
            raise DataError(f"{ann_path.name}: {exc}") from None
        return Sample(image, mask, meta, e)


def _read_hc18_csv(path: Path) -> dict[str, tuple[float, float]]:
    rows: dict[str, tuple[float, float]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            for line_no, row in enumerate(reader, start=2):
                if not row or not row[0].strip():
                    continue
                try:
                    px, hc = float(row[1]), float(row[2])
                    # a pixel size or HC <= 0 or non-finite is unknown (never a "-1.000 mm" shown as known)
                    rows[row[0].strip()] = (_positive_or_none(px), _positive_or_none(hc))
                except (IndexError, ValueError):
                    raise DataError(f"{path.name} line {line_no}: expected 'filename, pixel size, HC', "
                                    f"got {row!r}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path.name} is not a text CSV file") from None
    if header is None:
        raise DataError(f"{path.name} is empty")
    return rows


class FolderSource(DataSource):
    """images/ + masks/ (+ meta/NAME.json). Synthetic datasets are written in this layout."""

    def __init__(self, spec: str, root: Path, strict: bool = False, allowed_roots=None):
        root = Path(root)
        img_dir, mask_dir, meta_dir = root / "images", root / "masks", root / "meta"
        if not root.is_dir():
            raise DataError(f"folder not found: {root}")
        if not img_dir.is_dir():
            raise DataError(f"{root} has no images/ folder (expected images/ and masks/)")
        self.allowed_roots = allowed_roots
        img_dir = check_inside(img_dir, allowed_roots, "images/")
        if mask_dir.is_dir():
            mask_dir = check_inside(mask_dir, allowed_roots, "masks/")
        if meta_dir.is_dir():
            meta_dir = check_inside(meta_dir, allowed_roots, "meta/")
        images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not images:
            raise DataError(f"no images (.png/.jpg/.bmp/.tif) in {img_dir}")
        masks_by_stem = {}
        if mask_dir.is_dir():
            for p in mask_dir.iterdir():
                if p.suffix.lower() in IMAGE_EXTS:
                    masks_by_stem[p.stem] = p
        warnings: list[str] = []
        metas = []
        self.paths: list[tuple[Path, Path | None]] = []
        for p in images:
            mpath = next((masks_by_stem[p.stem + s] for s in MASK_SUFFIXES if p.stem + s in masks_by_stem), None)
            if mpath is None:
                msg = f"{p.name} has no mask in masks/ (looked for {p.stem}, {p.stem}_Annotation, {p.stem}_mask)"
                if strict:
                    raise DataError(msg)
                warnings.append(msg)
            info = {}
            jpath = meta_dir / f"{p.stem}.json"
            if jpath.is_file():
                try:
                    check_inside(jpath, allowed_roots, f"meta/{jpath.name}")
                    info = json.loads(jpath.read_text())
                    if not isinstance(info, dict):
                        raise ValueError
                except (ValueError, UnicodeDecodeError, OSError):
                    warnings.append(f"meta/{jpath.name} is not valid JSON (one object expected): ignored")
                    info = {}
                except DataError as exc:
                    warnings.append(f"{exc}: ignored")
                    info = {}
            # a pixel size or HC that is not a positive finite number is unknown, never shown as "-1.000 mm"
            px = _positive_or_none(info.get("pixel_size_mm"))
            hc = _positive_or_none(info.get("hc_mm"))
            tri = info.get("trimester") if info.get("trimester") in TRIMESTERS else trimester_from_hc(hc)
            extra = {k: info[k] for k in ("synthetic", "qc", "verdict", "edited") if k in info}
            metas.append(SampleMeta(spec, p.name, px, hc, tri, extra))
            self.paths.append((p, mpath))
        super().__init__(spec, metas, warnings)

    def _load(self, i: int) -> Sample:
        ipath, mpath = self.paths[i]
        image = read_gray(check_inside(ipath, self.allowed_roots, f"images/{ipath.name}"), f"images/{ipath.name}")
        if mpath is None:
            return Sample(image, None, self.metas[i])
        raw = read_image(check_inside(mpath, self.allowed_roots, f"masks/{mpath.name}"), f"masks/{mpath.name}")
        mask, e = mask_from_array(raw, image.shape, f"masks/{mpath.name}")
        return Sample(image, mask, self.metas[i], e)


def _float_or_none(v) -> float | None:
    try:
        f = float(v)
        return f if np.isfinite(f) else None
    except (TypeError, ValueError):
        return None


def _positive_or_none(v) -> float | None:
    f = _float_or_none(v)
    return f if f is not None and f > 0 else None


class PhantomSource(DataSource):
    def __init__(self, spec: str, n: int, seed: int = 0, size: tuple[int, int] | None = None):
        from .phantom import phantom_plan
        self.seed, self.size = seed, size
        plan = phantom_plan(n, seed)
        metas = [SampleMeta(spec, f"phantom_{seed}_{i:04d}", None, hc, trimester_from_hc(hc),
                            {"phantom": True, "ga_weeks_drawn": round(ga, 2)}) for i, (ga, hc) in enumerate(plan)]
        super().__init__(spec, metas)

    def _load(self, i: int) -> Sample:
        return _phantom_sample(self.spec, self.seed, i, self.size, self.metas[i].hc_mm)


@lru_cache(maxsize=512)
def _phantom_sample(spec, seed, i, size, hc_mm) -> Sample:
    from .phantom import PhantomSpec, make_phantom
    ph = make_phantom(seed * 100_003 + i, hc_mm=hc_mm, spec=PhantomSpec() if size is None else PhantomSpec(size=size))
    meta = SampleMeta(spec, f"phantom_{seed}_{i:04d}", ph.pixel_size_mm, ph.hc_mm, trimester_from_hc(ph.hc_mm),
                      {"phantom": True})
    return Sample(ph.image, ph.mask, meta, ph.ellipse)


def parse_spec(spec: str) -> tuple[str, str]:
    spec = (spec or "").strip()
    if not spec:
        raise DataError("no data source given: use hc18:PATH, folder:PATH or phantom[:N[:SEED]]")
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind not in ("hc18", "folder", "phantom"):
        raise DataError(f"unknown data source {spec!r}: use hc18:PATH, folder:PATH or phantom[:N[:SEED]]")
    return kind, arg.strip()


def open_source(spec: str, allowed_roots: Sequence[str | os.PathLike] | None = None,
                strict: bool = False) -> DataSource:
    """Open a data source by its spec string. With `allowed_roots`, a path must lie under one of them."""
    kind, arg = parse_spec(spec)
    if kind == "phantom":
        n, seed = DEFAULT_PHANTOM_N, 0
        if arg:
            parts = arg.split(":")
            try:
                n = int(parts[0])
                seed = int(parts[1]) if len(parts) > 1 else 0
            except ValueError:
                raise DataError(f"phantom:N[:SEED] expects integers, got {arg!r}") from None
        if not 1 <= n <= 10_000:
            raise DataError(f"phantom count must be between 1 and 10000, got {n}")
        return PhantomSource(f"phantom:{n}" + (f":{seed}" if seed else ""), n, seed)
    if not arg:
        raise DataError(f"{kind}: needs a path, e.g. {kind}:/data/hc18")
    path = resolve_path(arg, allowed_roots)
    if kind == "hc18":
        return HC18Source(f"hc18:{arg}", path, strict, allowed_roots)
    return FolderSource(f"folder:{arg}", path, strict, allowed_roots)


def resolve_path(path: str | os.PathLike, allowed_roots: Sequence[str | os.PathLike] | None = None) -> Path:
    """Resolve a user-typed path; refuse it unless it lies under an allowed root (when roots are given)."""
    p = Path(os.path.expanduser(str(path))).resolve()
    if allowed_roots is not None:
        roots = [Path(r).resolve() for r in allowed_roots]
        if not any(p == r or r in p.parents for r in roots):
            shown = ", ".join(str(r) for r in roots) or "(none)"
            raise DataError(f"path {path} is outside the allowed data folders: {shown}")
    if not p.exists():
        raise DataError(f"path not found: {path}")
    return p


# ----------------------------------------------------------------------------- safe zip upload
# what an upload may hold: images (each checked by its header before a byte of it is written), the HC18 CSV and
# per-image JSON / text notes (small); anything else, and the Finder's __MACOSX/ and ._ files, is left out
TEXT_EXTS = (".csv", ".json", ".txt", ".md")
MAX_TEXT_BYTES = 16 * 2**20
MAX_MEMBER_BYTES = 256 * 2**20  # no image of at most 40 Mpx needs more (8-bit gray PNG of 40 Mpx: ~40 MB)
HEAD_BYTES = 1 << 20  # an image's header lies within its first MiB (PNG: 33 bytes; JPEG: after EXIF, <= 64 KiB)


class DamagedZip(DataError):
    """The zip itself is broken (truncated, a checksum that does not match): a half-written upload looks so too,
    so this one, unlike a refusal of its content, is worth reading again a moment later."""


def _damaged(exc: BaseException) -> DamagedZip:
    text = str(exc).lower()
    if "crc" in text:
        return DamagedZip("the zip is damaged (a file's checksum does not match): re-create it")
    if "encrypt" in text or "password" in text:
        return DamagedZip("the zip is encrypted: upload one without a password")
    if "compression" in text or isinstance(exc, NotImplementedError):
        return DamagedZip("the zip uses a compression method this server cannot read: re-create it with the "
                          "usual one (deflate)")
    return DamagedZip("the zip is damaged (a file in it is cut short or cannot be unpacked): re-create it")


def _member_limit(name: str, head: bytes, what: str) -> int:
    """The most bytes member `name` may hold, from its kind and (an image) its header: refuses before any of
    it is written when the header is not an image's or states absurd dimensions."""
    from .validate import image_header_size
    ext = Path(name).suffix.lower()
    if ext in TEXT_EXTS:
        return MAX_TEXT_BYTES
    if not head:
        raise DataError(f"{what} is empty: remove it from the zip or replace it with the image")
    w, h = image_header_size(head, what)  # DataError: not an image, or over the pixel / side limits
    return encoded_limit(w, h)


def encoded_limit(width: int, height: int) -> int:
    """The most bytes an image file of width x height pixels may hold: no encoding needs more than 8 bytes a
    pixel (16-bit RGBA, uncompressed) and a MiB of headers and metadata."""
    return min(MAX_MEMBER_BYTES, width * height * 8 + HEAD_BYTES)


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _kept(name: str) -> bool:
    """Members worth extracting: images and the small text files a dataset carries (not __MACOSX/, ._a.png)."""
    parts = name.replace("\\", "/").split("/")
    if "__MACOSX" in parts or parts[-1].startswith("._") or parts[-1] in (".DS_Store", "Thumbs.db"):
        return False
    return Path(name).suffix.lower() in IMAGE_EXTS + TEXT_EXTS


def safe_extract_zip(zip_path: str | os.PathLike, dest: str | os.PathLike, max_bytes: int = 500 * 2**20,
                     max_files: int = 20_000) -> Path:
    """Extract a user's zip safely: no absolute paths, no '..', no links, bounded size and count; each member is
    streamed, an image's header is read (type and pixel size) before a byte of it is written, and the bytes
    actually unpacked are counted per member and in all (a zip's declared sizes may lie). Members that are
    neither images nor small text files (CSV, JSON) are left out. DataError, worded for the user, for every
    refusal (DamagedZip for a broken zip); `dest` may hold a part of the upload then: extract into a
    temporary folder and delete it on failure (pipeline.browse.open_upload does)."""
    dest = Path(dest).resolve()
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise DamagedZip("the upload is not a valid zip file: re-create it (a .zip of the dataset folder)") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_files:
            raise DataError(f"the zip has {len(infos)} entries (limit {max_files}): split the dataset")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise DataError(f"the zip unpacks to {total / 2**20:.0f} MiB (limit {max_bytes / 2**20:.0f} MiB): "
                            f"upload a smaller part of the dataset")
        for info in infos:
            name = info.filename
            if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in Path(name).parts \
                    or ".." in name.replace("\\", "/").split("/"):
                raise DataError(f"unsafe path in zip: {name!r} (absolute or with '..'): re-create the zip from "
                                f"inside the dataset folder")
            mode = (info.external_attr >> 16) & 0o170000
            if mode == 0o120000:
                raise DataError(f"links are not allowed in the zip: {name!r}: put the file itself in the zip")
            target = (dest / name).resolve()
            if dest not in target.parents and target != dest:
                raise DataError(f"unsafe path in zip: {name!r}: re-create the zip from inside the dataset folder")
        dest.mkdir(parents=True, exist_ok=True)
        written = 0
        try:
            for info in infos:
                target = (dest / info.filename).resolve()
                if info.is_dir() or not _kept(info.filename):
                    continue
                what = info.filename
                with zf.open(info) as src:
                    head = b""
                    while len(head) < HEAD_BYTES and (chunk := src.read(HEAD_BYTES - len(head))):
                        head += chunk
                    # a TIFF larger than a MiB may keep its header at its end: written (bounded) into the
                    # temporary folder first, checked there, and removed with it when refused
                    late = Path(what).suffix.lower() in TIFF_EXTS and len(head) == HEAD_BYTES
                    limit = MAX_MEMBER_BYTES if late else _member_limit(info.filename, head, what)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    size = 0
                    with open(target, "wb") as out:
                        chunk = head
                        while chunk:
                            size += len(chunk)
                            written += len(chunk)
                            if size > limit:  # read, not declared: the header may lie about sizes
                                raise DataError(f"{what} unpacks to more than {_mib(limit)}, more than its kind "
                                                f"and pixel size need: re-save it or leave it out of the zip")
                            if written > max_bytes:
                                raise DataError(f"the zip unpacks to more than {max_bytes / 2**20:.0f} MiB: "
                                                f"upload a smaller part of the dataset")
                            out.write(chunk)
                            chunk = src.read(1 << 20)
                    if late:
                        from .validate import image_header_size
                        w, h = image_header_size(target, what)
                        if size > encoded_limit(w, h):
                            raise DataError(f"{what} unpacks to {_mib(size)}, more than a {w}x{h} image needs "
                                            f"({_mib(encoded_limit(w, h))}): re-save it or leave it out of the zip")
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            raise _damaged(exc) from None
    return dest


def dataset_root_in(folder: Path) -> tuple[str, Path]:
    """Find the dataset inside an extracted upload: returns (kind, root) for an HC18 or folder layout."""
    candidates = [folder] + sorted(p for p in folder.rglob("*") if p.is_dir())
    for c in candidates[:2000]:
        if (c / "images").is_dir():
            return "folder", c
        if (c / HC18Source.CSV).is_file() or ((c / "training_set").is_dir()):
            return "hc18", c
    raise DataError("the zip holds neither an images/ + masks/ folder nor the HC18 layout: put the images in "
                    "images/ and their masks in masks/ (or upload HC18's training_set/ with its CSV)")


# ----------------------------------------------------------------------------- selections and splits
def trimester_counts(metas: Sequence[SampleMeta]) -> dict[str, int]:
    counts = {t: 0 for t in (*TRIMESTERS, "unknown")}
    for m in metas:
        counts[m.trimester if m.trimester in TRIMESTERS else "unknown"] += 1
    return counts


def _subject(m: SampleMeta) -> str:
    return str(m.extra.get("subject", m.name))


def split_indices(metas: Sequence[SampleMeta], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                  seed: int = 0, names: Sequence[str] = ("train", "val", "test")) -> dict[str, list[int]]:
    """Seeded train/val/test split: no subject (HC18's 010_HC and 010_2HC) in two parts; stratified by
    trimester so each part keeps the trimester mix."""
    if len(fractions) != len(names) or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError("fractions must be non-negative, one per part, and sum to 1")
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(metas):
        groups.setdefault(_subject(m), []).append(i)
    strata: dict[str, list[str]] = {}
    for subj, idx in groups.items():
        strata.setdefault(metas[idx[0]].trimester or "unknown", []).append(subj)
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {n: [] for n in names}
    for tri in sorted(strata):
        subjects = sorted(strata[tri])
        rng.shuffle(subjects)
        total = sum(len(groups[s]) for s in subjects)
        bounds = np.cumsum(fractions) * total
        taken = 0
        for s in subjects:
            part = int(np.searchsorted(bounds, taken, side="right"))
            part = min(part, len(names) - 1)
            out[names[part]].extend(groups[s])
            taken += len(groups[s])
    return {k: sorted(v) for k, v in out.items()}


def nested_subsets(pool: Sequence[int], sizes: Sequence[int], seed: int = 0) -> dict[int, list[int]]:
    """Nested N_real subsets (5 ⊂ 10 ⊂ 20 ...): prefixes of one seeded permutation of the pool."""
    pool = list(pool)
    if max(sizes, default=0) > len(pool):
        raise DataError(f"asked for {max(sizes)} real images but the pool holds only {len(pool)}")
    order = list(np.random.default_rng(seed).permutation(pool))
    return {int(n): [int(i) for i in order[:n]] for n in sorted(sizes)}


def images_per_trimester_available(metas: Sequence[SampleMeta], trimesters: Sequence[str],
                                   wanted: int = 20, pool: Sequence[int] | None = None) -> tuple[int, str]:
    """(n, note): the most images per trimester that `select_per_trimester` can draw for every one of
    `trimesters`, capped at `wanted` (the paper's 20), and a note naming the short trimester when the
    source has fewer than `wanted` (empty otherwise). The dashboard's offline source phantom:24 has 17
    second-trimester images: the paper's 20 would refuse to start."""
    pool = list(range(len(metas))) if pool is None else list(pool)
    counts = {t: sum(metas[i].trimester == t for i in pool) for t in trimesters}
    if not counts:
        return wanted, ""
    short = min(counts, key=counts.get)
    n = min(wanted, counts[short])
    note = (f"the source has {counts[short]} {short}-trimester images, so images per trimester is "
            f"{n} (paper: {wanted})") if n < wanted else ""
    return n, note


def select_per_trimester(metas: Sequence[SampleMeta], n: int = 20, seed: int = 0,
                         pool: Sequence[int] | None = None,
                         trimesters: Sequence[str] = TRIMESTERS) -> dict[str, list[int]]:
    """Seeded choice of n images per trimester (the paper's 20 per trimester for each LoRA)."""
    pool = list(range(len(metas))) if pool is None else list(pool)
    rng = np.random.default_rng(seed)
    out = {}
    for t in trimesters:
        cands = [i for i in pool if metas[i].trimester == t]
        if len(cands) < n:
            raise DataError(f"only {len(cands)} {t}-trimester images available, {n} asked for: lower "
                            f"the images per trimester or use a larger data source")
        out[t] = sorted(int(i) for i in rng.choice(cands, size=n, replace=False))
    return out
