"""Polarized self-attention (PSA), the parallel layout, as PaddleSeg's HRNet uses it (``use_psa``).

Reference:
    Huajun Liu, Fuqiang Liu, Xinyi Fan, Dong Huang, "Polarized Self-Attention: Towards High-quality Pixel-wise
    Regression", arXiv 2021. https://arxiv.org/abs/2107.00782

For a map x [B, C, H, W] (N = H * W pixels, C' = C // 2) the block returns ``x * (channel_mask + spatial_mask)``:

* channel mask [B, C, 1, 1]: a one-channel query ``conv_q_right(x)`` softmaxed over the N pixels weighs the
  C' channels of ``conv_v_right(x)``; the pooled vector [B, C', 1, 1] goes through ``conv_up`` (C' -> C) and a sigmoid;
* spatial mask [B, 1, H, W]: the global average of ``conv_q_left(x)`` (a C'-vector per image) is dotted with
  ``conv_v_left(x)`` at every pixel; the N scores are softmaxed over the pixels, then a sigmoid.

As in PaddleSeg 2.8.0's ``PolarizedSelfAttentionModule`` (and unlike the paper) there is no LayerNorm in the channel
branch, and the spatial scores pass a softmax before their sigmoid. Every conv is a bias-free 1x1. The parameter
names are PaddleSeg's, so its checkpoints load unchanged.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.utils.validate import check_int

__all__ = ['PolarizedSelfAttention']


def _conv1x1(in_channels, out_channels):
    """Bias-free 1x1 Conv2D with Kaiming-normal initial weights (PaddleSeg initialises the block's convs so)."""
    return nn.Conv2D(in_channels, out_channels, 1, bias_attr=False,
                     weight_attr=paddle.ParamAttr(initializer=nn.initializer.KaimingNormal()))


class PolarizedSelfAttention(nn.Layer):
    """Parallel polarized self-attention: a channel mask and a spatial mask, each applied to the input, summed.

    Args:
        channels (int): Channels of the input (and of the output); the attention works on ``channels // 2``,
            so at least 2.
    """

    def __init__(self, channels):
        super().__init__()
        channels = check_int('PolarizedSelfAttention', 'channels', channels, minimum=2)
        inner = channels // 2
        self.inner_channels = inner
        # channel mask
        self.conv_q_right = _conv1x1(channels, 1)
        self.conv_v_right = _conv1x1(channels, inner)
        self.conv_up = _conv1x1(inner, channels)
        # spatial mask
        self.conv_q_left = _conv1x1(channels, inner)
        self.conv_v_left = _conv1x1(channels, inner)

    def channel_mask(self, x):
        """sigmoid(conv_up(sum over pixels of softmax(q) * v)): [B, C, 1, 1]."""
        weights = F.softmax(paddle.flatten(self.conv_q_right(x), 2), axis=2)            # B, 1, N
        values = paddle.flatten(self.conv_v_right(x), 2)                                # B, C', N
        pooled = paddle.matmul(values, weights, transpose_y=True).unsqueeze(-1)         # B, C', 1, 1
        return F.sigmoid(self.conv_up(pooled))

    def spatial_mask(self, x):
        """sigmoid(softmax over pixels of <mean(conv_q_left(x)), conv_v_left(x)>): [B, 1, H, W].

        Written in 4-D (a channel sum, and the softmax over H and W as exp(s - max) / sum), without the flatten and
        reshape back that need the map's size: in an exported program that saves the shape and slice ops, and
        Paddle Inference's first run (its dependency analysis) grows faster than linearly with the op count.
        The mean is taken after the conv, as the reference does (pooling first is the same up to rounding).
        """
        query = self.conv_q_left(x).mean(axis=[2, 3], keepdim=True)                   # B, C', 1, 1
        scores = (self.conv_v_left(x) * query).sum(axis=1, keepdim=True)               # B, 1, H, W
        scores = paddle.exp(scores - scores.max(axis=[2, 3], keepdim=True))
        return F.sigmoid(scores / scores.sum(axis=[2, 3], keepdim=True))

    def forward(self, x):
        return x * (self.channel_mask(x) + self.spatial_mask(x))
