"""ResNeXt backbones: ResNet bottlenecks whose 3x3 convolution is split into ``cardinality`` groups.

Reference:
    Saining Xie, Ross Girshick, Piotr Dollar, Zhuowen Tu, Kaiming He,
    "Aggregated Residual Transformations for Deep Neural Networks", CVPR 2017. https://arxiv.org/abs/1611.05431

The 3x3 convolution of every bottleneck is one grouped convolution (``groups=cardinality``): each group has its
own weights. (A loop that applies one small convolution to every group in turn shares those weights across the
groups -- a different, smaller network, with 1/32 of the 3x3 weights.)

Layout and parameter names are torchvision's (``conv1``, ``bn1``, ``layer1`` ... ``layer4``, each bottleneck with
``conv1/bn1/conv2/bn2/conv3/bn3`` and ``downsample.0/1``, classifier ``fc``), so the public ImageNet weights of
torchvision and timm convert by renaming the BatchNorm statistics and transposing ``fc.weight`` (see
:func:`convert_torchvision_weights`). ``paddle.vision.models.resnext50_32x4d`` has the same names and shapes.

Shape of the network::

    stem     7x7 conv stride 2 (64) -> BN -> ReLU -> 3x3 max pool stride 2        (1/4)
    layer1   3 bottlenecks, 256 channels                                          (1/4)
    layer2   4 (ResNeXt-50) / 4 (-101) bottlenecks, 512 channels, stride 2        (1/8)
    layer3   6 / 23 bottlenecks, 1024 channels, stride 2 or dilation              (1/16)
    layer4   3 / 3 bottlenecks, 2048 channels, stride 2 or dilation               (1/32)

A bottleneck with output width ``4 * planes`` has inner width ``planes * width_per_group / 64 * cardinality``;
``ResNeXt50_32x4d`` is cardinality 32 with 4 channels per group in the first stage (inner width 128).

For dense prediction, ``output_stride`` 16 or 8 replaces the stride of layer4 (and layer3) by dilation, as
torchvision's ``replace_stride_with_dilation``: the first bottleneck of a dilated stage keeps the previous
dilation, the following ones use the doubled one.
"""

import paddle
import paddle.nn as nn

from paddle_models.errors import UserError
from paddle_models.registry import register_backbone, register_converter, register_variant
from paddle_models.utils.validate import check_choice, check_int
from paddle_models.weights import load_weights, torch_layout_to_paddle

__all__ = ['ResNeXt', 'ResNeXtBottleneck', 'ResNeXt50_32x4d', 'ResNeXt101_32x4d', 'ResNeXt101_64x4d',
           'convert_torchvision_weights', 'convert_timm_weights', 'torch_layout_to_paddle']

_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
RESNEXT_ARCHS = ('ResNeXt50_32x4d', 'ResNeXt101_32x4d', 'ResNeXt101_64x4d')  # the registered variants


