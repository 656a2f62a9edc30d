"""Blend two bases' VAE weights:  python scripts/blend_vae.py BASE_A BASE_B WEIGHT OUT_FILE [--layers P1,P2,...]
OUT_FILE gets (1 - WEIGHT) * A + WEIGHT * B (fp16 safetensors), e.g. BASE_A/vae/diffusion_pytorch_model.safetensors
of a copy of BASE_A. With --layers, only the weights under those name prefixes blend (a layer-wise merge, e.g.
--layers decoder.up_blocks.2,decoder.up_blocks.3,decoder.conv_norm_out,decoder.conv_out) and the rest stay A's.
How the shipped base's decoder was made: assets/tiny-base/README.md."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.diffusion.pretrain import blend_vae  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base_a"); ap.add_argument("base_b"); ap.add_argument("weight"); ap.add_argument("out_file")
    ap.add_argument("--layers", default=None, help="comma-separated weight-name prefixes (default: all weights)")
    args = ap.parse_args()
    try:
        w = float(args.weight)
    except ValueError:
        raise SystemExit(f"blend_vae: the weight must be a number between 0 and 1, not {args.weight!r}")
    layers = None if args.layers is None else args.layers.split(",")
    try:
        print("wrote", blend_vae(args.base_a, args.base_b, w, args.out_file, layers=layers))
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"blend_vae: {e}")
