"""The object-contextual representation (OCR) blocks of OCRNet, shared by ``OCRNet`` and ``MscaleOCRNet``.

A coarse segmentation (soft object regions) pools the pixel features into one representation per class
(``gather_regions``); each pixel then attends over those class representations (``object_attention``).

Reference:
    Yuhui Yuan, Xilin Chen, Jingdong Wang, "Object-Contextual Representations for Semantic Segmentation",
    ECCV 2020. https://arxiv.org/abs/1909.11065

Parameter names are PaddleSeg 2.8.0's (``spatial_ocr.attention_block.f_pixel`` ...).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.layers.conv import ConvBNReLU

__all__ = ['OCRHead', 'ObjectAttentionBlock', 'SpatialOCR', 'gather_regions', 'object_attention']


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
