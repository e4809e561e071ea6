"""Multi-scale context modules: the pyramid pooling module (PSPNet), atrous spatial pyramid pooling (DeepLab) and
the auxiliary FCN head that PSPNet-style models put on an intermediate backbone stage.

Parameter names follow PaddleSeg 2.8.0's ``layers.PPModule``, ``layers.ASPPModule``, ``layers.AuxLayer`` and
``layers.SeparableConvBNReLU`` (including its ``piontwise_conv`` spelling), so checkpoints of PaddleSeg models built
from them load unchanged. Every upsampling goes through :func:`paddle_models.layers.resize`.

References:
    Hengshuang Zhao, Jianping Shi, Xiaojuan Qi, Xiaogang Wang, Jiaya Jia, "Pyramid Scene Parsing Network",
    CVPR 2017. https://arxiv.org/abs/1612.01105
    Liang-Chieh Chen, George Papandreou, Florian Schroff, Hartwig Adam, "Rethinking Atrous Convolution for Semantic
    Image Segmentation", 2017. https://arxiv.org/abs/1706.05587
"""
import paddle
import paddle.nn as nn

from paddle_models.errors import UserError
from paddle_models.layers.conv import ConvBN, ConvBNReLU
from paddle_models.layers.resize import resize
from paddle_models.utils.validate import check_ints

__all__ = ['PPModule', 'ASPPModule', 'AuxLayer', 'SeparableConvBNReLU']


class PPModule(nn.Layer):
    """Pyramid pooling module (PSPNet).

    For each bin size b the input is average-pooled to a b x b grid, projected by a 1x1 ConvBNReLU and upsampled
    back (bilinear) to the input size. The input and the upsampled branches (largest bin first, the order of the
    reference implementation) are concatenated and fused by a 3x3 ConvBNReLU.

    Args:
        in_channels (int): Channels of the input feature map.
        out_channels (int): Channels of the output.
        bin_sizes (tuple[int]): Output grid size of each pooling branch, e.g. (1, 2, 3, 6).
        dim_reduction (bool): Give each branch ``in_channels // len(bin_sizes)`` channels (as in the paper);
            otherwise each branch keeps ``in_channels``.
        align_corners (bool): ``align_corners`` of the bilinear upsampling.
    """

    def __init__(self, in_channels, out_channels, bin_sizes, dim_reduction, align_corners):
        super().__init__()
        bin_sizes = check_ints('PPModule', 'bin_sizes', bin_sizes)
        self.bin_sizes = bin_sizes
        self.align_corners = align_corners
        branch_channels = in_channels // len(bin_sizes) if dim_reduction else in_channels
        if branch_channels < 1:
            raise UserError(f"PPModule: in_channels {in_channels} is too small for {len(bin_sizes)} bins with "
                            f"dim_reduction")
        self.stages = nn.LayerList([
            nn.Sequential(nn.AdaptiveAvgPool2D(output_size=(size, size)),
                          ConvBNReLU(in_channels, branch_channels, 1))
            for size in bin_sizes
        ])
        self.conv_bn_relu2 = ConvBNReLU(in_channels + branch_channels * len(bin_sizes), out_channels, 3, padding=1)

    def forward(self, x):
        size = paddle.shape(x)[2:]
        branches = [resize(stage(x), size, align_corners=self.align_corners) for stage in self.stages]
        return self.conv_bn_relu2(paddle.concat([x] + branches[::-1], axis=1))


class SeparableConvBNReLU(nn.Layer):
    """Depthwise ConvBN followed by a pointwise (1x1) ConvBNReLU.

    Args:
        in_channels (int): Input channels (also the depthwise conv's groups).
        out_channels (int): Output channels of the pointwise conv.
        kernel_size (int): Kernel size of the depthwise conv.
        padding (int|str): Padding of the depthwise conv. Default: 'same'.
        pointwise_bias (bool|None): ``bias_attr`` of the pointwise conv. Default: None (a bias).
        **kwargs: Passed on to the depthwise conv (e.g. ``dilation``).
    """

    def __init__(self, in_channels, out_channels, kernel_size, padding='same', pointwise_bias=None, **kwargs):
        super().__init__()
        self.depthwise_conv = ConvBN(in_channels, in_channels, kernel_size, padding=padding, groups=in_channels,
                                     **kwargs)
        # (sic) PaddleSeg's parameter name
        self.piontwise_conv = ConvBNReLU(in_channels, out_channels, 1, bias_attr=pointwise_bias)

    def forward(self, x):
        return self.piontwise_conv(self.depthwise_conv(x))


