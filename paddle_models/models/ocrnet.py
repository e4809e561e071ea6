"""OCRNet: object-contextual representations. A coarse segmentation (soft object regions) pools the pixel
features into one representation per class; each pixel then attends over those class representations and the
result, concatenated with the pixel's own feature, is classified.

Reference:
    Yuhui Yuan, Xilin Chen, Jingdong Wang, "Object-Contextual Representations for Semantic Segmentation",
    ECCV 2020. https://arxiv.org/abs/1909.11065

Shape of the head (K classes, ``mid`` = ocr_mid_channels, ``key`` = ocr_key_channels)::

    soft regions   aux_head: 1x1 ConvBNReLU -> 1x1 conv to K, on the shallow feature        (the auxiliary logit)
    pixels         conv3x3_ocr: 3x3 ConvBNReLU -> mid, on the deep feature
    regions        softmax of the soft regions over the pixels; per class the weighted mean of the pixels: [N, mid, K, 1]
    attention      query = f_pixel(pixels), key = f_object(regions), value = f_down(regions) (``key`` channels);
                   softmax(query . key / sqrt(key)) . value -> f_up -> ``mid`` channels
    output         concat(context, pixels) -> 1x1 ConvBNReLU -> dropout -> 1x1 conv to K

Parameter names are PaddleSeg 2.8.0's ``OCRNet`` (``head.spatial_ocr.attention_block.f_pixel`` ...).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.errors import UserError
from paddle_models.layers import ConvBNReLU, resize
from paddle_models.models.hardnet import load_pretrained
from paddle_models.registry import register_model

__all__ = ['OCRNet', 'OCRHead', 'gather_regions', 'object_attention']


def gather_regions(pixels, regions):
    """Class representations: per class, the mean of the pixel features weighted by the softmax (over the pixels)
    of that class's soft region.

    Args:
        pixels (Tensor): [N, C, H, W].
        regions (Tensor): [N, K, H, W] logits.

    Returns:
        Tensor: [N, C, K, 1].
    """
    weights = F.softmax(paddle.flatten(regions, 2), axis=2)                 # N, K, HW
    feats = paddle.matmul(weights, paddle.flatten(pixels, 2), transpose_y=True)  # N, K, C
    return feats.transpose([0, 2, 1]).unsqueeze(-1)


def object_attention(query, key, value, key_channels):
    """Scaled dot-product attention of every pixel over the class representations.

    Args:
        query (Tensor): [N, key_channels, H, W].
        key, value (Tensor): [N, key_channels, K, 1].
        key_channels (int): The scale is ``key_channels ** -0.5``.

    Returns:
        Tensor: The context, [N, key_channels, H, W].
    """
    shape = paddle.shape(query)
    q = paddle.flatten(query, 2).transpose([0, 2, 1])                         # N, HW, key
    sim = paddle.matmul(q, paddle.flatten(key, 2)) * (key_channels ** -0.5)   # N, HW, K
    context = paddle.matmul(F.softmax(sim, axis=-1), paddle.flatten(value, 2), transpose_y=True)  # N, HW, key
    return context.transpose([0, 2, 1]).reshape([0, key_channels, shape[2], shape[3]])


class ObjectAttentionBlock(nn.Layer):
    """f_pixel / f_object (two 1x1 ConvBNReLU each), f_down and f_up (one each) around ``object_attention``."""

    def __init__(self, in_channels, key_channels):
        super().__init__()
        self.key_channels = key_channels
        self.f_pixel = nn.Sequential(ConvBNReLU(in_channels, key_channels, 1),
                                     ConvBNReLU(key_channels, key_channels, 1))
        self.f_object = nn.Sequential(ConvBNReLU(in_channels, key_channels, 1),
                                      ConvBNReLU(key_channels, key_channels, 1))
        self.f_down = ConvBNReLU(in_channels, key_channels, 1)
        self.f_up = ConvBNReLU(key_channels, in_channels, 1)

    def forward(self, pixels, proxy):
        context = object_attention(self.f_pixel(pixels), self.f_object(proxy), self.f_down(proxy), self.key_channels)
        return self.f_up(context)


class SpatialOCR(nn.Layer):
    """Object attention, then concat(context, pixels) -> 1x1 ConvBNReLU -> dropout."""

    def __init__(self, in_channels, key_channels, out_channels, dropout=0.1):
        super().__init__()
        self.attention_block = ObjectAttentionBlock(in_channels, key_channels)
        self.conv1x1 = nn.Sequential(ConvBNReLU(2 * in_channels, out_channels, 1), nn.Dropout2D(dropout))

    def forward(self, pixels, regions):
        context = self.attention_block(pixels, regions)
        return self.conv1x1(paddle.concat([context, pixels], axis=1))


class OCRHead(nn.Layer):
    """The OCR head (PaddleSeg names: ``spatial_ocr``, ``conv3x3_ocr``, ``cls_head``, ``aux_head``).

    Args:
        num_classes (int): Output classes.
        in_channels (list[int]): Channels of one feature map (used for both roles) or of two (shallow feature for
            the soft regions, deep feature for the pixels).
        ocr_mid_channels (int): Channels of the pixel representation. Default: 512.
        ocr_key_channels (int): Channels of the attention. Default: 256.
    """

    def __init__(self, num_classes, in_channels, ocr_mid_channels=512, ocr_key_channels=256):
        super().__init__()
        shallow, deep = (in_channels[0], in_channels[-1])
        self.spatial_ocr = SpatialOCR(ocr_mid_channels, ocr_key_channels, ocr_mid_channels)
        self.conv3x3_ocr = ConvBNReLU(deep, ocr_mid_channels, 3, padding=1)
        self.cls_head = nn.Conv2D(ocr_mid_channels, num_classes, 1)
        self.aux_head = nn.Sequential(ConvBNReLU(shallow, shallow, 1), nn.Conv2D(shallow, num_classes, 1))

    def forward(self, feats):
        """``feats``: [shallow, deep] (or the same map twice). Returns (logit, soft regions, OCR feature)."""
        soft_regions = self.aux_head(feats[0])
        pixels = self.conv3x3_ocr(feats[-1])
        ocr = self.spatial_ocr(pixels, gather_regions(pixels, soft_regions))
        return self.cls_head(ocr), soft_regions, ocr


def check_backbone_indices(name, backbone, backbone_indices, counts=(1, 2)):
    """The backbone's channels at ``backbone_indices`` (1 or 2 valid indices); UserError otherwise."""
    feat_channels = getattr(backbone, 'feat_channels', None)
    if feat_channels is None:
        raise UserError(f"{name}: the backbone {type(backbone).__name__} has no feat_channels")
    indices = list(backbone_indices) if isinstance(backbone_indices, (list, tuple)) else []
    if len(indices) not in counts or not all(isinstance(i, int) and not isinstance(i, bool) and
                                             -len(feat_channels) <= i < len(feat_channels) for i in indices):
        raise UserError(f"{name}: backbone_indices must pick {' or '.join(map(str, counts))} of the backbone's "
                        f"{len(feat_channels)} outputs, got {backbone_indices!r}")
    return indices, [feat_channels[i] for i in indices]


