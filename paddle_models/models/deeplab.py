"""DeepLabV3: atrous spatial pyramid pooling with image-level features on a dilated backbone.

Reference:
    Liang-Chieh Chen, George Papandreou, Florian Schroff, Hartwig Adam, "Rethinking Atrous Convolution for Semantic
    Image Segmentation", 2017. https://arxiv.org/abs/1706.05587

Parameter names and shapes are those of PaddleSeg 2.8.0's ``DeepLabV3`` (``backbone.*``, ``head.aspp.*``,
``head.cls.*``), so PaddleSeg checkpoints (e.g. DeepLabV3 + ResNet50_vd) load unchanged.

Shape of the network::

    backbone   four feature maps; the last one at output stride 16 or 8 (dilated), optionally with multi-grid
               dilations (1, 2, 4) in the last stage (``ResNet50_vd(output_stride=8, multi_grid=(1, 2, 4))``)
    ASPP       1x1 conv, three 3x3 convs with rates (6, 12, 18) at stride 16 / (12, 24, 36) at stride 8, and
               image pooling (global average -> 1x1 conv -> spread back); concat -> 1x1 conv -> dropout 0.1
    classifier 1x1 conv, upsampled (bilinear) to the input size
"""
import paddle.nn as nn

from paddle_models.layers.resize import resize_to_input
from paddle_models.layers.features import backbone_channels
from paddle_models.layers.pyramid import ASPPModule
from paddle_models.registry import register_model
from paddle_models.utils.validate import check_int
from paddle_models.weights import load_model_pretrained

__all__ = ['DeepLabV3', 'DeepLabV3Head', 'ASPP_RATIOS']

# the paper's rates per output stride (Chen et al. 2017, section 3.3); the rate-1 branch is the 1x1 conv
ASPP_RATIOS = {16: (1, 6, 12, 18), 8: (1, 12, 24, 36), 32: (1, 3, 6, 9)}


class DeepLabV3Head(nn.Layer):
    """ASPP (with image pooling) and a 1x1 classifier on one backbone feature map.

    Args:
        num_classes (int): The number of classes.
        backbone_indices (tuple[int]): One index: the feature map the head reads.
        backbone_channels (list[int]): Its channels.
        aspp_ratios (tuple[int]): ASPP dilation rates.
        aspp_out_channels (int): ASPP output channels.
        align_corners (bool): ``align_corners`` of the image-pooling upsampling.
    """

    def __init__(self, num_classes, backbone_indices, backbone_channels, aspp_ratios, aspp_out_channels,
                 align_corners):
        super().__init__()
        self.aspp = ASPPModule(aspp_ratios, backbone_channels[0], aspp_out_channels, align_corners,
                               use_sep_conv=False, image_pooling=True)
        self.cls = nn.Conv2D(aspp_out_channels, num_classes, kernel_size=1)
        self.backbone_indices = list(backbone_indices)

    def forward(self, features):
        return [self.cls(self.aspp(features[self.backbone_indices[0]]))]


@register_model
class DeepLabV3(nn.Layer):
    """DeepLabV3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017).

    Weight-compatible with PaddleSeg 2.8.0's ``DeepLabV3`` (same constructor arguments, parameter names and shapes).

    Args:
        num_classes (int): The number of classes.
        backbone (nn.Layer): A backbone returning a list of feature maps and having ``feat_channels``, e.g.
            ``ResNet50_vd(output_stride=8, multi_grid=(1, 2, 4))``.
        backbone_indices (tuple[int], optional): The feature map the head reads. Default: (3,).
        aspp_ratios (tuple[int]|None, optional): ASPP dilation rates. None picks the paper's rates for the
            backbone's ``output_stride``: (1, 6, 12, 18) at 16, (1, 12, 24, 36) at 8 (and (1, 3, 6, 9) at 32); a
            backbone without ``output_stride`` gets (1, 6, 12, 18). An explicit value is used as given (PaddleSeg's
            configs give it). PaddleSeg's class defaults to (1, 6, 12, 18) at every stride, so Python code that
            builds an OS-8 model relying on that default must pass it explicitly to get the same rates. Default: None.
        aspp_out_channels (int, optional): ASPP output channels. Default: 256.
        align_corners (bool, optional): ``align_corners`` of every bilinear upsampling. Default: False.
        pretrained (str, optional): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of the whole
            model (keys and shapes must match). Default: None.

    forward(x) returns ``[logit]``, (N, num_classes, H, W). (The rates change no parameter shape: PaddleSeg weights
    load whatever the rates; they must equal the ones trained with for the same output.)
    """

    # the classifier layers, whose shapes follow num_classes: a whole-model `pretrained` of another class count
    # leaves them as initialised (fine-tuning, weights.load_model_pretrained)
    CLASS_PARAMS = ('head.cls.*',)

    def __init__(self, num_classes, backbone, backbone_indices=(3,), aspp_ratios=None, aspp_out_channels=256,
                 align_corners=False, pretrained=None):
        super().__init__()
        num_classes = check_int('DeepLabV3', 'num_classes', num_classes)
        backbone_indices, channels = backbone_channels('DeepLabV3', backbone, backbone_indices, length=1)
        if aspp_ratios is None:
            aspp_ratios = ASPP_RATIOS.get(getattr(backbone, 'output_stride', 16), ASPP_RATIOS[16])
        self.backbone = backbone
        self.head = DeepLabV3Head(num_classes, backbone_indices, channels, aspp_ratios, aspp_out_channels,
                                  align_corners)
        self.num_classes = num_classes
        self.aspp_ratios = tuple(self.head.aspp.aspp_ratios)
        self.align_corners = align_corners
        self.pretrained = pretrained
        if pretrained:
            load_model_pretrained(self, pretrained)

    def forward(self, x):
        return resize_to_input(self.head(self.backbone(x)), x, self.align_corners)
