"""Bad input at the boundaries (issue 8): model names, the one pixel limit, numeric ranges, names, data files
outside the allowed folders, unreadable images counted, clipped outlines filled, refused starts that leave
nothing behind, and the shared predictor under contention."""
from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data import DataError, open_source, read_gray
from pipeline.masks import Ellipse
from pipeline.validate import (MAX_IMAGE_PIXELS, check_float, check_int, check_name, image_header_size,
                               resolve_run)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header states width x height: what a decompression bomb looks like to a reader
    that checks the header (decoding it would need width*height bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _png(arr) -> bytes:
    return cv2.imencode(".png", np.asarray(arr, np.uint8))[1].tobytes()


def _folder(root: Path, n=3, size=(96, 64)) -> Path:
    from pipeline.phantom import PhantomSpec, make_phantom
    for d in ("images", "masks", "meta"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ph = make_phantom(3 + i, spec=PhantomSpec(size=size))
        (root / "images" / f"p{i}.png").write_bytes(_png(ph.image))
        (root / "masks" / f"p{i}.png").write_bytes(_png(ph.mask.astype(np.uint8) * 255))
    return root


# ----------------------------------------------------------------------------- names and numbers
@pytest.mark.parametrize("value, message", [
    (float("nan"), "epochs must be a finite number"), (float("inf"), "epochs must be a finite number"),
    (1e30, "epochs must be between 1 and 100"), (-1, "epochs must be between 1 and 100"),
    (2.5, "epochs must be a whole number"), (None, "epochs: a number is needed"),
    ("abc", "epochs: a number is needed"), (True, "epochs: a number is needed")])
def test_numbers_are_refused_by_field_name(value, message):
    with pytest.raises(DataError, match=message):
        check_int(value, "epochs", 1, 100)
    assert check_int(7.0, "epochs", 1, 100) == 7


def test_float_ranges_and_open_ends():
    with pytest.raises(DataError, match=r"lr must be in \(0, 1\)"):
        check_float(0, "lr", 0, 1, lo_open=True, hi_open=True)
    with pytest.raises(DataError, match="lr must be a finite number"):
        check_float("Infinity", "lr", 0, 1)
    assert check_float("1e-4", "lr", 0, 1, lo_open=True) == 1e-4


def test_long_names_are_refused_not_cut():
    assert check_name("run-1", "run name") == "run-1"
    with pytest.raises(DataError, match="run name is 78 characters long; at most 60"):
        check_name("a" * 78, "run name")
    for bad in ("../x", "/etc", ".hidden", "a b", "x/y"):
        with pytest.raises(DataError, match="run name"):
            check_name(bad, "run name")


def test_finetune_and_lora_settings_have_checked_ranges():
    from pipeline.diffusion.lora import LoraTrainConfig
    from pipeline.sam.finetune import FinetuneConfig
    for kw, msg in [({"box_jitter_px": 10**9}, "box_jitter_px"), ({"lr": float("inf")}, "lr"),
                    ({"seed": -1}, "seed must be between 0"), ({"n_real": 10**6}, "n_real"),
                    ({"weight_decay": float("nan")}, "weight_decay")]:
        with pytest.raises(DataError, match=msg):
            FinetuneConfig(data="phantom:12", **kw).validate()
    for kw, msg in [({"lr": float("inf")}, "lr"), ({"lr": 1e30}, "lr"), ({"grad_clip": float("nan")}, "grad_clip"),
                    ({"grad_clip": -1}, "grad_clip"), ({"seed": -1}, "seed"), ({"steps": 10**9}, "steps")]:
        with pytest.raises(DataError, match=msg):
            LoraTrainConfig(**kw).validate()


# ----------------------------------------------------------------------------- /segment's model is a run name
def test_model_is_a_run_name_inside_runs(tmp_path):
    runs = tmp_path / "work" / "runs"
    (runs / "good").mkdir(parents=True)
    for f in ("config.json", "best.safetensors"):
        (runs / "good" / f).write_text("{}")
    outside = tmp_path / "elsewhere"  # a folder that looks like a run, outside runs/
    outside.mkdir()
    for f in ("config.json", "best.safetensors"):
        (outside / f).write_text("{}")
    os.symlink(outside, runs / "linked")
    assert resolve_run(runs, "good") == (runs / "good").resolve()
    messages = set()
    for name in ("../../elsewhere", str(outside), "linked", "nope", "../runs/good/..", "a" * 80, ""):
        with pytest.raises(DataError) as err:
            resolve_run(runs, name)
        messages.add(str(err.value).split("named")[0])
    assert messages == {"model: no fine-tuned run "}  # one message: it tells nothing about what exists


# ----------------------------------------------------------------------------- one pixel limit
def test_pixel_limit_reads_the_header_without_decoding(tmp_path):
    bomb = png_claiming(20000, 20000)
    assert len(bomb) < 1000 and 20000 * 20000 > MAX_IMAGE_PIXELS
    with pytest.raises(DataError, match="big.png: the image has 400 Mpx; at most 40 Mpx are accepted"):
        image_header_size(bomb, "big.png")
    with pytest.raises(DataError, match="the image is 8000x6000, it has 48 Mpx; at most 40 Mpx"):
        image_header_size(png_claiming(8000, 6000), "the image")
    assert image_header_size(png_claiming(6000, 6000), "ok.png") == (6000, 6000)
    p = tmp_path / "big.png"
    p.write_bytes(bomb)
    with pytest.raises(DataError, match="big.png: the image has 400 Mpx"):
        read_gray(p)
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="corrupt or not an image"):
        read_gray(tmp_path / "junk.png")


def test_pixel_limit_in_folder_datasets_and_zips(tmp_path):
    from pipeline import browse
    from pipeline.data import safe_extract_zip
    root = _folder(tmp_path / "ds", n=2)
    (root / "images" / "p1.png").write_bytes(png_claiming(30000, 30000))
    src = open_source(f"folder:{root}")
    with pytest.raises(DataError, match="images/p1.png: the image has 900 Mpx"):
        src[1]
    items, shown, page, problems = browse.gallery_page(src, 0)
    assert len(problems) == 1 and "Mpx" in problems[0]
    import zipfile
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("d/images/a.png", png_claiming(20000, 20000))
        zf.writestr("d/masks/a.png", png_claiming(20000, 20000))
    with pytest.raises(DataError, match="d/images/a.png: the image has 400 Mpx"):  # from its header, before
        safe_extract_zip(z, tmp_path / "up")  # it is written (issue 35); it was refused at its first load
    assert not (tmp_path / "up" / "d" / "images" / "a.png").exists()


# ----------------------------------------------------------------------------- data files
def test_symlinked_images_outside_the_allowed_roots_are_refused(tmp_path):
    allowed = tmp_path / "data"
    secret = _folder(tmp_path / "secret", n=2)
    ds = allowed / "ds"
    ds.mkdir(parents=True)
    os.symlink(secret / "images", ds / "images")
    os.symlink(secret / "masks", ds / "masks")
    with pytest.raises(DataError, match="images/ links outside the allowed data folders"):
        open_source(f"folder:{ds}", [allowed])
    # one linked file inside a real images/ folder is refused when read
    ds2 = _folder(allowed / "ds2", n=2)
    (ds2 / "images" / "p1.png").unlink()
    os.symlink(secret / "images" / "p1.png", ds2 / "images" / "p1.png")
    src = open_source(f"folder:{ds2}", [allowed])
    assert src[0].image is not None
    with pytest.raises(DataError, match="images/p1.png links outside the allowed data folders"):
        src[1]
    # without allowed roots (the CLI, the user's own machine) links are followed
    assert open_source(f"folder:{ds}")[0].image is not None


def test_data_summary_counts_every_unreadable_image(tmp_path):
    from pipeline.cli_data import summarize
    root = _folder(tmp_path / "ds", n=8)
    for i in range(6):
        (root / "images" / f"p{i}.png").write_bytes(b"corrupt" * i)
    out = summarize(f"folder:{root}")
    assert out["unreadable"] == 6 and len(out["problems"]) == 6 and out["n"] == 8


@pytest.mark.parametrize("px", [-1, 0, "nan", "inf", "abc"])
def test_bad_pixel_size_is_unknown(tmp_path, px):
    from pipeline import browse
    root = _folder(tmp_path / "ds", n=1)
    (root / "meta" / "p0.json").write_text(json.dumps({"pixel_size_mm": px, "hc_mm": -5}))
    src = open_source(f"folder:{root}")
    assert src.metas[0].pixel_size_mm is None and src.metas[0].hc_mm is None
    assert "pixel size unknown" in browse.headline(browse.sample_detail(src, 0)[1])


def _clipped_outline(h=120, w=160):
    """An ellipse whose right part lies beyond the image edge, drawn as a 2 px outline."""
    e = Ellipse(cx=130.0, cy=60.0, width=90.0, height=70.0, angle=20.0)
    from pipeline.masks import draw_ellipse
    outline = draw_ellipse((h, w), e, thickness=2) > 0
    return e, outline


def test_folder_and_hc18_loaders_fill_an_outline_cut_by_the_frame(tmp_path):
    e, outline = _clipped_outline()
    truth = e.fill(outline.shape)
    assert outline[:, -1].any() and truth.sum() > 5 * outline.sum()  # runs off the edge; a line, not a head
    image = np.full(outline.shape, 90, np.uint8)
    # folder: layout
    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "c.png").write_bytes(_png(image))
    (root / "masks" / "c_Annotation.png").write_bytes(_png(outline.astype(np.uint8) * 255))
    # HC18 layout
    hc = tmp_path / "hc18" / "training_set"
    hc.mkdir(parents=True)
    (hc / "001_HC.png").write_bytes(_png(image))
    (hc / "001_HC_Annotation.png").write_bytes(_png(outline.astype(np.uint8) * 255))
    for spec in (f"folder:{root}", f"hc18:{tmp_path / 'hc18'}"):
        s = open_source(spec)[0]
        iou = (s.mask & truth).sum() / (s.mask | truth).sum()
        assert iou > 0.95, (spec, iou)
        assert s.ellipse is not None and abs(s.ellipse.cx - e.cx) < 2
    # a filled mask that touches the edge stays as it is (it is not an outline)
    (root / "masks" / "c_Annotation.png").write_bytes(_png(truth.astype(np.uint8) * 255))
    assert (open_source(f"folder:{root}")[0].mask == truth).all()


