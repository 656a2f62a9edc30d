"""What every page shares (pages/common.py, issue 9): the stop registry (one flag per running job, pruned when
it ends), name validation and the "follow the Data tab" wiring."""
import pytest
from pathlib import Path

from pages.common import StopRegistry, safe_name
from pipeline.data import DataError


class Request:
    def __init__(self, session_hash):
        self.session_hash = session_hash


def test_a_job_gets_its_own_flag_stop_sets_it_and_it_is_dropped_when_the_job_ends():
    reg = StopRegistry()
    seen = []

    @reg.job
    def job(n, request=None):
        flag = reg.flag(request)
        for i in range(n):
            seen.append(flag.is_set())
            yield i

    a = job(3, request=Request("a"))
    next(a)
    assert len(reg) == 1 and reg.stop(Request("a")) and not reg.stop(Request("b"))  # b runs nothing
    list(a)
    assert seen == [False, True, True] and len(reg) == 0  # the ended job's flag is gone
    assert not reg.stop(Request("a"))
    assert list(job(2, Request("a"))) == [0, 1] and seen[-2:] == [False, False]  # a new start, a new flag
    closed = job(5, request=None)  # gradio_client calls without a session share the "api" key
    next(closed)
    closed.close()  # a client that went away: the flag is dropped too
    assert len(reg) == 0


def test_safe_name_refuses_instead_of_cutting():
    with pytest.raises(DataError, match="LoRA name is empty"):  # never defaulted onto a run (issue 35)
        safe_name("", "LoRA name")
    with pytest.raises((DataError, ValueError), match="sweep name"):
        safe_name("../x", "sweep name")


def test_the_source_boxes_follow_the_data_tab(tmp_path):
    import app
    ctx = app.make_context("tiny", [str(tmp_path / "data")], str(tmp_path / "work"))
    demo = app.build_app(ctx)
    spec_id = ctx.shared["data_spec"]._id
    followers = {ctx_id for f in demo.fns.values() if any(t[0] == spec_id for t in f.targets)
                 for ctx_id in (o._id for o in f.outputs)}
    boxes = {b.elem_id: b._id for b in demo.blocks.values() if getattr(b, "elem_id", None) in
             ("lora-source", "ft-source", "sw-train")}
    assert set(boxes) == {"lora-source", "ft-source", "sw-train"} and set(boxes.values()) <= followers


def test_experiments_handlers_are_functions_of_the_context(tmp_path):
    """The Experiments tab's handlers are module-level functions of ctx: testable without building the tab."""
    import gradio as gr

    import app
    from pages import experiments as X
    ctx = app.make_context("tiny", [str(tmp_path / "data")], str(tmp_path / "work"))
    assert X.list_sweeps(ctx) == [] and X.list_synthetic(ctx) == ["(none)"]
    (ctx.work_dir / "sweeps" / "s1").mkdir(parents=True)
    (ctx.work_dir / "sweeps" / "s1" / "sweep.json").write_text('{"train": "phantom:12"}')
    assert X.list_sweeps(ctx) == ["s1"]
    with pytest.raises(gr.Error, match="choose a sweep"):
        X.open_sweep(ctx, "")
    status, *_, name, train, tests, n_real, repeats, epochs, augs, segmenter = X.open_sweep(ctx, "s1")
    assert "0/" in status and (name, train, tests) == ("s1", "phantom:12", "heldout")


def test_bind_ctx_keeps_what_gradio_reads():
    import inspect
    import typing

    import gradio as gr

    from pages.common import bind_ctx

    def job(ctx, name, request: gr.Request, progress=gr.Progress()):
        yield ctx, name, request

    def plain(ctx, name):
        return ctx, name
    h = bind_ctx(job, "CTX")
    assert list(inspect.signature(h).parameters) == ["name", "request", "progress"]
    assert inspect.isgeneratorfunction(h) and typing.get_type_hints(h) == {"request": gr.Request}
    assert list(h("n", request="r")) == [("CTX", "n", "r")]
    assert bind_ctx(plain, "CTX")("n") == ("CTX", "n") and bind_ctx(plain, 1).__name__ == "plain"


def test_finetune_handler_is_a_function_of_the_context(tmp_path):
    import gradio as gr

    import app
    from pages import finetune as F

    class Req:
        session_hash = "t"
    ctx = app.make_context("tiny", [str(tmp_path / "data")], str(tmp_path / "work"))
    with pytest.raises(gr.Error, match="n_real"):
        list(F.finetune_sam(ctx, "phantom:12", -1, "(none)", "", "none", 1, 5, 1e-5, 0, 20, 4, 40, 0, "r1", Req()))
    assert not (ctx.work_dir / "runs" / "r1").exists()  # refused before anything is written


