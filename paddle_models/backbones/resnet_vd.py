"""ResNet-vd backbones (ResNet18_vd ... ResNet101_vd), weight-compatible with PaddleSeg 2.8.0's ``ResNet_vd``.

Reference:
    Tong He, Zhi Zhang, Hang Zhang, Zhongyue Zhang, Junyuan Xie, Mu Li, "Bag of Tricks for Image Classification
    with Convolutional Neural Networks", CVPR 2019. https://arxiv.org/abs/1812.01187  (the "D" variant)

What "vd" changes against the original ResNet:

* the stem is three 3x3 convs (32, 32, 64 channels; the first with stride 2) instead of one 7x7 conv;
* a downsampling projection shortcut average-pools 2x2 (ceil mode) first and then applies a stride-1 1x1 conv,
  instead of a strided 1x1 conv that skips three quarters of the pixels.

Layout (parameter names as PaddleSeg's): ``conv1_1``, ``conv1_2``, ``conv1_3`` (stem), a 3x3/2 max pool, then
blocks ``bb_{stage}_{block}`` with ``conv0``, ``conv1`` (, ``conv2``) and, in the first block of every stage,
``short`` (the projection). Every conv is a ``ConvBNLayer`` with ``_conv`` and ``_batch_norm``.

Output stride: 32 strides every stage; 16 replaces the stride of stage 4 by dilation 2; 8 replaces the strides of
stages 3 and 4 by dilations 2 and 4. ``multi_grid`` multiplies the dilation of each block of stage 4 (DeepLabV3's
multi-grid, e.g. (1, 2, 4)). As in PaddleSeg, a block whose dilation is not 1 does not stride.
"""
import paddle.nn as nn

from paddle_models.weights import load_weights
from paddle_models.layers.conv import ConvBNAct
from paddle_models.registry import register_backbone, register_variant
from paddle_models.utils.validate import check_choice, check_int, check_ints

__all__ = ['ResNet_vd', 'ResNet18_vd', 'ResNet34_vd', 'ResNet50_vd', 'ResNet101_vd', 'ConvBNLayer',
           'BasicBlock', 'BottleneckBlock']

# blocks per stage
_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3),
           200: (3, 12, 48, 3)}
# dilation of stages 3 and 4 (indices 2 and 3) per output stride
_STAGE_DILATION = {32: {}, 16: {3: 2}, 8: {2: 2, 3: 4}}


