"""Plain ResNet-18 / ResNet-34 backbones in torchvision's layout (the encoder of LinkNet).

Reference:
    Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
    https://arxiv.org/abs/1512.03385

Parameter names and shapes are torchvision's ``resnet18`` / ``resnet34`` (``conv1``, ``bn1``, ``layer1`` ...
``layer4``, blocks with ``conv1/bn1/conv2/bn2`` and ``downsample.0/1``, classifier ``fc``), which are also
``paddle.vision.models.resnet18/34``'s. ImageNet weights from torchvision convert by renaming the BatchNorm
statistics and transposing ``fc.weight`` (:func:`convert_torchvision_weights`); Paddle's own ``resnet18`` weights
load unchanged.

Shape of the network::

    stem     7x7 conv stride 2 (64) -> BN -> ReLU -> 3x3 max pool stride 2     (1/4)
    layer1   basic blocks, 64 channels                                         (1/4)
    layer2   basic blocks, 128 channels, stride 2                              (1/8)
    layer3   basic blocks, 256 channels, stride 2                              (1/16)
    layer4   basic blocks, 512 channels, stride 2                              (1/32)

ResNet-18 has (2, 2, 2, 2) blocks per stage, ResNet-34 (3, 4, 6, 3). A basic block is 3x3 conv -> BN -> ReLU ->
3x3 conv -> BN, plus the shortcut (a strided 1x1 conv + BN where the shape changes), then ReLU.
"""
import paddle
import paddle.nn as nn

from paddle_models.weights import load_weights, torch_layout_to_paddle
from paddle_models.errors import UserError
from paddle_models.layers.conv import batch_norm_2d
from paddle_models.registry import register_backbone, register_converter, register_variant
from paddle_models.utils.validate import check_choice, check_int

__all__ = ['ResNet', 'ResNetBasicBlock', 'ResNet18', 'ResNet34', 'convert_torchvision_weights']

_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class ResNetBasicBlock(nn.Layer):
    """torchvision's ``BasicBlock``.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int, optional): Stride of the first conv (and of the projection). Default: 1.
    """

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, out_channels, 3, stride=stride, padding=1, bias_attr=False)
        self.bn1 = batch_norm_2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2D(out_channels, out_channels, 3, padding=1, bias_attr=False)
        self.bn2 = batch_norm_2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2D(in_channels, out_channels, 1, stride=stride, bias_attr=False),
                batch_norm_2d(out_channels))

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Layer):
    """ResNet-18/34 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) in torchvision's layout.

    Args:
        layers (int, optional): 18 or 34. Default: 18.
        num_classes (int, optional): 0 (default) builds the feature extractor only; > 0 adds the classifier (global
            average pool + ``fc``) used by :meth:`classify`.
        in_channels (int, optional): Input channels. Default: 3.
        pretrained (str, optional): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) with this
            network's keys (for example converted from torchvision by :func:`convert_torchvision_weights`); its ``fc``
            is ignored when ``num_classes`` is 0. Default: None.

    Attributes:
        feat_channels (list[int]): [64, 128, 256, 512].
        stem_channels (int): 64, the channels of the stem output (the input of ``layer1``).
        strides (list[int]): Stride of each stage against its input, [1, 2, 2, 2].

    forward(x) returns the outputs of layer1..layer4 (strides 4, 8, 16, 32 of the input; each stride-2 step rounds
    up, so any input size works). :meth:`stem` returns the max-pooled stem output, the input of ``layer1``.
    """

    def __init__(self, layers=18, num_classes=0, in_channels=3, pretrained=None):
        super().__init__()
        layers = check_choice('ResNet', 'layers', layers, sorted(_DEPTHS))
        num_classes = check_int('ResNet', 'num_classes', num_classes, minimum=0)
        in_channels = check_int('ResNet', 'in_channels', in_channels)
        self.layers = layers
        self.num_classes = num_classes
        self.conv1 = nn.Conv2D(in_channels, 64, 7, stride=2, padding=3, bias_attr=False)
        self.bn1 = batch_norm_2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        self.stem_channels = 64
        self.feat_channels = [64, 128, 256, 512]
        self.strides = [1, 2, 2, 2]
        channels = 64
        for index, (blocks, width, stride) in enumerate(zip(_DEPTHS[layers], self.feat_channels, self.strides)):
            stage = [ResNetBasicBlock(channels, width, stride)]
            stage += [ResNetBasicBlock(width, width) for _ in range(blocks - 1)]
            setattr(self, f'layer{index + 1}', nn.Sequential(*stage))
            channels = width
        if num_classes > 0:
            self.avgpool = nn.AdaptiveAvgPool2D(1)
            self.fc = nn.Linear(channels, num_classes)
        if pretrained:
            load_weights(self, pretrained, skip_prefixes=('fc.',))

    def stem(self, x):
        """7x7/2 conv -> BN -> ReLU -> 3x3/2 max pool: the input of ``layer1`` (1/4 of the input size)."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def stages(self):
        """The four stages, ``[layer1, layer2, layer3, layer4]``."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x):
        x = self.stem(x)
        features = []
        for stage in self.stages():
            x = stage(x)
            features.append(x)
        return features

    def classify(self, x):
        """Image-level logits [N, num_classes] (needs ``num_classes > 0``)."""
        if self.num_classes <= 0:
            raise UserError("ResNet: classify() needs a model built with num_classes > 0")
        return self.fc(paddle.flatten(self.avgpool(self.forward(x)[-1]), 1))


ResNet18 = register_variant(register_backbone, ResNet, 'ResNet18', "ResNet-18 in torchvision's layout: 11,176,512 "
                            "parameters without the classifier. See :class:`ResNet`.", layers=18)
ResNet34 = register_variant(register_backbone, ResNet, 'ResNet34', "ResNet-34 in torchvision's layout: 21,284,672 "
                            "parameters without the classifier. See :class:`ResNet`.", layers=34)


@register_converter('torchvision', 'ResNet18', 'ResNet34')
def convert_torchvision_weights(state, arch=None):
    """Map a torchvision ``resnet18`` / ``resnet34`` state dict onto :class:`ResNet`.

    BatchNorm ``running_mean``/``running_var`` become ``_mean``/``_variance``, ``num_batches_tracked`` is dropped and
    ``fc.weight`` is transposed (PyTorch stores [out, in], Paddle [in, out]); every other tensor keeps its name and
    layout.

    Args:
        state (dict[str, numpy.ndarray]): The checkpoint's tensors.
        arch (str|None): The target architecture name (unused: ResNet-18 and -34 differ only in block counts).

    Returns:
        tuple: (state dict in our names, constructor kwargs: ``num_classes`` from ``fc.bias``, 0 without ``fc``).
    """
    out = torch_layout_to_paddle(state, linear_keys=('fc.weight',))
    num_classes = int(out['fc.bias'].shape[0]) if 'fc.bias' in out else 0
    return out, {'num_classes': num_classes}
