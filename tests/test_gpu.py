"""`gpu_task` applies spaces.GPU only where the `spaces` package exists (Hugging Face Spaces)."""
import sys
import types

from pipeline.gpu import gpu_task


def test_gpu_task_is_a_no_op_without_spaces(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError

    def f(x):
        return x + 1
    assert gpu_task(f) is f
    assert gpu_task(duration=30)(f) is f


def test_gpu_task_applies_spaces_gpu_when_present(monkeypatch):
    calls = []
    fake = types.ModuleType("spaces")

    def GPU(duration=60):
        def deco(fn):
            def wrapped(*a, **k):
                calls.append(duration)
                return fn(*a, **k)
            return wrapped
        return deco
    fake.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", fake)

    @gpu_task(duration=45)
    def g(x):
        """doc"""
        return 2 * x
    assert g(3) == 6 and calls == [45]
    assert g.__name__ == "g" and g.__doc__ == "doc"
