"""UNet++: nested, densely connected skip pathways between a U-Net's encoder and decoder, with deep supervision and
pruning at inference.

Reference:
    Zongwei Zhou, Md Mahfuzur Rahman Siddiquee, Nima Tajbakhsh, Jianming Liang, "UNet++: A Nested U-Net
    Architecture for Medical Image Segmentation", DLMIA 2018. https://arxiv.org/abs/1807.10165

Parameter names and shapes are those of PaddleSeg 2.8.0's ``UNetPlusPlus`` (``conv{i}_0``, ``up_cat{i}_{j}``,
``out_{j}``), so PaddleSeg checkpoints load unchanged.

Nodes: X(i, 0) is the encoder (two 3x3 ConvBNReLU, then a 2x2 max pool before the next level, channels
``channels[i]``). Every other node X(i, j), j >= 1, upsamples X(i+1, j-1) (bilinear + 1x1 conv, or a 2x2
transposed conv) to the size of level i, concatenates X(i, 0) ... X(i, j-1) after it, and applies two 3x3
ConvBNReLU. A 1x1 conv ``out_j`` on X(0, j) gives the output of level j (L1 ... L4).

* ``is_ds=True`` (deep supervision, PaddleSeg's default): the output is the mean of the four level outputs ("accurate
  mode"); ``is_ds=False``: the output of L4.
* ``ds_outputs=True``: in training mode the model also returns the four level outputs after the main one, so that
  each gets its own loss (the paper's deep supervision; loss.coef then has five entries).
* ``prune_level=L`` (1..4): at inference (eval mode) only the sub-network that L needs -- the nodes X(i, j) with
  i + j <= L -- runs, and the output is level L's. The full network's weights stay in the model (a full
  checkpoint loads unchanged, training still trains every level), but an exported graph holds only the
  sub-network and its parameters.
"""
import paddle
import paddle.nn as nn

from paddle_models.layers import batch_norm_2d, resize
from paddle_models.registry import register_model
from paddle_models.utils.validate import check_int, check_ints
from paddle_models.weights import load_model_pretrained

__all__ = ['UNetPlusPlus', 'DoubleConv', 'UpSampling']

LEVELS = 4


def _conv(in_channels, out_channels, kernel_size, padding=0):
    """Conv2D with bias and a Kaiming-normal weight initialisation (as the reference initialises every conv)."""
    return nn.Conv2D(in_channels, out_channels, kernel_size, padding=padding,
                     weight_attr=paddle.ParamAttr(initializer=nn.initializer.KaimingNormal()))


