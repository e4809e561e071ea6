"""MscaleOCRNet: OCRNet with hierarchical multi-scale attention, the model of NVIDIA's paper.

Reference:
    Andrew Tao, Karan Sapra, Bryan Catanzaro, "Hierarchical Multi-Scale Attention for Semantic Segmentation",
    arXiv 2020. https://arxiv.org/abs/2005.10821

The OCR head (the blocks of ``layers/ocr.py``) runs on one backbone map; the attention head reads the OCR
representation. Both the main and the auxiliary (soft region) logits are fused across scales with the same attention
(``fuse_scales`` of ``layers/scale_attention.py``). Training uses scales 0.5 and 1.0 and returns ``[fused_aux,
fused, pred_0.5, pred_1.0]`` (PaddleSeg's order, all at the input size); evaluation fuses ``mscale`` (default 0.5,
1.0, 2.0) and returns ``[fused]``.

Parameter names are PaddleSeg 2.8.0's ``MscaleOCRNet`` (``ocr.conv3x3_ocr``, ``ocr.ocr_distri_head.f_pixel.
conv_bn_relu_1`` ..., ``scale_attn.conv_bn_re0`` ...), so its checkpoints load unchanged. For a generic wrapper
around any model, see ``MultiScaleAttention``.
"""
import paddle
import paddle.nn as nn

from paddle_models.layers import ConvBNReLU, resize
from paddle_models.layers.features import backbone_channels
from paddle_models.layers.ocr import gather_regions, object_attention
from paddle_models.layers.scale_attention import AttentionHead, check_scales, fuse_scales, output_scale, scaled_size
from paddle_models.registry import register_model
from paddle_models.utils.validate import check_int
from paddle_models.weights import load_model_pretrained

__all__ = ['MscaleOCRNet']