def test_lora_handlers_are_functions_of_the_context(tmp_path):
    import gradio as gr

    import app
    from pages import lora as L

    class Req:
        session_hash = "t"
    ctx = app.make_context("tiny", [str(tmp_path / "data")], str(tmp_path / "work"))
    items, info = L.show_selection(ctx, "phantom:12", ["second"], 2, 0)
    assert len(items) == 2 and "2 pairs" in info
    with pytest.raises(gr.Error, match="LoRA name"):
        list(L.train_lora(ctx, "phantom:12", ["second"], "../x", 2, 2, 4, 4, 1e-4, 2, 1.0, 0, 0, 0.0, Req()))
    assert not (ctx.work_dir / "loras").exists() and L._JOBS.running(Req()) is None


def test_live_job_outlives_its_page_and_refuses_a_second_start():
    """A job runs in its own thread (issue 33): a reloaded page (a new session of the same browser) follows it
    and stops it; a second Start while it runs is refused by name; a follower misses no saved value."""
    import threading

    import gradio as gr

    from pages.common import LiveJobs, register_client

    class Req:
        def __init__(self, sh):
            self.session_hash = sh
    first, reloaded = Req("page-1"), Req("page-2")
    register_client("browser-a", first)
    register_client("browser-a", reloaded)
    go = threading.Event()

    def body(stop):
        yield "out", ("started", gr.skip())
        yield "out", (gr.skip(), "saved")  # a value a slow follower must not miss
        go.wait(10)
        while not stop.is_set():
            stop.wait(0.01)
        yield "out", ("stopped", gr.skip())
    jobs = LiveJobs("a test job", idle="nothing is testing", stopping="stopping the test")
    job = jobs.start(first, body, "`x`", 2)
    with pytest.raises(gr.Error, match="a test job is already running \\(`x`\\)"):
        jobs.start(reloaded, body, "`x`", 2)
    assert jobs.running(Req("someone-else")) is None
    follower = job.follow(attach=True)
    seen = [next(follower)]
    while seen[-1][1] != "saved":
        seen.append(next(follower))
    assert any(o[0] == "started" for o in seen)
    go.set()
    assert jobs.stop_handler(reloaded) == "stopping the test"  # the reloaded page's Stop reaches the job
    assert list(follower)[-1][0] == "stopped"
    assert jobs.running(reloaded) is None and not jobs.stop(reloaded)
    assert jobs.stop_handler(reloaded) == "nothing is testing"  # Stop with nothing running says so


