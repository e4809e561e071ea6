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
import paddle.nn.functional as F

from paddle_models.errors import UserError
from paddle_models.layers.conv import ConvBN, ConvBNReLU, folded_norm
from paddle_models.layers.resize import adaptive_avg_pool2d, interpolation_matrix, resize
from paddle_models.utils.spatial import feature_shape
from paddle_models.utils.validate import check_ints

__all__ = ['PPModule', 'LowResPPModule', 'ASPPModule', 'SplitFusionASPP', 'AuxLayer', 'SeparableConvBNReLU',
           'AdaptiveAvgPool2D']


class AdaptiveAvgPool2D(nn.AdaptiveAvgPool2D):
    """``nn.AdaptiveAvgPool2D`` (NCHW) computed by :func:`~paddle_models.layers.resize.adaptive_avg_pool2d`: Paddle's
    op, except in a graph traced for ONNX, where it takes a form paddle2onnx converts at a free input size. No
    parameters, so a model's checkpoints are unchanged.

    Args:
        output_size (int|tuple[int]): The pooled grid, b or (h, w).
    """

    def __init__(self, output_size):
        super().__init__(output_size)

    def forward(self, x):
        return adaptive_avg_pool2d(x, self._output_size)


class PPModule(nn.Layer):
    """Pyramid pooling module (PSPNet).

    For each bin size b the input is average-pooled to a b x b grid, projected by a 1x1 ConvBNReLU and upsampled
    back (bilinear) to the input size. The input and the upsampled branches (largest bin first, the order of the
    reference implementation) are concatenated and fused by a 3x3 ConvBNReLU. A program exported on Paddle 3
    computes the same fusion without upsampling the branches to full resolution (:meth:`to_deploy`,
    :class:`LowResPPModule`).

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
            nn.Sequential(AdaptiveAvgPool2D(output_size=(size, size)),
                          ConvBNReLU(in_channels, branch_channels, 1))
            for size in bin_sizes
        ])
        self.conv_bn_relu2 = ConvBNReLU(in_channels + branch_channels * len(bin_sizes), out_channels, 3, padding=1)

    def forward(self, x):
        size = paddle.shape(x)[2:]
        branches = [resize(stage(x), size, align_corners=self.align_corners) for stage in self.stages]
        return self.conv_bn_relu2(paddle.concat([x] + branches[::-1], axis=1))

    def to_deploy(self, target):
        """The deploy form (``layers/deploy.py``): :class:`LowResPPModule` in a PIR program; else this module
        (Paddle 2.6's oneDNN executor fails on that form's broadcasting ops: "could not create a primitive
        descriptor for a binary operation primitive")."""
        return LowResPPModule(self) if target.program == 'pir' else self


class LowResPPModule(nn.Layer):
    """A :class:`PPModule` (eval) whose 3x3 fusion conv is computed without upsampling the branches first.

    The conv over the concatenation is the conv over ``x`` plus, for each branch, the conv over its upsampled
    map; and a 3x3 conv of a bilinear upsampling ``A_h p A_w^T`` is the sum over the 9 taps of
    ``S_ky A_h (W_tap p) A_w^T S_kx``, with ``W_tap`` the tap's channel mixing (here on the pooled b x b grid)
    and ``S`` the tap's one-row shift with zero padding, folded into shifted interpolation matrices. So the
    branches' half of the input channels costs two small matrix products instead of a full-resolution 3x3
    conv over them (the same values up to float rounding). Paddle's bilinear rule: see
    :func:`_shifted_interpolation`. The fusion block's batch norm and activation follow as in the module.

    Args:
        module (PPModule): The module; its layers are shared.
    """

    def __init__(self, module):
        super().__init__()
        self.bin_sizes = module.bin_sizes
        self.align_corners = module.align_corners
        self.stages = module.stages
        fuse = module.conv_bn_relu2
        self.conv, self.norm, self.act = fuse.conv, fuse.norm, fuse.act

    def forward(self, x):
        return self.act(self.norm(self.fused_conv(x)))

    def fused_conv(self, x):
        """The 3x3 fusion conv's output (before its BN and ReLU), computed as the class docstring says."""
        conv = self.conv
        weight = conv.weight  # [out, in_x + branches, 3, 3]
        out_channels, in_x = weight.shape[0], x.shape[1]
        shape = feature_shape(x)  # (no reorder of x under oneDNN: see utils/spatial.py)
        h, w = shape[2], shape[3]
        rows, columns = [], []
        offset = in_x
        for stage, bins in zip(self.stages[::-1], self.bin_sizes[::-1]):  # the concatenation's order
            pooled = stage(x)  # [N, c, b, b]
            channels = pooled.shape[1]
            taps = weight[:, offset:offset + channels].transpose([2, 3, 0, 1]).reshape(
                [9 * out_channels, channels, 1, 1])
            offset += channels
            z = F.conv2d(pooled, taps)  # [N, 9 * out, b, b]: (ky, kx, out) channel mixing per tap
            z = z.reshape([0, 3, 3, out_channels, bins, bins]).transpose([0, 1, 3, 4, 2, 5]).reshape(
                [0, 3, out_channels, bins, 3 * bins])
            z = paddle.matmul(z, _shifted_interpolation(bins, w, self.align_corners), transpose_y=True)
            columns.append(z.transpose([0, 2, 1, 3, 4]).reshape([0, out_channels, 3 * bins, w]))
            rows.append(_shifted_interpolation(bins, h, self.align_corners))
        branches = paddle.matmul(paddle.concat(rows, axis=1), paddle.concat(columns, axis=2))  # [N, out, H, W]
        main = F.conv2d(x, weight[:, :in_x], conv.bias, padding=conv._padding, dilation=conv._dilation)
        return main + branches


def _shifted_interpolation(in_len, out_len, align_corners):
    """[out_len, 3 * in_len]: for each tap k of a 3x3 conv (padding 1), the bilinear interpolation matrix from
    ``in_len`` to ``out_len`` points (:func:`~paddle_models.layers.resize.interpolation_matrix`, Paddle's rule) with
    its rows shifted by k - 1: row o holds the weights of output point o + k - 1, zero where that falls outside.
    ``in_len`` a python int, ``out_len`` an int or an int tensor."""
    matrix = interpolation_matrix(in_len, out_len, align_corners)  # [out, in]
    zero = paddle.zeros([1, in_len], dtype=matrix.dtype)
    padded = paddle.concat([zero, matrix, zero], axis=0)  # [out + 2, in]: output points -1 .. out
    return paddle.concat([padded[:-2], padded[1:-1], padded[2:]], axis=1)


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
            outputs.append(resize(pooled, feature_shape(x)[2:], align_corners=self.align_corners))
        return self.dropout(self.conv_bn_relu(paddle.concat(outputs, axis=1)))

    def to_deploy(self, target):
        """The deploy form (``layers/deploy.py``): :class:`SplitFusionASPP` in a PIR program (exported Paddle 3
        programs; legacy ones keep the concatenation); else this module."""
        return SplitFusionASPP(self) if target.program == 'pir' else self


class SplitFusionASPP(nn.Layer):
    """An :class:`ASPPModule` (eval) without the concatenation: the 1x1 fusion conv over the concatenated branches
    is the sum of its input-channel slices applied to each branch, with its batch norm folded into the slices
    (running statistics), and the image-pooling branch, constant over the map (a bilinear resize of a 1x1 map),
    is added per channel instead of being spread over the map first. Under oneDNN each slice's conv takes the
    running sum as a fused post-op. The same values as the module in eval mode.

    Args:
        module (ASPPModule): The module; its layers are shared.
    """

    def __init__(self, module):
        super().__init__()
        self.aspp_blocks = module.aspp_blocks
        self.image_pooling = module.image_pooling
        if module.image_pooling:
            self.global_avg_pool = module.global_avg_pool
        fuse = module.conv_bn_relu
        self.conv, self.norm, self.act = fuse.conv, fuse.norm, fuse.act
        self.dropout = module.dropout

    def forward(self, x):
        scale, shift = folded_norm(self.conv, self.norm)
        weight = self.conv.weight * scale.reshape([-1, 1, 1, 1])  # [out, branches * c, 1, 1]
        c = weight.shape[1] // (len(self.aspp_blocks) + int(self.image_pooling))
        y = None
        for i, block in enumerate(self.aspp_blocks):
            part = F.conv2d(block(x), weight[:, i * c:(i + 1) * c], shift if i == 0 else None)
            y = part if y is None else y + part
        if self.image_pooling:
            y = y + F.conv2d(self.global_avg_pool(x), weight[:, -c:])  # [N, out, 1, 1], broadcast
        return self.dropout(self.act(y))


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
