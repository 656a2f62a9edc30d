"""The same SAM mask decoder, a faster forward for one mask per box (what box prompting and training use).

Profiling a batch-5 training step on a 2-core CPU showed most of the time in the output-upscaling path
(5x32x256x256 activations), not in the transformer. Three exact rewrites, no change of parameters
(names and shapes are the original's, so checkpoints load either way):
  - only mask token 0's hypernetwork output is multiplied with the upscaled embedding
    (multimask_output=False never reads the other three; 4x less work in that matmul and its backward);
  - LayerNorm2d as one fused F.layer_norm over channels (one kernel forward and backward instead of
    eight element-wise ops on a 5x64x128x128 tensor);
  - the positional encoding is broadcast over the batch instead of copied once per image;
  - optionally (`crop`) the upscaling skips the padding below / right of a non-square image (HC18's
    800x540 fills 173 of 256 rows: a third of the upscaling work and of the loss was padding).
tests/test_sam.py::test_single_mask_decoder_matches_the_original compares it with the original forward
(and test_cropped_decode_equals_the_uncropped_logits the cropped upscaling with the full one).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _layer_norm_2d(ln: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), ln.weight, ln.bias, ln.eps).permute(0, 3, 1, 2)


def single_mask_forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                        multimask_output: bool = False, crop: tuple[int, int] | None = None):
    """`crop` = (rows, cols) of the 64x64 embedding grid that cover the image (the rest is padding):
    the upscaling runs on that part only. Exact: a 2x2-stride-2 transposed convolution, a per-pixel
    LayerNorm and GELU never mix neighbouring cells, so the logits equal the uncropped ones' top-left."""
    if multimask_output:
        return type(self).__mro__[1].forward(self, image_embeddings, image_pe, sparse_prompt_embeddings,
                                             dense_prompt_embeddings, multimask_output)
    n = sparse_prompt_embeddings.size(0)
    output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse_prompt_embeddings), dim=1)
    src = image_embeddings if image_embeddings.shape[0] == n else \
        torch.repeat_interleave(image_embeddings, n, dim=0)
    src = src + dense_prompt_embeddings
    b, c, h, w = src.shape
    hs, src = self.transformer(src, image_pe, tokens)  # (1, C, H, W) pe broadcasts in the adds
    iou_pred = self.iou_prediction_head(hs[:, 0, :])[:, :1]
    src = src.transpose(1, 2).reshape(b, c, h, w)
    if crop is not None:
        src = src[:, :, :crop[0], :crop[1]]
    up = self.output_upscaling
    x = up[0](src)
    x = _layer_norm_2d(up[1], x)
    x = up[4](up[3](up[2](x)))
    hyper = self.output_hypernetworks_mlps[0](hs[:, 1, :])  # (B, C/8): mask token 0 only
    b, c2, h2, w2 = x.shape
    masks = torch.bmm(hyper.unsqueeze(1), x.reshape(b, c2, h2 * w2)).view(b, 1, h2, w2)
    return masks, iou_pred


def make_fast(decoder: nn.Module) -> nn.Module:
    """Give `decoder` (a SAM MaskDecoder instance) the single-mask forward; returns the same object."""
    base = type(decoder)
    if getattr(base, "_single_mask", False):
        return decoder
    fast = type("SingleMask" + base.__name__, (base,), {"forward": single_mask_forward, "_single_mask": True})
    decoder.__class__ = fast
    return decoder
