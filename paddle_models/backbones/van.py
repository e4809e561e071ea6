"""VAN: the Visual Attention Network, a CNN whose token mixer is Large Kernel Attention (LKA).

Reference:
    Meng-Hao Guo, Cheng-Ze Lu, Zheng-Ning Liu, Ming-Ming Cheng, Shi-Min Hu,
    "Visual Attention Network", Computational Visual Media 2023 (arXiv 2022). https://arxiv.org/abs/2202.09741

Shape of the network (four stages, strides 4, 8, 16, 32)::

    stage i   overlapping patch embedding: conv 7x7 stride 4 (stage 1) or 3x3 stride 2, then BatchNorm
              depth_i blocks:
                  x = x + drop_path(layer_scale_1 * attention(BN(x)))
                  x = x + drop_path(layer_scale_2 * mlp(BN(x)))
              LayerNorm over the channels (the stage output)
    attention(u) = proj_2(LKA(GELU(proj_1(u)))) + u                         (1x1 convs, with its own shortcut)
    LKA(a)       = a * conv1(conv_spatial(conv0(a)))   conv0 5x5 depthwise, conv_spatial 7x7 depthwise dilation 3,
                                                       conv1 1x1
    mlp(u)       = fc2(GELU(dwconv(fc1(u))))            fc1/fc2 1x1 convs, dwconv 3x3 depthwise, hidden = ratio * C

Layer scales start at 1e-2. Parameter names follow the official release (``patch_embed1.proj``, ``block1.0.attn.
spatial_gating_unit.conv0``, ``norm1``, ``head`` ...), so its checkpoints convert by renaming BatchNorm statistics
(:func:`convert_official_weights`); HuggingFace ``VanModel`` checkpoints convert with :func:`convert_hf_weights`.
"""
import math
import re

import numpy as np
import paddle
import paddle.nn as nn

from paddle_models.errors import UserError
from paddle_models.layers.drop_path import DropPath
from paddle_models.layers.norm import LayerNorm2d
from paddle_models.registry import register_backbone, register_variant

from paddle_models.weights import load_backbone_weights, torch_layout_to_paddle

__all__ = ['VAN', 'VANBlock', 'LargeKernelAttention', 'VAN_B0', 'VAN_B1', 'VAN_B2', 'VAN_B3', 'VAN_B4', 'VAN_B5',
           'VAN_B6', 'VAN_SETTINGS', 'convert_official_weights', 'convert_hf_weights']

# widths, depths, MLP ratios of the official release
VAN_SETTINGS = {
    'b0': ([32, 64, 160, 256], [3, 3, 5, 2], [8, 8, 4, 4]),
    'b1': ([64, 128, 320, 512], [2, 2, 4, 2], [8, 8, 4, 4]),
    'b2': ([64, 128, 320, 512], [3, 3, 12, 3], [8, 8, 4, 4]),
    'b3': ([64, 128, 320, 512], [3, 5, 27, 3], [8, 8, 4, 4]),
    'b4': ([64, 128, 320, 512], [3, 6, 40, 3], [8, 8, 4, 4]),
    'b5': ([96, 192, 480, 768], [3, 3, 24, 3], [8, 8, 4, 4]),
    'b6': ([96, 192, 384, 768], [6, 6, 90, 6], [8, 8, 4, 4]),
}


def _conv(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1):
    """Conv2D with bias, weights ~ N(0, 2 / fan_out) where fan_out = k * k * out / groups (the release's init)."""
    fan_out = kernel_size * kernel_size * out_channels // groups
    return nn.Conv2D(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     groups=groups,
                     weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, math.sqrt(2.0 / fan_out))),
                     bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)))


