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
import re

import paddle
import paddle.nn as nn

from paddle_models.errors import UserError
from paddle_models.layers.conv_init import fan_out_conv
from paddle_models.layers.large_kernel import ConvPatchEmbed, LayerScaleBlock, SpatialAttention
from paddle_models.layers.mlp import ConvMlp
from paddle_models.layers.norm import LayerNorm2d
from paddle_models.layers.stages import build_stages, run_stages
from paddle_models.registry import register_backbone, register_converter, register_variant
from paddle_models.utils.validate import check_int, check_ints, check_number, check_numbers
from paddle_models.weights import load_weights, torch_layout_to_paddle

__all__ = ['VAN', 'VANBlock', 'LargeKernelAttention', 'VAN_B0', 'VAN_B1', 'VAN_B2', 'VAN_B3', 'VAN_B4', 'VAN_B5',
           'VAN_B6', 'VAN_SETTINGS', 'VAN_ARCHS', 'convert_official_weights', 'convert_hf_weights']

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
VAN_ARCHS = tuple(f'VAN_{name.upper()}' for name in VAN_SETTINGS)  # the registered variants the converters serve


class LargeKernelAttention(nn.Layer):
    """LKA: a 21x21 receptive field from a 5x5 depthwise conv, a 7x7 depthwise conv with dilation 3 and a 1x1 conv;
    the result multiplies the input element-wise (an attention map, without softmax).

    Args:
        dim (int): Channels.
    """

    def __init__(self, dim):
        super().__init__()
        self.conv0 = fan_out_conv(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = fan_out_conv(dim, dim, 7, padding=9, dilation=3, groups=dim)
        self.conv1 = fan_out_conv(dim, dim, 1)

    def forward(self, x):
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class VANBlock(LayerScaleBlock):
    """A VAN block: BN -> spatial attention (1x1 conv -> GELU -> LKA -> 1x1 conv, plus its input) and BN -> conv
    MLP, each scaled per channel (layer scales of shape [dim], initialised to 1e-2), passed through stochastic depth
    and added to the input.

    Args:
        dim (int): Channels.
        mlp_ratio (float): Hidden channels of the MLP / dim.
        drop_path (float): Stochastic depth rate of this block.
        layer_scale_init (float): Initial layer scale. Default: 1e-2.
    """

    def __init__(self, dim, mlp_ratio, drop_path=0.0, layer_scale_init=1e-2):
        super().__init__(dim, lambda: SpatialAttention(dim, lambda: LargeKernelAttention(dim)),
                         lambda: ConvMlp(dim, int(dim * mlp_ratio), nested_dwconv=True), drop_path=drop_path,
                         layer_scale_init=layer_scale_init, layer_scale_shape='C')


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
        embed_dims = check_ints('VAN', 'embed_dims', embed_dims, length=4)
        depths = check_ints('VAN', 'depths', depths, length=4)
        mlp_ratios = check_numbers('VAN', 'mlp_ratios', mlp_ratios, length=4, minimum=0)
        drop_path_rate = check_number('VAN', 'drop_path_rate', drop_path_rate, minimum=0, maximum=1, below_max=True)
        num_classes = check_int('VAN', 'num_classes', num_classes, minimum=0)
        in_channels = check_int('VAN', 'in_channels', in_channels)
        self.feat_channels = embed_dims
        self.num_classes = num_classes
        build_stages(self, depths, drop_path_rate,
                     embed=lambda i: ConvPatchEmbed(in_channels if i == 0 else embed_dims[i - 1], embed_dims[i],
                                                    patch_size=7 if i == 0 else 3, stride=4 if i == 0 else 2),
                     block=lambda i, rate: VANBlock(embed_dims[i], mlp_ratios[i], rate),
                     norm=lambda i: LayerNorm2d(embed_dims[i], epsilon=layer_norm_eps))
        if num_classes > 0:
            self.head = nn.Linear(embed_dims[-1], num_classes,
                                  weight_attr=paddle.ParamAttr(initializer=nn.initializer.TruncatedNormal(std=0.02)),
                                  bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)))
        if pretrained:
            load_weights(self, pretrained, skip_prefixes=('head.',))

    def forward(self, x):
        return run_stages(self, x)

    def classify(self, x):
        """ImageNet logits [N, num_classes] (needs ``num_classes > 0``)."""
        if self.num_classes <= 0:
            raise UserError("VAN: classify() needs a model built with num_classes > 0")
        return self.head(self.forward(x)[-1].mean(axis=[2, 3]))


def _variant(name):
    dims, depths, ratios = VAN_SETTINGS[name]
    return register_variant(register_backbone, VAN, f'VAN_{name.upper()}',
                            f"VAN-{name.upper()}: embed_dims {dims}, depths {depths}, "
                            f"mlp_ratios {ratios}. Keyword arguments go to :class:`VAN`.",
                            embed_dims=dims, depths=depths, mlp_ratios=ratios)


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


@register_converter('official', *VAN_ARCHS)
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


@register_converter('hf', *VAN_ARCHS)
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
