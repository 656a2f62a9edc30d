"""SonoSynth Lab pipeline: diffusion-based synthetic training data for fetal head ultrasound.

The data takes one road: source -> samples -> in-channel images -> LoRA -> generated images ->
Ellipse Extractor -> synthetic dataset -> hybrid dataset -> SAM mask-decoder fine-tuning -> evaluation.
This package never imports gradio; the dashboard (`app.py`, `pages/`) is thin wiring over it.
"""

from .process import choose_omp_wait_policy  # noqa: F401  (its home is process.py, a leaf the benches read)


def __getattr__(name: str):
    # the choice lives in process.py (set there by choose_omp_wait_policy); read afresh, never copied
    if name == "OMP_WAIT_POLICY_CHOICE":
        from . import process
        return process.OMP_WAIT_POLICY_CHOICE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def prepare_process() -> None:
    """Process settings an entry point (app.py, `python -m pipeline`) makes once, before torch loads:
    the OpenMP wait policy (choose_omp_wait_policy) and glibc keeping freed memory (sam.keep_freed_memory)."""
    choose_omp_wait_policy()
    from .sam import keep_freed_memory
    keep_freed_memory()

__version__ = "0.1.0"
