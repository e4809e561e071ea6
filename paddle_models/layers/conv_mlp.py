"""Evaluating a convolutional MLP (1x1 conv -> depthwise conv -> activation -> 1x1 conv) a slice of its hidden
channels at a time.

The hidden map of such an MLP is the largest tensor of MSCAN-/VAN-style backbones (8x the block's width at stride
4), and a forward holds two of them at once (conv output and depthwise output). Computing the hidden channels in
slices and summing the second 1x1 conv's partial products gives the same result with one slice's worth of hidden
memory, and in the dynamic graph on the CPU it is also faster (the slices stay in cache; docs/measurements.md has the figures).
Small maps gain nothing and pay per-op overhead, so slicing starts when a hidden map exceeds ``CHUNK_ELEMENTS``
elements per image. For the dynamic graph only: in an exported program run by Paddle Inference with oneDNN the
slices were slower (see :class:`paddle_models.layers.mlp.ConvMlp`).
"""
import contextlib

import paddle
import paddle.nn.functional as F

__all__ = ['CHUNK_ELEMENTS', 'hidden_slice', 'sliced_conv_mlp', 'unsliced']

CHUNK_ELEMENTS = 2 ** 20  # hidden elements per image in one slice (4 MiB of float32)
MIN_SLICE = 64
_ENABLED = [True]


@contextlib.contextmanager
def unsliced():
    """Within this context conv MLPs run in one pass through their layers (``paddle.flops`` counts layer calls, so
    ``tools/benchmark.py`` counts FLOPs inside it). The previous state is restored on exit."""
    previous = _ENABLED[0]
    _ENABLED[0] = False
    try:
        yield
    finally:
        _ENABLED[0] = previous


def hidden_slice(hidden, pixels):
    """Hidden channels per slice for a map of ``pixels`` pixels, or None where one pass is as good (or inside
    :func:`unsliced`)."""
    if not _ENABLED[0]:
        return None
    step = max(MIN_SLICE, CHUNK_ELEMENTS // max(int(pixels), 1))
    return None if step >= hidden else step


@paddle.jit.not_to_static
def sliced_conv_mlp(x, fc1, dwconv, act, fc2, step):
    """``fc2(act(dwconv(fc1(x))))`` computed ``step`` hidden channels at a time (eval only: no dropout).

    Args:
        x (Tensor): [N, C, H, W].
        fc1 (nn.Conv2D): 1x1 conv C -> hidden.
        dwconv (nn.Conv2D): Depthwise conv over the hidden channels (groups == hidden).
        act (callable): Elementwise activation.
        fc2 (nn.Conv2D): 1x1 conv hidden -> C_out.
        step (int): Hidden channels per slice.

    Returns:
        Tensor: [N, C_out, H, W].
    """
    # not_to_static: the python loop over slices is unrolled into the traced program as it runs
    hidden = fc1.weight.shape[0]
    out = None
    for start in range(0, hidden, step):
        stop = min(start + step, hidden)
        h = F.conv2d(x, fc1.weight[start:stop], None if fc1.bias is None else fc1.bias[start:stop])
        h = F.conv2d(h, dwconv.weight[start:stop], None if dwconv.bias is None else dwconv.bias[start:stop],
                     stride=dwconv._stride, padding=dwconv._padding, dilation=dwconv._dilation, groups=stop - start)
        part = F.conv2d(act(h), fc2.weight[:, start:stop])
        out = part if out is None else out + part
    return out if fc2.bias is None else out + fc2.bias.reshape([1, -1, 1, 1])
