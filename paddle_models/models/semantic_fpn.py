"""Semantic FPN: a feature pyramid over any four-level backbone, merged at 1/4 resolution by light upsampling heads.

Reference:
    Alexander Kirillov, Ross Girshick, Kaiming He, Piotr Dollar, "Panoptic Feature Pyramid Networks", CVPR 2019.
    https://arxiv.org/abs/1901.02446 (the semantic segmentation branch; VAN, PVT and others report ADE20K results
    with it).

Shape of the network (strides 4, 8, 16, 32 from the backbone)::

    neck    FPN: lateral 1x1 conv per level -> top-down pathway (the coarser level upsampled (nearest) to the finer
            one and added) -> 3x3 conv per level; ``fpn_channels`` each
    head    level i (stride 4 * 2**i) goes through max(1, i) steps of [3x3 conv-BN-ReLU to ``channels`` -> 2x
            bilinear upsampling] (no upsampling for level 0), reaching 1/4 resolution; the four maps are summed,
            -> dropout -> 1x1 conv to the classes -> bilinear upsampling to the input size

Every upsampling resizes to the exact size of the next finer level, so inputs of any size (odd ones too) work.
"""
import paddle
import paddle.nn as nn

from paddle_models.layers import ConvBNReLU, resize
from paddle_models.layers.features import backbone_channels
from paddle_models.registry import register_model
from paddle_models.utils.validate import check_int
from paddle_models.weights import load_model_pretrained

__all__ = ['SemanticFPN', 'FPNNeck', 'SemanticFPNHead']


class FPNNeck(nn.Layer):
    """Feature Pyramid Network (Lin et al., CVPR 2017): lateral 1x1 convs, top-down nearest upsampling and
    addition, then a 3x3 conv on every level.

    Args:
        in_channels (list[int]): Channels of the backbone levels, finest first.
        out_channels (int): Channels of every output level.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.lateral_convs = nn.LayerList([nn.Conv2D(c, out_channels, 1) for c in in_channels])
        self.fpn_convs = nn.LayerList([nn.Conv2D(out_channels, out_channels, 3, padding=1) for _ in in_channels])

    def forward(self, feats):
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], paddle.shape(laterals[i - 1])[2:],
                                                       mode='nearest')
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals)]


class SemanticFPNHead(nn.Layer):
    """The semantic branch of Panoptic FPN: per level, conv-BN-ReLU + 2x upsampling steps down to the finest level,
    a sum, dropout and a 1x1 classifier.

    Args:
        num_levels (int): Number of pyramid levels (the finest first, each half the size of the previous).
        in_channels (int): Channels of every pyramid level.
        channels (int): Channels of the scale heads.
        num_classes (int): Output classes.
        dropout_prob (float): Dropout before the classifier.
        align_corners (bool): ``align_corners`` of the bilinear upsampling.
    """

    def __init__(self, num_levels, in_channels, channels, num_classes, dropout_prob=0.1, align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        self.scale_heads = nn.LayerList()
        for level in range(num_levels):
            steps = max(1, level)
            self.scale_heads.append(nn.LayerList([
                ConvBNReLU(in_channels if k == 0 else channels, channels, 3, padding=1, bias_attr=False)
                for k in range(steps)]))
        self.dropout = nn.Dropout2D(dropout_prob) if dropout_prob > 0 else nn.Identity()
        self.conv_seg = nn.Conv2D(channels, num_classes, 1)

    def forward(self, feats):
        sizes = [paddle.shape(f)[2:] for f in feats]
        out = None
        for level, (x, convs) in enumerate(zip(feats, self.scale_heads)):
            for k, conv in enumerate(convs):
                x = conv(x)
                if level > 0:  # up one level per step: level -> level - 1 -> ... -> 0
                    x = resize(x, sizes[level - 1 - k], align_corners=self.align_corners)
            out = x if out is None else out + x
        return self.conv_seg(self.dropout(out))


@register_model
class SemanticFPN(nn.Layer):
    """Semantic FPN (Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019) over any backbone that
    returns a list of feature maps and exposes ``feat_channels``.

    Args:
        num_classes (int): The number of classes.
        backbone (nn.Layer): The backbone; ``backbone_indices`` pick four maps at strides 4, 8, 16, 32.
        backbone_indices (list[int]): Which backbone outputs to use, finest first. Default: (0, 1, 2, 3).
        fpn_channels (int): Channels of the FPN levels. Default: 256.
        channels (int): Channels of the scale heads. Default: 128.
        dropout_prob (float): Dropout before the classifier. Default: 0.1.
        align_corners (bool): ``align_corners`` of the bilinear upsampling. Default: False.
        pretrained (str|None): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of the whole
            model. Default: None.

    forward(x) returns ``[logit]`` with logit [N, num_classes, H, W].
    """

    # the classifier layers, whose shapes follow num_classes: a whole-model `pretrained` of another class count
    # leaves them as initialised (fine-tuning, weights.load_model_pretrained)
    CLASS_PARAMS = ('head.conv_seg.*',)

    def __init__(self, num_classes, backbone, backbone_indices=(0, 1, 2, 3), fpn_channels=256, channels=128,
                 dropout_prob=0.1, align_corners=False, pretrained=None):
        super().__init__()
        num_classes = check_int('SemanticFPN', 'num_classes', num_classes)
        fpn_channels = check_int('SemanticFPN', 'fpn_channels', fpn_channels)
        channels = check_int('SemanticFPN', 'channels', channels)
        indices, in_channels = backbone_channels('SemanticFPN', backbone, backbone_indices, min_length=2,
                                                 allow_negative=True)
        self.backbone = backbone
        self.backbone_indices = indices
        self.align_corners = align_corners
        self.neck = FPNNeck(in_channels, fpn_channels)
        self.head = SemanticFPNHead(len(indices), fpn_channels, channels, num_classes, dropout_prob, align_corners)
        if pretrained:
            load_model_pretrained(self, pretrained)

    def forward(self, x):
        feats = self.backbone(x)
        feats = [feats[i] for i in self.backbone_indices]
        logit = self.head(self.neck(feats))
        return [resize(logit, paddle.shape(x)[2:], align_corners=self.align_corners, final=True)]