class ConvBNLayer(ConvBNAct):
    """Conv (no bias) -> BN -> activation, optionally preceded by a 2x2 average pool (the vd shortcut).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Kernel size.
        stride (int, optional): Conv stride. Default: 1.
        dilation (int, optional): Conv dilation; the padding keeps the size at stride 1. Default: 1.
        groups (int, optional): Conv groups. Default: 1.
        is_vd_mode (bool, optional): Average-pool 2x2 (stride 2, ceil mode) before the conv. Default: False.
        act (str|None, optional): Activation name. Default: None.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1, groups=1, is_vd_mode=False,
                 act=None):
        super().__init__(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                         act=act, stride=stride, dilation=dilation, groups=groups, bias_attr=False)
        self.is_vd_mode = is_vd_mode
        if is_vd_mode:
            self._pool2d_avg = nn.AvgPool2D(kernel_size=2, stride=2, padding=0, ceil_mode=True)

    def forward(self, x):
        if self.is_vd_mode:
            x = self._pool2d_avg(x)
        # (no zero-argument super() here: Paddle 2.6's dy2static cannot convert it)
        return self._act(self._batch_norm(self._conv(x)))

    def to_deploy(self, target):
        """The deploy form (``layers/deploy.py``): this block, batch norm unfolded (``ConvBNAct.to_deploy`` folds
        plain blocks only; exported ResNet-vd programs keep conv + batch norm, which Paddle Inference fuses)."""
        return self


class BottleneckBlock(nn.Layer):
    """1x1 -> 3x3 (stride/dilation) -> 1x1 (x4 channels), plus the shortcut, then ReLU.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Inner channels; the block outputs ``4 * out_channels``.
        stride (int): Stride of the 3x3 conv.
        shortcut (bool): True for the identity shortcut, False for a projection (``short``).
        if_first (bool, optional): The first block of the network: its projection never average-pools.
        dilation (int, optional): Dilation of the 3x3 conv. Default: 1.
    """

    def __init__(self, in_channels, out_channels, stride, shortcut=True, if_first=False, dilation=1):
        super().__init__()
        self.conv0 = ConvBNLayer(in_channels, out_channels, 1, act='relu')
        self.conv1 = ConvBNLayer(out_channels, out_channels, 3, stride=stride, dilation=dilation, act='relu')
        self.conv2 = ConvBNLayer(out_channels, out_channels * 4, 1)
        self.shortcut = shortcut
        if not shortcut:
            self.short = ConvBNLayer(in_channels, out_channels * 4, 1, is_vd_mode=not (if_first or stride == 1))
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.conv2(self.conv1(self.conv0(x)))
        return self.relu(y + (x if self.shortcut else self.short(x)))


class BasicBlock(nn.Layer):
    """3x3 (stride/dilation) -> 3x3 (dilation), plus the shortcut, then ReLU.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the first conv.
        dilation (int, optional): Dilation of both convs. Default: 1.
        shortcut (bool, optional): True for the identity shortcut, False for a projection (``short``).
        if_first (bool, optional): The first block of the network: its projection never average-pools.
    """

    def __init__(self, in_channels, out_channels, stride, dilation=1, shortcut=True, if_first=False):
        super().__init__()
        self.conv0 = ConvBNLayer(in_channels, out_channels, 3, stride=stride, dilation=dilation, act='relu')
        self.conv1 = ConvBNLayer(out_channels, out_channels, 3, dilation=dilation)
        self.shortcut = shortcut
        if not shortcut:
            self.short = ConvBNLayer(in_channels, out_channels, 1, is_vd_mode=not (if_first or stride == 1))
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.conv1(self.conv0(x))
        return self.relu(y + (x if self.shortcut else self.short(x)))


class ResNet_vd(nn.Layer):
    """ResNet-D backbone returning the outputs of its four stages (He et al., "Bag of Tricks for Image
    Classification with Convolutional Neural Networks", CVPR 2019).

    Weight-compatible with PaddleSeg 2.8.0's ``ResNet_vd``: same constructor arguments, parameter names and shapes.

    Args:
        layers (int, optional): Depth: 18, 34, 50, 101, 152 or 200. Default: 50.
        output_stride (int, optional): 8, 16 or 32: the stride of the last feature map; 16 and 8 dilate the last
            stage (and the third) instead of striding. Default: 8.
        multi_grid (tuple[int], optional): Dilation multiplier of each block of the last stage. Default: (1, 1, 1).
        in_channels (int, optional): Input channels. Default: 3.
        pretrained (str, optional): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) with exactly
            this backbone's keys and shapes (PaddleSeg's ResNet_vd ImageNet weights are such files). Default: None.
        data_format (str, optional): Only 'NCHW' is supported. Default: 'NCHW'.

    Attributes:
        feat_channels (list[int]): Channels of the four feature maps: [64, 128, 256, 512] for 18/34,
            [256, 512, 1024, 2048] for 50 and deeper.
        output_stride (int): As given.

    forward(x) returns the four stage outputs, at strides (4, 8, 16, 32), (4, 8, 16, 16) or (4, 8, 8, 8) of the input
    for output_stride 32, 16 or 8 (every stride-2 step rounds up, so any input size works).
    """

    def __init__(self, layers=50, output_stride=8, multi_grid=(1, 1, 1), in_channels=3, pretrained=None,
                 data_format='NCHW'):
        super().__init__()
        layers = check_choice('ResNet_vd', 'layers', layers, sorted(_DEPTHS))
        output_stride = check_choice('ResNet_vd', 'output_stride', output_stride, (8, 16, 32))
        check_choice('ResNet_vd', 'data_format', data_format, ('NCHW',))
        depth = _DEPTHS[layers]
        # one dilation multiplier per block of the last stage (extra entries are ignored, as in PaddleSeg)
        grid = check_ints('ResNet_vd', 'multi_grid', multi_grid)
        if len(grid) < depth[3]:
            check_ints('ResNet_vd', 'multi_grid', multi_grid, length=depth[3])
        in_channels = check_int('ResNet_vd', 'in_channels', in_channels)

        self.layers = layers
        self.output_stride = output_stride
        self.multi_grid = tuple(multi_grid)
        bottleneck = layers >= 50
        widths = (64, 128, 256, 512)
        expansion = 4 if bottleneck else 1
        self.feat_channels = [w * expansion for w in widths]

        self.conv1_1 = ConvBNLayer(in_channels, 32, 3, stride=2, act='relu')
        self.conv1_2 = ConvBNLayer(32, 32, 3, act='relu')
        self.conv1_3 = ConvBNLayer(32, 64, 3, act='relu')
        self.pool2d_max = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)

        self.stage_list = []  # plain lists: the blocks are registered under PaddleSeg's names bb_{stage}_{block}
        self.dilations = []
        channels = 64
        for stage, blocks in enumerate(depth):
            stage_blocks, stage_dilations = [], []
            for index in range(blocks):
                dilation = _STAGE_DILATION[output_stride].get(stage, 1)
                if stage == 3:
                    dilation *= multi_grid[index]
                stride = 2 if index == 0 and stage != 0 and dilation == 1 else 1
                options = dict(stride=stride, shortcut=index > 0, if_first=stage == 0 and index == 0,
                               dilation=dilation)
                if bottleneck:
                    block = BottleneckBlock(channels, widths[stage], **options)
                else:
                    block = BasicBlock(channels, widths[stage], **options)
                channels = widths[stage] * expansion
                stage_blocks.append(self.add_sublayer(f'bb_{stage}_{index}', block))
                stage_dilations.append(dilation)
            self.stage_list.append(stage_blocks)
            self.dilations.append(stage_dilations)

        self.pretrained = pretrained
        if pretrained:
            load_weights(self, pretrained)

    def forward(self, x):
        x = self.pool2d_max(self.conv1_3(self.conv1_2(self.conv1_1(x))))
        features = []
        for blocks in self.stage_list:
            for block in blocks:
                x = block(x)
            features.append(x)
        return features


ResNet18_vd = register_variant(register_backbone, ResNet_vd, 'ResNet18_vd', "ResNet-18-D (basic blocks; "
                               "feat_channels 64, 128, 256, 512). See :class:`ResNet_vd` for the arguments.", layers=18)
ResNet34_vd = register_variant(register_backbone, ResNet_vd, 'ResNet34_vd', "ResNet-34-D (basic blocks; "
                               "feat_channels 64, 128, 256, 512). See :class:`ResNet_vd` for the arguments.", layers=34)
ResNet50_vd = register_variant(register_backbone, ResNet_vd, 'ResNet50_vd', "ResNet-50-D (bottlenecks; "
                               "feat_channels 256 ... 2048). See :class:`ResNet_vd` for the arguments.", layers=50)
ResNet101_vd = register_variant(register_backbone, ResNet_vd, 'ResNet101_vd', "ResNet-101-D (bottlenecks; "
                                "feat_channels 256 ... 2048). See :class:`ResNet_vd` for the arguments.", layers=101)
