"""Process settings chosen once at start-up (a leaf module: the package root re-exports it, the benches
read what was chosen here without importing the package root)."""

import os as _os


def choose_omp_wait_policy() -> str:
    """How OpenMP threads wait between torch ops, chosen once before torch starts its OpenMP runtime (by
    prepare_process, which every entry point — app.py, python -m pipeline — calls first).

    Measured on 2 cores (`bench diffusion` / `bench sam`): on a quiet machine, spinning (libgomp's default)
    makes the small-op-bound diffusion work ~1.8x faster than passive waits (LoRA step 0.134 vs 0.238 s,
    batched generation 3.5 vs 2.0 img/s); on a busy machine (load ~3-4) spinning threads lose their time
    slices and passive waits win (LoRA reference step 0.32 vs 0.63 s, SAM second box 0.09 vs 0.13 s).
    So: passive when every core already has a runnable process at start-up, otherwise the default.
    An OMP_WAIT_POLICY set by the user always wins."""
    global OMP_WAIT_POLICY_CHOICE
    OMP_WAIT_POLICY_CHOICE = _omp_wait_policy()
    return OMP_WAIT_POLICY_CHOICE


def _omp_wait_policy() -> str:
    if "OMP_WAIT_POLICY" in _os.environ:
        return f"{_os.environ['OMP_WAIT_POLICY'] or 'default'} (set by the user)"
    try:
        load = _os.getloadavg()[0]
        cores = len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity") else (_os.cpu_count() or 1)
    except (OSError, AttributeError):
        return "default (load unknown)"
    if load >= cores:
        _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return f"PASSIVE (busy machine at start: load {load:.1f} on {cores} cores)"
    return f"default, spinning (load {load:.1f} on {cores} cores at start)"


# what the benchmarks report; importing the package changes nothing in the process (no side effect)
OMP_WAIT_POLICY_CHOICE = "not chosen (pipeline used as a library: the OpenMP default unless OMP_WAIT_POLICY is set)"
