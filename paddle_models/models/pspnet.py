"""PSPNet: a pyramid pooling module on a dilated backbone, with an auxiliary FCN head for training.

Reference:
    Hengshuang Zhao, Jianping Shi, Xiaojuan Qi, Xiaogang Wang, Jiaya Jia, "Pyramid Scene Parsing Network",
    CVPR 2017. https://arxiv.org/abs/1612.01105

Parameter names and shapes are those of PaddleSeg 2.8.0's ``PSPNet`` (``backbone.*``, ``head.psp_module.*``,
``head.conv.*``, ``head.auxlayer.*``), so PaddleSeg checkpoints (e.g. PSPNet + ResNet50_vd) load unchanged.

Shape of the network::

    backbone       four feature maps (ResNet50_vd at output stride 8: 1/4, 1/8, 1/8, 1/8)
    main head      feature backbone_indices[1] -> pyramid pooling (bins 1, 2, 3, 6) -> dropout 0.1 -> 1x1 conv
    auxiliary head feature backbone_indices[0] -> 3x3 ConvBNReLU (channels / 4) -> dropout 0.1 -> 1x1 conv
                   (training only; its loss is the second entry of loss.types / loss.coef)
    output         each logit upsampled (bilinear) to the input size
"""
import paddle.nn as nn

from paddle_models.layers.resize import resize_to_input
from paddle_models.layers.features import backbone_channels
from paddle_models.layers.pyramid import AuxLayer, PPModule
from paddle_models.registry import register_model
from paddle_models.utils.validate import check_int
from paddle_models.weights import load_model_pretrained

__all__ = ['PSPNet', 'PSPNetHead']


class PSPNetHead(nn.Layer):
    """PSPNet's head: pyramid pooling + classifier on one feature map, and the auxiliary head on another.

    Args:
        num_classes (int): The number of classes.
        backbone_indices (tuple[int]): (auxiliary feature index, main feature index).
        backbone_channels (list[int]): Channels of those two features.
        pp_out_channels (int): Output channels of the pyramid pooling module.
        bin_sizes (tuple[int]): Pooling grid sizes.
        enable_auxiliary_loss (bool): Build the auxiliary head.
        align_corners (bool): ``align_corners`` of the bilinear upsampling in the pyramid pooling.
    """

    def __init__(self, num_classes, backbone_indices, backbone_channels, pp_out_channels, bin_sizes,
                 enable_auxiliary_loss, align_corners):
        super().__init__()
        self.backbone_indices = list(backbone_indices)
        self.psp_module = PPModule(backbone_channels[1], pp_out_channels, bin_sizes, dim_reduction=True,
                                   align_corners=align_corners)
        self.dropout = nn.Dropout(p=0.1)
        self.conv = nn.Conv2D(pp_out_channels, num_classes, kernel_size=1)
        self.enable_auxiliary_loss = enable_auxiliary_loss
        if enable_auxiliary_loss:
            self.auxlayer = AuxLayer(backbone_channels[0], backbone_channels[0] // 4, num_classes)

    def forward(self, features):
        """Main logit, followed by the auxiliary logit in training mode when the auxiliary head exists."""
        logits = [self.conv(self.dropout(self.psp_module(features[self.backbone_indices[1]])))]
        if self.enable_auxiliary_loss and self.training:
            logits.append(self.auxlayer(features[self.backbone_indices[0]]))
        return logits


@register_model
class PSPNet(nn.Layer):
    """PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017).

    Weight-compatible with PaddleSeg 2.8.0's ``PSPNet`` (same constructor arguments, parameter names and shapes).

    Args:
        num_classes (int): The number of classes.
        backbone (nn.Layer): A backbone returning a list of feature maps and having ``feat_channels``, e.g.
            ``ResNet50_vd(output_stride=8)``.
        backbone_indices (tuple[int], optional): (auxiliary, main) feature indices. Default: (2, 3).
        pp_out_channels (int, optional): Output channels of the pyramid pooling module. Default: 1024.
        bin_sizes (tuple[int], optional): Pooling grid sizes. Default: (1, 2, 3, 6).
        enable_auxiliary_loss (bool, optional): Build the auxiliary head; in training mode the model then returns
            [main, auxiliary] (two loss entries, PaddleSeg uses coef [1, 0.4]). Default: True.
        align_corners (bool, optional): ``align_corners`` of every bilinear upsampling. Default: False.
        pretrained (str, optional): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of the whole
            model (keys and shapes must match). Default: None.

    forward(x) returns ``[logit]`` in eval mode and ``[logit, aux_logit]`` in training mode (with the auxiliary
    head), each (N, num_classes, H, W).
    """

    # the classifier layers, whose shapes follow num_classes: a whole-model `pretrained` of another class count
    # leaves them as initialised (fine-tuning, weights.load_model_pretrained)
    CLASS_PARAMS = ('head.conv.*', 'head.auxlayer.conv.*')

    def __init__(self, num_classes, backbone, backbone_indices=(2, 3), pp_out_channels=1024, bin_sizes=(1, 2, 3, 6),
                 enable_auxiliary_loss=True, align_corners=False, pretrained=None):
        super().__init__()
        num_classes = check_int('PSPNet', 'num_classes', num_classes)
        backbone_indices, channels = backbone_channels('PSPNet', backbone, backbone_indices, length=2)
        self.backbone = backbone
        self.head = PSPNetHead(num_classes, backbone_indices, channels, pp_out_channels, bin_sizes,
                               enable_auxiliary_loss, align_corners)
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.pretrained = pretrained
        if pretrained:
            load_model_pretrained(self, pretrained)

    def forward(self, x):
        return resize_to_input(self.head(self.backbone(x)), x, self.align_corners)
