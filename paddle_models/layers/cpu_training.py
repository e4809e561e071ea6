"""Faster CPU training forms of the bias additions in Paddle's convolutions and linear layers.

Paddle 3.3.1's dynamic graph adds a convolution's bias as ``out + bias.reshape([1, C, 1, 1])``: on the CPU that
broadcasting ``add`` is several times slower than an add of two equal shapes (an [8, 256, 44, 56] map: 52 ms
forward, 136 ms forward + backward, against 9 and 37 ms for the forms here; docs/speed.md, "CPU training"), and the
gradient of a linear layer's bias (a sum over batch and tokens) is 5x slower than the same sum as a matrix
product. In SegFormer-B0's training step these adds were a third of the time.

* :func:`channel_bias` adds a per-channel bias to an [N, C, ...] map as a [N * C, H * W] + [N * C, 1] add (a
  broadcast Paddle's CPU kernel runs fast) and sums the bias gradient with one matrix product;
* :func:`feature_bias` adds a bias over the last axis (a linear layer's output) and sums its gradient with one
  matrix product.

Both give the plain forms' values (the forward bit for bit; the bias gradient up to float summation order).

:func:`cpu_training_forms` puts them into a model for the duration of training: every ``nn.Conv2D`` and
``nn.Conv2DTranspose`` and ``nn.Linear`` with a bias runs as its subclass here (:class:`BiasLastConv2D`,
:class:`BiasLastConv2DTranspose`, :class:`BiasLastLinear`), the same
parameters under the same names, so checkpoints, optimizers and the EMA do not see a difference; on leaving, each
layer is its plain class again (an export afterwards traces Paddle's own forms). ``core/train.py`` uses it on the
CPU only: on a GPU Paddle's broadcasting add is fast and nothing changes there.
"""
import contextlib

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.autograd import PyLayer

__all__ = ['channel_bias', 'feature_bias', 'cpu_training_forms', 'BiasLastConv2D', 'BiasLastConv2DTranspose',
           'BiasLastLinear']


class _ChannelBias(PyLayer):
    """``x + bias`` per channel of an [N, C, ...] ``x``: forward as rows of [N * C, rest], backward with the bias
    gradient as ``grad [N, C, rest] @ ones [rest, 1]`` summed over N."""

    @staticmethod
    def forward(ctx, x, bias):
        n, c = x.shape[0], x.shape[1]
        ctx.n_c = (n, c)
        rows = x.reshape([n * c, -1]) + bias.tile([n]).unsqueeze(1)
        return rows.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        n, c = ctx.n_c
        per_channel = grad.reshape([n, c, -1])
        ones = paddle.ones([per_channel.shape[2], 1], dtype=grad.dtype)
        return grad, paddle.matmul(per_channel, ones).sum(axis=0).reshape([c])


class _FeatureBias(PyLayer):
    """``x + bias`` over the last axis of ``x``; the bias gradient as ``ones [1, rows] @ grad [rows, C]``."""

    @staticmethod
    def forward(ctx, x, bias):
        return x + bias

    @staticmethod
    def backward(ctx, grad):
        channels = grad.shape[-1]
        rows = grad.reshape([-1, channels])
        ones = paddle.ones([1, rows.shape[0]], dtype=grad.dtype)
        return grad, paddle.matmul(ones, rows).reshape([channels])


def channel_bias(x, bias):
    """``x + bias.reshape([1, C, 1, 1])`` for an [N, C, H, W] (or [N, C, L]) ``x`` and a [C] ``bias``, in the
    form that Paddle's CPU kernels run fast in training (see the module docstring). Dynamic graph only."""
    return _ChannelBias.apply(x, bias)


def feature_bias(x, bias):
    """``x + bias`` for an [..., C] ``x`` and a [C] ``bias``, with a fast CPU gradient for ``bias``. Dynamic graph
    only."""
    return _FeatureBias.apply(x, bias)


class BiasLastConv2D(nn.Conv2D):
    """``nn.Conv2D`` (NCHW, zero padding, with a bias) that adds its bias with :func:`channel_bias`. Layers become
    this class inside :func:`cpu_training_forms` only; it adds no parameters."""

    def forward(self, x):
        y = F.conv2d(x, self.weight, None, self._stride, self._padding, self._dilation, self._groups,
                     self._data_format)
        return channel_bias(y, self.bias)


class BiasLastConv2DTranspose(nn.Conv2DTranspose):
    """``nn.Conv2DTranspose`` (NCHW, with a bias) that adds its bias with :func:`channel_bias`; see
    :class:`BiasLastConv2D`."""

    def forward(self, x, output_size=None):
        y = F.conv2d_transpose(x, self.weight, bias=None, padding=self._padding,
                               output_padding=self.output_padding if output_size is None else 0,
                               stride=self._stride, dilation=self._dilation, groups=self._groups,
                               output_size=output_size, data_format=self._data_format)
        return channel_bias(y, self.bias)


class BiasLastLinear(nn.Linear):
    """``nn.Linear`` that adds its bias with :func:`feature_bias`; see :class:`BiasLastConv2D`."""

    def forward(self, x):
        return feature_bias(paddle.matmul(x, self.weight), self.bias)


def _training_form(layer):
    """The class ``layer`` takes in training on the CPU, or None where it keeps its own: exactly ``nn.Conv2D``
    (NCHW, zero padding), ``nn.Conv2DTranspose`` (NCHW) or ``nn.Linear``, with a bias. Subclasses keep their own
    forward."""
    if getattr(layer, 'bias', None) is None:
        return None
    if type(layer) is nn.Conv2D and layer._data_format == 'NCHW' and layer._padding_mode == 'zeros':
        return BiasLastConv2D
    if type(layer) is nn.Conv2DTranspose and layer._data_format == 'NCHW':
        return BiasLastConv2DTranspose
    if type(layer) is nn.Linear:
        return BiasLastLinear
    return None


@contextlib.contextmanager
def cpu_training_forms(model, enabled=True):
    """Within this context each ``nn.Conv2D`` / ``nn.Conv2DTranspose`` / ``nn.Linear`` of ``model`` that has a bias
    runs in its faster CPU training form (the ``BiasLast*`` classes); on exit, also when the body raises, every
    such layer is its plain class again. The layers keep their parameters, names and state; nothing is copied.

    Args:
        model (nn.Layer): The model being trained.
        enabled (bool): False leaves the model as it is (e.g. on a GPU).

    Yields:
        int: How many layers were switched.
    """
    switched = []
    if enabled:
        for layer in model.sublayers(include_self=True):
            form = _training_form(layer)
            if form is not None:
                switched.append((layer, type(layer)))
                layer.__class__ = form
    try:
        yield len(switched)
    finally:
        for layer, plain in switched:
            layer.__class__ = plain
