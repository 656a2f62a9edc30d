"""The LoRA strength x seed grid (pipeline/diffusion/grid.py, `lora-grid`, the Generation tab's accordion):
each labelled cell is exactly what generation makes for that seed at that strength (strength 0 = the base
model alone), and bad settings are refused by name before anything loads."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.diffusion import generate as G  # noqa: E402
from pipeline.diffusion.base import load_pipeline, to_model_size  # noqa: E402
from pipeline.diffusion.grid import GridConfig, lora_grid  # noqa: E402
from pipeline.diffusion.lora import LoraTrainConfig, train_lora  # noqa: E402


@pytest.fixture(scope="module")
def lora_dir(random_base, tmp_path_factory):
    from pipeline.data import open_source
    torch.set_num_threads(2)
    images = np.stack([to_model_size(s.image, s.mask, 32) for s in open_source("phantom:6")])
    out = tmp_path_factory.mktemp("grid") / "lora-second"
    cfg = LoraTrainConfig(steps=3, rank=8, alpha=8, lr=1e-2, batch_size=2, save_every=3, preview_every=0,
                          names=["x"] * 6, base=str(random_base))
    ev = list(train_lora(cfg, out, pipe=load_pipeline(random_base, device="cpu"), images=images))
    assert ev[-1]["kind"] == "done"
    return out


def _generated(base, lora, scale, seed, steps):
    """The same image made by the Generation path (generate()), drawn as the grid draws a cell."""
    import cv2
    cfg = G.GenerateConfig(trimester="second", n=1, lora=lora, base=str(base), seed=seed, steps=steps,
                           lora_scale=scale, qc=False, precision="weights",
                           out_size=0)  # the grid draws samples as drawn, not written at the pair size
    smp = next(e["sample"] for e in G.generate(cfg) if e["kind"] == "sample")
    return cv2.resize(smp.picture(), (128, 128), interpolation=cv2.INTER_NEAREST)[..., :3]


def test_each_cell_is_the_generated_image_for_its_seed_and_strength(random_base, lora_dir):
    G.clear_pipelines()
    # fp32 on both sides: under bf16 autocast (the default on a CPU with native bf16) the grid's batch of two
    # seeds and generate()'s batch of one differ by a few gray levels
    cfg = GridConfig(lora=str(lora_dir), base=str(random_base), scales=(0.0, 1.0), seeds=(3, 4), steps=2,
                     precision="weights")
    picture, cells = lora_grid(cfg)
    head, left, foot, cell = 28, 70, 18, 128  # compose()'s layout for a 32² base
    assert picture.shape == (head + 2 * (cell + foot), left + 2 * cell, 3) and picture.dtype == np.uint8
    assert [(c["scale"], c["seed"]) for c in cells] == [(0.0, 3), (0.0, 4), (1.0, 3), (1.0, 4)]
    assert all(isinstance(c["valid"], bool) and c["reason"] for c in cells)

    def region(i, j):
        y0, x0 = head + i * (cell + foot), left + j * cell
        return picture[y0:y0 + cell, x0:x0 + cell]
    base_alone = _generated(random_base, None, 0.9, 4, 2)
    with_lora = _generated(random_base, str(lora_dir), 1.0, 4, 2)
    assert np.array_equal(region(1, 0), base_alone)  # strength 0 = the base model alone
    assert np.array_equal(region(1, 1), with_lora)
    assert not np.array_equal(base_alone, with_lora), "the LoRA changed nothing: the test could not fail"
    # labels: a header row and a seed column were drawn (dark text pixels on white)
    assert (picture[:head, left:] < 128).any() and (picture[head:, :left] < 128).any()
    again, _ = lora_grid(cfg)
    assert np.array_equal(again, picture)  # seeded: the same grid twice


@pytest.mark.parametrize("settings, message", [
    (dict(lora=None), "pick a LoRA"),
    (dict(scales="0, abc"), "expected numbers"),
    (dict(scales=(0.0, -1.0)), "LoRA strength must be in"),
    (dict(scales=(0.5, 0.5)), "repeat"),
    (dict(seeds=tuple(range(9))), "give 1 to 8 seeds"),
    (dict(seeds=(1.5,)), "seed must be a whole number"),
    (dict(steps=0), "steps must be between"),
    (dict(trimester="fourth"), "unknown trimester"),
])
def test_bad_settings_are_refused_by_name(settings, message):
    cfg = GridConfig(**{"lora": "some-lora", **settings})
    with pytest.raises(ValueError, match=message):
        cfg.validate()


def test_cli_writes_the_picture_and_the_cells(random_base, lora_dir, tmp_path, capsys):
    from pipeline.__main__ import main
    G.clear_pipelines()
    out = tmp_path / "grid.png"
    rc = main(["lora-grid", "--lora", str(lora_dir), "--base", str(random_base), "--scales", "0,0.9",
               "--seeds", "0", "--steps", "1", "--out", str(out)])
    assert rc == 0 and out.is_file()
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["scales"] == [0.0, 0.9] and rec["seeds"] == [0] and len(rec["cells"]) == 2
    assert "valid ellipses per strength" in capsys.readouterr().out
    assert main(["lora-grid", "--lora", str(lora_dir), "--out", str(tmp_path / "g.jpg")]) == 2
    assert main(["lora-grid", "--lora", str(lora_dir), "--scales", "0,9", "--out", str(out)]) == 2


def test_fused_lora_samples_like_the_unfused_one_and_switching_restores_the_exact_base(random_base, lora_dir):
    """get_pipeline fuses the LoRA into the weights (speed); the images match peft's unfused forward to float
    rounding, and any number of switches leaves the base weights bit-identical."""
    from pipeline.diffusion.base import load_pipeline, prompt_for

    def imgs(pipe):
        gens = [torch.Generator("cpu").manual_seed(s) for s in (3, 4)]
        with torch.no_grad():
            return pipe([prompt_for("second")] * 2, num_inference_steps=3, guidance_scale=2.0, generator=gens,
                        output_type="np").images

    ref = load_pipeline(random_base, device="cpu")
    ref.load_lora_weights(str(lora_dir), weight_name="pytorch_lora_weights.safetensors", adapter_name="r")
    ref.set_adapters(["r"], adapter_weights=[0.9])
    unfused = imgs(ref)
    G.clear_pipelines()
    base_w = {k: v.clone() for k, v in G.get_pipeline(str(random_base)).unet.state_dict().items()}
    fused = imgs(G.get_pipeline(str(random_base), str(lora_dir), 0.9))
    assert np.abs(fused - unfused).max() < 1e-4
    assert np.abs(fused - imgs(G.get_pipeline(str(random_base)))).max() > 1e-3, "the LoRA changed nothing"
    for scale in (0.5, 1.2, 0.9, 0.0):
        G.get_pipeline(str(random_base), str(lora_dir), scale)
    pipe = G.get_pipeline(str(random_base))  # no LoRA: the exact base weights again
    now = {k.replace(".base_layer", ""): v for k, v in pipe.unet.state_dict().items() if "lora_" not in k}
    assert set(now) == set(base_w)
    wrapped = [k for k in pipe.unet.state_dict() if ".base_layer." in k]
    assert wrapped, "the LoRA wraps no layer"
    for k, v in now.items():
        assert torch.equal(v, base_w[k]), k
    np.testing.assert_array_equal(imgs(G.get_pipeline(str(random_base), str(lora_dir), 0.9)), fused)
    G.clear_pipelines()