class _TwoConv(nn.Layer):
    """Two 1x1 ConvBNReLU without bias (``conv_bn_relu_1``, ``conv_bn_relu_2``)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv_bn_relu_1 = ConvBNReLU(in_channels, out_channels, 1, padding=0, bias_attr=False)
        self.conv_bn_relu_2 = ConvBNReLU(out_channels, out_channels, 1, padding=0, bias_attr=False)

    def forward(self, x):
        return self.conv_bn_relu_2(self.conv_bn_relu_1(x))


class _DistributeOCR(nn.Layer):
    """Object attention from the pixels over the class representations, concat with the pixels, 1x1 ConvBNReLU
    and dropout (bias-free convs, as NVIDIA's)."""

    def __init__(self, channels, key_channels, dropout=0.05):
        super().__init__()
        self.key_channels = key_channels
        self.f_pixel = _TwoConv(channels, key_channels)
        self.f_object = _TwoConv(channels, key_channels)
        self.f_down = ConvBNReLU(channels, key_channels, 1, padding=0, bias_attr=False)
        self.f_up = ConvBNReLU(key_channels, channels, 1, padding=0, bias_attr=False)
        self.conv_bn_dropout = nn.Sequential(ConvBNReLU(2 * channels, channels, 1, padding=0, bias_attr=False),
                                             nn.Dropout2D(dropout))

    def forward(self, pixels, proxy):
        context = object_attention(self.f_pixel(pixels), self.f_object(proxy), self.f_down(proxy), self.key_channels)
        return self.conv_bn_dropout(paddle.concat([self.f_up(context), pixels], axis=1))


class _MscaleOCRHead(nn.Layer):
    def __init__(self, num_classes, in_channels, mid_channels, key_channels):
        super().__init__()
        self.conv3x3_ocr = ConvBNReLU(in_channels, mid_channels, 3, padding=1)
        self.ocr_distri_head = _DistributeOCR(mid_channels, key_channels)
        self.cls_head = nn.Conv2D(mid_channels, num_classes, 1)
        self.aux_head = nn.Sequential(ConvBNReLU(in_channels, in_channels, 1, padding=0),
                                      nn.Conv2D(in_channels, num_classes, 1))

    def forward(self, feature):
        pixels = self.conv3x3_ocr(feature)
        aux = self.aux_head(feature)
        ocr = self.ocr_distri_head(pixels, gather_regions(pixels, aux))
        return self.cls_head(ocr), aux, ocr


@register_model
class MscaleOCRNet(nn.Layer):
    """OCRNet with hierarchical multi-scale attention (Tao et al., 2020), PaddleSeg-compatible.

    Args:
        num_classes (int): The number of classes.
        backbone (nn.Layer): A backbone exposing ``feat_channels`` (HRNet_W48 in the paper).
        backbone_indices (list[int]): The one backbone output the OCR head reads. Default: (0,).
        mscale (list[float]|None): Evaluation scales; empty/None evaluates like training (0.5 and 1.0).
            Default: (0.5, 1.0, 2.0).
        ocr_mid_channels (int): Channels of the OCR representation (and the attention head's input). Default: 512.
        ocr_key_channels (int): Channels of the object attention. Default: 256.
        pretrained (str|None): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of the whole
            model. Default: None.

    forward(x): eval ``[fused]``; training ``[fused_aux, fused, pred_0.5, pred_1.0]``; all [N, K, H, W].
    """

    # the classifier layers, whose shapes follow num_classes: a whole-model `pretrained` of another class count
    # leaves them as initialised (fine-tuning, weights.load_model_pretrained)
    CLASS_PARAMS = ('ocr.cls_head.*', 'ocr.aux_head.1.*')

    def __init__(self, num_classes, backbone, backbone_indices=(0,), mscale=(0.5, 1.0, 2.0), ocr_mid_channels=512,
                 ocr_key_channels=256, pretrained=None):
        super().__init__()
        num_classes = check_int('MscaleOCRNet', 'num_classes', num_classes)
        ocr_mid_channels = check_int('MscaleOCRNet', 'ocr_mid_channels', ocr_mid_channels)
        ocr_key_channels = check_int('MscaleOCRNet', 'ocr_key_channels', ocr_key_channels)
        self.backbone_indices, in_channels = backbone_channels('MscaleOCRNet', backbone, backbone_indices, length=1,
                                                               allow_negative=True)
        self.mscale = check_scales('MscaleOCRNet', 'mscale', mscale, allow_empty=True)
        self.num_classes = num_classes
        self.backbone = backbone
        self.ocr = _MscaleOCRHead(num_classes, in_channels[0], ocr_mid_channels, ocr_key_channels)
        self.scale_attn = AttentionHead(ocr_mid_channels, 256)
        if pretrained:
            load_model_pretrained(self, pretrained)

    def _single_scale(self, x, with_attention):
        """(pred, aux, attention or None), all at x's size."""
        size = paddle.shape(x)[2:]
        pred, aux, ocr = self.ocr(self.backbone(x)[self.backbone_indices[0]])
        attn = resize(self.scale_attn(ocr), size) if with_attention else None
        return resize(pred, size), resize(aux, size), attn

    def forward(self, x):
        scales = self.mscale if (self.mscale and not self.training) else [0.5, 1.0]
        size = paddle.shape(x)[2:]
        per_scale = []
        preds = {}
        for scale in sorted(scales, reverse=True):
            xs = x if scale == 1.0 else resize(x, scaled_size(size, scale))
            pred, aux, attn = self._single_scale(xs, with_attention=bool(per_scale))
            per_scale.append((scale, [pred, aux], attn))
            preds[scale] = pred
        fused, fused_aux = fuse_scales(per_scale)
        if output_scale(scales) != 1.0:
            fused, fused_aux = resize(fused, size), resize(fused_aux, size)
        if not self.training:
            return [fused]
        return [fused_aux, fused, resize(preds[0.5], size), preds[1.0]]
