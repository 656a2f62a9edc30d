"""The Data tab's named endpoints through gradio_client against the running dashboard (app_url)."""
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from pipeline.phantom import PhantomSpec, make_phantom

# load_data(source, upload, alpha, trimester) -> these outputs, in order
OUT = ["source", "status", "summary", "chart", "gallery", "page", "number", "detail", "headline", "info"]


@pytest.fixture
def client(app_url):
    """A new client is a new session (its own per-session state)."""
    return Client(app_url, verbose=False)


def load(client, spec="", upload=None, alpha=0.4, trimester="all") -> dict:
    out = client.predict(spec, handle_file(str(upload)) if upload else None, alpha, trimester,
                         api_name="/load_data")
    return dict(zip(OUT, out))


def test_endpoints_are_named(client):
    names = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/load_data", "/sample_detail", "/data_summary"} <= set(names)


def test_load_phantoms(client):
    r = load(client, "phantom:6:1")
    assert r["summary"]["n"] == 6 and r["summary"]["spec"] == "phantom:6:1"
    assert sum(r["summary"]["trimesters"].values()) == 6
    assert len(r["gallery"]) == 6
    img = cv2.imread(r["gallery"][0]["image"], cv2.IMREAD_UNCHANGED)
    assert img is not None and max(img.shape[:2]) <= 256
    assert r["page"].startswith("page 1 / 1")
    assert "not patient data" in r["status"]
    assert r["number"] == 1 and r["info"]["name"] == "phantom_1_0000"
    assert r["chart"]["type"] == "plotly"


def test_hc18_through_the_api(client, hc18_root):
    r = load(client, f"hc18:{hc18_root}")
    s = r["summary"]
    assert s["n"] == 799 and s["trimesters"]["unknown"] == 0
    assert len(r["gallery"]) == 24 and r["page"].startswith("page 1 / 34")
    assert r["info"]["name"] == "000_HC.png" and abs(r["info"]["hc_mm"] - 44.3) < 0.01
    assert abs(r["info"]["hc_from_mask_mm"] - 44.3) < 0.2


@pytest.mark.parametrize("spec, message", [
    ("folder:/etc", "outside the allowed data folders"),
    ("hc18:/", "outside the allowed data folders"),
    ("nonsense:/x", "unknown data source"),
    ("phantom:lots", "expects integers"),
])
def test_bad_sources_give_clear_errors(client, spec, message):
    with pytest.raises(AppError, match=message) as err:
        load(client, spec)
    assert "Traceback" not in str(err.value)


def test_missing_path_inside_a_root(client, app_work_dir):
    with pytest.raises(AppError, match="path not found"):
        load(client, f"folder:{app_work_dir}/no-such-dataset")


def _phantom_zip(path: Path, prefix="mydata/", extra=None, n=2, size=(96, 64)) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            ph = make_phantom(7 + i, spec=PhantomSpec(size=size))
            zf.writestr(f"{prefix}images/u{i}.png", cv2.imencode(".png", ph.image)[1].tobytes())
            zf.writestr(f"{prefix}masks/u{i}.png", cv2.imencode(".png", ph.mask.astype(np.uint8) * 255)[1].tobytes())
            zf.writestr(f"{prefix}meta/u{i}.json", json.dumps({"hc_mm": ph.hc_mm, "pixel_size_mm": ph.pixel_size_mm}))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def test_zip_upload_with_dotdot_is_refused(client, tmp_path, app_work_dir):
    uploads = app_work_dir / "uploads"
    before = set(uploads.iterdir()) if uploads.exists() else set()  # other tests upload good zips
    z = _phantom_zip(tmp_path / "evil.zip", extra={"../../escaped.txt": b"gotcha"})
    with pytest.raises(AppError, match="unsafe path in zip"):
        load(client, "phantom:4", upload=z)
    assert not any(app_work_dir.parent.rglob("escaped.txt"))
    assert (set(uploads.iterdir()) if uploads.exists() else set()) == before  # nothing kept, not even a temp


def test_not_a_zip_is_refused(client, tmp_path):
    f = tmp_path / "data.zip"
    f.write_bytes(b"\x89PNG not a zip")
    with pytest.raises(AppError, match="not a valid zip"):
        load(client, "", upload=f)


