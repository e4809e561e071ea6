"""The pieces of hierarchical multi-scale attention (Tao et al. 2020), shared by ``MultiScaleAttention`` (around
any model) and ``MscaleOCRNet``: the per-pixel attention head, the pairwise fusion of per-scale predictions and the
rescaled input size.

Reference:
    Andrew Tao, Karan Sapra, Bryan Catanzaro, "Hierarchical Multi-Scale Attention for Semantic Segmentation",
    arXiv 2020. https://arxiv.org/abs/2005.10821
"""
import paddle
import paddle.nn as nn

from paddle_models.errors import UserError
from paddle_models.layers.conv import ConvBNReLU
from paddle_models.layers.resize import resize

__all__ = ['AttentionHead', 'check_scales', 'fuse_scales', 'output_scale', 'scaled_size']


class AttentionHead(nn.Layer):
    """Per-pixel scale attention: 3x3 ConvBNReLU -> 3x3 ConvBNReLU -> 1x1 conv to one channel -> sigmoid.

    Parameter names are those of PaddleSeg's ``AttenHead`` (``conv_bn_re0``, ``conv_bn_re1``, ``conv2``).

    Args:
        in_channels (int): Channels of the feature map.
        channels (int): Hidden channels. Default: 256 (the paper's).
    """

    def __init__(self, in_channels, channels=256):
        super().__init__()
        self.conv_bn_re0 = ConvBNReLU(in_channels, channels, 3, padding=1, bias_attr=False)
        self.conv_bn_re1 = ConvBNReLU(channels, channels, 3, padding=1, bias_attr=False)
        self.conv2 = nn.Conv2D(channels, 1, 1, bias_attr=False)

    def forward(self, x):
        return paddle.nn.functional.sigmoid(self.conv2(self.conv_bn_re1(self.conv_bn_re0(x))))


def scaled_size(size, scale):
    """``floor(size * scale)`` for an int tensor ``size`` (such as ``paddle.shape(x)[2:]``), as an int32 tensor
    computed in the graph (so an export keeps a free input size)."""
    return paddle.floor(paddle.cast(size, 'float32') * scale).astype('int32')


def fuse_scales(per_scale):
    """Combine per-scale predictions hierarchically (Tao et al. 2020).

    Args:
        per_scale (list): ``(scale, predictions, attention)`` tuples in DESCENDING scale order; ``predictions`` is
            a list of tensors fused in parallel with the same attention (e.g. main and auxiliary logits), all at
            that scale's size; ``attention`` ([N, 1, h, w] at that size) is ignored for the first entry.

    Returns:
        list[Tensor]: The fused predictions, at the size of the smallest scale >= 1 (the largest scale when all
        are below 1).
    """
    fused = None
    for scale, preds, attn in per_scale:
        if fused is None:
            fused = list(preds)
        elif scale >= 1.0:
            size = paddle.shape(preds[0])[2:]
            fused = [attn * p + (1 - attn) * resize(f, size) for p, f in zip(preds, fused)]
        else:
            size = paddle.shape(fused[0])[2:]
            up_attn = resize(attn, size)
            fused = [resize(attn * p, size) + (1 - up_attn) * f for p, f in zip(preds, fused)]
    return fused


def output_scale(scales):
    """The scale whose size ``fuse_scales`` returns for ``scales``."""
    at_least_one = [s for s in scales if s >= 1.0]
    return min(at_least_one) if at_least_one else max(scales)


def check_scales(owner, name, scales, allow_empty=False):
    """``scales`` as a list of distinct positive floats (a repeated scale would fuse a prediction with itself);
    an empty list (or None) is returned as [] where ``allow_empty``, the caller's cue for its default scales."""
    if allow_empty and not scales:
        return []
    ok = (isinstance(scales, (list, tuple)) and len(scales) > 0 and
          all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in scales) and
          len(set(scales)) == len(scales))
    if not ok:
        shown = list(scales) if isinstance(scales, tuple) else scales
        raise UserError(f"{owner}: {name} must be a {'' if allow_empty else 'non-empty '}list of distinct positive "
                        f"numbers, got {shown!r}")
    return [float(s) for s in scales]