class OverlapPatchEmbed(nn.Layer):
    """Strided convolution with overlapping windows (padding k // 2), then BatchNorm.

    Args:
        in_channels (int): Input channels.
        embed_dim (int): Output channels.
        patch_size (int): Kernel size (7 for the first stage, 3 after).
        stride (int): Stride (4 for the first stage, 2 after).
    """

    def __init__(self, in_channels, embed_dim, patch_size, stride):
        super().__init__()
        self.proj = _conv(in_channels, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.BatchNorm2D(embed_dim)

    def forward(self, x):
        return self.norm(self.proj(x))


class LargeKernelAttention(nn.Layer):
    """LKA: a 21x21 receptive field from a 5x5 depthwise conv, a 7x7 depthwise conv with dilation 3 and a 1x1 conv;
    the result multiplies the input element-wise (an attention map, without softmax).

    Args:
        dim (int): Channels.
    """

    def __init__(self, dim):
        super().__init__()
        self.conv0 = _conv(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = _conv(dim, dim, 7, padding=9, dilation=3, groups=dim)
        self.conv1 = _conv(dim, dim, 1)

    def forward(self, x):
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class SpatialAttention(nn.Layer):
    """1x1 conv -> GELU -> LKA -> 1x1 conv, plus the input (the release's ``Attention``).

    Args:
        dim (int): Channels.
    """

    def __init__(self, dim):
        super().__init__()
        self.proj_1 = _conv(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LargeKernelAttention(dim)
        self.proj_2 = _conv(dim, dim, 1)

    def forward(self, x):
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class DWConv(nn.Layer):
    """3x3 depthwise conv, kept in its own layer for the release's parameter names (``mlp.dwconv.dwconv``)."""

    def __init__(self, dim):
        super().__init__()
        self.dwconv = _conv(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x):
        return self.dwconv(x)


class ConvMlp(nn.Layer):
    """1x1 conv -> 3x3 depthwise conv -> GELU -> 1x1 conv.

    Args:
        dim (int): Input and output channels.
        hidden_dim (int): Hidden channels.
    """

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = _conv(dim, hidden_dim, 1)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = _conv(hidden_dim, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class VANBlock(nn.Layer):
    """A VAN block: BN -> spatial attention and BN -> conv MLP, each scaled per channel (layer scale, initialised
    to 1e-2), passed through stochastic depth and added to the input.

    Args:
        dim (int): Channels.
        mlp_ratio (float): Hidden channels of the MLP / dim.
        drop_path (float): Stochastic depth rate of this block.
        layer_scale_init (float): Initial layer scale. Default: 1e-2.
    """

    def __init__(self, dim, mlp_ratio, drop_path=0.0, layer_scale_init=1e-2):
        super().__init__()
        self.norm1 = nn.BatchNorm2D(dim)
        self.attn = SpatialAttention(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2D(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = self.create_parameter([dim], default_initializer=nn.initializer.Constant(layer_scale_init))
        self.layer_scale_2 = self.create_parameter([dim], default_initializer=nn.initializer.Constant(layer_scale_init))

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1.reshape([1, -1, 1, 1]) * self.attn(self.norm1(x)))
        x = x + self.drop_path(self.layer_scale_2.reshape([1, -1, 1, 1]) * self.mlp(self.norm2(x)))
        return x


def _int_list(name, values, length=4, minimum=1, kind=int):
    if not isinstance(values, (list, tuple)) or len(values) != length:
        raise UserError(f"VAN: {name} must be a list of {length} numbers, got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or v < minimum or \
                (kind is int and int(v) != v):
            raise UserError(f"VAN: {name} must hold {kind.__name__}s >= {minimum}, got {list(values)!r}")
    return [kind(v) for v in values]


class VAN(nn.Layer):
    """Visual Attention Network backbone (Guo et al., "Visual Attention Network", 2022).

    Args:
        embed_dims (list[int]): Channels of the four stages. Default: VAN-B0's [32, 64, 160, 256].
        depths (list[int]): Blocks per stage. Default: [3, 3, 5, 2].
        mlp_ratios (list[float]): MLP expansion per stage. Default: [8, 8, 4, 4].
        drop_path_rate (float): Stochastic depth rate, rising linearly from 0 at the first block to this value
            at the last. Default: 0.1.
        num_classes (int): 0 (default) builds the feature extractor; > 0 adds the ImageNet classifier ``head``
            (global average pool of the last stage + linear) used by :meth:`classify`.
        in_channels (int): Input image channels. Default: 3.
        layer_norm_eps (float): Epsilon of the stage LayerNorms. Default: 1e-6 (the release's).
        pretrained (str|None): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) (e.g. from
            ``tools/convert_weights.py``); its classifier is ignored when ``num_classes`` is 0. Default: None.

    Attributes:
        feat_channels (list[int]): ``embed_dims``.

    forward(x) returns the four stage outputs (after their LayerNorm) at strides 4, 8, 16, 32; any input size works
    (every strided conv pads k // 2, so a stage output has ceil(size / stride) pixels).
    """

    def __init__(self, embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), mlp_ratios=(8, 8, 4, 4),
                 drop_path_rate=0.1, num_classes=0, in_channels=3, layer_norm_eps=1e-6, pretrained=None):
        super().__init__()
        embed_dims = _int_list('embed_dims', embed_dims)
        depths = _int_list('depths', depths)
        mlp_ratios = _int_list('mlp_ratios', mlp_ratios, minimum=0, kind=float)
        if isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, (int, float)) or \
                not 0 <= drop_path_rate < 1:
            raise UserError(f"VAN: drop_path_rate must be a number in [0, 1), got {drop_path_rate!r}")
        for key, value in (('num_classes', num_classes), ('in_channels', in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == 'num_classes' else 1):
                raise UserError(f"VAN: {key} must be a {'non-negative' if key == 'num_classes' else 'positive'} "
                                f"integer, got {value!r}")
        self.feat_channels = embed_dims
        self.num_classes = num_classes
        rates = np.linspace(0, drop_path_rate, sum(depths)).tolist()
        start = 0
        for i in range(4):
            embed = OverlapPatchEmbed(in_channels if i == 0 else embed_dims[i - 1], embed_dims[i],
                                      patch_size=7 if i == 0 else 3, stride=4 if i == 0 else 2)
            blocks = nn.LayerList([VANBlock(embed_dims[i], mlp_ratios[i], rates[start + j])
                                   for j in range(depths[i])])
            start += depths[i]
            setattr(self, f'patch_embed{i + 1}', embed)
            setattr(self, f'block{i + 1}', blocks)
            setattr(self, f'norm{i + 1}', LayerNorm2d(embed_dims[i], epsilon=layer_norm_eps))
        if num_classes > 0:
            self.head = nn.Linear(embed_dims[-1], num_classes,
                                  weight_attr=paddle.ParamAttr(initializer=nn.initializer.TruncatedNormal(std=0.02)),
                                  bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)))
        if pretrained:
            load_backbone_weights(self, pretrained, head_prefixes=('head.',))

    def forward(self, x):
        outs = []
        for i in range(1, 5):
            x = getattr(self, f'patch_embed{i}')(x)
            for block in getattr(self, f'block{i}'):
                x = block(x)
            x = getattr(self, f'norm{i}')(x)
            outs.append(x)
        return outs

    def classify(self, x):
        """ImageNet logits [N, num_classes] (needs ``num_classes > 0``)."""
        if self.num_classes <= 0:
            raise UserError("VAN: classify() needs a model built with num_classes > 0")
        return self.head(self.forward(x)[-1].mean(axis=[2, 3]))


def _variant(name):
    dims, depths, ratios = VAN_SETTINGS[name]

    def build(**kwargs):
        return VAN(embed_dims=dims, depths=depths, mlp_ratios=ratios, **kwargs)

    return register_variant(register_backbone, build, f'VAN_{name.upper()}',
                            (f"VAN-{name.upper()}: embed_dims {dims}, depths {depths}, mlp_ratios {ratios}. Keyword "
                             f"arguments go to :class:`VAN`."))


VAN_B0 = _variant('b0')
VAN_B1 = _variant('b1')
VAN_B2 = _variant('b2')
VAN_B3 = _variant('b3')
VAN_B4 = _variant('b4')
VAN_B5 = _variant('b5')
VAN_B6 = _variant('b6')


# ----------------------------------------------------------------------------------------------------------------
# Foreign checkpoints (used by tools/convert_weights.py)


def _head_kwargs(state):
    return {'num_classes': int(state['head.bias'].shape[0]) if 'head.bias' in state else 0}


def convert_official_weights(state, arch=None):
    """Map a checkpoint of the official release (``patch_embed1.proj.weight``, ``block1.0.attn.proj_1.weight``,
    ``norm1.weight``, ``head.weight`` ...) onto our VAN: BatchNorm statistics renamed, ``head.weight`` transposed.

    Args:
        state (dict[str, numpy.ndarray]): The checkpoint's tensors (the release wraps them in ``state_dict``;
            the tool unwraps that).
        arch (str|None): Target architecture (unused).

    Returns:
        tuple: (state dict in our names, {'num_classes': from ``head.bias``, 0 without a head}).
    """
    out = torch_layout_to_paddle(state, linear_keys=('head.weight',))
    return out, _head_kwargs(out)


_HF_RENAMES = [
    (r'^encoder\.stages\.(\d+)\.embeddings\.convolution\.', lambda m: f'patch_embed{int(m[1]) + 1}.proj.'),
    (r'^encoder\.stages\.(\d+)\.embeddings\.normalization\.', lambda m: f'patch_embed{int(m[1]) + 1}.norm.'),
    (r'^encoder\.stages\.(\d+)\.normalization\.', lambda m: f'norm{int(m[1]) + 1}.'),
    (r'^encoder\.stages\.(\d+)\.layers\.(\d+)\.', lambda m: f'block{int(m[1]) + 1}.{m[2]}.'),
]
_HF_LAYER_RENAMES = [
    ('pre_normomalization.', 'norm1.'),  # (sic: the HuggingFace name)
    ('attention.pre_projection.conv.', 'attn.proj_1.'),
    ('attention.attention_layer.attention.depth_wise_dilated.', 'attn.spatial_gating_unit.conv_spatial.'),
    ('attention.attention_layer.attention.depth_wise.', 'attn.spatial_gating_unit.conv0.'),
    ('attention.attention_layer.attention.point_wise.', 'attn.spatial_gating_unit.conv1.'),
    ('attention.post_projection.', 'attn.proj_2.'),
    ('attention_scaling.weight', 'layer_scale_1'),
    ('post_normalization.', 'norm2.'),
    ('mlp.in_dense.', 'mlp.fc1.'),
    ('mlp.depth_wise.', 'mlp.dwconv.dwconv.'),
    ('mlp.out_dense.', 'mlp.fc2.'),
    ('mlp_scaling.weight', 'layer_scale_2'),
]


def convert_hf_weights(state, arch=None):
    """Map a HuggingFace ``VanModel`` / ``VanForImageClassification`` state dict onto our VAN.

    ``encoder.stages.{i}.embeddings`` -> ``patch_embed{i+1}``, ``encoder.stages.{i}.layers.{j}`` -> ``block{i+1}.{j}``
    (``pre_normomalization`` -> ``norm1``, ``attention.pre_projection.conv`` -> ``attn.proj_1``, ``attention.
    attention_layer.attention.{depth_wise, depth_wise_dilated, point_wise}`` -> ``attn.spatial_gating_unit.{conv0,
    conv_spatial, conv1}``, ``attention.post_projection`` -> ``attn.proj_2``, ``attention_scaling`` ->
    ``layer_scale_1``, ``post_normalization`` -> ``norm2``, ``mlp.{in_dense, depth_wise, out_dense}`` -> ``mlp.{fc1,
    dwconv.dwconv, fc2}``, ``mlp_scaling`` -> ``layer_scale_2``), ``encoder.stages.{i}.normalization`` ->
    ``norm{i+1}``, ``classifier`` -> ``head``; the ``van.`` prefix of the classifier model is removed.
    ``VanModel.layernorm`` is dropped: transformers defines it but never applies it (the last stage's LayerNorm
    already normalises the output).

    Returns:
        tuple: (state dict in our names, {'num_classes': from ``classifier.bias``, 0 without it}).
    """
    renamed = {}
    for key, value in state.items():
        new = key[len('van.'):] if key.startswith('van.') else key
        if re.match(r'^layernorm\.(weight|bias)$', new):
            continue
        if new.startswith('classifier.'):
            new = 'head.' + new[len('classifier.'):]
        for pattern, repl in _HF_RENAMES:
            match = re.match(pattern, new)
            if match:
                rest = new[match.end():]
                if pattern.endswith(r'layers\.(\d+)\.'):
                    for old, replacement in _HF_LAYER_RENAMES:
                        if rest.startswith(old):
                            rest = replacement + rest[len(old):]
                            break
                new = repl(match) + rest
                break
        renamed[new] = value
    out = torch_layout_to_paddle(renamed, linear_keys=('head.weight',))
    return out, _head_kwargs(out)
