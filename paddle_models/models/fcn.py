"""FCN head: a 1x1 ConvBNReLU and a 1x1 classifier on one backbone feature map, upsampled to the input size.

Reference:
    Jonathan Long, Evan Shelhamer, Trevor Darrell, "Fully Convolutional Networks for Semantic Segmentation",
    CVPR 2015. https://arxiv.org/abs/1411.4038
    (With an HRNet backbone this is the HRNetV2 segmentation model of Wang et al., TPAMI 2020.)

Parameter names are PaddleSeg 2.8.0's ``FCN`` (``backbone.*``, ``head.conv_1``, ``head.cls``), so its checkpoints
load unchanged.
"""
import paddle
import paddle.nn as nn

from paddle_models.layers import ConvBNReLU, resize
from paddle_models.layers.features import backbone_channels
from paddle_models.registry import register_model
from paddle_models.utils.validate import check_int
from paddle_models.weights import load_model_pretrained

__all__ = ['FCN', 'FCNHead']


class FCNHead(nn.Layer):
    """1x1 ConvBNReLU (``conv_1``) -> 1x1 conv to the classes (``cls``).

    Args:
        num_classes (int): Output classes.
        in_channels (int): Channels of the feature map.
        channels (int|None): Channels of the hidden layer; None keeps ``in_channels``.
        bias (bool): Biases in both convs. Default: True.
    """

    def __init__(self, num_classes, in_channels, channels=None, bias=True):
        super().__init__()
        channels = in_channels if channels is None else channels
        self.out_channels = channels
        self.conv_1 = ConvBNReLU(in_channels, channels, 1, bias_attr=bias)
        self.cls = nn.Conv2D(channels, num_classes, 1, bias_attr=bias)

    def forward(self, x):
        return self.cls(self.conv_1(x))


@register_model
class FCN(nn.Layer):
    """FCN segmentation head over any backbone exposing ``feat_channels`` (PaddleSeg-compatible).

    Args:
        num_classes (int): The number of classes.
        backbone (nn.Layer): A backbone returning a list of feature maps (e.g. ``HRNet_W18``).
        backbone_indices (list[int]): One index: the backbone output the head reads. Default: (-1,).
        channels (int|None): Hidden channels of the head; None keeps the feature's channels. Default: None.
        align_corners (bool): ``align_corners`` of the final upsampling. Default: False.
        pretrained (str|None): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of the whole
            model (keys and shapes must match exactly).
        bias (bool): Biases in the head's convs. Default: True.

    forward(x) returns ``[logit]`` of shape [N, num_classes, H, W].

    Features protocol (used by ``MultiScaleAttention``): ``forward_features(x)`` returns ``(logit, feature)`` where
    ``logit`` is at the feature's resolution (not upsampled) and ``feature`` is the head's hidden map
    (``feature_channels`` channels).
    """

    # the classifier layers, whose shapes follow num_classes: a whole-model `pretrained` of another class count
    # leaves them as initialised (fine-tuning, weights.load_model_pretrained)
    CLASS_PARAMS = ('head.cls.*',)

    def __init__(self, num_classes, backbone, backbone_indices=(-1,), channels=None, align_corners=False,
                 pretrained=None, bias=True):
        super().__init__()
        num_classes = check_int('FCN', 'num_classes', num_classes)
        indices, in_channels = backbone_channels('FCN', backbone, backbone_indices, length=1, allow_negative=True)
        if channels is not None:
            channels = check_int('FCN', 'channels', channels)
        self.backbone = backbone
        self.backbone_indices = indices
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.head = FCNHead(num_classes, in_channels[0], channels, bias)
        self.feature_channels = self.head.out_channels
        if pretrained:
            load_model_pretrained(self, pretrained)

    def forward_features(self, x):
        """(logit before upsampling, the head's hidden feature map)."""
        feature = self.head.conv_1(self.backbone(x)[self.backbone_indices[0]])
        return self.head.cls(feature), feature

    def forward(self, x):
        logit, _ = self.forward_features(x)
        return [resize(logit, paddle.shape(x)[2:], align_corners=self.align_corners, final=True)]
