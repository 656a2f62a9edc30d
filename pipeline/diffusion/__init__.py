"""Diffusion half of the paper: tiny/SD base, per-trimester LoRA, mask-guided generation + Ellipse Extractor.

    base.py       load the base (tiny folder or SD v1.5) through one StableDiffusionPipeline + UniPC path
    tokenizer.py  SD v1.5's CLIP tokenizer rebuilt offline from open_clip's BPE file
    pretrain.py   pretrain the tiny base on phantoms (python -m pipeline pretrain-base)
    lora.py       per-trimester LoRA training (python -m pipeline train-lora)
    generate.py   generation, the Ellipse Extractor per sample, SAM QC, synthetic dataset writing
    realism.py    the realism report: KID and classifier AUC of generated vs real images (python -m pipeline realism)
    cli.py        the three CLI commands; bench.py the speed figures
"""
