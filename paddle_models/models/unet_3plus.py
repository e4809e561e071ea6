"""UNet 3+: full-scale skip connections, full-scale deep supervision and a classification-guided module (CGM).

Reference:
    Huimin Huang, Lanfen Lin, Ruofeng Tong, Hongjie Hu, Qiaowei Zhang, Yutaro Iwamoto, Xianhua Han, Yen-Wei Chen,
    Jian Wu, "UNet 3+: A Full-Scale Connected UNet for Medical Image Segmentation", ICASSP 2020.
    https://arxiv.org/abs/2004.08790

Parameter names and shapes are those of PaddleSeg 2.8.0's ``UNet3Plus`` (``encoder.*``, ``decoder.*``,
``deepsup.*``, ``cls.*``, ``outconv1.*``), so PaddleSeg checkpoints load unchanged.

Shape of the network (``filters`` = (64, 128, 256, 512, 1024) by default)::

    encoder   X1 = two 3x3 conv-BN-ReLU (filters[0]); X2..X5 = 2x2 max pool then two conv-BN-ReLU (1/2 ... 1/16)
    decoder   for d = 4, 3, 2, 1: every encoder level i < d max-pooled by 2**(d-i), encoder level d as is, every
              decoder level k > d (and X5) upsampled (bilinear) to level d; each of the five through a 3x3
              conv-BN-ReLU to filters[0] channels; concatenated (5 * filters[0]) and fused by a 3x3 conv-BN-ReLU
    deep supervision (is_deepsup): a 3x3 conv to the classes on each of XD1..XD4 and X5, upsampled to the input
    CGM (is_CGM): dropout 0.5 -> 1x1 conv (2) -> global max pool -> sigmoid on X5, "does the image contain
              foreground"; its argmax (0 or 1) multiplies every side output

Outputs: eval mode ``[d1]``; training mode ``[d1, d2, d3, d4, d5]`` with deep supervision, plus the CGM's two
classification logits (N, 2) as a sixth entry with ``is_CGM`` -- the loss for that entry
(:class:`paddle_models.losses.bce.ForegroundBCELoss`) derives the {0, 1} target from the label. Without deep
supervision ``[d1]`` in both modes.

Unlike PaddleSeg's version, any input of at least 16x16 works (pooling rounds down, so every path reaches the
size of its target level, and upsampling goes to the target's size rather than by a fixed factor); for sides that
are multiples of 16 the two agree exactly.
"""
import paddle
import paddle.nn as nn

from paddle_models.layers import batch_norm_2d, resize
from paddle_models.registry import register_model
from paddle_models.utils.validate import check_int, check_ints
from paddle_models.weights import load_model_pretrained

__all__ = ['UNet3Plus', 'UNet3PlusEncoder', 'UNet3PlusDecoder', 'UNet3PlusDeepSup', 'UnetConv2D', 'conv_bn_relu']

LEVELS = 5


def _conv(in_channels, out_channels, kernel_size, padding=0):
    """Conv2D with bias and a Kaiming-normal weight initialisation (as the reference initialises every conv)."""
    return nn.Conv2D(in_channels, out_channels, kernel_size, padding=padding,
                     weight_attr=paddle.ParamAttr(initializer=nn.initializer.KaimingNormal()))


def conv_bn_relu(in_channels, out_channels):
    """3x3 conv (with bias) -> BN -> ReLU as an ``nn.Sequential`` (PaddleSeg's ``ConvBnReLU2D`` layout)."""
    return nn.Sequential(_conv(in_channels, out_channels, 3, padding=1), batch_norm_2d(out_channels), nn.ReLU())


class _ToSize(nn.Layer):
    """Parameter-free bilinear resize to a given size (holds the place of PaddleSeg's ``nn.Upsample``)."""

    def forward(self, x, size):
        return resize(x, size)


class UnetConv2D(nn.Layer):
    """``num_conv`` 3x3 convs (with bias), each followed by BN (if ``is_batchnorm``) and ReLU; sublayers ``conv1``,
    ``conv2``, ... each an ``nn.Sequential``."""

    def __init__(self, in_channels, out_channels, is_batchnorm, num_conv=2):
        super().__init__()
        self.num_conv = num_conv
        for index in range(1, num_conv + 1):
            parts = [_conv(in_channels, out_channels, 3, padding=1)]
            if is_batchnorm:
                parts.append(batch_norm_2d(out_channels))
            parts.append(nn.ReLU())
            setattr(self, f'conv{index}', nn.Sequential(*parts))
            in_channels = out_channels

    def forward(self, x):
        for index in range(1, self.num_conv + 1):
            x = getattr(self, f'conv{index}')(x)
        return x


