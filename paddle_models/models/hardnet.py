"""FC-HarDNet-70: a real-time encoder-decoder segmentation network built from Harmonic Dense blocks.

Reference:
    Ping Chao, Chao-Yang Kao, Yu-Shan Ruan, Chien-Hsiang Huang, Youn-Long Lin,
    "HarDNet: A Low Memory Traffic Network", ICCV 2019. https://arxiv.org/abs/1909.00948

The parameter names and shapes are those of PaddleSeg 2.8.0's ``HarDNet`` (``stem.*``, ``encoder.blks.*``,
``decoder.conv1x1_up.*``, ``decoder.dense_blocks_up.*``, ``cls_head.*``), so PaddleSeg checkpoints load unchanged.

Shape of the network (defaults)::

    stem      conv3x3 -> conv3x3 -> conv3x3 stride 2 -> conv3x3            (1/2 resolution)
    encoder   5 levels of [HarDBlock -> 1x1 transition conv], an average pool of 2 between levels (1/32 at the
              bottom); the HarDBlock output of every level but the last is kept as a skip connection
    decoder   per skip, deepest first: upsample to the skip's size -> concat skip -> 1x1 conv halving the
              channels -> HarDBlock
    head      1x1 conv to num_classes, upsampled to the input size
"""
import paddle
import paddle.nn as nn

from paddle_models.layers import ConvBNReLU, resize
from paddle_models.registry import register_model
from paddle_models.utils.validate import check_int, check_ints, check_number
from paddle_models.weights import load_model_pretrained

__all__ = ['HarDNet', 'HarDBlock', 'HarDNetEncoder', 'HarDNetDecoder', 'harmonic_links', 'harmonic_width']


def harmonic_links(layer):
    """Indices of the earlier outputs that feed layer ``layer`` of a HarDBlock (the harmonic connection pattern).

    Outputs are numbered from 0 (the block input) to n (the last layer). Layer ``k >= 1`` reads output ``k - 2**i``
    for every ``i >= 0`` such that ``2**i`` divides ``k`` -- so odd layers read only their predecessor, layer 4
    reads 3, 2 and 0, layer 8 reads 7, 6, 4 and 0.  The inputs are concatenated in ascending index order.

    Args:
        layer (int): The layer number, >= 1.

    Returns:
        list[int]: The linked output indices, ascending.
    """
    if layer < 1:
        raise ValueError(f"HarDBlock layers are numbered from 1, got {layer}")
    links = []
    step = 1
    while step <= layer and layer % step == 0:
        links.append(layer - step)
        step *= 2
    return links[::-1]


def harmonic_width(growth_rate, grmul, num_links):
    """Output channels of a HarDBlock layer with ``num_links`` inputs.

    A layer with m inputs gets ``growth_rate * grmul ** (m - 1)`` channels (the paper's k * m^(links-1), giving
    the layers that many later layers read more channels), rounded to an even count (n -> 2 * floor((n + 1) / 2)).
    The power is applied as repeated multiplication, which reproduces the reference implementation's rounding.

    Args:
        growth_rate (int): k in the paper, the width of a layer with a single input.
        grmul (float): m in the paper, the width multiplier per extra input.
        num_links (int): The number of inputs of the layer (>= 1).

    Returns:
        int: The even channel count.
    """
    width = growth_rate
    for _ in range(num_links - 1):
        width *= grmul
    return int(width + 1) // 2 * 2


class HarDBlock(nn.Layer):
    """Harmonic Dense block: ``n_layers`` 3x3 ConvBNReLU layers wired by ``harmonic_links``.

    The block returns the concatenation of the outputs of its odd-numbered layers and of its last layer (the
    block input is not part of the output).

    Args:
        base_channels (int): Channels of the block input.
        growth_rate (int): Width of a layer with a single input (k in the paper).
        grmul (float): Width multiplier per extra input (m in the paper).
        n_layers (int): The number of conv layers, >= 1.
    """

    def __init__(self, base_channels, growth_rate, grmul, n_layers):
        super().__init__()
        widths = [base_channels]
        self.links = []
        convs = []
        for layer in range(1, n_layers + 1):
            links = harmonic_links(layer)
            widths.append(harmonic_width(growth_rate, grmul, len(links)))
            in_channels = sum(widths[i] for i in links)
            convs.append(ConvBNReLU(in_channels, widths[layer], 3, bias_attr=False))
            self.links.append(links)
        self.layers = nn.LayerList(convs)
        self.kept = [layer for layer in range(1, n_layers + 1) if layer % 2 == 1 or layer == n_layers]
        self.out_channels = sum(widths[layer] for layer in self.kept)

    def forward(self, x):
        outputs = [x]
        for links, conv in zip(self.links, self.layers):
            if len(links) == 1:
                inputs = outputs[links[0]]
            else:
                inputs = paddle.concat([outputs[i] for i in links], axis=1)
            outputs.append(conv(inputs))
        return paddle.concat([outputs[i] for i in self.kept], axis=1)


