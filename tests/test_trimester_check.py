"""One trimester check (issue 34): every place a trimester name enters refuses an unknown one through
pipeline.validate.check_trimester, as a DataError with one message (they once said it five ways, some
ValueError, some DataError, one without the choices)."""
import pytest

from pipeline.data import DataError

MSG = "unknown trimester 'fourth': choose first, second or third"


def _refusal(call) -> str:
    with pytest.raises(DataError) as e:
        call()
    return str(e.value)


def test_check_trimester_accepts_the_three_and_refuses_the_rest():
    from pipeline.validate import check_trimester
    assert [check_trimester(t) for t in ("first", "second", "third")] == ["first", "second", "third"]
    assert _refusal(lambda: check_trimester("fourth")) == MSG
    assert "None" in _refusal(lambda: check_trimester(None))


def test_every_entry_refuses_an_unknown_trimester_the_same_way():
    from pipeline.diffusion.base import prompt_for
    from pipeline.diffusion.generate import GenerateConfig
    from pipeline.diffusion.grid import GridConfig
    from pipeline.diffusion.lora import LoraTrainConfig
    from pipeline.diffusion.realism import load_real, realism_report
    calls = {"prompt_for": lambda: prompt_for("fourth"),
             "GenerateConfig": lambda: GenerateConfig(trimester="fourth").validate(),
             "GridConfig": lambda: GridConfig(trimester="fourth").validate(),
             "LoraTrainConfig": lambda: LoraTrainConfig(trimester="fourth").validate(),
             "load_real": lambda: load_real("phantom:8", "fourth"),
             "realism_report": lambda: realism_report("phantom:8", "phantom:8", 64, trimester="fourth")}
    assert {k: _refusal(c) for k, c in calls.items()} == {k: MSG for k in calls}
