"""Squeeze-and-excitation: a per-channel gate computed from the globally pooled input.

Reference:
    Jie Hu, Li Shen, Gang Sun, "Squeeze-and-Excitation Networks", CVPR 2018. https://arxiv.org/abs/1709.01507
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.layers.conv_init import fan_out_attr, zero_bias_attr

__all__ = ['SqueezeExcite']

_ACTS = {'relu': nn.ReLU, 'silu': nn.Silu}


class SqueezeExcite(nn.Layer):
    """Global average -> reduce to ``reduced`` channels -> activation -> expand back -> sigmoid, scaling the input's
    channels.

    The two projections are named and shaped as the checkpoints the models load: PaddleSeg's HRNet has two Linear
    layers ``squeeze``/``excitation``, timm's MaxViT two 1x1 convs ``fc1``/``fc2``; ``names`` and ``linear`` pick
    the layout, so one block serves both without renaming any weight.

    Args:
        channels (int): Channels of the input.
        reduced (int): Channels of the bottleneck.
        act (str): 'relu' or 'silu'. Default: 'relu'.
        linear (bool): Linear projections on the pooled vector (True) or 1x1 convs on the pooled map (False).
            Default: False.
        names (tuple[str, str]): Attribute (parameter) names of the reducing and expanding projection.
            Default: ('fc1', 'fc2').
        fan_out_init (bool): Weights ~ N(0, 2 / fan_out) and zero biases (the EfficientNet/MaxViT init) instead
            of Paddle's defaults. Default: False.
    """

    def __init__(self, channels, reduced, act='relu', linear=False, names=('fc1', 'fc2'), fan_out_init=False):
        super().__init__()
        self.linear = linear
        self.names = tuple(names)
        for name, (c_in, c_out) in zip(self.names, ((channels, reduced), (reduced, channels))):
            weight_attr = fan_out_attr(1, c_out) if fan_out_init else None
            bias_attr = zero_bias_attr() if fan_out_init else None
            if linear:
                layer = nn.Linear(c_in, c_out, weight_attr=weight_attr, bias_attr=bias_attr)
            else:
                layer = nn.Conv2D(c_in, c_out, 1, weight_attr=weight_attr, bias_attr=bias_attr)
            setattr(self, name, layer)
            if name == self.names[0]:
                self.act = _ACTS[act]()

    def forward(self, x):
        w = F.adaptive_avg_pool2d(x, 1)
        if self.linear:
            w = paddle.flatten(w, 1)
        w = F.sigmoid(getattr(self, self.names[1])(self.act(getattr(self, self.names[0])(w))))
        if self.linear:
            w = w.unsqueeze([2, 3])
        return x * w
