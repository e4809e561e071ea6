"""MSCAN: the Multi-Scale Convolutional Attention Network, SegNeXt's encoder.

Reference:
    Meng-Hao Guo, Cheng-Ze Lu, Qibin Hou, Zhengning Liu, Ming-Ming Cheng, Shi-Min Hu, "SegNeXt: Rethinking
    Convolutional Attention Design for Semantic Segmentation", NeurIPS 2022. https://arxiv.org/abs/2209.08575

Shape of the network (four stages, strides 4, 8, 16, 32)::

    stage 1 stem     conv 3x3 s2 -> BN -> GELU -> conv 3x3 s2 -> BN (``patch_embed1.proj.{0,1,3,4}``)
    stage 2-4 embed  conv 3x3 s2 -> BN
    depth_i blocks   x = x + drop_path(layer_scale_1 * attention(BN(x)))
                     x = x + drop_path(layer_scale_2 * mlp(BN(x)))
    stage output     LayerNorm over the channels
    attention(u) = proj_2(MSCA(GELU(proj_1(u)))) + u
    MSCA(a)      = a * conv_out(d + sum_k strip_k(d)),  d = 5x5 depthwise conv of a,
                   strip_k = (1 x k) then (k x 1) depthwise convs, k in 7, 11, 21
    mlp(u)       = fc2(GELU(dwconv3x3(fc1(u))))

The whole network stays in NCHW (PaddleSeg's flattens to tokens and back in every block and clones its inputs);
the branch sums accumulate one tensor at a time, so an eval forward holds fewer large temporaries.

Parameter names are PaddleSeg 2.8.0's (``patch_embed1.proj.0``, ``block1.0.attn.spatial_gating_unit.dwconvs.0.
conv1_1``, ``conv_out``, ``mlp.dwconv``, ``layer_scale_1`` of shape [C, 1, 1], ``norm1``), so its checkpoints load
unchanged; mmseg checkpoints convert with :func:`convert_mmseg_weights`.
"""
import re

import numpy as np
import paddle.nn as nn

from paddle_models.layers.conv_init import fan_out_conv
from paddle_models.layers.large_kernel import ConvPatchEmbed, LayerScaleBlock, SpatialAttention
from paddle_models.layers.mlp import ConvMlp
from paddle_models.layers.norm import LayerNorm2d
from paddle_models.layers.stages import build_stages, run_stages
from paddle_models.registry import register_backbone, register_converter, register_variant
from paddle_models.utils.validate import check_int, check_ints, check_number
from paddle_models.weights import load_weights, torch_layout_to_paddle

__all__ = ['MSCAN', 'MSCAN_T', 'MSCAN_S', 'MSCAN_B', 'MSCAN_L', 'MSCAN_SETTINGS', 'MSCAN_ARCHS', 'mscan_from_mmseg',
           'convert_mmseg_weights']

# widths, depths, drop path rates of the released sizes (MLP ratios [8, 8, 4, 4] for all)
MSCAN_SETTINGS = {
    't': ([32, 64, 160, 256], [3, 3, 5, 2], 0.1),
    's': ([64, 128, 320, 512], [2, 2, 4, 2], 0.1),
    'b': ([64, 128, 320, 512], [3, 3, 12, 3], 0.1),
    'l': ([64, 128, 320, 512], [3, 5, 27, 3], 0.3),
}
MSCAN_ARCHS = tuple(f'MSCAN_{name.upper()}' for name in MSCAN_SETTINGS)  # the registered variants