class ResNeXtBottleneck(nn.Layer):
    """1x1 conv -> BN -> ReLU -> grouped 3x3 conv -> BN -> ReLU -> 1x1 conv -> BN, plus the shortcut, -> ReLU.

    Args:
        in_channels (int): Input channels.
        planes (int): Output channels / 4.
        stride (int): Stride of the 3x3 conv (and of the projection shortcut). Default: 1.
        downsample (nn.Layer|None): Projection shortcut (1x1 conv + BN), or None for the identity.
        cardinality (int): Number of groups of the 3x3 conv. Default: 32.
        width_per_group (int): Channels per group at ``planes == 64``. Default: 4.
        dilation (int): Dilation (and padding) of the 3x3 conv. Default: 1.
    """
    expansion = 4

    def __init__(self, in_channels, planes, stride=1, downsample=None, cardinality=32, width_per_group=4,
                 dilation=1):
        super().__init__()
        width = int(planes * width_per_group / 64) * cardinality
        self.conv1 = nn.Conv2D(in_channels, width, 1, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(width)
        self.conv2 = nn.Conv2D(width, width, 3, stride=stride, padding=dilation, dilation=dilation,
                               groups=cardinality, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(width)
        self.conv3 = nn.Conv2D(width, planes * self.expansion, 1, bias_attr=False)
        self.bn3 = nn.BatchNorm2D(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


class ResNeXt(nn.Layer):
    """ResNeXt backbone (Xie et al., "Aggregated Residual Transformations for Deep Neural Networks", CVPR 2017).

    Args:
        depth (int): 50, 101 or 152. Default: 50.
        cardinality (int): Groups of every 3x3 conv. Default: 32.
        width_per_group (int): Channels per group in the first stage. Default: 4.
        output_stride (int): 32, 16 or 8: the stride of the last feature map; 16 and 8 dilate layer4 (and layer3)
            instead of striding. Default: 32.
        num_classes (int): 0 (default) builds the feature extractor only; > 0 adds the ImageNet classifier
            (global average pool + ``fc``) used by :meth:`classify`.
        in_channels (int): Input image channels. Default: 3.
        pretrained (str|None): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) (for example
            written by ``tools/convert_weights.py``). Its classifier is ignored when ``num_classes`` is 0. Default:
            None.

    Attributes:
        feat_channels (list[int]): Channels of the four feature maps, [256, 512, 1024, 2048].

    forward(x) returns the outputs of layer1..layer4, at strides 4, 8, 16, 32 of the input (or 4, 8, 16, 16 /
    4, 8, 8, 8 with dilation); any input size works (each stride-2 step rounds up).
    """

    def __init__(self, depth=50, cardinality=32, width_per_group=4, output_stride=32, num_classes=0,
                 in_channels=3, pretrained=None):
        super().__init__()
        depth = check_choice('ResNeXt', 'depth', depth, sorted(_DEPTHS))
        output_stride = check_choice('ResNeXt', 'output_stride', output_stride, (8, 16, 32))
        cardinality = check_int('ResNeXt', 'cardinality', cardinality)
        width_per_group = check_int('ResNeXt', 'width_per_group', width_per_group)
        num_classes = check_int('ResNeXt', 'num_classes', num_classes, minimum=0)
        in_channels = check_int('ResNeXt', 'in_channels', in_channels)

        self.depth = depth
        self.cardinality = cardinality
        self.width_per_group = width_per_group
        self.output_stride = output_stride
        self.num_classes = num_classes
        self.conv1 = nn.Conv2D(in_channels, 64, 7, stride=2, padding=3, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)

        dilate = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}[output_stride]
        self._in_channels = 64
        self._dilation = 1
        blocks = _DEPTHS[depth]
        self.layer1 = self._make_layer(64, blocks[0], 1, False)
        self.layer2 = self._make_layer(128, blocks[1], 2, dilate[0])
        self.layer3 = self._make_layer(256, blocks[2], 2, dilate[1])
        self.layer4 = self._make_layer(512, blocks[3], 2, dilate[2])
        self.feat_channels = [64 * 4, 128 * 4, 256 * 4, 512 * 4]
        if num_classes > 0:
            self.avgpool = nn.AdaptiveAvgPool2D(1)
            self.fc = nn.Linear(self.feat_channels[-1], num_classes)
        if pretrained:
            load_weights(self, pretrained, skip_prefixes=('fc.',))

    def _make_layer(self, planes, blocks, stride, dilate):
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        out_channels = planes * ResNeXtBottleneck.expansion
        downsample = None
        if stride != 1 or self._in_channels != out_channels:
            downsample = nn.Sequential(nn.Conv2D(self._in_channels, out_channels, 1, stride=stride, bias_attr=False),
                                       nn.BatchNorm2D(out_channels))
        layers = [ResNeXtBottleneck(self._in_channels, planes, stride, downsample, self.cardinality,
                                    self.width_per_group, previous_dilation)]
        self._in_channels = out_channels
        for _ in range(1, blocks):
            layers.append(ResNeXtBottleneck(out_channels, planes, 1, None, self.cardinality, self.width_per_group,
                                            self._dilation))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c1, c2, c3, c4]

    def classify(self, x):
        """ImageNet logits [N, num_classes] (needs ``num_classes > 0``)."""
        if self.num_classes <= 0:
            raise UserError("ResNeXt: classify() needs a model built with num_classes > 0")
        feature = self.forward(x)[-1]
        return self.fc(paddle.flatten(self.avgpool(feature), 1))


ResNeXt50_32x4d = register_variant(register_backbone, ResNeXt, 'ResNeXt50_32x4d', "ResNeXt-50 (32x4d): 25,028,904 "
                                   "parameters with the 1000-class classifier (as torchvision's).",
                                   depth=50, cardinality=32, width_per_group=4)
ResNeXt101_32x4d = register_variant(register_backbone, ResNeXt, 'ResNeXt101_32x4d', "ResNeXt-101 (32x4d): "
                                    "44,177,704 parameters with the 1000-class classifier (as timm's).",
                                    depth=101, cardinality=32, width_per_group=4)
ResNeXt101_64x4d = register_variant(register_backbone, ResNeXt, 'ResNeXt101_64x4d', "ResNeXt-101 (64x4d): "
                                    "83,455,272 parameters with the 1000-class classifier (as torchvision's).",
                                    depth=101, cardinality=64, width_per_group=4)


# ----------------------------------------------------------------------------------------------------------------
# Loading weights


@register_converter('torchvision', *RESNEXT_ARCHS)
def convert_torchvision_weights(state, arch=None):
    """Map a torchvision ResNeXt state dict (``resnext50_32x4d``, ``resnext101_64x4d`` ...) onto ours.

    Args:
        state (dict[str, numpy.ndarray]): The checkpoint's tensors.
        arch (str|None): The target architecture name (unused: the layouts differ only in sizes).

    Returns:
        tuple: (state dict in our names, constructor kwargs: ``num_classes`` from ``fc.bias``, 0 without ``fc``).
    """
    out = torch_layout_to_paddle(state, linear_keys=('fc.weight',))
    num_classes = int(out['fc.bias'].shape[0]) if 'fc.bias' in out else 0
    return out, {'num_classes': num_classes}


@register_converter('timm', *RESNEXT_ARCHS)
def convert_timm_weights(state, arch=None):
    """Map a timm ResNeXt state dict (``resnext50_32x4d.*``, ``resnext101_32x4d.*``, ``resnext101_64x4d.*``) onto
    ours. timm's plain ResNeXt uses torchvision's names; its deep-stem variants (``resnext50d_32x4d``) do not fit
    and are reported as missing/unexpected keys. See :func:`convert_torchvision_weights`."""
    return convert_torchvision_weights(state, arch)
