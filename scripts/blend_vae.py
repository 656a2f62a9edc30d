"""Blend two bases' VAE weights:  python scripts/blend_vae.py BASE_A BASE_B WEIGHT OUT_FILE
OUT_FILE gets (1 - WEIGHT) * A + WEIGHT * B (fp16 safetensors), e.g. BASE_A/vae/diffusion_pytorch_model.safetensors
of a copy of BASE_A. How the shipped base's decoder was made: assets/tiny-base/README.md, stage 6."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.diffusion.pretrain import blend_vae  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    try:
        print("wrote", blend_vae(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]))
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"blend_vae: {e}")
