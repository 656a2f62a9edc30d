"""SonoSynth Lab pipeline: diffusion-based synthetic training data for fetal head ultrasound.

The data takes one road: source -> samples -> in-channel images -> LoRA -> generated images ->
Ellipse Extractor -> synthetic dataset -> hybrid dataset -> SAM mask-decoder fine-tuning -> evaluation.
This package never imports gradio; the dashboard (`app.py`, `pages/`) is thin wiring over it.
"""

import os as _os

# On a shared CPU, OpenMP threads that spin while they wait for each other lose most of their time to
# other processes (measured here, load ~4 on 2 cores: a 1-box SAM decode 0.32 s spinning, 0.10 s
# passive). It must be set before torch starts its OpenMP runtime, so here, where every entry point
# (app.py, python -m pipeline) passes first; an explicit setting by the user wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