def test_good_zip_is_loaded(client, tmp_path, app_work_dir):
    r = load(client, "phantom:4", upload=_phantom_zip(tmp_path / "good.zip", n=3))
    spec = r["summary"]["spec"]
    assert spec.startswith("folder:") and spec.endswith("/mydata")
    assert Path(spec.split(":", 1)[1]).is_relative_to(app_work_dir / "uploads")
    assert r["summary"]["n"] == 3 and len(r["gallery"]) == 3
    assert r["info"]["has_mask"] is True and r["info"]["size_px"] == "96x64"
    # the uploaded source is now this session's source
    img, headline, info = client.predict(3, 0.4, api_name="/sample_detail")
    assert info["name"] == "u2.png"


def test_two_sessions_do_not_share_state(app_url):
    a, b = Client(app_url, verbose=False), Client(app_url, verbose=False)
    load(a, "phantom:5")
    load(b, "phantom:9")
    _, _, info = b.predict(7, 0.4, api_name="/sample_detail")
    assert info["name"] == "phantom_0_0006"
    with pytest.raises(AppError, match="source has 5 samples"):
        a.predict(7, 0.4, api_name="/sample_detail")
    # a third, fresh session still sees the default source
    c = Client(app_url, verbose=False)
    _, _, info = c.predict(24, 0.4, api_name="/sample_detail")
    assert info["source"] == "phantom:24"


def test_data_summary_endpoint(client, tmp_path):
    """data-summary on this session's source: HC from each mask's fitted ellipse vs the reference HC."""
    load(client, upload=_phantom_zip(tmp_path / "hc.zip", prefix="", n=4, size=(192, 128)))
    out = client.predict(api_name="/data_summary")
    assert out["n"] == 4 and out["problems"] == []
    assert sum(out["trimesters"].values()) == 4
    # the phantom masks are drawn from their ellipse: the refit HC agrees to a few tenths of a mm
    assert out["hc_mm"]["median_abs_error"] < 1.0


def test_heavy_jobs_queue_with_a_visible_position(app_url):
    """A second user's heavy job waits in the queue (with its position) while the first one runs. The first is
    a LoRA training of 100000 steps, cancelled once the second was seen waiting, so no timing decides the
    outcome (it was a ~6 s HC check that had to outlast the second request's start)."""
    import time

    from gradio_client.utils import Status
    a, b = Client(app_url, verbose=False), Client(app_url, verbose=False)
    load(b, "phantom:8")

    def within(limit_s, cond):  # wait for a condition; the limit only bounds a failure
        deadline = time.monotonic() + limit_s
        while not cond():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True
    running = {Status.PROCESSING, Status.ITERATING, Status.PROGRESS}
    ja = a.submit("phantom:24", ["second"], "queue-a", 2, 100000, 4, 4, 1e-4, 2, 1.0, 0, 0, 0.0, 0, 0.0,
                  "the base's own", 0, 0, api_name="/train_lora")
    try:
        # training steps are streaming (loading the base and encoding the images yield nothing: a cancel then
        # waits for them), so the cancel below lands between two steps
        assert within(300, lambda: len(ja.outputs()) >= 3), (ja.status(), ja.outputs()[-1:])
        jb = b.submit(api_name="/data_summary")
        assert within(120, lambda: jb.status().code == Status.IN_QUEUE), jb.status()
        sb = jb.status()
        assert sb.rank == 0 and sb.queue_size >= 1
        assert ja.status().code in running  # the first job is still the one running
    finally:
        ja.cancel()
    assert jb.result(timeout=300)["n"] == 8  # the second runs once the first is gone


def test_corrupt_image_in_an_upload_is_refused_by_name_and_nothing_kept(client, tmp_path, app_work_dir):
    """Since issue 35 every member is checked as an image before it is written: a zip holding one that is
    not is refused, naming the file and the fix, and keeps nothing (it was extracted and shown unreadable)."""
    uploads = app_work_dir / "uploads"
    before = set(uploads.iterdir()) if uploads.exists() else set()
    z = _phantom_zip(tmp_path / "broken.zip", n=2, extra={"mydata/images/a_broken.png": b"garbage"})
    with pytest.raises(AppError, match=r"cannot read mydata/images/a_broken\.png: the file is corrupt or not an "
                                       r"image \(use a PNG, JPEG, BMP or TIFF file\)"):
        load(client, upload=z)
    assert (set(uploads.iterdir()) if uploads.exists() else set()) == before
    r = load(client, upload=_phantom_zip(tmp_path / "fixed.zip", n=2))  # the same without it loads
    assert r["summary"]["n"] == 2
