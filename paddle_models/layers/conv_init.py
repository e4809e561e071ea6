"""Convolutions initialised as the VAN, MSCAN, MiT and MaxViT releases initialise theirs: weights drawn from
N(0, 2 / fan_out) with fan_out = kernel height * kernel width * out_channels / groups (He init over the outputs),
biases zero. Written once here so that the four backbones draw their weights the same way."""
import math

import paddle
import paddle.nn as nn

__all__ = ['fan_out_attr', 'zero_bias_attr', 'fan_out_conv']


def fan_out_attr(kernel_size, out_channels, groups=1):
    """The weight ``ParamAttr``: N(0, 2 / fan_out) for a kernel ``kernel_size`` (int or (kh, kw))."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    fan_out = kh * kw * out_channels // groups
    return paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, math.sqrt(2.0 / fan_out)))


def zero_bias_attr():
    """The bias ``ParamAttr``: zeros."""
    return paddle.ParamAttr(initializer=nn.initializer.Constant(0.0))


def fan_out_conv(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True):
    """``nn.Conv2D`` with :func:`fan_out_attr` weights and (with ``bias``) a zero bias."""
    return nn.Conv2D(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, weight_attr=fan_out_attr(kernel_size, out_channels, groups),
                     bias_attr=zero_bias_attr() if bias else False)
