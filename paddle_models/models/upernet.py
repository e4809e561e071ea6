"""UPerNet: pyramid pooling on the coarsest backbone level plus an FPN that fuses all levels at 1/4 resolution.

Reference:
    Tete Xiao, Yingcheng Liu, Bolei Zhou, Yuning Jiang, Jian Sun, "Unified Perceptual Parsing for Scene
    Understanding", ECCV 2018. https://arxiv.org/abs/1807.10221

Shape of the network (four backbone levels, strides 4, 8, 16, 32)::

    level 4       pyramid pooling module (bins 1, 2, 3, 6) -> ``channels``
    levels 1-3    lateral 1x1 ConvBNReLU -> ``channels``
    top-down      from the coarsest: lateral[i - 1] += upsample(lateral[i])
    FPN convs     3x3 ConvBNReLU on levels 1-3 (level 4 keeps its PPM output)
    fusion        all four upsampled to level 1, concatenated -> 3x3 ConvBNReLU (``fpn_bottleneck``) -> dropout
                  -> 1x1 conv to the classes -> upsampled to the input size
    auxiliary     (training only, ``enable_auxiliary_loss``) FCN head on level 3

Parameter names are PaddleSeg 2.8.0's ``UPerNet`` (``head.ppm``, ``head.lateral_convs``, ``head.fpn_convs``,
``head.fpn_bottleneck``, ``head.conv_seg``, ``head.aux_head``). PaddleSeg's head also builds a ``conv_last`` block
that its forward never uses; it is left out here, and ignored when a PaddleSeg checkpoint is loaded. With
``align_corners=True`` the outputs equal PaddleSeg's (which aligns corners inside its head whatever the setting).
"""
import paddle
import paddle.nn as nn

from paddle_models.layers import AuxLayer, ConvBNReLU, PPModule, resize
from paddle_models.layers.resize import resize_to_input
from paddle_models.layers.features import backbone_channels
from paddle_models.registry import register_model
from paddle_models.utils.validate import check_int
from paddle_models.weights import load_model_pretrained

__all__ = ['UPerNet', 'UPerNetHead']


class UPerNetHead(nn.Layer):
    """The UPerNet decoder: PPM on the last level, FPN top-down fusion, concatenation at the finest level.

    Args:
        num_classes (int): Output classes.
        in_channels (list[int]): Channels of the backbone levels, finest first.
        channels (int): Channels of the PPM, FPN and fusion layers.
        dropout_prob (float): Dropout before the classifiers.
        enable_auxiliary_loss (bool): Build the auxiliary head on the second-coarsest level.
        align_corners (bool): ``align_corners`` of the bilinear upsampling.
    """

    def __init__(self, num_classes, in_channels, channels, dropout_prob=0.1, enable_auxiliary_loss=False,
                 align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        self.enable_auxiliary_loss = enable_auxiliary_loss
        self.ppm = PPModule(in_channels[-1], channels, bin_sizes=(1, 2, 3, 6), dim_reduction=True,
                            align_corners=align_corners)
        self.lateral_convs = nn.LayerList([ConvBNReLU(c, channels, 1) for c in in_channels[:-1]])
        self.fpn_convs = nn.LayerList([ConvBNReLU(channels, channels, 3, bias_attr=False)
                                       for _ in in_channels[:-1]])
        if enable_auxiliary_loss:
            self.aux_head = AuxLayer(in_channels[-2], in_channels[-2], num_classes, dropout_prob=dropout_prob)
        self.fpn_bottleneck = ConvBNReLU(len(in_channels) * channels, channels, 3, padding=1)
        self.dropout = nn.Dropout2D(dropout_prob) if dropout_prob > 0 else nn.Identity()
        self.conv_seg = nn.Conv2D(channels, num_classes, kernel_size=1)

    def forward(self, feats):
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        laterals.append(self.ppm(feats[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], paddle.shape(laterals[i - 1])[2:],
                                                       align_corners=self.align_corners)
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        size = paddle.shape(outs[0])[2:]
        outs = [outs[0]] + [resize(x, size, align_corners=self.align_corners) for x in outs[1:]]
        x = self.fpn_bottleneck(paddle.concat(outs, axis=1))
        logits = [self.conv_seg(self.dropout(x))]
        if self.enable_auxiliary_loss and self.training:
            logits.append(self.aux_head(feats[-2]))
        return logits


@register_model
class UPerNet(nn.Layer):
    """UPerNet (Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018) over any backbone that
    returns a list of feature maps and exposes ``feat_channels``.

    Args:
        num_classes (int): The number of classes.
        backbone (nn.Layer): The backbone.
        backbone_indices (list[int]): The four backbone outputs to use, finest first. Default: (0, 1, 2, 3).
        channels (int): Channels of the decoder. Default: 512.
        enable_auxiliary_loss (bool): Add the auxiliary FCN head (its logits are the second output in training
            mode). Default: False.
        align_corners (bool): ``align_corners`` of every bilinear upsampling. Default: False.
        dropout_prob (float): Dropout before the classifiers. Default: 0.1.
        pretrained (str|None): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of the whole
            model (ours or PaddleSeg's UPerNet). Default: None.

    forward(x) returns ``[logit]`` (plus the auxiliary logit in training mode), each [N, num_classes, H, W].
    """

    # the classifier layers, whose shapes follow num_classes: a whole-model `pretrained` of another class count
    # leaves them as initialised (fine-tuning, weights.load_model_pretrained)
    CLASS_PARAMS = ('head.conv_seg.*', 'head.aux_head.conv.*')

    def __init__(self, num_classes, backbone, backbone_indices=(0, 1, 2, 3), channels=512,
                 enable_auxiliary_loss=False, align_corners=False, dropout_prob=0.1, pretrained=None):
        super().__init__()
        num_classes = check_int('UPerNet', 'num_classes', num_classes)
        channels = check_int('UPerNet', 'channels', channels)
        indices, in_channels = backbone_channels('UPerNet', backbone, backbone_indices, min_length=2,
                                                 allow_negative=True)
        self.backbone = backbone
        self.backbone_indices = indices
        self.align_corners = align_corners
        self.head = UPerNetHead(num_classes, in_channels, channels, dropout_prob,
                                enable_auxiliary_loss, align_corners)
        if pretrained:
            load_model_pretrained(self, pretrained, skip_prefixes=('head.conv_last.',))

    def forward(self, x):
        feats = self.backbone(x)
        return resize_to_input(self.head([feats[i] for i in self.backbone_indices]), x, self.align_corners)
