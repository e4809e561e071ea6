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

Parameter names are PaddleSeg 2.8.0's ``OCRNet`` (``head.spatial_ocr.attention_block.f_pixel`` ...). The head's
blocks live in ``paddle_models.layers.ocr`` (``MscaleOCRNet`` shares them).
"""
import paddle.nn as nn

from paddle_models.layers.resize import resize_to_input
from paddle_models.layers.features import backbone_channels
from paddle_models.layers.ocr import OCRHead
from paddle_models.registry import register_model
from paddle_models.utils.validate import check_int
from paddle_models.weights import load_model_pretrained

__all__ = ['OCRNet']


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

    # the classifier layers, whose shapes follow num_classes: a whole-model `pretrained` of another class count
    # leaves them as initialised (fine-tuning, weights.load_model_pretrained)
    CLASS_PARAMS = ('head.cls_head.*', 'head.aux_head.1.*')

    def __init__(self, num_classes, backbone, backbone_indices, ocr_mid_channels=512, ocr_key_channels=256,
                 align_corners=False, pretrained=None):
        super().__init__()
        num_classes = check_int('OCRNet', 'num_classes', num_classes)
        ocr_mid_channels = check_int('OCRNet', 'ocr_mid_channels', ocr_mid_channels)
        ocr_key_channels = check_int('OCRNet', 'ocr_key_channels', ocr_key_channels)
        self.backbone_indices, in_channels = backbone_channels('OCRNet', backbone, backbone_indices, length=(1, 2),
                                                               allow_negative=True)
        self.backbone = backbone
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.head = OCRHead(num_classes, in_channels, ocr_mid_channels, ocr_key_channels)
        self.feature_channels = ocr_mid_channels
        if pretrained:
            load_model_pretrained(self, pretrained)

    def _head(self, x):
        feats = self.backbone(x)
        return self.head([feats[i] for i in self.backbone_indices])

    def forward_features(self, x):
        logit, _, ocr = self._head(x)
        return logit, ocr

    def forward(self, x):
        logit, soft_regions, _ = self._head(x)
        return resize_to_input([logit, soft_regions] if self.training else [logit], x, self.align_corners)
