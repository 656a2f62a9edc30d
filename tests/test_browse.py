"""pipeline.browse: the Data tab's logic without a browser (pages, detail, summary, uploads; chart: pages.charts)."""
import json
import re
import zipfile

import cv2
import numpy as np
import pytest

from pipeline import browse
from pipeline.data import DataError, open_source
from pipeline.phantom import PhantomSpec, make_phantom


def _write_folder_dataset(root, n=3, corrupt=None, size=(96, 64)):
    """images/ + masks/ + meta/ from phantoms (the synthetic-dataset layout)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "meta").mkdir()
    for i in range(n):
        ph = make_phantom(100 + i, spec=PhantomSpec(size=size))
        cv2.imwrite(str(root / "images" / f"s{i}.png"), ph.image)
        cv2.imwrite(str(root / "masks" / f"s{i}.png"), ph.mask.astype(np.uint8) * 255)
        (root / "meta" / f"s{i}.json").write_text(json.dumps(
            {"hc_mm": ph.hc_mm, "pixel_size_mm": ph.pixel_size_mm, "synthetic": True}))
    if corrupt is not None:
        (root / "images" / f"s{corrupt}.png").write_bytes(b"not a png at all")
    return root


def test_pages_cover_every_sample_once():
    src = open_source("phantom:30")
    seen = []
    for p in range(browse.n_pages(30)):
        items, shown, page, problems = browse.gallery_page(src, p, alpha=0.5)
        assert page == p and not problems and len(items) == len(shown)
        seen += shown
    assert seen == list(range(30))
    assert len(browse.gallery_page(src, 0)[0]) == browse.PER_PAGE
    # out-of-range pages clamp instead of failing (a stale Next click)
    assert browse.gallery_page(src, 99)[2] == 1 and browse.gallery_page(src, -3)[2] == 0
    assert browse.page_label(30, 30, 1) == "page 2 / 2 · 25–30 of 30"


def test_thumbnails_are_downscaled_and_tinted():
    src = open_source("phantom:2")
    (plain, _), = browse.gallery_page(src, 0, alpha=0.0, per_page=1)[0]
    (tinted, cap), = browse.gallery_page(src, 0, alpha=0.8, per_page=1)[0]
    assert max(plain.shape[:2]) <= browse.THUMB_SIDE and plain.shape[2] == 3
    assert plain.dtype == np.uint8
    s = src[0]
    m = cv2.resize(s.mask.astype(np.uint8), plain.shape[1::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
    # inside the head the tint moves pixels toward the mask colour (blue high, red low)
    assert tinted[m][:, 2].mean() > plain[m][:, 2].mean() + 40
    assert re.fullmatch(r"#1 · T[123] · \d+", cap)


def test_trimester_filter():
    src = open_source("phantom:40")
    for t in ("first", "second", "third"):
        idx = browse.filtered_indices(src.metas, t)
        assert idx and all(src.metas[i].trimester == t for i in idx)
    assert browse.filtered_indices(src.metas, "unknown") == []
    assert browse.filtered_indices(src.metas, "all") == list(range(40))
    with pytest.raises(DataError, match="unknown trimester filter"):
        browse.filtered_indices(src.metas, "fourth")


def test_summary_and_charts_from_metadata():
    from pages.charts import data_figure  # the Data tab's chart (pages/charts.py: every chart in one place)
    src = open_source("phantom:20")
    s = browse.summary(src)
    assert s["n"] == 20 and sum(s["trimesters"].values()) == 20 and s["phantom"] == 20
    assert s["hc_mm"]["known"] == 20 and s["hc_mm"]["min"] <= s["hc_mm"]["median"] <= s["hc_mm"]["max"]
    json.dumps(s)  # the API returns it as JSON
    fig = data_figure(src.metas, src.spec)
    bar = fig.data[0]
    assert list(bar.x) == ["first", "second", "third"]
    assert [int(v) for v in bar.y] == [s["trimesters"][t] for t in ("first", "second", "third")]
    hist_total = sum(len(tr.x) for tr in fig.data[1:])
    assert hist_total == 20


def test_charts_without_hc_say_so(tmp_path):
    from pages.charts import data_figure
    root = _write_folder_dataset(tmp_path / "ds", n=2)
    for p in (root / "meta").iterdir():
        p.unlink()
    src = open_source(f"folder:{root}")
    fig = data_figure(src.metas)
    assert len(fig.data) == 1 and fig.data[0].x[-1] == "unknown"
    assert any("no head circumference" in a.text for a in fig.layout.annotations)


def test_sample_detail_and_headline():
    src = open_source("phantom:3")
    img, info = browse.sample_detail(src, 2, alpha=0.4)
    s = src[2]
    assert img.shape == (*s.image.shape, 3)
    assert info["index"] == 2 and info["trimester"] == s.meta.trimester
    assert abs(info["hc_from_mask_mm"] - s.meta.hc_mm) < 1.0
    line = browse.headline(info)
    assert "trimester" in line and "GA" in line and "phantom" in line
    with pytest.raises(DataError, match="does not exist"):
        browse.sample_detail(src, 3)


def test_unreadable_sample_is_a_crossed_tile_not_a_crash(tmp_path):
    root = _write_folder_dataset(tmp_path / "ds", n=3, corrupt=1)
    src = open_source(f"folder:{root}")
    items, shown, _, problems = browse.gallery_page(src, 0)
    assert len(items) == 3 and len(problems) == 1 and "s1.png" in problems[0]
    assert items[1][1].endswith("unreadable")
    assert browse.summary(src)["synthetic"] == 3


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_open_upload_extracts_once_and_finds_the_dataset(tmp_path):
    ds = _write_folder_dataset(tmp_path / "ds", n=2)
    entries = {f"mydata/{p.relative_to(ds)}": p.read_bytes() for p in ds.rglob("*") if p.is_file()}
    z = _zip(tmp_path / "up.zip", entries)
    uploads = tmp_path / "uploads"
    spec = browse.open_upload(z, uploads)
    assert spec.startswith("folder:") and spec.endswith("/mydata")
    assert len(open_source(spec, [uploads])) == 2
    assert browse.open_upload(z, uploads) == spec  # same content: reused, not extracted again
    assert len(list(uploads.iterdir())) == 1


def test_open_upload_refuses_unsafe_or_empty_zips_and_leaves_nothing(tmp_path):
    uploads = tmp_path / "w" / "uploads"
    with pytest.raises(DataError, match="unsafe path"):
        browse.open_upload(_zip(tmp_path / "evil.zip", {"images/a.png": b"x", "../../evil.txt": b"x"}), uploads)
    with pytest.raises(DataError, match="neither an images/"):
        browse.open_upload(_zip(tmp_path / "none.zip", {"readme.txt": b"hello"}), uploads)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK but not really")
    with pytest.raises(DataError, match="not a valid zip"):
        browse.open_upload(bad, uploads)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "w" / "evil.txt").exists()
    assert list(uploads.iterdir()) == []


def test_suggest_sources(tmp_path):
    data = tmp_path / "data"
    (data / "hc18" / "training_set").mkdir(parents=True)
    _write_folder_dataset(data / "mine", n=1)
    work = tmp_path / "work"
    _write_folder_dataset(work / "synthetic" / "run1", n=1)
    (work / "synthetic" / "all-rejected" / "rejected").mkdir(parents=True)  # no images/: not a dataset to open
    (data / "empty").mkdir()
    got = browse.suggest_sources([data, tmp_path / "missing"], work, default="phantom:24")
    assert got == ["phantom:24", f"hc18:{data / 'hc18'}", f"folder:{data / 'mine'}",
                   f"folder:{work / 'synthetic' / 'run1'}"]