class HarDNetEncoder(nn.Layer):
    """The encoder: per level a HarDBlock and a 1x1 transition conv, with a 2x2 average pool between levels.

    The layers sit in one flat list ``blks`` (block, transition, pool, block, transition, pool, ..., block,
    transition) -- the checkpoint layout.

    Args:
        in_channels (int): Channels of the stem output.
        ch_list (list[int]): Output channels of each level's transition conv.
        gr (list[int]): Growth rate of each level's HarDBlock.
        grmul (float): Width multiplier of the HarDBlocks.
        n_layers (list[int]): Layers of each level's HarDBlock.
    """

    def __init__(self, in_channels, ch_list, gr, grmul, n_layers):
        super().__init__()
        self.blks = nn.LayerList()
        self.levels = []  # per level: (block index, transition index, pool index or None) in self.blks
        self.skip_channels = []
        channels = in_channels
        last = len(ch_list) - 1
        for level, (out_channels, growth_rate, depth) in enumerate(zip(ch_list, gr, n_layers)):
            block = HarDBlock(channels, growth_rate, grmul, depth)
            block_index = len(self.blks)
            self.blks.append(block)
            self.blks.append(ConvBNReLU(block.out_channels, out_channels, 1, bias_attr=False))
            pool_index = None
            if level < last:
                self.skip_channels.append(block.out_channels)
                self.blks.append(nn.AvgPool2D(kernel_size=2, stride=2))
                pool_index = block_index + 2
            self.levels.append((block_index, block_index + 1, pool_index))
            channels = out_channels
        self.out_channels = channels

    def forward(self, x):
        """Returns the bottom feature map and the skip features, shallowest first."""
        skips = []
        for block, transition, pool in self.levels:
            x = self.blks[block](x)
            if pool is not None:
                skips.append(x)
            x = self.blks[transition](x)
            if pool is not None:
                x = self.blks[pool](x)
        return x, skips