class ASPPModule(nn.Layer):
    """Atrous spatial pyramid pooling (DeepLabV3).

    One branch per rate r: a 1x1 ConvBNReLU for r == 1, else a 3x3 ConvBNReLU with dilation r (separable when
    ``use_sep_conv``). With ``image_pooling`` one more branch averages the whole map to 1x1, projects it by a 1x1
    ConvBNReLU (no conv bias) and spreads it back over the map. The branches are concatenated, fused by a 1x1
    ConvBNReLU and passed through dropout (p=0.1).

    Args:
        aspp_ratios (tuple[int]): Dilation rates, e.g. (1, 6, 12, 18) at output stride 16, (1, 12, 24, 36) at 8.
        in_channels (int): Channels of the input.
        out_channels (int): Channels of every branch and of the output.
        align_corners (bool): ``align_corners`` of the image-pooling upsampling.
        use_sep_conv (bool, optional): Separable convs for the dilated branches. Default: False.
        image_pooling (bool, optional): Add the image-level pooling branch. Default: False.
        data_format (str, optional): Only 'NCHW' is supported. Default: 'NCHW'.
    """

    def __init__(self, aspp_ratios, in_channels, out_channels, align_corners, use_sep_conv=False,
                 image_pooling=False, data_format='NCHW'):
        super().__init__()
        if data_format != 'NCHW':
            raise UserError(f"ASPPModule: data_format {data_format!r} is not supported; use 'NCHW'")
        ratios = check_ints('ASPPModule', 'aspp_ratios', aspp_ratios)
        self.align_corners = align_corners
        self.aspp_ratios = ratios
        self.aspp_blocks = nn.LayerList()
        for rate in ratios:
            if rate == 1:
                block = ConvBNReLU(in_channels, out_channels, 1, padding=0)
            elif use_sep_conv:
                block = SeparableConvBNReLU(in_channels, out_channels, 3, padding=rate, dilation=rate)
            else:
                block = ConvBNReLU(in_channels, out_channels, 3, padding=rate, dilation=rate)
            self.aspp_blocks.append(block)
        branches = len(ratios)
        self.image_pooling = image_pooling
        if image_pooling:
            self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2D(output_size=(1, 1)),
                                                 ConvBNReLU(in_channels, out_channels, 1, bias_attr=False))
            branches += 1
        self.conv_bn_relu = ConvBNReLU(out_channels * branches, out_channels, 1)
        self.dropout = nn.Dropout(p=0.1)

    def forward(self, x):
        outputs = [block(x) for block in self.aspp_blocks]
        if self.image_pooling:
            pooled = self.global_avg_pool(x)
            outputs.append(resize(pooled, paddle.shape(x)[2:], align_corners=self.align_corners))
        return self.dropout(self.conv_bn_relu(paddle.concat(outputs, axis=1)))


class AuxLayer(nn.Layer):
    """Auxiliary FCN head: 3x3 ConvBNReLU -> dropout -> 1x1 conv to the classes.

    Args:
        in_channels (int): Input channels.
        inter_channels (int): Channels of the 3x3 conv.
        out_channels (int): Output channels (usually the number of classes).
        dropout_prob (float, optional): Dropout probability. Default: 0.1.
        **kwargs: Passed on to the 3x3 conv.
    """

    def __init__(self, in_channels, inter_channels, out_channels, dropout_prob=0.1, **kwargs):
        super().__init__()
        self.conv_bn_relu = ConvBNReLU(in_channels, inter_channels, 3, padding=1, **kwargs)
        self.dropout = nn.Dropout(p=dropout_prob)
        self.conv = nn.Conv2D(inter_channels, out_channels, kernel_size=1)

    def forward(self, x):
        return self.conv(self.dropout(self.conv_bn_relu(x)))