class UNet3PlusEncoder(nn.Layer):
    """Five levels: ``conv1`` at full resolution, ``poolconv2`` ... ``poolconv5`` each a 2x2 max pool and a
    ``UnetConv2D``. Returns the five level outputs [X1, ..., X5]."""

    def __init__(self, in_channels, filters, is_batchnorm):
        super().__init__()
        self.conv1 = UnetConv2D(in_channels, filters[0], is_batchnorm)
        for level in range(2, LEVELS + 1):
            setattr(self, f'poolconv{level}', nn.Sequential(
                nn.MaxPool2D(kernel_size=2), UnetConv2D(filters[level - 2], filters[level - 1], is_batchnorm)))

    def forward(self, x):
        features = [self.conv1(x)]
        for level in range(2, LEVELS + 1):
            features.append(getattr(self, f'poolconv{level}')(features[-1]))
        return features


class UNet3PlusDecoder(nn.Layer):
    """Full-scale decoder: levels 4, 3, 2, 1, each fusing all five scales (see the module docstring).

    Sublayer names per decoder level d: ``h{i}_PT_hd{d}`` (max pool) and ``h{i}_PT_hd{d}_cbr`` for encoder levels
    i < d, ``h{d}_Cat_hd{d}_cbr`` for level d, ``hd{k}_UT_hd{d}_cbr`` for deeper levels k > d, ``cbr{d}d_1`` for the
    fusion.

    Args:
        filters (list[int]): Channels of the five encoder levels.
        cat_channels (int): Channels of each of the five branches.
        up_channels (int): Channels of a decoder level (5 * cat_channels).
    """

    def __init__(self, filters, cat_channels, up_channels):
        super().__init__()
        self.plan = {}  # decoder level -> [(kind, source level)], in concatenation order
        for d in range(LEVELS - 1, 0, -1):
            plan = []
            for i in range(1, d):
                scale = 2 ** (d - i)
                setattr(self, f'h{i}_PT_hd{d}', nn.MaxPool2D(scale, scale))
                setattr(self, f'h{i}_PT_hd{d}_cbr', conv_bn_relu(filters[i - 1], cat_channels))
                plan.append(('pool', i))
            setattr(self, f'h{d}_Cat_hd{d}_cbr', conv_bn_relu(filters[d - 1], cat_channels))
            plan.append(('cat', d))
            for k in range(d + 1, LEVELS + 1):
                in_channels = filters[LEVELS - 1] if k == LEVELS else up_channels
                setattr(self, f'hd{k}_UT_hd{d}_cbr', conv_bn_relu(in_channels, cat_channels))
                plan.append(('up', k))
            setattr(self, f'cbr{d}d_1', conv_bn_relu(up_channels, up_channels))
            self.plan[d] = plan

    def forward(self, features):
        """[X1, ..., X5] -> [XD1, XD2, XD3, XD4, X5]."""
        decoded = {LEVELS: features[LEVELS - 1]}
        for d in range(LEVELS - 1, 0, -1):
            size = paddle.shape(features[d - 1])[2:]
            branches = []
            for kind, source in self.plan[d]:
                if kind == 'pool':
                    x = getattr(self, f'h{source}_PT_hd{d}')(features[source - 1])
                    branches.append(getattr(self, f'h{source}_PT_hd{d}_cbr')(x))
                elif kind == 'cat':
                    branches.append(getattr(self, f'h{d}_Cat_hd{d}_cbr')(features[d - 1]))
                else:
                    x = resize(decoded[source], size)
                    branches.append(getattr(self, f'hd{source}_UT_hd{d}_cbr')(x))
            decoded[d] = getattr(self, f'cbr{d}d_1')(paddle.concat(branches, axis=1))
        return [decoded[level] for level in range(1, LEVELS + 1)]


class UNet3PlusDeepSup(nn.Layer):
    """Side outputs: ``outconv1`` (3x3 conv) on XD1, ``convup{k}`` (3x3 conv, then upsampling) on XD2..XD4 and X5.

    Args:
        up_channels (int): Channels of a decoder level.
        filters (list[int]): Channels of the encoder levels (X5 has ``filters[-1]``).
        num_classes (int): The number of classes.
    """

    def __init__(self, up_channels, filters, num_classes):
        super().__init__()
        # PaddleSeg's registration order: convup5, convup4, convup3, convup2, outconv1
        for k in range(LEVELS, 1, -1):
            in_channels = filters[LEVELS - 1] if k == LEVELS else up_channels
            setattr(self, f'convup{k}', nn.Sequential(_conv(in_channels, num_classes, 3, padding=1), _ToSize()))
        self.outconv1 = _conv(up_channels, num_classes, 3, padding=1)

    def forward(self, decoded, size, first_only=False):
        """[XD1, ..., X5] and the output size -> [d1, ..., d5] (N, num_classes, *size); only [d1] with
        ``first_only``."""
        outputs = [self.outconv1(decoded[0])]
        if first_only:
            return outputs
        for k in range(2, LEVELS + 1):
            branch = getattr(self, f'convup{k}')
            outputs.append(branch[1](branch[0](decoded[k - 1]), size))
        return outputs