class DoubleConv(nn.Layer):
    """Two (3x3 conv with bias -> BN -> ReLU), in one ``nn.Sequential`` named ``conv`` (PaddleSeg's layout)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Sequential(
            _conv(in_channels, out_channels, 3, padding=1), batch_norm_2d(out_channels), nn.ReLU(),
            _conv(out_channels, out_channels, 3, padding=1), batch_norm_2d(out_channels), nn.ReLU())

    def forward(self, x):
        return self.conv(x)


class _Upsample(nn.Layer):
    """Bilinear upsampling to a given size (parameter-free; slot 0 of ``UpSampling.up``)."""

    def __init__(self, align_corners):
        super().__init__()
        self.align_corners = align_corners

    def forward(self, x, size):
        return resize(x, size, align_corners=self.align_corners)


class UpSampling(nn.Layer):
    """A decoder node: upsample the deeper node, concatenate the same-level nodes, DoubleConv.

    Args:
        in_channels (int): Channels of the deeper node.
        out_channels (int): Channels of this level.
        n_cat (int): Number of concatenated tensors (the upsampled one included).
        use_deconv (bool): 2x2 transposed conv (stride 2) instead of bilinear upsampling + 1x1 conv.
        align_corners (bool): ``align_corners`` of the bilinear upsampling.
    """

    def __init__(self, in_channels, out_channels, n_cat, use_deconv=False, align_corners=False):
        super().__init__()
        self.use_deconv = use_deconv
        if use_deconv:
            self.up = nn.Conv2DTranspose(in_channels, out_channels, kernel_size=2, stride=2, padding=0)
        else:
            self.up = nn.Sequential(_Upsample(align_corners), _conv(in_channels, out_channels, 1))
        self.conv = DoubleConv(n_cat * out_channels, out_channels)

    def forward(self, deeper, *same_level):
        size = paddle.shape(same_level[0])[2:]
        if self.use_deconv:  # 2 * input, or one more where pooling rounded an odd size down
            up = self.up(deeper, output_size=size)
        else:
            up = self.up[1](self.up[0](deeper, size))
        return self.conv(paddle.concat([up] + list(same_level), axis=1))


@register_model
class UNetPlusPlus(nn.Layer):
    """UNet++ (Zhou et al., "UNet++: A Nested U-Net Architecture for Medical Image Segmentation", DLMIA 2018).

    Weight-compatible with PaddleSeg 2.8.0's ``UNetPlusPlus`` (its constructor arguments, parameter names and shapes
    at the default ``channels``).

    Args:
        num_classes (int): The number of classes.
        in_channels (int, optional): Input channels. Default: 3.
        use_deconv (bool, optional): Upsample by 2x2 transposed convs instead of bilinear + 1x1 conv.
            Default: False.
        align_corners (bool, optional): ``align_corners`` of the bilinear upsampling. Default: False.
        pretrained (str, optional): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of the whole
            (unpruned) model. Default: None.
        is_ds (bool, optional): Deep supervision: the output is the mean of the four level outputs; otherwise the
            output of level 4. Default: True.
        channels (tuple[int], optional): Channels of the five levels. Default: (32, 64, 128, 256, 512).
        ds_outputs (bool, optional): In training mode, return the four level outputs after the main one (one loss
            each). Default: False (PaddleSeg's behaviour: one output).
        prune_level (int, optional): 1..4: at inference run only the sub-network up to this level and return its
            output. Default: None (the whole network).

    forward(x) returns ``[logit]`` (N, num_classes, H, W); in training mode with ``ds_outputs`` ``[main, L1, L2, L3,
    L4]``. Any input of at least 16x16 works.
    """

    # the classifier layers, whose shapes follow num_classes: a whole-model `pretrained` of another class count
    # leaves them as initialised (fine-tuning, weights.load_model_pretrained)
    CLASS_PARAMS = ('out_?.*',)

    def __init__(self, num_classes, in_channels=3, use_deconv=False, align_corners=False, pretrained=None,
                 is_ds=True, channels=(32, 64, 128, 256, 512), ds_outputs=False, prune_level=None):
        super().__init__()
        num_classes = check_int('UNetPlusPlus', 'num_classes', num_classes)
        in_channels = check_int('UNetPlusPlus', 'in_channels', in_channels)
        channels = check_ints('UNetPlusPlus', 'channels', channels, length=LEVELS + 1)
        if prune_level is not None:
            prune_level = check_int('UNetPlusPlus', 'prune_level', prune_level, maximum=LEVELS)
        self.num_classes = num_classes
        self.is_ds = is_ds
        self.ds_outputs = ds_outputs
        self.prune_level = prune_level
        self.use_deconv = use_deconv
        self.channels = list(channels)
        self.levels = LEVELS
        self.pretrained = pretrained

        self.pool = nn.MaxPool2D(kernel_size=2, stride=2)
        encoder_in = [in_channels] + self.channels[:-1]
        for i in range(LEVELS + 1):
            setattr(self, f'conv{i}_0', DoubleConv(encoder_in[i], self.channels[i]))
        # column by column (j), top to bottom (i): PaddleSeg's registration order (= its state-dict order)
        for j in range(1, LEVELS + 1):
            for i in range(LEVELS + 1 - j):
                setattr(self, f'up_cat{i}_{j}', UpSampling(self.channels[i + 1], self.channels[i], n_cat=j + 1,
                                                           use_deconv=use_deconv, align_corners=align_corners))
        for j in range(1, LEVELS + 1):
            setattr(self, f'out_{j}', _conv(self.channels[0], num_classes, 1))

        if pretrained:
            load_model_pretrained(self, pretrained)

    def _nodes(self, x, depth):
        """Every node X(i, j) with i + j <= depth, as a dict {(i, j): tensor}."""
        nodes = {(0, 0): self.conv0_0(x)}
        for i in range(1, depth + 1):
            nodes[(i, 0)] = getattr(self, f'conv{i}_0')(self.pool(nodes[(i - 1, 0)]))
        for j in range(1, depth + 1):
            for i in range(depth + 1 - j):
                node = getattr(self, f'up_cat{i}_{j}')
                nodes[(i, j)] = node(nodes[(i + 1, j - 1)], *[nodes[(i, k)] for k in range(j)])
        return nodes

    def level_outputs(self, x, depth=None):
        """The outputs of levels 1..depth (all four by default; ``out_j`` on X(0, j)), each (N, num_classes, H, W)."""
        depth = self.levels if depth is None else depth
        nodes = self._nodes(x, depth)
        return [getattr(self, f'out_{j}')(nodes[(0, j)]) for j in range(1, depth + 1)]

    def forward(self, x):
        if self.prune_level is not None and not self.training:
            return [self.level_outputs(x, self.prune_level)[-1]]
        levels = self.level_outputs(x)
        main = paddle.add_n(levels) / float(len(levels)) if self.is_ds else levels[-1]
        if self.training and self.ds_outputs:
            return [main] + levels
        return [main]