def _depthwise(dim, kh, kw):
    return fan_out_conv(dim, dim, (kh, kw), padding=(kh // 2, kw // 2), groups=dim)


class StripBranch(nn.Layer):
    """(1 x k) then (k x 1) depthwise convs, named ``conv{i}_1`` / ``conv{i}_2`` as in PaddleSeg."""

    def __init__(self, dim, k, index):
        super().__init__()
        self.names = (f'conv{index}_1', f'conv{index}_2')
        setattr(self, self.names[0], _depthwise(dim, 1, k))
        setattr(self, self.names[1], _depthwise(dim, k, 1))

    def forward(self, x):
        return getattr(self, self.names[1])(getattr(self, self.names[0])(x))


class MultiScaleConvAttention(nn.Layer):
    """MSCA: the input times a 1x1 conv of (5x5 depthwise conv + its multi-scale strip-conv branches).

    Args:
        dim (int): Channels.
        kernel_sizes (list[int]): Strip lengths of the branches. Default: [7, 11, 21].
    """

    def __init__(self, dim, kernel_sizes=(7, 11, 21)):
        super().__init__()
        self.conv0 = fan_out_conv(dim, dim, 5, padding=2, groups=dim)
        self.dwconvs = nn.LayerList([StripBranch(dim, k, i + 1) for i, k in enumerate(kernel_sizes)])
        self.conv_out = fan_out_conv(dim, dim, 1)

    def forward(self, x):
        base = self.conv0(x)
        attn = base
        for branch in self.dwconvs:
            attn = attn + branch(base)
        return self.conv_out(attn) * x


class MSCANBlock(LayerScaleBlock):
    """BN -> spatial attention (1x1 conv -> GELU -> MSCA -> 1x1 conv, plus its input) and BN -> conv MLP, each
    scaled per channel (layer scales of shape [C, 1, 1], 1e-2 at init), through stochastic depth, added to the
    input.

    The MLP slices its hidden channels in large dynamic-graph eval forwards (:class:`~paddle_models.layers.mlp.
    ConvMlp`, ``sliced``): the same result with less memory; exported programs keep one pass.

    Args:
        dim (int): Channels.
        mlp_ratio (float): Hidden channels / dim.
        kernel_sizes (list[int]): Strip lengths of MSCA.
        drop_path (float): Stochastic depth rate. Default: 0.
        drop (float): Dropout inside the MLP. Default: 0.
    """

    def __init__(self, dim, mlp_ratio, kernel_sizes=(7, 11, 21), drop_path=0.0, drop=0.0):
        super().__init__(dim, lambda: SpatialAttention(dim, lambda: MultiScaleConvAttention(dim, kernel_sizes)),
                         lambda: ConvMlp(dim, int(dim * mlp_ratio), drop, sliced=True), drop_path=drop_path,
                         layer_scale_shape='C11')


class StemConv(nn.Layer):
    """Two 3x3 stride-2 convs with BN (GELU between): stride 4, ``proj.{0,1,3,4}`` as in the release."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.proj = nn.Sequential(fan_out_conv(in_channels, out_channels // 2, 3, stride=2, padding=1),
                                  nn.BatchNorm2D(out_channels // 2), nn.GELU(),
                                  fan_out_conv(out_channels // 2, out_channels, 3, stride=2, padding=1),
                                  nn.BatchNorm2D(out_channels))

    def forward(self, x):
        return self.proj(x)


class MSCAN(nn.Layer):
    """MSCAN backbone (Guo et al., "SegNeXt", NeurIPS 2022).

    Args:
        in_channels (int): Input image channels. Default: 3.
        embed_dims (list[int]): Channels of the four stages. Default: MSCAN-T's [32, 64, 160, 256].
        depths (list[int]): Blocks per stage. Default: [3, 3, 5, 2].
        mlp_ratios (list[int]): MLP expansion per stage. Default: [8, 8, 4, 4].
        atten_kernel_sizes (list[int]): Strip lengths of MSCA. Default: [7, 11, 21].
        drop_rate (float): Dropout inside the MLPs. Default: 0.
        drop_path_rate (float): Stochastic depth, rising linearly from 0 to this value. Default: 0.1.
        pretrained (str|None): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of this backbone.
            Default: None.

    Attributes:
        feat_channels (list[int]): ``embed_dims``.

    forward(x) returns the four stage outputs (LayerNorm'd over the channels) at strides 4, 8, 16, 32.
    """

    def __init__(self, in_channels=3, embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), mlp_ratios=(8, 8, 4, 4),
                 atten_kernel_sizes=(7, 11, 21), drop_rate=0.0, drop_path_rate=0.1, pretrained=None):
        super().__init__()
        embed_dims = check_ints('MSCAN', 'embed_dims', embed_dims, length=4)
        depths = check_ints('MSCAN', 'depths', depths, length=4)
        mlp_ratios = check_ints('MSCAN', 'mlp_ratios', mlp_ratios, length=4)
        kernels = check_ints('MSCAN', 'atten_kernel_sizes', atten_kernel_sizes)
        in_channels = check_int('MSCAN', 'in_channels', in_channels)
        drop_rate = check_number('MSCAN', 'drop_rate', drop_rate, minimum=0, maximum=1, below_max=True)
        drop_path_rate = check_number('MSCAN', 'drop_path_rate', drop_path_rate, minimum=0, maximum=1, below_max=True)
        self.feat_channels = embed_dims
        build_stages(self, depths, drop_path_rate,
                     embed=lambda i: (StemConv(in_channels, embed_dims[0]) if i == 0 else
                                      ConvPatchEmbed(embed_dims[i - 1], embed_dims[i])),
                     block=lambda i, rate: MSCANBlock(embed_dims[i], mlp_ratios[i], kernels, rate, drop_rate),
                     norm=lambda i: LayerNorm2d(embed_dims[i], epsilon=1e-5))
        if pretrained:
            load_weights(self, pretrained)

    def forward(self, x):
        return run_stages(self, x)


def _variant(name):
    dims, depths, rate = MSCAN_SETTINGS[name]
    return register_variant(register_backbone, MSCAN, f'MSCAN_{name.upper()}',
                            f"MSCAN-{name.upper()}: embed_dims {dims}, depths "
                            f"{depths}, drop path {rate}. Keyword arguments go to :class:`MSCAN`.",
                            defaults={'drop_path_rate': rate}, embed_dims=dims, depths=depths)


MSCAN_T = _variant('t')
MSCAN_S = _variant('s')
MSCAN_B = _variant('b')
MSCAN_L = _variant('l')


# ----------------------------------------------------------------------------------------------------------------
# Foreign checkpoints (used by tools/convert_weights.py and the SegNeXt converter)


def mscan_from_mmseg(state, prefix='backbone.'):
    """Our MSCAN names for the ``{prefix}*`` tensors of an mmseg MSCAN: ``attn.spatial_gating_unit.conv{i}_{j}``
    (i = 0..2) -> ``dwconvs.{i}.conv{i+1}_{j}``, ``conv3`` -> ``conv_out``, ``mlp.dwconv.dwconv`` -> ``mlp.dwconv``,
    layer scales [C] -> [C, 1, 1], BatchNorm statistics renamed. Keys outside ``prefix`` are left out."""
    out = {}
    for key, value in ((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix)):
        m = re.search(r'spatial_gating_unit\.conv(\d)_(\d)\.', key)
        if m:
            key = key.replace(m[0], f'spatial_gating_unit.dwconvs.{m[1]}.conv{int(m[1]) + 1}_{m[2]}.')
        key = key.replace('spatial_gating_unit.conv3.', 'spatial_gating_unit.conv_out.')
        key = key.replace('mlp.dwconv.dwconv.', 'mlp.dwconv.')
        value = np.asarray(value)
        if re.search(r'layer_scale_[12]$', key) and value.ndim == 1:
            value = value.reshape(-1, 1, 1)
        out[key] = value
    return torch_layout_to_paddle(out)


@register_converter('mmseg', *MSCAN_ARCHS)
def convert_mmseg_weights(state, arch=None):
    """Map an mmseg MSCAN (``backbone.*`` of a SegNeXt checkpoint, or an ImageNet ``mscan_*.pth`` without prefix)
    onto our MSCAN; the decode head is left out.

    Returns:
        tuple: (state dict in our names, {}).
    """
    prefix = 'backbone.' if any(k.startswith('backbone.') for k in state) else ''
    out = mscan_from_mmseg(state, prefix)
    if not prefix:
        out = {k: v for k, v in out.items() if not k.startswith('head.')}  # the ImageNet classifier
    return out, {}
