"""Stochastic depth: dropping the residual branch of a block for whole samples.

Reference:
    Gao Huang, Yu Sun, Zhuang Liu, Daniel Sedra, Kilian Q. Weinberger,
    "Deep Networks with Stochastic Depth", ECCV 2016. https://arxiv.org/abs/1603.09382
"""
import numpy as np
import paddle
import paddle.nn as nn


def drop_path(x, drop_prob=0.0, training=False):
    """Zero the whole of ``x`` for a random subset of the samples in the batch and rescale the rest.

    Each sample is kept with probability ``1 - drop_prob``; kept samples are divided by ``1 - drop_prob`` so that
    the expectation is unchanged. Outside training, or with ``drop_prob == 0``, ``x`` is returned as it is.

    Args:
        x (Tensor): A batch, [N, ...].
        drop_prob (float): Probability of dropping a sample's branch, in [0, 1).
        training (bool): Whether the model is training.

    Returns:
        Tensor: Same shape as ``x``.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask_shape = [paddle.shape(x)[0]] + [1] * (x.ndim - 1)
    mask = paddle.floor(keep + paddle.rand(mask_shape, dtype=x.dtype))
    return x / keep * mask


class DropPath(nn.Layer):
    """Stochastic depth for the residual branch of a block (Huang et al., ECCV 2016).

    Args:
        drop_prob (float): Probability of dropping the branch of a sample during training. Default: 0.
    """

    def __init__(self, drop_prob=0.0):
        super().__init__()
        drop_prob = float(drop_prob)
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self):
        return f"drop_prob={self.drop_prob}"


def drop_path_or_identity(drop_prob):
    """``DropPath(drop_prob)``, or ``nn.Identity()`` where ``drop_prob`` is 0 (nothing to drop, no extra op)."""
    return DropPath(drop_prob) if drop_prob > 0 else nn.Identity()


def drop_path_rates(drop_path_rate, depths):
    """Per stage, the stochastic depth rates of its ``depths[i]`` blocks: rising linearly from 0 at the network's
    first block to ``drop_path_rate`` at its last (the rule of the VAN, MSCAN, MiT and MaxViT releases)."""
    rates = np.linspace(0, drop_path_rate, sum(depths)).tolist()
    out, start = [], 0
    for depth in depths:
        out.append(rates[start:start + depth])
        start += depth
    return out
