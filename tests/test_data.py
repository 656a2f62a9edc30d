"""Data sources, HC18 against its CSV, trimesters, phantoms, selections and bad inputs."""
import json
import shutil
import zipfile

import cv2
import numpy as np
import pytest

from pipeline.cli_data import summarize
from pipeline.data import (DataError, nested_subsets, open_source, safe_extract_zip, select_per_trimester,
                           split_indices, trimester_counts)
from pipeline.masks import Ellipse, refit


# ----------------------------------------------------------------------------- real HC18
def test_hc18_every_pair_matches_the_csv(hc18_root):
    """HC from each loaded (filled) mask's fitted ellipse x pixel size agrees with the CSV's HC."""
    out = summarize(f"hc18:{hc18_root}")
    assert out["n"] == 799
    assert out["problems"] == []
    assert out["hc_mm"]["median_abs_error"] < 0.1
    assert out["hc_mm"]["max_abs_error"] < 1.0


def test_hc18_trimester_split_close_to_paper(hc18_root):
    src = open_source(f"hc18:{hc18_root}")
    c = trimester_counts(src.metas)
    n = len(src)
    assert c["unknown"] == 0
    for t, want in (("first", 15), ("second", 70), ("third", 15)):
        assert abs(100 * c[t] / n - want) <= 3, (t, c)


def test_hc18_sample_vocabulary(hc18_root):
    src = open_source(f"hc18:{hc18_root}")
    s = src[0]
    assert s.image.dtype == np.uint8 and s.image.ndim == 2
    assert s.mask.dtype == bool and s.mask.shape == s.image.shape
    assert s.mask.mean() > 0.05  # filled, not an outline
    assert s.meta.pixel_size_mm > 0 and s.meta.hc_mm > 0 and s.meta.trimester in ("first", "second", "third")
    assert s.meta.extra["subject"] == s.name[:3]


def _copy_hc18_subset(hc18_root, dst, names):
    (dst / "training_set").mkdir(parents=True)
    for n in names:
        for suffix in ("", "_Annotation"):
            shutil.copy(hc18_root / "training_set" / f"{n}{suffix}.png", dst / "training_set")
    return dst


