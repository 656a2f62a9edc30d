"""SonoSynth Lab pipeline: diffusion-based synthetic training data for fetal head ultrasound.

The data takes one road: source -> samples -> in-channel images -> LoRA -> generated images ->
Ellipse Extractor -> synthetic dataset -> hybrid dataset -> SAM mask-decoder fine-tuning -> evaluation.
This package never imports gradio; the dashboard (`app.py`, `pages/`) is thin wiring over it.
"""

__version__ = "0.1.0"