@register_model
class UNet3Plus(nn.Layer):
    """UNet 3+ (Huang et al., "UNet 3+: A Full-Scale Connected UNet for Medical Image Segmentation", ICASSP 2020).

    Weight-compatible with PaddleSeg 2.8.0's ``UNet3Plus`` (its constructor arguments, parameter names and shapes at
    the default ``filters``).

    Args:
        in_channels (int, optional): Input channels. Default: 3.
        num_classes (int, optional): The number of classes. Default: 2.
        is_batchnorm (bool, optional): BN after the encoder convs. Default: True.
        is_deepsup (bool, optional): Deep supervision: five side outputs in training. Default: False.
        is_CGM (bool, optional): Classification-guided module (implies ``is_deepsup``). Default: False.
        filters (tuple[int], optional): Channels of the five encoder levels; each decoder branch has ``filters[0]``.
            Default: (64, 128, 256, 512, 1024).
        pretrained (str, optional): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of the whole
            model. Default: None.

    forward(x) returns ``[d1]`` in eval mode; in training mode ``[d1, ..., d5]`` with deep supervision and
    ``[d1, ..., d5, cls_logits]`` with the CGM (``cls_logits`` (N, 2): "no foreground" / "foreground" before the
    sigmoid). With the CGM every side output is multiplied by the argmax of the classification (0 or 1).
    """

    # the classifier layers, whose shapes follow num_classes: a whole-model `pretrained` of another class count
    # leaves them as initialised (fine-tuning, weights.load_model_pretrained)
    CLASS_PARAMS = ('deepsup.outconv1.*', 'deepsup.convup?.0.*')

    def __init__(self, in_channels=3, num_classes=2, is_batchnorm=True, is_deepsup=False, is_CGM=False,
                 filters=(64, 128, 256, 512, 1024), pretrained=None):
        super().__init__()
        num_classes = check_int('UNet3Plus', 'num_classes', num_classes)
        in_channels = check_int('UNet3Plus', 'in_channels', in_channels)
        filters = check_ints('UNet3Plus', 'filters', filters, length=LEVELS)
        self.num_classes = num_classes
        self.is_deepsup = bool(is_deepsup or is_CGM)
        self.is_CGM = bool(is_CGM)
        self.filters = list(filters)
        self.cat_channels = self.filters[0]
        self.up_channels = self.cat_channels * LEVELS
        self.pretrained = pretrained

        self.encoder = UNet3PlusEncoder(in_channels, self.filters, is_batchnorm)
        self.decoder = UNet3PlusDecoder(self.filters, self.cat_channels, self.up_channels)
        if self.is_deepsup:
            self.deepsup = UNet3PlusDeepSup(self.up_channels, self.filters, num_classes)
            if self.is_CGM:
                self.cls = nn.Sequential(nn.Dropout(p=0.5), _conv(self.filters[-1], 2, 1),
                                         nn.AdaptiveMaxPool2D(1), nn.Sigmoid())
        else:
            self.outconv1 = _conv(self.up_channels, num_classes, 3, padding=1)

        if pretrained:
            load_model_pretrained(self, pretrained)

    def classify(self, deepest):
        """CGM logits (N, 2) from X5 (dropout -> 1x1 conv -> global max pool; the sigmoid is left to the loss)."""
        return paddle.flatten(self.cls[2](self.cls[1](self.cls[0](deepest))), 1)

    def forward(self, x):
        decoded = self.decoder(self.encoder(x))
        if not self.is_deepsup:
            return [self.outconv1(decoded[0])]
        outputs = self.deepsup(decoded, paddle.shape(x)[2:], first_only=not self.training)
        cls_logits = None
        if self.is_CGM:
            cls_logits = self.classify(decoded[-1])
            # 1 where the image is classified as containing foreground, else 0 (argmax of the sigmoid, as the paper)
            gate = paddle.argmax(self.cls[3](cls_logits), axis=1).astype(outputs[0].dtype).reshape([-1, 1, 1, 1])
            outputs = [out * gate for out in outputs]
        if not self.training:
            return outputs[:1]
        return outputs + [cls_logits] if self.is_CGM else outputs