# ----------------------------------------------------------------------------- refused starts leave nothing
def test_refused_finetune_start_writes_nothing(tmp_path):
    from pipeline.sam.finetune import FinetuneConfig, finetune
    out = tmp_path / "runs" / "r"
    for cfg in (FinetuneConfig(data="phantom:12", n_real=10**5, cache_dir=str(tmp_path / "c")),
                FinetuneConfig(data="phantom:12", n_real=2, synthetic="folder:/etc", cache_dir=str(tmp_path / "c")),
                FinetuneConfig(data="phantom:8", n_real=2, cache_dir=str(tmp_path / "c"))):
        with pytest.raises(DataError):
            next(finetune(cfg, out, allowed_roots=[tmp_path]))
        assert not out.exists() and not (tmp_path / "c").exists()


def test_finetune_never_validates_on_the_test_part(tmp_path):
    from pipeline.sam.finetune import FinetuneConfig, hybrid_items
    with pytest.raises(DataError, match="too small to hold out a validation part"):
        hybrid_items(FinetuneConfig(data="phantom:8", n_real=2))


def test_nonfinite_loss_stops_finetuning_with_a_message(tmp_path, monkeypatch):
    import torch

    from pipeline.runs import RunDir
    from pipeline.sam import finetune as F
    calls = {"n": 0}
    real = F.dice_ce_loss

    def exploding():
        fn = real()

        def loss(logits, target):
            calls["n"] += 1
            value = fn(logits, target)
            return value * float("nan") if calls["n"] >= 2 else value
        return loss
    monkeypatch.setattr(F, "dice_ce_loss", exploding)
    cfg = F.FinetuneConfig(data="phantom:12", n_real=6, n_val=1, epochs=2, batch_size=3, cache_dir=str(tmp_path / "c"))
    out = tmp_path / "runs" / "r"
    events = []
    with pytest.raises(DataError, match="training stopped at epoch 1, step 2: the loss is nan"):
        for ev in F.finetune(cfg, out):
            events.append(ev)
    assert not any(e["kind"] == "done" for e in events)
    st = RunDir(out).status()
    assert st["status"] == "failed" and "loss is nan" in st["message"]
    best = RunDir(out).weights_meta("best")
    assert best["epoch"] == 0  # the zero-shot decoder is what is kept, never a diverged one
    from safetensors.torch import load_file
    assert all(torch.isfinite(v).all() for v in load_file(out / "best.safetensors").values())


