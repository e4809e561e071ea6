"""LinkNet: a light encoder-decoder whose skip connections add each encoder stage's input to the matching decoder
output.

Reference:
    Abhishek Chaurasia, Eugenio Culurciello, "LinkNet: Exploiting Encoder Representations for Efficient Semantic
    Segmentation", VCIP 2017. https://arxiv.org/abs/1707.03718

Shape of the network (ResNet-18 encoder, torchvision layout -- :mod:`paddle_models.backbones.resnet`)::

    stem       7x7 conv stride 2 -> BN -> ReLU -> 3x3 max pool stride 2          (1/4, 64 channels)
    encoder    layer1 (64, 1/4), layer2 (128, 1/8), layer3 (256, 1/16), layer4 (512, 1/32)
    decoder    D4 (512 -> 256) + layer3 output, D3 (256 -> 128) + layer2 output,
               D2 (128 -> 64) + layer1 output, D1 (64 -> 64) + stem output
    final      3x3 transposed conv x2 (64 -> 32) -> BN -> ReLU -> 3x3 conv (32) -> BN -> ReLU
               -> 2x2 transposed conv x2 (32 -> num_classes)                      (1/1)

A decoder block (m -> n) is 1x1 conv (m -> m/4) -> BN -> ReLU -> 3x3 transposed conv (m/4 -> m/4, upsampling by
the stride of its encoder stage) -> BN -> ReLU -> 1x1 conv (m/4 -> n) -> BN -> ReLU. Block i mirrors encoder
stage i, and its output is *added* to that stage's input (for i >= 2 the output of stage i - 1), as the paper's
"input of each encoder layer is bypassed to the output of its corresponding decoder". ResNet-18's first stage
does not downsample, so D1 does not upsample (the paper's own encoder block 1 does, and its D1 with it); the
final block's two x2 steps bring 1/4 back to the input size. Convs followed by BN have no bias.

Parameters (trainable, BN statistics excluded): 11,533,184 + 129 * num_classes with ResNet-18 (the paper's
"11.5M"), 21,641,344 + 129 * num_classes with ResNet-34.

Any input size works: every 3x3 transposed conv is given the size of the tensor it is added to (``output_size``:
twice its input, or one less where the encoder rounded an odd size up -- the same values as ``output_padding=1``
followed by a crop, but with shapes that static graphs infer), and the final output is cropped to the input size.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.backbones.resnet import ResNet
from paddle_models.errors import UserError
from paddle_models.layers import batch_norm_2d
from paddle_models.registry import register_model
from paddle_models.utils.spatial import feature_shape
from paddle_models.utils.validate import check_int
from paddle_models.weights import load_model_pretrained

__all__ = ['LinkNet', 'LinkNetDecoderBlock', 'crop_to']


def crop_to(x, reference):
    """``x`` cropped (bottom/right) to the spatial size of ``reference``."""
    size = paddle.shape(reference)[2:]
    return x[:, :, :size[0], :size[1]]


def _bn_relu(channels):
    return [batch_norm_2d(channels), nn.ReLU()]


def _crop(x, size):
    """``x`` cropped to the spatial ``size`` (h, w). The transposed convs are built with output_padding =
    stride - 1 (their largest output) and cropped: the same values as passing ``output_size`` (output padding only
    adds rows and columns at the end), in a form that converts to ONNX (paddle2onnx 2.1.0 drops a run-time
    ``output_size``)."""
    return x[:, :, :size[0], :size[1]]


def _upsample(layers, x, size, legacy=False):
    """``layers`` (transposed conv, BN, ReLU) on ``x``, cropped to ``size``. BN and ReLU act per pixel, so they go
    before the crop (the same values): the transposed conv and its BN then stay adjacent, so Paddle Inference
    folds the BN into the conv's weights (a crop in between kept BN as a separate op on plain NCHW, with a layout
    conversion before and after it).
    Paddle 2.6's legacy static graphs cannot: their transposed conv infers 0 for a free size, which BN rejects
    before the crop restores it, so with ``legacy`` (the deploy form for legacy programs, set by ``to_deploy``)
    the crop comes first, after :func:`_legacy_transposed_conv`."""
    if legacy:
        return layers[2](layers[1](_crop(_legacy_transposed_conv(layers[0], x), size)))
    return _crop(layers[2](layers[1](layers[0](x))), size)


def _legacy_transposed_conv(conv, x):
    """The transposed conv ``conv`` (padding p, output padding q) on ``x``, for a legacy program: traced as padding
    (p before, p - q after) on each axis and no output padding, which gives the same values (output padding adds q
    rows and columns at the end of the padding-p output, exactly what padding only p - q at the end keeps).
    OpenVINO's Paddle frontend (Paddle Inference's OpenVINO engine) ignores ``conv2d_transpose``'s
    ``output_padding``: LinkNet's 3x3 stride-2 convs came out one row and column short, the skip addition failed
    ("Eltwise shape infer input shapes dim index: 2 mismatch") and the engine returned an empty output."""
    p, q = conv._padding, conv.output_padding
    if not q:
        return conv(x)
    return F.conv2d_transpose(x, conv.weight, bias=conv.bias, padding=[p, p - q, p, p - q], stride=conv._stride,
                              dilation=conv._dilation, groups=conv._groups, data_format=conv._data_format)


class LinkNetDecoderBlock(nn.Layer):
    """1x1 conv (m -> m/4) -> 3x3 transposed conv (stride ``stride``) -> 1x1 conv (m/4 -> n), each with BN + ReLU.

    Args:
        in_channels (int): m.
        out_channels (int): n.
        stride (int): Upsampling factor of the transposed conv (1 or 2).
    """

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        inner = max(in_channels // 4, 1)
        self.conv1 = nn.Sequential(nn.Conv2D(in_channels, inner, 1, bias_attr=False), *_bn_relu(inner))
        self.full_conv = nn.Sequential(nn.Conv2DTranspose(inner, inner, 3, stride=stride, padding=1,
                                                          output_padding=stride - 1, bias_attr=False),
                                       *_bn_relu(inner))
        self.conv2 = nn.Sequential(nn.Conv2D(inner, out_channels, 1, bias_attr=False), *_bn_relu(out_channels))
        self.legacy_form = False  # the legacy-program form of the upsampling (:meth:`to_deploy`)

    def forward(self, x, size):
        """``size``: the output's (h, w) -- that of the tensor it is added to (stride * input size, or one less
        where the encoder rounded an odd size up)."""
        return self.conv2(_upsample(self.full_conv, self.conv1(x), size, self.legacy_form))

    def to_deploy(self, target):
        """The deploy form (``layers/deploy.py``): in a legacy program the upsampling crops before its batch norm
        (see :func:`_upsample`); this block (a deploy copy) is switched to that form."""
        self.legacy_form = target.program == 'legacy'
        return self


@register_model
class LinkNet(nn.Layer):
    """LinkNet (Chaurasia & Culurciello, "LinkNet: Exploiting Encoder Representations for Efficient Semantic
    Segmentation", VCIP 2017).

    Args:
        num_classes (int): The number of classes.
        backbone (nn.Layer, optional): The encoder: a :class:`paddle_models.backbones.resnet.ResNet` (``ResNet18`` or
            ``ResNet34``), or a backbone with the same stem layers (``conv1``, ``bn1``, ``relu``, ``maxpool``),
            ``stages()``, ``stem_channels``, ``feat_channels`` and ``strides``. Default: None, a ResNet-18 built with
            ``in_channels``.
        in_channels (int, optional): Input channels of the default encoder. Default: 3.
        pretrained (str, optional): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of the whole
            model. Default: None. (ImageNet weights for the encoder go to the backbone's own ``pretrained``.)

    forward(x) returns ``[logit]``, (N, num_classes, H, W).
    """

    # the classifier layers, whose shapes follow num_classes: a whole-model `pretrained` of another class count
    # leaves them as initialised (fine-tuning, weights.load_model_pretrained)
    CLASS_PARAMS = ('final.6.*',)

    def __init__(self, num_classes, backbone=None, in_channels=3, pretrained=None):
        super().__init__()
        num_classes = check_int('LinkNet', 'num_classes', num_classes)
        if backbone is None:
            backbone = ResNet(layers=18, in_channels=in_channels)
        missing = [a for a in ('conv1', 'bn1', 'relu', 'maxpool', 'stages', 'stem_channels', 'feat_channels',
                               'strides') if not hasattr(backbone, a)]
        if missing:
            raise UserError(f"LinkNet: the backbone {type(backbone).__name__} lacks {', '.join(missing)}; "
                            f"use ResNet18 or ResNet34")
        self.num_classes = num_classes
        self.backbone = backbone
        inputs = [backbone.stem_channels] + list(backbone.feat_channels[:-1])  # input channels of each stage
        self.decoders = nn.LayerList([
            LinkNetDecoderBlock(out, inp, stride)
            for inp, out, stride in zip(inputs, backbone.feat_channels, backbone.strides)])
        first = inputs[0]
        half = max(first // 2, 1)
        self.final = nn.Sequential(
            nn.Conv2DTranspose(first, half, 3, stride=2, padding=1, output_padding=1, bias_attr=False),
            *_bn_relu(half),
            nn.Conv2D(half, half, 3, padding=1, bias_attr=False),
            *_bn_relu(half),
            nn.Conv2DTranspose(half, num_classes, 2, stride=2))
        self.pretrained = pretrained
        self.legacy_form = False  # the legacy-program form of the final upsampling (:meth:`to_deploy`)
        if pretrained:
            load_model_pretrained(self, pretrained)

    def forward(self, x):
        backbone = self.backbone
        half = backbone.relu(backbone.bn1(backbone.conv1(x)))  # 1/2
        skips = [backbone.maxpool(half)]  # skips[i] is the input of stage i
        for stage in backbone.stages():
            skips.append(stage(skips[-1]))
        y = skips[-1]
        for index in reversed(range(len(self.decoders))):
            y = self.decoders[index](y, feature_shape(skips[index])[2:]) + skips[index]
        y = _upsample(self.final[:3], y, feature_shape(half)[2:], self.legacy_form)  # (feature_shape: no reorder)
        for index in range(3, len(self.final)):
            y = self.final[index](y)
        return [crop_to(y, x)]

    def to_deploy(self, target):
        """The deploy form (``layers/deploy.py``): in a legacy program the final upsampling crops before its batch
        norm, as the decoder blocks' (:meth:`LinkNetDecoderBlock.to_deploy`); this model (a deploy copy) is
        switched to that form."""
        self.legacy_form = target.program == 'legacy'
        return self
