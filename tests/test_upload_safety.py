"""Issue 35: small uploads that filled the disk, blank names that returned another run, unclear answers.

Pipeline level (no server): every zip member is checked as an image (its header, the bytes actually read)
before it is written, a damaged zip is named in words, uploads/ has a quota with the least recently used
uploads pruned, and a refused upload leaves nothing. Through the running dashboard (app_url, raw HTTP as an
adversarial client sends it): a server path given as /segment's image, and a call with missing arguments,
get a message naming the field instead of {"error": null}; blank names and n_val are refused by name.
Memory and time of a refused upload: `python -m pipeline bench upload` (no thresholds here)."""
from __future__ import annotations

import json
import os
import struct
import time
import urllib.request
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline import browse
from pipeline.data import DataError, read_image, safe_extract_zip
from pipeline.phantom import make_phantom
from pipeline.validate import check_image_size, check_name


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(w: int, h: int) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))


def _png(seed: int = 0) -> bytes:
    return cv2.imencode(".png", make_phantom(seed).image)[1].tobytes()


def _mask_png(seed: int = 0) -> bytes:
    return cv2.imencode(".png", make_phantom(seed).mask.astype(np.uint8) * 255)[1].tobytes()


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def _dataset_zip(path: Path, seed: int = 0, n: int = 2) -> Path:
    return _zip(path, {**{f"ds/images/p{i}.png": _png(seed + i) for i in range(n)},
                       **{f"ds/masks/p{i}.png": _mask_png(seed + i) for i in range(n)}})


def zeros_zip(path: Path, mib: int, head: bytes = b"") -> Path:
    """images/a.png = head + mib MiB of zeros, streamed (a 400 MiB member is a ~400 KB zip): the bench's zip."""
    from pipeline.upload_bench import zeros_zip as make
    return make(path, head=head, mib=mib)