def test_hc18_missing_csv_row_and_bad_files(hc18_root, tmp_path):
    root = _copy_hc18_subset(hc18_root, tmp_path / "hc", ["000_HC", "001_HC", "003_HC"])
    csv = (hc18_root / "training_set_pixel_size_and_HC.csv").read_text().splitlines()
    keep = [csv[0]] + [l for l in csv[1:] if l.startswith(("000_HC.", "001_HC."))]
    (root / "training_set_pixel_size_and_HC.csv").write_text("\n".join(keep) + "\n")
    src = open_source(f"hc18:{root}")
    assert len(src) == 3
    assert any("003_HC.png has no row" in w for w in src.warnings)
    assert src.metas[2].trimester is None
    with pytest.raises(DataError, match="003_HC.png has no row"):
        open_source(f"hc18:{root}", strict=True)
    # corrupt image
    (root / "training_set" / "001_HC.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="001_HC.png.*corrupt"):
        src[1]
    # empty annotation
    img = cv2.imread(str(root / "training_set" / "000_HC.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(root / "training_set" / "000_HC_Annotation.png"), np.zeros_like(img))
    with pytest.raises(DataError, match="empty"):
        src[0]
    # annotation of the wrong size
    cv2.imwrite(str(root / "training_set" / "000_HC_Annotation.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match="does not match image size"):
        src[0]


# ----------------------------------------------------------------------------- folder: layout
def _folder(tmp_path, n=4, outline=False, ext=".png", suffix=""):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        e = Ellipse(80 + i, 60, 100, 70, 10 * i)
        img = (np.random.default_rng(i).random((120, 160)) * 255).astype(np.uint8)
        cv2.imwrite(str(root / "images" / f"img{i}{ext}"), img)
        if outline:
            m = np.zeros((120, 160), np.uint8)
            cv2.ellipse(m, (80 + i, 60), (50, 35), 10 * i, 0, 360, 255, 1)
        else:
            m = e.fill((120, 160)).astype(np.uint8) * 255
        cv2.imwrite(str(root / "masks" / f"img{i}{suffix}.png"), m)
    return root


@pytest.mark.parametrize("suffix", ["", "_Annotation", "_mask"])
def test_folder_source_matches_masks_by_stem(tmp_path, suffix):
    root = _folder(tmp_path, suffix=suffix)
    src = open_source(f"folder:{root}")
    assert len(src) == 4 and src.warnings == []
    s = src[2]
    assert s.mask.shape == s.image.shape and s.mask.any()


def test_folder_outline_masks_are_filled(tmp_path):
    src = open_source(f"folder:{_folder(tmp_path, outline=True)}")
    s = src[0]
    assert s.mask.sum() > 0.9 * np.pi * 50 * 35
    assert s.ellipse is not None


def test_folder_meta_json_gives_trimester_and_pixel_size(tmp_path):
    root = _folder(tmp_path)
    (root / "meta").mkdir()
    (root / "meta" / "img0.json").write_text(json.dumps({"trimester": "third", "pixel_size_mm": 0.2,
                                                         "synthetic": True, "qc": 0.93}))
    (root / "meta" / "img1.json").write_text("{not json")
    src = open_source(f"folder:{root}")
    assert src.metas[0].trimester == "third" and src.metas[0].pixel_size_mm == 0.2
    assert src.metas[0].extra["synthetic"] is True
    assert any("img1.json is not valid JSON" in w for w in src.warnings)


def test_folder_bad_inputs_give_clear_errors(tmp_path):
    root = _folder(tmp_path)
    (root / "images" / "img3.png").write_bytes(b"not an image at all")
    src = open_source(f"folder:{root}")
    with pytest.raises(DataError, match="img3.png.*corrupt"):
        src[3]
    cv2.imwrite(str(root / "masks" / "img2.png"), np.zeros((120, 160), np.uint8))
    with pytest.raises(DataError, match="empty"):
        src[2]
    cv2.imwrite(str(root / "masks" / "img1.png"), np.full((60, 60), 255, np.uint8))
    with pytest.raises(DataError, match="mask size 60x60 does not match image size 160x120"):
        src[1]
    (root / "masks" / "img0.png").unlink()
    src = open_source(f"folder:{root}")
    assert any("img0.png has no mask" in w for w in src.warnings)
    assert src[0].mask is None
    with pytest.raises(DataError, match="no images/ folder"):
        open_source(f"folder:{root / 'images'}")


def test_bad_specs_and_paths(tmp_path):
    for spec, msg in [("", "no data source"), ("nonsense:1", "unknown data source"),
                      ("folder:", "needs a path"), ("phantom:abc", "expects integers"),
                      ("phantom:0", "between 1 and 10000"), (f"folder:{tmp_path}/nope", "not found")]:
        with pytest.raises(DataError, match=msg):
            open_source(spec)
    outside = _folder(tmp_path)
    with pytest.raises(DataError, match="outside the allowed data folders"):
        open_source(f"folder:{outside}", allowed_roots=[tmp_path / "elsewhere"])
    with pytest.raises(DataError, match="outside the allowed"):
        open_source(f"folder:{tmp_path}/../../etc", allowed_roots=[tmp_path])
    assert len(open_source(f"folder:{outside}", allowed_roots=[tmp_path])) == 4


# ----------------------------------------------------------------------------- phantoms
def test_phantoms_are_deterministic_per_seed_and_labelled():
    a, b = open_source("phantom:6"), open_source("phantom:6")
    for i in range(6):
        sa, sb = a[i], b[i]
        assert (sa.image == sb.image).all() and (sa.mask == sb.mask).all()
        assert sa.meta.pixel_size_mm > 0
        hc = sa.ellipse.head_circumference_mm(sa.meta.pixel_size_mm)
        assert hc == pytest.approx(sa.meta.hc_mm, rel=1e-6)
        ex = refit(sa.mask)
        assert ex.valid, ex.reason
    other = open_source("phantom:6:1")
    assert not (other[0].image == a[0].image).all()
    assert [m.trimester for m in a.metas[:3]] == ["second", "first", "third"]


def test_phantom_head_size_follows_trimester():
    src = open_source("phantom:60")
    size = {t: [] for t in ("first", "second", "third")}
    for s in src:
        size[s.meta.trimester].append(s.mask.mean())
    means = {t: np.mean(v) for t, v in size.items()}
    assert means["first"] < means["second"] < means["third"]


def test_hc18_framing_draws_heads_as_large_as_hc18s_per_trimester():
    from pipeline.masks import hc_from_ga_weeks
    from pipeline.phantom import HC18_HEAD_AREA, PhantomSpec, make_phantom
    framed, demo = PhantomSpec(size=(144, 96), framing="hc18"), PhantomSpec(size=(144, 96))
    for tri, ga in (("first", 12.5), ("second", 21.0), ("third", 34.0)):
        hc = hc_from_ga_weeks(ga)
        areas = []
        for i in range(24):
            ph = make_phantom(i, hc_mm=hc, spec=framed)
            assert refit(ph.mask).valid, (tri, i, refit(ph.mask).reason)
            assert ph.ellipse.head_circumference_mm(ph.pixel_size_mm) == pytest.approx(hc, rel=1e-6)
            areas.append(ph.mask.mean())
        assert np.median(areas) == pytest.approx(HC18_HEAD_AREA[tri][0], rel=0.25), tri
        assert np.median(areas) > np.median([make_phantom(i, hc_mm=hc, spec=demo).mask.mean() for i in range(24)])
    with pytest.raises(ValueError, match="framing must be one of demo, hc18"):
        PhantomSpec(framing="zoomed")


# ----------------------------------------------------------------------------- selections
def test_splits_are_disjoint_subject_grouped_and_seeded(hc18_root):
    src = open_source(f"hc18:{hc18_root}")
    sp = split_indices(src.metas, (0.7, 0.15, 0.15), seed=0)
    sets = [set(v) for v in sp.values()]
    assert sum(map(len, sets)) == len(src)
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    subj = [{src.metas[i].extra["subject"] for i in s} for s in sets]
    assert not (subj[0] & subj[1] or subj[0] & subj[2] or subj[1] & subj[2])
    assert abs(len(sets[0]) / len(src) - 0.7) < 0.03
    assert split_indices(src.metas, (0.7, 0.15, 0.15), seed=0) == sp
    assert split_indices(src.metas, (0.7, 0.15, 0.15), seed=1) != sp
    for part in sp.values():  # stratified: each part keeps the trimester mix
        c = trimester_counts([src.metas[i] for i in part])
        assert abs(c["second"] / len(part) - 0.7) < 0.06


def test_nested_subsets_and_per_trimester_selection():
    src = open_source("phantom:200")
    sub = nested_subsets(range(100), [5, 10, 20, 50], seed=3)
    assert set(sub[5]) < set(sub[10]) < set(sub[20]) < set(sub[50])
    assert nested_subsets(range(100), [5, 10, 20, 50], seed=3) == sub
    with pytest.raises(DataError, match="pool holds only"):
        nested_subsets(range(10), [20])
    sel = select_per_trimester(src.metas, n=5, seed=0)
    for t, idx in sel.items():
        assert len(idx) == 5 and all(src.metas[i].trimester == t for i in idx)
    assert select_per_trimester(src.metas, n=5, seed=0) == sel
    with pytest.raises(DataError, match="first-trimester images available"):
        select_per_trimester(src.metas, n=1000)


# ----------------------------------------------------------------------------- zip uploads
def test_safe_extract_zip(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as z:  # a real image: members are checked as images since issue 35
        z.writestr("ds/images/a.png", cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    assert (safe_extract_zip(good, tmp_path / "out") / "ds/images/a.png").is_file()
    for bad_name in ("../evil.txt", "/abs/evil.txt", "ds/../../evil.txt"):
        bad = tmp_path / "bad.zip"
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr(bad_name, b"x")
        with pytest.raises(DataError, match="unsafe path"):
            safe_extract_zip(bad, tmp_path / "out2")
    assert not (tmp_path / "evil.txt").exists()
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.bin", b"\0" * (2 * 2**20))
    with pytest.raises(DataError, match="limit"):
        safe_extract_zip(big, tmp_path / "out3", max_bytes=2**20)
    (tmp_path / "notzip.zip").write_bytes(b"hello")
    with pytest.raises(DataError, match="not a valid zip"):
        safe_extract_zip(tmp_path / "notzip.zip", tmp_path / "out4")