# ----------------------------------------------------------------------------- shared predictor
def test_shared_predictor_under_contention_gives_each_image_its_own_mask():
    """Threads segmenting two different images through ONE predictor (as the API's /segment callers do)
    each get the mask of their own image: the embedding travels with the call, not through shared state."""
    from pipeline.sam import load_predictor
    from pipeline.sam.evaluate import segment
    src = open_source("phantom:2:5")
    a, b = src[0], src[1]
    pred = load_predictor("tiny")
    boxes = {}
    for s in (a, b):
        ys, xs = np.nonzero(s.mask)
        boxes[s.name] = (xs.min() - 5, ys.min() - 5, xs.max() + 5, ys.max() + 5)
    expected = {s.name: segment(pred, s.image, boxes[s.name]).mask for s in (a, b)}
    assert (expected[a.name] != expected[b.name]).any()
    wrong, errors = [], []
    barrier = threading.Barrier(8)

    def work(k):
        s = (a, b)[k % 2]
        try:
            barrier.wait()
            for _ in range(6):
                m = segment(pred, s.image, boxes[s.name]).mask
                if not (m == expected[s.name]).all():
                    wrong.append(s.name)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))
    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not wrong


# ----------------------------------------------------------------------------- issue 35: blank names, n_val
@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_blank_lora_and_run_names_are_refused_by_name(blank):
    """A blank name once became `lora` / `sam-run` and returned that existing run as done."""
    from pages.finetune import _run_name
    from pages.lora import _safe_name
    with pytest.raises(DataError, match="LoRA name is empty: type a name"):
        _safe_name(blank)
    with pytest.raises(DataError, match="run name is empty: type a name"):
        _run_name(blank)


def test_n_val_has_a_checked_range_and_is_never_recorded_unused(tmp_path):
    from pipeline.sam.finetune import FinetuneConfig, finetune, hybrid_items
    with pytest.raises(DataError, match="n_val"):
        FinetuneConfig(data="phantom:24", n_val=5000).validate()
    with pytest.raises(DataError, match=r"n_val: asked for 30 validation pairs but the validation part of phantom:24 holds only \d+: ask for at most"):
        hybrid_items(FinetuneConfig(data="phantom:24", n_real=2, n_val=30))
    out = tmp_path / "runs" / "r"
    with pytest.raises(DataError, match="n_val"):
        next(finetune(FinetuneConfig(data="phantom:24", n_real=2, n_val=30, cache_dir=str(tmp_path / "c")), out))
    assert not out.exists()
    # the default validates on what there is, and says so (issue 35)
    train, val, warnings = hybrid_items(FinetuneConfig(data="phantom:24", n_real=2))
    assert val and f"n_val: the validation part of phantom:24 holds {len(val)} pairs, fewer than the default 40: " \
        f"all {len(val)} validate" in warnings
