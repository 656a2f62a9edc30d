"""Bad input through every named endpoint of a running dashboard (issue 8's "Done means"): each of the inputs
below is refused with a message that names the problem (never Gradio's generic "upstream app raised an
exception", never a traceback), nothing is written outside the work dir or for a refused start, the server
still serves afterwards, and its log has one warning line per refused input and no traceback.

The probe's counts (tried / clear / wrong / crash) are printed with -s: see `probe_counts`."""
from __future__ import annotations

import re

import struct
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from pipeline.phantom import make_phantom

LONG = "a" * 78  # over the 60-character limit: refused, never cut


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(w: int, h: int) -> bytes:
    """A few hundred bytes whose PNG header says w x h (a decompression bomb to anyone who decodes it)."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad-files")
    ph = make_phantom(11)
    cv2.imwrite(str(d / "head.png"), ph.image)
    (d / "bomb.png").write_bytes(png_claiming(20000, 20000))
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (d / "text.png").write_bytes(b"this is not an image")
    (d / "empty.png").write_bytes(b"")
    with zipfile.ZipFile(d / "bomb.zip", "w") as z:
        z.writestr("d/images/a.png", png_claiming(20000, 20000))
        z.writestr("d/masks/a.png", png_claiming(20000, 20000))
    with zipfile.ZipFile(d / "traversal.zip", "w") as z:
        z.writestr("../../escape.txt", "x")
    with zipfile.ZipFile(d / "nodata.zip", "w") as z:
        z.writestr("readme.txt", "no dataset here")
    (d / "notzip.zip").write_bytes(b"PK\x03\x04 not really a zip")
    return {p.stem if p.suffix == ".png" else p.name: str(p) for p in d.iterdir()}


# (endpoint, arguments (callables get the files dict), what the message must say). Non-finite numbers go
# as the strings "NaN" / "Infinity" (JSON has no NaN): what a raw HTTP client can send to a float field
BOX = (20.0, 20.0, 200.0, 160.0)
LORA_OK = dict(spec="phantom:24", trimesters=["second"], name="probe", n=2, steps=1, rank=4, alpha=4, lr=1e-4,
               batch_size=2, grad_clip=1.0, seed=0, preview_every=0, empty_prompt_prob=0.0, resolution=0,
               mask_loss_weight=0.0, timestep_bias="the base's own", timestep_bias_portion=0, timestep_bias_multiplier=0)
FT_OK = dict(spec="phantom:24", n_real=4, synthetic="(none)", n_synthetic="", aug="none", epochs=1, batch_size=2,
             lr=1e-5, weight_decay=0.0, jitter=20, aug_views=1, n_val=2, seed=0, run_name="probe")
GEN_OK = dict(trimester="second", lora="(none: base model only)", n=1, seed=0, steps=1, scale=0.9, guidance=7.5,
              batch_size=1, threshold=127, qc=False, dataset="probe", detail_lora="(none: base model only)",
              detail_strength=0.5, restore_aspect=0, ellipse_guidance="off", guidance_until=1.0)
SWEEP_OK = dict(name="probe-sweep", preset_name="smoke", train="phantom:24", tests="heldout", synthetic="(none)",
                lora_first="(none)", lora_second="(none)", lora_third="(none)", train_loras=False, n_real="",
                repeats="", epochs="", augmentations=[], detail_resolution="", restore_aspect="",
                detail_first="(none)", detail_second="(none)", detail_third="(none)")


def lora(**kw):
    return list({**LORA_OK, **kw}.values())


def ft(**kw):
    return list({**FT_OK, **kw}.values())


def gen(**kw):
    return list({**GEN_OK, **kw}.values())


def sweep(**kw):
    return list({**SWEEP_OK, **kw}.values())


def seg(image="head", box=BOX, px=None, model="base model"):
    return lambda f: [handle_file(f[image]), *box, px, model, False]


CASES = [
    # /load_data: spec, upload, alpha, trimester
    ("/load_data", ["folder:/etc", None, 0.4, "all"], "outside the allowed data folders"),
    ("/load_data", ["hc18:/", None, 0.4, "all"], "outside the allowed data folders"),
    ("/load_data", ["folder:../../../etc", None, 0.4, "all"], "outside the allowed data folders"),
    ("/load_data", ["nonsense:/x", None, 0.4, "all"], "unknown data source"),
    ("/load_data", ["phantom:lots", None, 0.4, "all"], "expects integers"),
    ("/load_data", ["phantom:0", None, 0.4, "all"], "between 1 and 10000"),
    ("/load_data", ["phantom:1000000", None, 0.4, "all"], "between 1 and 10000"),
    ("/load_data", lambda f: ["", handle_file(f["traversal.zip"]), 0.4, "all"], "unsafe path in zip"),
    ("/load_data", lambda f: ["", handle_file(f["notzip.zip"]), 0.4, "all"], "not a valid zip"),
    ("/load_data", lambda f: ["", handle_file(f["nodata.zip"]), 0.4, "all"], "neither an images/"),
    # /sample_detail: number, alpha (of the session's source: phantom:24)
    ("/sample_detail", [0, 0.4], "Sample #: Value 0 is less than minimum value 1"),
    ("/sample_detail", [10**9, 0.4], "does not exist"),
    ("/sample_detail", [-5, 0.4], "Sample #: Value -5 is less than minimum"),
    # /lora_selection: spec, trimesters, n, seed
    ("/lora_selection", ["folder:/etc", ["second"], 2, 0], "outside the allowed data folders"),
    ("/lora_selection", ["phantom:24", ["second"], 10**9, 0], "images per trimester must be between"),
    ("/lora_selection", ["phantom:24", ["second"], 2, -1], "seed must be between 0"),
    ("/lora_selection", ["phantom:24", [], 2, 0], "pick at least one trimester"),
    # /train_lora
    ("/train_lora", lora(lr="Infinity"), r"learning rate \(lr\) must be"),
    ("/train_lora", lora(lr=1e30), r"learning rate \(lr\) must be in \(0, 1\)"),
    ("/train_lora", lora(grad_clip=-1), "grad_clip"),
    ("/train_lora", lora(grad_clip="NaN"), "grad_clip"),
    ("/train_lora", lora(name="../../escape"), "LoRA name"),
    ("/train_lora", lora(name=LONG), "LoRA name is 78 characters long; at most 60"),
    ("/train_lora", lora(seed=-1), "seed must be between 0"),
    ("/train_lora", lora(steps=0), "steps: Value 0 is less than minimum value 1"),
    ("/train_lora", lora(empty_prompt_prob=2), "empty-prompt share .*: Value 2 is greater than maximum"),
    ("/train_lora", lora(spec="folder:/etc"), "outside the allowed data folders"),
    # /generate
    ("/generate", gen(n=0), "count: Value 0 is less than minimum value 1"),
    ("/generate", gen(guidance=1e9), "guidance: Value 1000000000.0 is greater than maximum"),
    ("/generate", gen(scale=-1), "LoRA scale: Value -1 is less than minimum"),
    ("/generate", gen(dataset="../escape"), "dataset name"),
    ("/generate", gen(threshold=999), "extractor threshold: Value 999 is greater than maximum"),
    ("/generate", gen(steps=10**6), "steps must be between"),
    ("/generate", gen(seed=-7), "seed"),
    ("/generate", gen(restore_aspect=9), "width / height: Value 9 is greater than maximum"),
    ("/generate", gen(restore_aspect=0.1), "restore aspect must be 0"),
    ("/generate", gen(detail_strength=0), "detail strength: Value 0 is less than minimum"),
    ("/generate", gen(ellipse_guidance="0.2, 1.5"), "ellipse guidance points are fractions of the schedule"),
    ("/generate", gen(ellipse_guidance="early"), "ellipse guidance: 'off' or fractions"),
    ("/generate", gen(guidance_until=1.5), "guide until .*Value 1.5 is greater than maximum"),
    ("/generate", gen(guidance_until="NaN"), "guide until .*expected a number, got 'NaN'"),
    ("/generate", gen(detail_strength="Infinity"), "detail strength: .*Infinity"),
    ("/train_lora", lora(resolution=100), "resolution must be 0"),
    ("/train_lora", lora(resolution=5000), "resolution .*greater than maximum"),
    ("/train_lora", lora(mask_loss_weight=-1), "mask loss weight .*less than minimum"),
    ("/train_lora", lora(mask_loss_weight="NaN"), "mask loss weight"),
    ("/train_lora", lora(timestep_bias="sideways"), "sideways"),
    ("/train_lora", lora(timestep_bias_multiplier=-1), "bias multiplier .*less than minimum"),
    ("/train_lora", lora(timestep_bias_multiplier=1e9), "timestep bias multiplier must be in"),
    ("/train_lora", lora(timestep_bias_portion=2), "bias portion .*greater than maximum"),
    # /lora_grid: trimester, lora, strengths, seeds, steps, guidance (numbers are checked before the LoRA)
    ("/lora_grid", ["second", "(none: base model only)", "0, 1", "0", 2, 7.5], "pick a LoRA"),
    ("/lora_grid", ["second", "(none: base model only)", "0, abc", "0", 2, 7.5], "expected numbers"),
    ("/lora_grid", ["second", "(none: base model only)", "0, 9", "0", 2, 7.5], "LoRA strength must be in"),
    ("/lora_grid", ["second", "(none: base model only)", "0", "0,1,2,3,4,5,6,7,8", 2, 7.5], "give 1 to 8 seeds"),
    ("/lora_grid", ["second", "(none: base model only)", "0", "0", 0, 7.5], "UniPC steps: Value 0 is less than"),
    # /accept_valid: min_qc, dataset
    ("/accept_valid", [0.8, "../escape"], "dataset name"),
    ("/accept_valid", [0.8, LONG], "at most 60"),
    # /finetune_sam
    ("/finetune_sam", ft(run_name=LONG), "run name is 78 characters long; at most 60"),
    ("/finetune_sam", ft(run_name="../escape"), "run name"),
    ("/finetune_sam", ft(n_real=10**6), "n_real must be between"),
    ("/finetune_sam", ft(n_real=19), "train part of phantom:24 holds only 18"),
    ("/finetune_sam", ft(jitter=10**9), "box_jitter_px"),
    ("/finetune_sam", ft(lr="Infinity"), "lr"),
    ("/finetune_sam", ft(seed=-1), "seed must be between 0"),
    ("/finetune_sam", ft(epochs=0), "epochs: Value 0 is less than minimum value 1"),
    ("/finetune_sam", ft(spec="folder:/etc"), "outside the allowed data folders"),
    ("/finetune_sam", ft(synthetic="folder:/etc"), "outside the allowed data folders"),
    ("/finetune_sam", ft(synthetic="folder:/etc", n_synthetic="abc"), "N synthetic"),
    # /segment: image, x0, y0, x1, y1, pixel_size_mm, model, ellipse_fit
    ("/segment", seg("bomb"), "the image has 400 Mpx; at most 40 Mpx"),
    ("/segment", seg("corrupt"), "corrupt or not an image"),
    ("/segment", seg("text"), "corrupt or not an image"),
    ("/segment", seg("empty"), "the file is empty"),
    ("/segment", seg(model="../../somewhere"), "no fine-tuned run named"),
    ("/segment", seg(model="/etc"), "no fine-tuned run named"),
    ("/segment", seg(model="no-such-run"), "no fine-tuned run named"),
    ("/segment", seg(box=("NaN", 0, 10, 10)), "non-finite"),
    ("/segment", seg(box=(5000, 5000, 6000, 6000)), "outside"),
    ("/segment", seg(box=(10, 10, 11, 11)), "too small"),
    ("/segment", seg(px=-1), "pixel_size_mm must be in"),
    # /sweep
    ("/sweep", sweep(name=LONG), "sweep name is 78 characters long"),
    ("/sweep", sweep(name="../escape"), "sweep name"),
    ("/sweep", sweep(tests="heldout, folder:/etc"), "outside the allowed data folders"),
    ("/sweep", sweep(train="folder:/etc"), "outside the allowed data folders"),
    ("/sweep", sweep(n_real="abc"), "N_real"),
    ("/sweep", sweep(repeats="-1"), "repeats"),
    ("/sweep", sweep(detail_resolution="256"), "detail_resolution trains the detail LoRAs with train_loras"),
    ("/sweep", sweep(restore_aspect="wide"), "width / height: expected a number"),
    ("/sweep", sweep(restore_aspect="0.1"), "restore_aspect must be 0"),
    ("/sweep", sweep(detail_second="../../etc"), "second-trimester detail LoRA: .*not in the list of choices"),
    # /open_sweep: a name from the list of past sweeps (none yet), never a path
    ("/open_sweep", ["../../etc"], "Past sweeps: .*not in the list of choices"),
    # /realism: dataset, trimester, LoRA (the Generation tab's "How real is it?")
    ("/realism", ["../escape", "second", "(none: base model only)"], "dataset name"),
    ("/realism", [LONG, "second", "(none: base model only)"], "at most 60"),
    ("/realism", ["no-such-set", "second", "(none: base model only)"], "has no accepted pairs yet"),
    # /export_hc18: spec, model, pixel size
    ("/export_hc18", ["folder:/etc", "base model", None], "outside the allowed data folders"),
]


def _call(client, api, args, files):
    args = args(files) if callable(args) else args
    return client.predict(*args, api_name=api)


@pytest.fixture(scope="module")
def outcomes(app_url, files):
    """Every case sent once (one client: one session, whose Data source is the default phantom:24)."""
    client = Client(app_url, verbose=False)
    present = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    out = []
    for api, args, want in CASES:
        if api not in present:  # an endpoint of a build without that tab: nothing to probe
            out.append((api, want, ABSENT))
            continue
        try:
            _call(client, api, args, files)
            out.append((api, want, None))
        except AppError as exc:
            out.append((api, want, str(exc)))
        except Exception as exc:  # noqa: BLE001  (the client could not even send it: counted as wrong)
            out.append((api, want, f"client error {type(exc).__name__}: {exc}"))
    return out


ABSENT = "(endpoint absent in this build)"


def probe_counts(outcomes) -> dict:
    import re
    outcomes = [o for o in outcomes if o[2] != ABSENT]
    clear = sum(1 for _, want, msg in outcomes if msg is not None and re.search(want, msg))
    crash = sum(1 for _, _, msg in outcomes if msg is not None and ("Traceback" in msg or "upstream" in msg.lower()))
    return {"tried": len(outcomes), "clear": clear, "wrong": len(outcomes) - clear - crash, "crash": crash}


def test_at_least_40_bad_inputs_across_every_named_endpoint(app_url):
    names = set(Client(app_url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"])
    probed = {api for api, _, _ in CASES}
    assert len(CASES) >= 40
    assert names - probed <= {"/data_summary"}, names - probed  # it takes no input (the session's source)
    assert probed <= names, probed - names  # a renamed endpoint must fail here, not skip as "absent" below


@pytest.mark.parametrize("k", range(len(CASES)), ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_bad_input_gets_a_message_naming_the_problem(outcomes, k):
    import re
    api, want, msg = outcomes[k]
    if msg == ABSENT:
        pytest.skip(f"{api} is not an endpoint of this build")
    assert msg is not None, f"{api}: accepted instead of refused ({want!r} expected)"
    assert re.search(want, msg), f"{api}: got {msg!r}, expected it to say {want!r}"
    assert "Traceback" not in msg and "upstream" not in msg.lower()


def test_probe_counts_and_the_server_still_serves(outcomes, app_url, files, app_work_dir, capsys):
    counts = probe_counts(outcomes)
    with capsys.disabled():
        print(f"\nbad-input probe: {counts}")
    assert counts["crash"] == 0
    client = Client(app_url, verbose=False)
    mask_path, info = client.predict(handle_file(files["head"]), *BOX, None, "base model", False, api_name="/segment")
    assert Path(mask_path).is_file() and info["mask_pixels"] > 0
    r = client.predict("phantom:4", None, 0.4, "all", api_name="/load_data")
    assert any("**4**" in str(v) for v in r)


def test_nothing_written_outside_the_work_dir_or_for_a_refused_start(outcomes, app_work_dir):
    for escaped in (app_work_dir.parent / "escape", app_work_dir.parent / "escape.txt",
                    app_work_dir.parent.parent / "escape.txt", app_work_dir / "escape"):
        assert not escaped.exists(), escaped
    for sub in ("loras", "synthetic", "runs", "sweeps"):
        d = app_work_dir / sub
        names = {p.name for p in d.iterdir()} if d.is_dir() else set()
        assert not any(n.startswith(("probe", "a" * 60, "escape")) for n in names), (sub, names)


def test_server_log_has_one_warning_per_refused_input_and_no_traceback(outcomes):
    from conftest import app_log_tail
    log = app_log_tail(2_000_000)
    at = log.find("Traceback")
    nxt = re.search(r"\n(INFO|WARNING|ERROR)\b", log[at + 1:]) if at >= 0 else None
    block = log[at:at + 1 + nxt.start()] if nxt else log[at:]  # up to the next log record
    # the head says where it came from, the tail what was raised (a framework traceback is 60 lines long)
    assert at < 0, log[max(0, at - 300):at] + block[:800] + "\n[…]\n" + block[-1500:]
    probed = sum(1 for _, _, msg in outcomes if msg != ABSENT)
    assert log.count("refused input") >= probed - 5  # a few are refused by Gradio before any handler


def test_only_what_a_page_hands_out_is_served(app_url, app_work_dir, files):
    """Files under the work dir (checkpoints, other users' uploads) are not downloadable by URL; a file an
    endpoint returns is (through Gradio's cache)."""
    import urllib.error
    import urllib.request
    secret = app_work_dir / "runs" / "someone" / "last_state.pt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(b"private")
    for path in (secret, app_work_dir / "uploads", Path("/etc/passwd")):
        try:
            with urllib.request.urlopen(f"{app_url}gradio_api/file={path}", timeout=10) as r:
                status = r.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status in (403, 404), (path, status)
    mask_path, _ = Client(app_url, verbose=False).predict(handle_file(files["head"]), *BOX, None, "base model", False,
                                                          api_name="/segment")
    assert Path(mask_path).stat().st_size > 0  # downloaded by the client from the server


def test_segment_under_contention_on_two_images(app_url, tmp_path):
    """Many /segment calls at once on two different images (the API's callers share one predictor, up to 4
    at a time): every answer is the mask of its own image, equal to the one a lone call gets."""
    from concurrent.futures import ThreadPoolExecutor
    phs = [make_phantom(21), make_phantom(22)]
    paths, boxes = [], []
    for i, ph in enumerate(phs):
        p = tmp_path / f"img{i}.png"
        cv2.imwrite(str(p), ph.image)
        ys, xs = np.nonzero(ph.mask)
        paths.append(str(p))
        boxes.append((float(xs.min() - 6), float(ys.min() - 6), float(xs.max() + 6), float(ys.max() + 6)))

    def call(i):
        client = Client(app_url, verbose=False)
        mask_path, info = client.predict(handle_file(paths[i % 2]), *boxes[i % 2], None, "base model", False,
                                         api_name="/segment")
        return i % 2, cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE) > 127, Path(mask_path).name
    alone = [call(0)[1], call(1)[1]]
    assert (alone[0] != alone[1]).any()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(24)))
    assert all((mask == alone[k]).all() for k, mask, _ in results)
    assert len({name for _, _, name in results}) == 24  # no two answers share (and overwrite) a file


def test_identical_uploads_at_the_same_moment_all_succeed(app_url, tmp_path):
    """Many clients send the same image bytes at once (Gradio keeps identical uploads at one path, which a
    second upload may be rewriting while the first is read): none is reported corrupt."""
    from concurrent.futures import ThreadPoolExecutor
    ph = make_phantom(23)
    ys, xs = np.nonzero(ph.mask)
    box = (float(xs.min() - 6), float(ys.min() - 6), float(xs.max() + 6), float(ys.max() + 6))
    paths = []
    for i in range(16):  # separate local files, same bytes
        p = tmp_path / f"same{i}.png"
        cv2.imwrite(str(p), ph.image)
        paths.append(str(p))

    def call(p):
        return Client(app_url, verbose=False).predict(handle_file(p), *box, None, "base model", False,
                                                      api_name="/segment")[1]["mask_pixels"]
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(call, paths))
    assert len(set(got)) == 1 and got[0] > 0


def test_lora_selection_answers_a_good_request(app_url):
    """The endpoint refused above also works: the seeded choice of 2 second-trimester pairs."""
    items, info = Client(app_url, verbose=False).predict("phantom:24", ["second"], 2, 0, api_name="/lora_selection")
    assert len(items) == 2 and "2 pairs" in info