def damaged_zip(path: Path) -> Path:
    """A good dataset zip with one byte of a member's data flipped: its CRC no longer matches."""
    good = _zip(path.with_suffix(".good.zip"), {"ds/images/a.png": _png(3), "ds/masks/a.png": _mask_png(3)})
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("ds/images/a.png")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _left(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


# ----------------------------------------------------------------------------- uploads, pipeline level
def test_zip_of_400_mib_zeros_named_png_is_refused_before_anything_is_kept(tmp_path):
    """The probe's 415 KB zip: images/a.png = 400 MiB of zeros was extracted and kept (801 MB for two)."""
    z = zeros_zip(tmp_path / "zeros.zip", 400)
    assert z.stat().st_size < 2**20
    uploads = tmp_path / "work" / "uploads"
    with pytest.raises(DataError, match=r"images/a\.png: the file is corrupt or not an image \(use a PNG"):
        browse.open_upload(z, uploads)
    assert _left(uploads) == []  # not the member, not a temporary folder


def test_member_bytes_are_capped_by_what_its_header_needs(tmp_path):
    """A real PNG header passes; 20 MiB of bytes behind it are more than its pixels could ever need."""
    z = zeros_zip(tmp_path / "tail.zip", 20, head=_png(1))
    with pytest.raises(DataError, match=r"images/a\.png unpacks to more than .* its kind and pixel size need"):
        browse.open_upload(z, tmp_path / "uploads")
    assert _left(tmp_path / "uploads") == []


@pytest.mark.parametrize("w,h,want", [(9000, 100, "at most 8192 px per side"), (7000, 7000, "at most 40 Mpx"),
                                      (20000, 20000, "at most 40 Mpx")])
def test_absurd_dimensions_in_a_zip_are_refused_from_the_header(tmp_path, w, h, want):
    z = _zip(tmp_path / "big.zip", {"ds/images/a.png": png_claiming(w, h), "ds/masks/a.png": png_claiming(w, h)})
    with pytest.raises(DataError, match=f"ds/images/a.png: .*{want}"):
        safe_extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out" / "ds" / "images" / "a.png").exists()


def test_image_side_limit_everywhere():
    with pytest.raises(DataError, match=r"the image: the image is 9000x100 px; at most 8192 px per side"):
        check_image_size(9000, 100, "the image")
    check_image_size(800, 540, "the image")


def test_damaged_zip_is_named_in_words_not_library_text(tmp_path):
    z = damaged_zip(tmp_path / "crc.zip")
    with pytest.raises(DataError) as err:
        browse.open_upload(z, tmp_path / "uploads")
    msg = str(err.value)
    assert msg == "the zip is damaged (a file's checksum does not match): re-create it"
    assert "CRC" not in msg and "BadZipFile" not in msg
    assert _left(tmp_path / "uploads") == []


def test_finder_junk_and_other_files_are_left_out(tmp_path):
    z = _zip(tmp_path / "mac.zip", {"ds/images/a.png": _png(4), "ds/masks/a.png": _mask_png(4),
                                   "__MACOSX/ds/images/._a.png": b"\0\5\26\7 resource fork",
                                   "ds/.DS_Store": b"\0" * 10, "ds/tool.exe": b"MZ" + b"\0" * 100})
    out = safe_extract_zip(z, tmp_path / "out")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == \
        ["ds/images/a.png", "ds/masks/a.png"]


def test_identical_content_is_stored_once_and_reuse_counts_as_use(tmp_path):
    uploads = tmp_path / "uploads"
    a = _dataset_zip(tmp_path / "a.zip")
    copy = tmp_path / "elsewhere" / "a.zip"
    copy.parent.mkdir()
    copy.write_bytes(a.read_bytes())
    spec = browse.open_upload(a, uploads)
    folder = next(uploads.iterdir())
    os.utime(folder, (time.time() - 7200,) * 2)
    assert browse.open_upload(copy, uploads) == spec
    assert len(list(uploads.iterdir())) == 1
    assert time.time() - folder.stat().st_mtime < 60  # reused now: the last to be pruned


def test_uploads_quota_prunes_the_least_recently_used(tmp_path):
    uploads = tmp_path / "uploads"
    for seed in (10, 20):
        browse.open_upload(_dataset_zip(tmp_path / f"z{seed}.zip", seed=seed), uploads)
    size = browse._folder_bytes(uploads) / 2
    old, mid = sorted(uploads.iterdir())
    os.utime(old, (time.time() - 7200,) * 2)  # used two hours ago
    os.utime(mid, (time.time() - 3600,) * 2)  # used an hour ago
    quota = int(size * 2.5)  # room for two
    new = browse.open_upload(_dataset_zip(tmp_path / "new.zip", seed=30), uploads, quota_bytes=quota)
    kept = set(uploads.iterdir())
    assert kept == {mid, Path(new.split(":", 1)[1]).parent}
    assert browse._folder_bytes(uploads) <= quota


def test_browsing_an_upload_marks_it_used(tmp_path):
    uploads = tmp_path / "uploads"
    spec = browse.open_upload(_dataset_zip(tmp_path / "a.zip", seed=60), uploads)
    folder = next(uploads.iterdir())
    os.utime(folder, (time.time() - 7200,) * 2)
    browse.mark_upload_used("phantom:4", uploads)  # not an upload: nothing happens
    browse.mark_upload_used(f"folder:{tmp_path}", uploads)
    assert time.time() - folder.stat().st_mtime > 7000
    browse.mark_upload_used(spec, uploads)
    assert time.time() - folder.stat().st_mtime < 60


def test_uploads_full_of_recent_ones_refuses_and_keeps_them(tmp_path):
    uploads = tmp_path / "uploads"
    first = browse.open_upload(_dataset_zip(tmp_path / "a.zip", seed=40), uploads)
    size = browse._folder_bytes(uploads)
    with pytest.raises(DataError, match=r"the uploads folder is full: .* --uploads-quota-mb"):
        browse.open_upload(_dataset_zip(tmp_path / "b.zip", seed=50), uploads, quota_bytes=int(size * 1.5))
    assert [str(p) for p in uploads.iterdir()] == [first.split(":", 1)[1].rsplit("/", 1)[0]]


def test_read_image_refuses_a_file_larger_than_its_pixels_need(tmp_path):
    """A typed folder's (or /segment's) file is checked the same way, before it is read into memory."""
    p = tmp_path / "a.png"
    p.write_bytes(_png(5) + b"\0" * (12 * 2**20))
    with pytest.raises(DataError, match=r"a\.png: the file holds 12 MiB, more than a \d+x\d+ image needs"):
        read_image(p)
    p.write_bytes(_png(5))
    assert read_image(p).shape == make_phantom(5).image.shape


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize("blank", ["", " ", "\t", None])
def test_blank_names_are_refused_with_an_example_never_defaulted(blank):
    with pytest.raises(DataError, match=r"^LoRA name is empty: type a name such as ux-second"):
        check_name(blank, "LoRA name")
    from pages.finetune import _run_name
    from pages.lora import _safe_name
    with pytest.raises(DataError, match=r"^LoRA name is empty: type a name such as ux-second"):
        _safe_name(blank)
    with pytest.raises(DataError, match=r"^run name is empty: type a name such as sam-n20"):
        _run_name(blank)


# ----------------------------------------------------------------------------- numeric settings
def test_n_real_and_n_val_over_what_the_data_holds_name_the_field_and_the_fix():
    from pipeline.hybrid import hybrid_items
    from pipeline.sam.finetune import FinetuneConfig
    with pytest.raises(DataError, match=r"^n_real: asked for 19 real pairs but the train part of phantom:24 holds "
                                        r"only 18: ask for at most 18 or use a larger source$"):
        hybrid_items(FinetuneConfig(data="phantom:24", n_real=19))
    with pytest.raises(DataError, match=r"^n_val: asked for 30 validation pairs but the validation part of "
                                        r"phantom:24 holds only \d+: ask for at most \d+ or use a larger source$"):
        hybrid_items(FinetuneConfig(data="phantom:24", n_real=2, n_val=30))


def test_lora_preview_scale_has_a_range():
    from pipeline.diffusion.lora import LoraTrainConfig
    for bad in (1e9, -1, float("nan")):
        with pytest.raises(DataError, match=r"preview LoRA scale \(preview_scale\) must"):
            LoraTrainConfig(data="phantom:24", trimester="second", preview_scale=bad).validate()
    LoraTrainConfig(data="phantom:24", trimester="second").validate()


# ----------------------------------------------------------------------------- through the dashboard, raw HTTP
def call_raw(app_url: str, api: str, data: list, timeout: float = 60) -> tuple[str, dict | list | None]:
    """POST /gradio_api/call/<api> and read its event stream: ("complete", outputs) or ("error", payload)."""
    req = urllib.request.Request(f"{app_url}gradio_api/call/{api}", data=json.dumps({"data": data}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        event_id = json.loads(r.read())["event_id"]
    event = None
    with urllib.request.urlopen(f"{app_url}gradio_api/call/{api}/{event_id}", timeout=timeout) as r:
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                body = line.split(":", 1)[1].strip()
                return event, (json.loads(body) if body and body != "null" else None)
    return str(event), None


def _message(payload) -> str | None:
    if isinstance(payload, dict):
        return payload.get("error") or payload.get("message")
    return None if payload is None else str(payload)


BOX = [20.0, 20.0, 200.0, 160.0]


@pytest.mark.parametrize("image,want", [
    ({"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}},
     "image: that file was not uploaded to this server: upload it first"),
    ("/etc/hostname", "image: cannot read '/etc/hostname' as its value: send an uploaded file"),
    ({"path": "/etc/hostname"}, "image: cannot read {'path': '/etc/hostname'} as its value: send an uploaded file"),
    (12, "image: cannot read 12 as its value: send an uploaded file"),
])
def test_segment_with_a_server_path_names_the_field(app_url, image, want):
    event, payload = call_raw(app_url, "segment", [image, *BOX, None, "base model", False])
    assert event == "error"
    msg = _message(payload)
    assert msg and msg.startswith(want), payload


def test_no_traceback_in_the_log_for_these_calls(app_url):
    from conftest import app_log_tail
    for data in (["/etc/passwd", *BOX, None, "base model", False], [None, 1.0],
                 [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, *BOX, None, "base model", False]):
        assert call_raw(app_url, "segment", data)[0] == "error"
    log = app_log_tail(2_000_000)
    assert "Traceback" not in log and "InvalidPathError" not in log, log[log.find("Traceback") - 300:][:3000]


def test_a_call_with_missing_arguments_names_them(app_url):
    event, payload = call_raw(app_url, "segment", [None, 1.0])
    assert event == "error"
    msg = _message(payload)
    assert msg and "/segment takes 8 arguments" in msg and "got 2: add y0, x1, y1, pixel_size_mm, model" in msg, \
        payload


def test_load_data_refuses_a_zip_of_zeros_and_a_damaged_zip_and_keeps_nothing(app_url, app_work_dir, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    uploads = app_work_dir / "uploads"
    before = set(uploads.iterdir()) if uploads.exists() else set()
    client = Client(app_url, verbose=False)
    with pytest.raises(AppError, match=r"images/a\.png: the file is corrupt or not an image"):
        client.predict("", handle_file(str(zeros_zip(tmp_path / "zeros.zip", 40))), 0.4, "all", api_name="/load_data")
    with pytest.raises(AppError, match=r"^the zip is damaged \(a file's checksum does not match\): re-create it$"):
        client.predict("", handle_file(str(damaged_zip(tmp_path / "crc.zip"))), 0.4, "all", api_name="/load_data")
    assert (set(uploads.iterdir()) if uploads.exists() else set()) == before
    from conftest import app_log_tail
    log = app_log_tail(400_000)
    assert "BadZipFile" not in log and "Bad CRC-32" not in log


@pytest.mark.parametrize("api,args,want", [
    ("train_lora", {"name": ""}, r"^LoRA name is empty: type a name such as ux-second"),
    ("train_lora", {"name": " "}, r"^LoRA name is empty: type a name such as ux-second"),
    ("finetune_sam", {"run_name": ""}, r"^run name is empty: type a name such as sam-n20"),
    ("finetune_sam", {"run_name": " "}, r"^run name is empty: type a name such as sam-n20"),
    ("finetune_sam", {"n_val": 5000}, r"n_val must be between 1 and 1000, got 5000"),
])
def test_blank_names_and_n_val_through_the_api(app_url, app_work_dir, api, args, want):
    """'' or ' ' once became lora / sam-run and returned that existing run as done in 0.3 s."""
    import re

    from test_api_bad_inputs import FT_OK, LORA_OK
    base = LORA_OK if api == "train_lora" else FT_OK
    event, payload = call_raw(app_url, api, list({**base, **args}.values()), timeout=120)
    msg = _message(payload)
    assert event == "error" and msg and re.search(want, msg), payload
    for sub in ("loras", "runs"):
        d = app_work_dir / sub
        assert not any(p.name in ("lora", "sam-run", "probe") for p in (d.iterdir() if d.is_dir() else []))
