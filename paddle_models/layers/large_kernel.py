"""What VAN and SegNeXt's MSCAN share: the large-kernel spatial attention around a gating unit, the
BN -> attention / BN -> conv-MLP block with per-channel layer scales, and the strided-conv patch embedding.

The two networks differ only in the gating unit (VAN's LKA: 5x5 depthwise -> 7x7 dilated depthwise -> 1x1; MSCAN's
MSCA: 5x5 depthwise plus multi-scale strip convs -> 1x1), in the layout of the layer scales and in the depthwise
conv's name inside the MLP; everything here takes those as arguments, so both keep their releases' parameter names
and shapes (``attn.proj_1``, ``attn.spatial_gating_unit.*``, ``attn.proj_2``, ``norm1``, ``mlp.*``, ``norm2``,
``layer_scale_1``, ``layer_scale_2``; ``patch_embed{i}.proj``, ``patch_embed{i}.norm``).

References:
    Meng-Hao Guo et al., "Visual Attention Network", 2022. https://arxiv.org/abs/2202.09741
    Meng-Hao Guo et al., "SegNeXt: Rethinking Convolutional Attention Design for Semantic Segmentation",
    NeurIPS 2022. https://arxiv.org/abs/2209.08575
"""
import paddle.nn as nn

from paddle_models.layers.conv_init import fan_out_conv
from paddle_models.layers.drop_path import drop_path_or_identity

__all__ = ['SpatialAttention', 'LayerScaleBlock', 'ConvPatchEmbed']


class SpatialAttention(nn.Layer):
    """1x1 conv -> GELU -> gating unit -> 1x1 conv, plus the input (the releases' ``Attention``).

    Args:
        dim (int): Channels.
        gating_unit (callable): Builds the gating layer (``spatial_gating_unit``), called after ``proj_1`` is
            built so that the layers draw their initial weights in the releases' order.
    """

    def __init__(self, dim, gating_unit):
        super().__init__()
        self.proj_1 = fan_out_conv(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = gating_unit()
        self.proj_2 = fan_out_conv(dim, dim, 1)

    def forward(self, x):
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class LayerScaleBlock(nn.Layer):
    """BN -> attention and BN -> MLP, each scaled per channel (layer scale), passed through stochastic depth and
    added to the input:
    x = x + drop_path(layer_scale_1 * attn(norm1(x))), x = x + drop_path(layer_scale_2 * mlp(norm2(x))).

    Args:
        dim (int): Channels.
        attn (callable): Builds the attention layer (``attn``).
        mlp (callable): Builds the MLP (``mlp``).
        drop_path (float): Stochastic depth rate of this block. Default: 0.
        layer_scale_init (float): Initial layer scales. Default: 1e-2.
        layer_scale_shape (str): 'C' ([dim], VAN's layout) or 'C11' ([dim, 1, 1], PaddleSeg's MSCAN). Default: 'C'.
    """

    def __init__(self, dim, attn, mlp, drop_path=0.0, layer_scale_init=1e-2, layer_scale_shape='C'):
        super().__init__()
        self.norm1 = nn.BatchNorm2D(dim)
        self.attn = attn()
        self.drop_path = drop_path_or_identity(drop_path)
        self.norm2 = nn.BatchNorm2D(dim)
        self.mlp = mlp()
        shape = [dim] if layer_scale_shape == 'C' else [dim, 1, 1]
        self.layer_scale_1 = self.create_parameter(shape, default_initializer=nn.initializer.Constant(layer_scale_init))
        self.layer_scale_2 = self.create_parameter(shape, default_initializer=nn.initializer.Constant(layer_scale_init))

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1.reshape([-1, 1, 1]) * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2.reshape([-1, 1, 1]) * self.mlp(self.norm2(x)))


class ConvPatchEmbed(nn.Layer):
    """Strided conv with overlapping windows (padding k // 2), then BatchNorm.

    Args:
        in_channels (int): Input channels.
        embed_dim (int): Output channels.
        patch_size (int): Kernel size. Default: 3.
        stride (int): Stride. Default: 2.
    """

    def __init__(self, in_channels, embed_dim, patch_size=3, stride=2):
        super().__init__()
        self.proj = fan_out_conv(in_channels, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.BatchNorm2D(embed_dim)

    def forward(self, x):
        return self.norm(self.proj(x))
