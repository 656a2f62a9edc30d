"""SAM for fetal heads: back-ends (LiteMedSAM, SAM ViT-B), the box-prompt predictor with its embedding
cache, and mask-decoder fine-tuning (finetune.py). Nothing here imports gradio.

    from pipeline.sam import load_predictor
    pred = load_predictor()                   # LiteMedSAM (offline); load_predictor("paper") -> SAM ViT-B
    pred.set_image(image)                     # encoder runs once per image
    mask = pred.predict(box=(x0, y0, x1, y1)) # bool (H, W), original size
"""
from .models import BACKENDS, CheckpointError, SamModel, build_model, load_model
from .predictor import SamPredictor, load_predictor, validate_box

__all__ = ["BACKENDS", "CheckpointError", "SamModel", "SamPredictor", "build_model", "load_model",
           "load_predictor", "validate_box"]