class HarDNetDecoder(nn.Layer):
    """The decoder: for each skip, deepest first, upsample -> concat the skip -> 1x1 conv halving the channels ->
    HarDBlock with the growth rate and depth of that encoder level.

    Args:
        in_channels (int): Channels of the encoder's bottom output.
        skip_channels (list[int]): Channels of the skip features, shallowest first.
        gr (list[int]): Growth rate per encoder level (level i's is used for skip i).
        grmul (float): Width multiplier of the HarDBlocks.
        n_layers (list[int]): HarDBlock depth per encoder level.
        align_corners (bool): ``align_corners`` of the bilinear upsampling.
    """

    def __init__(self, in_channels, skip_channels, gr, grmul, n_layers, align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        # (registration order = the reference checkpoint's key order: blocks first)
        self.dense_blocks_up = nn.LayerList()
        self.conv1x1_up = nn.LayerList()
        channels = in_channels
        for level in reversed(range(len(skip_channels))):
            merged = channels + skip_channels[level]
            self.conv1x1_up.append(ConvBNReLU(merged, merged // 2, 1, bias_attr=False))
            block = HarDBlock(merged // 2, gr[level], grmul, n_layers[level])
            self.dense_blocks_up.append(block)
            channels = block.out_channels
        self.out_channels = channels

    def forward(self, x, skips):
        for skip, squeeze, block in zip(skips[::-1], self.conv1x1_up, self.dense_blocks_up):
            x = resize(x, paddle.shape(skip)[2:], align_corners=self.align_corners)
            x = squeeze(paddle.concat([x, skip], axis=1))
            x = block(x)
        return x


@register_model
class HarDNet(nn.Layer):
    """FC-HarDNet-70 for semantic segmentation (Chao et al., "HarDNet: A Low Memory Traffic Network", ICCV 2019).

    Weight-compatible with PaddleSeg 2.8.0's ``HarDNet`` (same constructor arguments, parameter names and shapes).

    Args:
        num_classes (int): The number of classes.
        in_channels (int, optional): Channels of the input image. Default: 3.
        stem_channels (list[int], optional): Channels of the four stem convs. Default: (16, 24, 32, 48).
        ch_list (list[int], optional): Output channels of each encoder level. Default: (64, 96, 160, 224, 320).
        grmul (float, optional): HarDBlock width multiplier per extra input (m in the paper). Default: 1.7.
        gr (list[int], optional): HarDBlock growth rate per level (k in the paper). Default: (10, 16, 18, 24, 32).
        n_layers (list[int], optional): HarDBlock depth per level. Default: (4, 4, 8, 8, 8).
        align_corners (bool, optional): ``align_corners`` of every bilinear upsampling. Default: False.
        pretrained (str, optional): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) whose keys
            and shapes match this model exactly. Default: None.

    forward(x) returns ``[logit]``, logit of shape (N, num_classes, H, W) for an input of shape (N, C, H, W).
    H and W need not be multiples of 32; they must be at least ``2 ** len(ch_list) - 1`` (31 by default) so that
    the deepest level keeps one pixel.
    """

    # the classifier layers, whose shapes follow num_classes: a whole-model `pretrained` of another class count
    # leaves them as initialised (fine-tuning, weights.load_model_pretrained)
    CLASS_PARAMS = ('cls_head.*',)

    def __init__(self,
                 num_classes,
                 in_channels=3,
                 stem_channels=(16, 24, 32, 48),
                 ch_list=(64, 96, 160, 224, 320),
                 grmul=1.7,
                 gr=(10, 16, 18, 24, 32),
                 n_layers=(4, 4, 8, 8, 8),
                 align_corners=False,
                 pretrained=None):
        super().__init__()
        num_classes = check_int('HarDNet', 'num_classes', num_classes)
        in_channels = check_int('HarDNet', 'in_channels', in_channels)
        stem_channels = check_ints('HarDNet', 'stem_channels', stem_channels, length=4)
        ch_list = check_ints('HarDNet', 'ch_list', ch_list)
        gr = check_ints('HarDNet', 'gr', gr, length=len(ch_list))
        n_layers = check_ints('HarDNet', 'n_layers', n_layers, length=len(ch_list))
        grmul = check_number('HarDNet', 'grmul', grmul, minimum=0, above_min=True)

        self.num_classes = num_classes
        self.align_corners = align_corners
        self.pretrained = pretrained
        s0, s1, s2, s3 = stem_channels
        self.stem = nn.Sequential(
            ConvBNReLU(in_channels, s0, 3, bias_attr=False),
            ConvBNReLU(s0, s1, 3, bias_attr=False),
            ConvBNReLU(s1, s2, 3, stride=2, bias_attr=False),
            ConvBNReLU(s2, s3, 3, bias_attr=False))
        self.encoder = HarDNetEncoder(s3, ch_list, gr, grmul, n_layers)
        self.decoder = HarDNetDecoder(self.encoder.out_channels, self.encoder.skip_channels, gr, grmul, n_layers,
                                      align_corners)
        self.cls_head = nn.Conv2D(self.decoder.out_channels, num_classes, kernel_size=1)
        self.feature_channels = self.decoder.out_channels
        if pretrained:
            load_model_pretrained(self, pretrained)

    def forward_features(self, x):
        """(logit before the final upsampling, decoder output with ``feature_channels`` channels): the features
        protocol of ``MultiScaleAttention``."""
        x, skips = self.encoder(self.stem(x))
        feature = self.decoder(x, skips)
        return self.cls_head(feature), feature

    def forward(self, x):
        logit, _ = self.forward_features(x)
        return [resize(logit, paddle.shape(x)[2:], align_corners=self.align_corners, final=True)]
