"""The two feed-forward blocks of the transformer-style backbones: a token MLP (linear -> activation -> linear, as
in MaxViT) and a convolutional MLP on NCHW maps (1x1 conv -> 3x3 depthwise conv -> GELU -> 1x1 conv, as in VAN and
SegNeXt's MSCAN)."""
import paddle.nn as nn

from paddle_models.layers.conv_init import fan_out_conv
from paddle_models.layers.conv_mlp import hidden_slice, sliced_conv_mlp

__all__ = ['Mlp', 'ConvMlp', 'DWConv']


class Mlp(nn.Layer):
    """fc1 -> activation -> fc2 over the last axis (timm's ``Mlp`` names).

    Args:
        dim (int): Input and output channels.
        hidden (int): Hidden channels.
        act (nn.Layer|None): The activation; None for GELU (exact). Default: None.
        linear (callable): ``linear(in_features, out_features)`` building each projection, so a model keeps its
            release's initialisation. Default: ``nn.Linear``.
    """

    def __init__(self, dim, hidden, act=None, linear=nn.Linear):
        super().__init__()
        self.fc1 = linear(dim, hidden)
        self.act = nn.GELU() if act is None else act
        self.fc2 = linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DWConv(nn.Layer):
    """A 3x3 depthwise conv in a layer of its own, for releases that name it ``mlp.dwconv.dwconv`` (VAN)."""

    def __init__(self, dim):
        super().__init__()
        self.dwconv = fan_out_conv(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x):
        return self.dwconv(x)


class ConvMlp(nn.Layer):
    """1x1 conv -> 3x3 depthwise conv -> GELU -> 1x1 conv on an NCHW map, convs initialised N(0, 2 / fan_out).

    With ``sliced``, dynamic-graph eval forwards on large maps run the hidden channels in slices (the same result
    with less memory, and faster on the CPU: :mod:`paddle_models.layers.conv_mlp`). Traced programs (export) keep
    one pass: under Paddle Inference with oneDNN the sliced form ran slower and held more memory, because the
    slices' weights are computed tensors that oneDNN cannot keep reordered (:meth:`to_deploy`).

    Args:
        dim (int): Input and output channels.
        hidden_dim (int): Hidden channels.
        drop (float): Dropout after the activation and after fc2. Default: 0.
        nested_dwconv (bool): The depthwise conv sits in a :class:`DWConv` (parameters ``dwconv.dwconv.*``, VAN's
            names) instead of directly (``dwconv.*``, MSCAN's). Default: False.
        sliced (bool): Slice the hidden channels in large dynamic-graph eval forwards. Default: False.
    """

    def __init__(self, dim, hidden_dim, drop=0.0, nested_dwconv=False, sliced=False):
        super().__init__()
        self.fc1 = fan_out_conv(dim, hidden_dim, 1)
        if nested_dwconv:
            self.dwconv = DWConv(hidden_dim)
        else:
            self.dwconv = fan_out_conv(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = fan_out_conv(hidden_dim, dim, 1)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.nested_dwconv = nested_dwconv
        self.sliced = sliced

    def forward(self, x):
        if self.sliced and not self.training:
            step = hidden_slice(self.fc1.weight.shape[0], x.shape[2] * x.shape[3])
            if step is not None:
                dwconv = self.dwconv.dwconv if self.nested_dwconv else self.dwconv
                return sliced_conv_mlp(x, self.fc1, dwconv, self.act, self.fc2, step)
        return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x))))))

    def to_deploy(self, target):
        """The deploy form (``layers/deploy.py``): one pass, never sliced (see the class docstring); this block (a
        deploy copy) is switched to it."""
        self.sliced = False
        return self
