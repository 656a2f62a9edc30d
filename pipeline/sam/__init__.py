"""SAM for fetal heads: back-ends (LiteMedSAM, SAM ViT-B), the box-prompt predictor with its embedding
cache, and mask-decoder fine-tuning (finetune.py). Nothing here imports gradio.

    from pipeline.sam import load_predictor
    pred = load_predictor()                   # LiteMedSAM (offline); load_predictor("paper") -> SAM ViT-B
    pred.set_image(image)                     # encoder runs once per image
    mask = pred.predict(box=(x0, y0, x1, y1)) # bool (H, W), original size
"""
# The OpenMP wait policy (passive only on a busy machine) is chosen by pipeline.prepare_process, which the
# entry points call before torch's first import; so is keep_freed_memory below.


def keep_freed_memory() -> None:
    """glibc returns every large freed block (the 40 MB activations of a decoder step) to the OS and
    page-faults it back in on the next step: keep it instead (measured: system time 20 s -> 3.6 s and
    the recompute step 13.2 s -> 8.5 s in `bench sam`). Called by pipeline.prepare_process (entry points),
    never at import."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve blocks up to 1 GiB from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: trim the heap only above 1 GiB free
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        pass

# The public names load lazily (PEP 562): `python -m pipeline segment --help` imports pipeline.sam.cli,
# and importing torch for that took 4 s before argparse could print anything.
_LAZY = {"BACKENDS": "models", "CheckpointError": "models", "SamModel": "models", "build_model": "models",
         "load_model": "models", "SamPredictor": "predictor", "load_predictor": "predictor",
         "validate_box": "predictor"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BACKENDS", "CheckpointError", "SamModel", "SamPredictor", "build_model", "load_model",
           "load_predictor", "validate_box"]