def check_positive(name, key, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{name}: {key} must be a positive integer, got {value!r}")


@register_model
class OCRNet(nn.Layer):
    """OCRNet (Yuan et al., "Object-Contextual Representations for Semantic Segmentation", ECCV 2020),
    PaddleSeg-compatible.

    Args:
        num_classes (int): The number of classes.
        backbone (nn.Layer): A backbone exposing ``feat_channels`` (e.g. ``HRNet_W18``).
        backbone_indices (list[int]): One index (the map feeds both the soft regions and the pixels) or two
            (shallow map for the soft regions, deep map for the pixels).
        ocr_mid_channels (int): Channels of the pixel representation. Default: 512.
        ocr_key_channels (int): Channels of the attention. Default: 256.
        align_corners (bool): ``align_corners`` of the final upsampling. Default: False.
        pretrained (str|None): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of the whole
            model. Default: None.

    forward(x) returns ``[logit]`` in eval mode and ``[logit, soft_regions]`` in training mode (the auxiliary
    loss), each [N, num_classes, H, W].

    Features protocol (``MultiScaleAttention``): ``forward_features(x)`` returns (logit at the feature
    resolution, the OCR-augmented representation with ``feature_channels = ocr_mid_channels`` channels).
    """

    def __init__(self, num_classes, backbone, backbone_indices, ocr_mid_channels=512, ocr_key_channels=256,
                 align_corners=False, pretrained=None):
        super().__init__()
        for key, value in (('num_classes', num_classes), ('ocr_mid_channels', ocr_mid_channels),
                           ('ocr_key_channels', ocr_key_channels)):
            check_positive('OCRNet', key, value)
        self.backbone_indices, in_channels = check_backbone_indices('OCRNet', backbone, backbone_indices)
        self.backbone = backbone
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.head = OCRHead(num_classes, in_channels, ocr_mid_channels, ocr_key_channels)
        self.feature_channels = ocr_mid_channels
        if pretrained:
            load_pretrained(self, pretrained)

    def _head(self, x):
        feats = self.backbone(x)
        return self.head([feats[i] for i in self.backbone_indices])

    def forward_features(self, x):
        logit, _, ocr = self._head(x)
        return logit, ocr

    def forward(self, x):
        logit, soft_regions, _ = self._head(x)
        logits = [logit, soft_regions] if self.training else [logit]
        size = paddle.shape(x)[2:]
        return [resize(l, size, align_corners=self.align_corners, final=True) for l in logits]