def test_playground_handlers_are_functions_of_the_context(tmp_path):
    import gradio as gr

    import app
    from pages import playground as P
    from pipeline.masks import mask_bbox

    class Req:
        session_hash = "pg-handler-test"
    ctx = app.make_context("tiny", [str(tmp_path / "data")], str(tmp_path / "work"))
    with pytest.raises(gr.Error, match="pick an image first"):
        P.load_sample(ctx, "phantom:12", "")
    update, info = P.list_samples(ctx, "phantom:12")
    name = update["value"]
    assert update["choices"][0] == name and "12 images" in info
    annot, image, gt, px, info, *_ = P.load_sample(ctx, "phantom:12", name)
    assert annot["boxes"] == [] and image.ndim == 2 and gt["name"] == name and name in info
    x0, y0, x1, y1 = mask_bbox(gt["mask"])
    annot = {**annot, "boxes": [{"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1}]}
    over, text, files = P.segment_ui(ctx, annot, image, gt, px, P.BASE, 0.45, False, Req())
    dice = float(text.split("Dice vs ground truth: ")[1].split("*")[0])
    import cv2
    assert cv2.imread(over).shape[:2] == image.shape and dice > 0.8, text  # a PNG written once (picture_file)
    assert all(f.startswith(str(ctx.work_dir / "exports")) for f in files)
    with pytest.raises(gr.Error, match="no box"):
        P.segment_ui(ctx, {"image": annot["image"], "boxes": []}, image, gt, px, P.BASE, 0.45, False, Req())


def test_generation_handlers_are_functions_of_the_context(tmp_path):
    """Accept / Reject / Accept-all called directly with a ctx: the dataset name is checked (common.safe_name)
    before anything is written, and accepted pairs land in work_dir/synthetic/NAME."""
    import gradio as gr
    import numpy as np

    import app
    from pages import generation as P
    from pipeline.diffusion import dataset as D
    from pipeline.diffusion import generate as G
    from pipeline.masks import Ellipse, inject_mask
    ctx = app.make_context("tiny", [str(tmp_path / "data")], str(tmp_path / "work"))
    gray = np.full((128, 128), 60, np.uint8)
    smp = G.make_sample(inject_mask(gray, Ellipse(64, 64, 60, 44, 10).fill((128, 128))), 5,
                        {"trimester": "second", "prompt": "p", "steps": 20, "scale": 0.9, "guidance": 7.5,
                         "base": "b", "lora": "l", "threshold": 127})
    assert smp.valid
    value = P.editor_value(smp.gray, smp.extraction.mask)
    with pytest.raises(gr.Error, match="dataset name"):
        P.accept_one(ctx, [smp], {}, 0, value, "../x")
    with pytest.raises(gr.Error, match="dataset name"):
        P.accept_all(ctx, [smp], {}, 0.0, "a/b")
    assert not (ctx.work_dir / "synthetic").exists()  # refused before anything is written
    gallery, decisions, status = P.accept_one(ctx, [smp], {}, 0, value, "set1")
    assert decisions == {smp.name: "accepted"} and "**1** accepted" in status and "ACCEPTED" in gallery[0][1]
    assert [p.name for p in D.list_datasets(ctx.work_dir / "synthetic")] == ["set1"]
    gallery, decisions, status = P.reject_one(ctx, [smp], decisions, 0, "set1")
    assert decisions[smp.name] == "rejected" and "**0** accepted, 1 rejected" in status
    assert P.lora_choices(ctx) == [P.NO_LORA]  # no LoRA trained in this work_dir


def test_data_handlers_are_functions_of_the_context(tmp_path):
    """The Data tab's handlers called directly with a ctx: a source outside the allowed roots is refused,
    paging stays within the source, a sample's detail is its own."""
    import gradio as gr

    import app
    from pages import data as P
    ctx = app.make_context("tiny", [str(tmp_path / "data")], str(tmp_path / "work"))
    with pytest.raises(gr.Error, match="outside the allowed data folders"):
        P.load_data(ctx, f"folder:{tmp_path.parent}", None, 0.4, "all")
    spec, page, shown, _, status, summary, _, items, label, number, img, head, info = \
        P.load_data(ctx, "phantom:12", None, 0.4, "all")
    assert spec == "phantom:12" and page == 0 and summary["n"] == 12 and "**12**" in status
    assert len(items) == len(shown) and number == shown[0] + 1 and info["name"] == "phantom_0_0000"
    last_page, shown2, _, _ = P.next_page(ctx, spec, 99, 0.4, "all")  # past the end: the last page
    assert last_page == P.previous_page(ctx, spec, last_page + 1, 0.4, "all")[0] and shown2[-1] == 11
    img, head, info = P.sample_detail(ctx, spec, 12, 0.4)
    assert info["name"] == "phantom_0_0011" and img is not None
    # a reloaded page loads the last source this browser loaded (issue 33); one that no longer opens is offered
    restored = P.restore_last(ctx, "phantom:12", ctx.default_source, 0.4, "all")
    assert restored[0] == "phantom:12" and "restored" in restored[4] and len(restored) == 13
    gone = P.restore_last(ctx, f"folder:{tmp_path / 'data' / 'gone'}", ctx.default_source, 0.4, "all")
    assert gone[3]["value"].endswith("gone") and "could not be opened" in gone[4]


def test_realism_handler_is_a_function_of_the_context(tmp_path):
    """The Generation tab's realism panel: how_real(ctx, ...) checks the dataset name and refuses a dataset
    with no accepted pair before loading anything."""
    import gradio as gr

    import app
    from pages import realism_panel as R
    ctx = app.make_context("tiny", [str(tmp_path / "data")], str(tmp_path / "work"))
    with pytest.raises(gr.Error, match="dataset name"):
        R.how_real(ctx, "../x", "second", None, "phantom:12")
    (ctx.work_dir / "synthetic" / "empty" / "images").mkdir(parents=True)
    with pytest.raises(gr.Error, match="no accepted pairs yet"):
        R.how_real(ctx, "empty", "second", "(none: base model only)", "phantom:12")
    assert not (ctx.work_dir / "cache").exists()


def test_a_streamed_picture_is_written_once_and_never_rewritten(tmp_path, monkeypatch):
    """Galleries that stream (Generation, LoRA previews) re-send earlier pictures with every update. Handed to
    Gradio as arrays, each one's cache file is rewritten in place while the browser may be downloading it (the
    server logged "Too little data for declared Content-Length"); picture_file writes a content-named PNG once."""
    import tempfile

    import cv2
    import numpy as np

    from pages.common import picture_file
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[..., 0], rgb[2:5, 3:9, 2] = 200, 255  # red everywhere, a blue patch: channel order is checked
    p1 = picture_file(rgb)
    before = Path(p1).stat()
    p2 = picture_file(rgb.copy())
    assert p1 == p2 and Path(p1).parent.parent.parent == tmp_path / "sonosynth-pictures"
    after = Path(p2).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert (cv2.cvtColor(cv2.imread(p1), cv2.COLOR_BGR2RGB) == rgb).all()
    gray = np.arange(16 * 24, dtype=np.uint8).reshape(16, 24)
    assert picture_file(gray) != p1 and (cv2.imread(picture_file(gray), cv2.IMREAD_GRAYSCALE) == gray).all()
    assert picture_file(rgb[:, :12].copy()) != p1  # other pixels, another file
    with pytest.raises(ValueError, match="uint8"):
        picture_file(rgb.astype(np.float32))


def test_picture_folders_older_than_yesterday_are_removed(tmp_path, monkeypatch):
    """picture_file's folder does not grow for ever on a long-running server: the first picture of a day
    removes the day folders before yesterday (and the flat layout of before), nothing else."""
    import datetime
    import tempfile

    import numpy as np

    from pages.common import picture_file, prune_pictures
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = tmp_path / "sonosynth-pictures"
    today = datetime.date.today()
    days = [(today - datetime.timedelta(days=k)).isoformat() for k in range(4)]  # today, yesterday, 2, 3 days ago
    for d in [*days[1:], "ab", "notes"]:
        (root / d / "cd").mkdir(parents=True)
        (root / d / "cd" / "x.png").write_bytes(b"png")
    p = picture_file(np.zeros((4, 4), np.uint8))  # the day's first picture prunes
    assert Path(p).is_file() and Path(p).parent.parent.name == days[0]
    assert sorted(x.name for x in root.iterdir()) == sorted([days[0], days[1], "notes"])
    assert (root / days[1] / "cd" / "x.png").is_file()  # yesterday's pictures stay (a copy may be under way)
    (root / days[3]).mkdir()
    picture_file(np.ones((4, 4), np.uint8))  # not the day's first: no pruning on every call
    assert (root / days[3]).is_dir()
    assert prune_pictures(root, today) == 1 and not (root / days[3]).exists()
    assert prune_pictures(tmp_path / "absent", today) == 0


def test_gradio_is_not_patched_at_import_and_the_built_app_names_a_refused_field(tmp_path):
    """pages.common once patched the preprocess of five Gradio classes at import (issue 34); now the built app's
    fields are instances of subclasses that name the field, and Gradio's classes are untouched."""
    import gradio as gr

    import app
    import pages.common as C
    for cls, checked in C.CHECKED_FIELDS.items():
        assert "checked" not in cls.preprocess.__qualname__ and checked.preprocess is not cls.preprocess
        assert checked.__name__ == cls.__name__ and issubclass(checked, cls)
    demo = app.build_app(app.make_context("tiny", [str(tmp_path / "data")], str(tmp_path / "work")))
    fields = [b for b in demo.blocks.values() if isinstance(b, tuple(C.CHECKED_FIELDS))]
    assert fields and all(type(b) in C.CHECKED_FIELDS.values() for b in fields)
    num = next(b for b in fields if isinstance(b, gr.Number) and b.minimum is not None and b.label)
    assert num.get_block_name() == "number"
    rebuilt = type(num)(**num.constructor_args)  # what Gradio does for a session's update
    for field in (num, rebuilt):
        with pytest.raises(gr.Error) as refused:
            field.preprocess(num.minimum - 1)
        assert refused.value.message.startswith(f"{num.label}: ") and "minimum" in refused.value.message
    with pytest.raises(gr.Error) as plain:  # a Number made outside the app keeps Gradio's own message
        gr.Number(minimum=0, label="plain").preprocess(-1)
    assert not plain.value.message.startswith("plain:")
