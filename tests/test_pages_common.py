"""What every page shares (pages/common.py, issue 9): the stop registry (one flag per running job, pruned when
it ends), name validation and the "follow the Data tab" wiring."""
import pytest

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
    assert safe_name("", "LoRA name", default="lora") == "lora"
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
