"""HRNet (HRNetV2): a backbone that keeps a high-resolution branch through the whole network and adds lower
resolution branches stage by stage, exchanging information between all branches after every module.

Reference:
    Jingdong Wang, Ke Sun, Tianheng Cheng, Borui Jiang, Chaorui Deng, Yang Zhao, Dong Liu, Yadong Mu, Mingkui Tan,
    Xinggang Wang, Wenyu Liu, Bin Xiao, "Deep High-Resolution Representation Learning for Visual Recognition",
    TPAMI 2020. https://arxiv.org/abs/1908.07919

Shape of the network::

    stem      two 3x3 stride-2 ConvBNReLU (64 channels)                                      (1/4 resolution)
    stage 1   bottleneck blocks (expansion 4) on one branch
    stage 2-4 a transition (3x3 convs adapting the channels of kept branches, a 3x3 stride-2 conv from the
              lowest branch opening a new one) followed by ``num_modules`` high-resolution modules: per branch a
              stack of basic blocks, then a fusion where every branch receives the sum of all branches
              (lower ones: 1x1 ConvBN + bilinear upsampling; higher ones: chains of 3x3 stride-2 convs)
    output    the four branches (1/4, 1/8, 1/16, 1/32), the lower three upsampled to the first and concatenated:
              one feature map with ``sum(stage4_num_channels)`` channels

Parameter names follow PaddleSeg 2.8.0's ``HRNet`` (``conv_layer1_1``, ``la1.bb_layer2_1``, ``tr1``,
``st2.stage_st2_1.branches_func.bb_st2_1_branch_layer_1_1``, ``...fuse_func.residual_st2_1_layer_1_2`` ...), so its
checkpoints load unchanged.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.errors import UserError
from paddle_models.layers import ConvBN, ConvBNReLU, PolarizedSelfAttention, resize
from paddle_models.layers.resize import same_size, size_of
from paddle_models.layers.squeeze_excite import SqueezeExcite
from paddle_models.registry import register_backbone, register_variant
from paddle_models.utils.validate import check_bool, check_int, check_ints
from paddle_models.weights import load_weights

__all__ = ['HRNet', 'HRNET_VARIANTS', 'HRNet_W18_Small_V1', 'HRNet_W18_Small_V2', 'HRNet_W18', 'HRNet_W30',
           'HRNet_W32', 'HRNet_W40', 'HRNet_W44', 'HRNet_W48', 'HRNet_W60', 'HRNet_W64']


def _squeeze_excite(channels, reduction=16):
    """PaddleSeg's HRNet gate: global average -> Linear (c/16) ``squeeze`` -> ReLU -> Linear (c) ``excitation``
    -> sigmoid, scaling the input."""
    return SqueezeExcite(channels, int(channels / reduction), act='relu', linear=True,
                         names=('squeeze', 'excitation'))


class Bottleneck(nn.Layer):
    """1x1 -> 3x3 -> 1x1 (x4 channels) residual block of stage 1; ``project`` adds the 1x1 ConvBN shortcut."""

    def __init__(self, in_channels, width, project, has_se, padding):
        super().__init__()
        out_channels = width * 4
        self.conv1 = ConvBNReLU(in_channels, width, 1, bias_attr=False)
        self.conv2 = ConvBNReLU(width, width, 3, padding=padding, bias_attr=False)
        self.conv3 = ConvBN(width, out_channels, 1, bias_attr=False)
        self.conv_down = ConvBN(in_channels, out_channels, 1, bias_attr=False) if project else None
        self.se = _squeeze_excite(out_channels) if has_se else None

    def forward(self, x):
        y = self.conv3(self.conv2(self.conv1(x)))
        if self.se is not None:
            y = self.se(y)
        shortcut = x if self.conv_down is None else self.conv_down(x)
        return F.relu(y + shortcut)


class BasicBlock(nn.Layer):
    """Two 3x3 convs with an identity shortcut (the branch blocks of stages 2-4); with ``use_psa`` a polarized
    self-attention (``deattn``) sits between the two convs, as in PaddleSeg."""

    def __init__(self, in_channels, channels, has_se, padding, use_psa=False):
        super().__init__()
        if in_channels != channels:
            raise ValueError(f"HRNet basic blocks keep their width, got {in_channels} -> {channels}")
        self.conv1 = ConvBNReLU(in_channels, channels, 3, padding=padding, bias_attr=False)
        self.deattn = PolarizedSelfAttention(channels) if use_psa else None  # (registered here: PaddleSeg's order)
        self.conv2 = ConvBN(channels, channels, 3, padding=padding, bias_attr=False)
        self.se = _squeeze_excite(channels) if has_se else None

    def forward(self, x):
        y = self.conv1(x)
        if self.deattn is not None:
            y = self.deattn(y)
        y = self.conv2(y)
        if self.se is not None:
            y = self.se(y)
        return F.relu(y + x)


class Transition(nn.Layer):
    """Between stages: adapt the channels of the existing branches (3x3 ConvBNReLU where they change) and open new
    branches from the lowest one with a 3x3 stride-2 ConvBNReLU.

    Sublayers are named ``transition_{name}_layer_{i}`` (1-based branch index); ``self.ops[i]`` is None where the
    branch passes through unchanged.
    """

    def __init__(self, in_channels, out_channels, name, padding):
        super().__init__()
        self.ops = []
        for i, out_c in enumerate(out_channels):
            op = None
            if i >= len(in_channels):
                op = ConvBNReLU(in_channels[-1], out_c, 3, stride=2, padding=padding, bias_attr=False)
            elif in_channels[i] != out_c:
                op = ConvBNReLU(in_channels[i], out_c, 3, padding=padding, bias_attr=False)
            if op is not None:
                self.add_sublayer(f"transition_{name}_layer_{i + 1}", op)
            self.ops.append(op)

    def forward(self, xs):
        outs = []
        for i, op in enumerate(self.ops):
            src = xs[min(i, len(xs) - 1)]
            outs.append(src if op is None else op(src))
        return outs


class Branches(nn.Layer):
    """Per branch, a stack of basic blocks (``bb_{name}_branch_layer_{branch}_{block}``)."""

    def __init__(self, num_blocks, channels, has_se, name, padding, use_psa):
        super().__init__()
        self.stacks = []
        for b, (depth, c) in enumerate(zip(num_blocks, channels)):
            stack = []
            for j in range(depth):
                block = BasicBlock(c, c, has_se, padding, use_psa)
                self.add_sublayer(f"bb_{name}_branch_layer_{b + 1}_{j + 1}", block)
                stack.append(block)
            self.stacks.append(stack)

    def forward(self, xs):
        outs = []
        for x, stack in zip(xs, self.stacks):
            for block in stack:
                x = block(x)
            outs.append(x)
        return outs


class Fuse(nn.Layer):
    """Multi-resolution fusion: output branch i = ReLU(sum over input branches j of x_j brought to branch i).

    j > i (lower resolution): 1x1 ConvBN to branch i's channels, then bilinear upsampling to x_i's size.
    j < i (higher resolution): i - j 3x3 stride-2 convs; all but the last are ConvBNReLU keeping branch j's
    channels, the last is a ConvBN to branch i's channels.
    Sublayers: ``residual_{name}_layer_{i}_{j}`` (upsampling path) and ``residual_{name}_layer_{i}_{j}_{k}``
    (downsampling chain), all 1-based.
    """

    def __init__(self, channels, name, align_corners, padding):
        super().__init__()
        self.align_corners = align_corners
        self.paths = []  # paths[i][j]: None (identity), ('up', layer) or ('down', [layers])
        for i, c_i in enumerate(channels):
            row = []
            for j, c_j in enumerate(channels):
                if j == i:
                    row.append(None)
                elif j > i:
                    op = ConvBN(c_j, c_i, 1, bias_attr=False)
                    self.add_sublayer(f"residual_{name}_layer_{i + 1}_{j + 1}", op)
                    row.append(('up', op))
                else:
                    chain = []
                    steps = i - j
                    for k in range(steps):
                        last = k == steps - 1
                        op = (ConvBN(c_j, c_i, 3, stride=2, padding=padding, bias_attr=False) if last else
                              ConvBNReLU(c_j, c_j, 3, stride=2, padding=padding, bias_attr=False))
                        self.add_sublayer(f"residual_{name}_layer_{i + 1}_{j + 1}_{k + 1}", op)
                        chain.append(op)
                    row.append(('down', chain))
            self.paths.append(row)

    def forward(self, xs):
        outs = []
        for i, row in enumerate(self.paths):
            total = xs[i]
            size = size_of(xs[i])
            for j, path in enumerate(row):
                if path is None:
                    continue
                kind, op = path
                if kind == 'up':  # a 1x1 conv keeps xs[j]'s size (same_size: shared resize matrices in exports)
                    y = resize(same_size(op(xs[j]), xs[j]), size, align_corners=self.align_corners)
                else:
                    y = xs[j]
                    for layer in op:
                        y = layer(y)
                total = total + y
            outs.append(F.relu(total))
        return outs


class HighResolutionModule(nn.Layer):
    """Branches (basic blocks) followed by the multi-resolution fusion."""

    def __init__(self, num_blocks, channels, has_se, name, align_corners, padding, use_psa):
        super().__init__()
        self.branches_func = Branches(num_blocks, channels, has_se, name, padding, use_psa)
        self.fuse_func = Fuse(channels, name, align_corners, padding)

    def forward(self, xs):
        # every branch keeps its size through the blocks and the fusion: telling the export's resize so lets all
        # fusions between the same two branches share one pair of interpolation matrices
        ys = [same_size(y, x) for y, x in zip(self.branches_func(xs), xs)]
        return [same_size(out, y) for out, y in zip(self.fuse_func(ys), ys)]


class Stage(nn.Layer):
    """``num_modules`` high-resolution modules named ``stage_{name}_{m}``."""

    def __init__(self, num_modules, num_blocks, channels, has_se, name, align_corners, padding, use_psa):
        super().__init__()
        self.modules_ = []
        for m in range(num_modules):
            module = HighResolutionModule(num_blocks, channels, has_se, f"{name}_{m + 1}", align_corners, padding,
                                          use_psa)
            self.add_sublayer(f"stage_{name}_{m + 1}", module)
            self.modules_.append(module)

    def forward(self, xs):
        for module in self.modules_:
            xs = module(xs)
        return xs


class Stem1(nn.Layer):
    """Stage 1: ``num_blocks`` bottlenecks (``bb_layer2_{k}``), the first one projecting its shortcut."""

    def __init__(self, in_channels, width, num_blocks, has_se, padding):
        super().__init__()
        self.blocks = []
        for k in range(num_blocks):
            block = Bottleneck(in_channels if k == 0 else width * 4, width, k == 0, has_se, padding)
            self.add_sublayer(f"bb_layer2_{k + 1}", block)
            self.blocks.append(block)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def _check_stage(stage, modules, blocks, channels, branches):
    """(blocks, channels) of stage ``stage`` as lists of ``branches`` ints, after checking its module count."""
    check_int('HRNet', f'stage{stage}_num_modules', modules)
    return (check_ints('HRNet', f'stage{stage}_num_blocks', blocks, length=branches),
            check_ints('HRNet', f'stage{stage}_num_channels', channels, length=branches))


class HRNet(nn.Layer):
    """HRNetV2 backbone (Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition",
    TPAMI 2020). Weight-compatible with PaddleSeg 2.8.0's ``HRNet`` (same arguments, names and shapes).

    Args:
        in_channels (int): Channels of the input image. Default: 3.
        pretrained (str|None): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of this backbone.
            Default: None.
        stage1_num_modules (int): Must be 1 (stage 1 is a single stack of bottlenecks). Default: 1.
        stage1_num_blocks (list[int]): Bottlenecks of stage 1 (one entry). Default: (4,).
        stage1_num_channels (list[int]): Bottleneck width of stage 1 (one entry; the output has 4x). Default: (64,).
        stage2_num_modules, stage3_num_modules, stage4_num_modules (int): High-resolution modules per stage.
            Default: 1, 4, 3.
        stage2_num_blocks, stage3_num_blocks, stage4_num_blocks (list[int]): Basic blocks per branch.
            Default: (4, 4), (4, 4, 4), (4, 4, 4, 4).
        stage2_num_channels, stage3_num_channels, stage4_num_channels (list[int]): Channels per branch.
            Default: HRNet-W18's (18, 36), (18, 36, 72), (18, 36, 72, 144).
        has_se (bool): Squeeze-and-excitation in every block. Default: False.
        align_corners (bool): ``align_corners`` of the bilinear upsampling. Default: False.
        padding_same (bool): 'same' padding for the 3x3 convs (PaddleSeg's default, asymmetric at stride 2);
            False pads 1 on every side (the original HRNet). Default: True.
        use_psa (bool): A polarized self-attention (``paddle_models.layers.PolarizedSelfAttention``, parameters
            ``...bb_st{n}_branch_layer_{b}_{k}.deattn.*``) after the first conv of every basic block of stages 2-4,
            as PaddleSeg's ``mscale_ocrnet_hrnetv2_psa`` configs use; stage 1's bottlenecks have none. Default: False.

    forward(x) returns ``[feature]``: the four branches concatenated at 1/4 of the input resolution, with
    ``feat_channels[0] = sum(stage4_num_channels)`` channels.
    """

    def __init__(self,
                 in_channels=3,
                 pretrained=None,
                 stage1_num_modules=1,
                 stage1_num_blocks=(4,),
                 stage1_num_channels=(64,),
                 stage2_num_modules=1,
                 stage2_num_blocks=(4, 4),
                 stage2_num_channels=(18, 36),
                 stage3_num_modules=4,
                 stage3_num_blocks=(4, 4, 4),
                 stage3_num_channels=(18, 36, 72),
                 stage4_num_modules=3,
                 stage4_num_blocks=(4, 4, 4, 4),
                 stage4_num_channels=(18, 36, 72, 144),
                 has_se=False,
                 align_corners=False,
                 padding_same=True,
                 use_psa=False):
        super().__init__()
        in_channels = check_int('HRNet', 'in_channels', in_channels)
        use_psa = check_bool('HRNet', 'use_psa', use_psa)
        if stage1_num_modules != 1:
            raise UserError(f"HRNet: stage1_num_modules must be 1, got {stage1_num_modules!r}")
        s1_blocks, s1_channels = _check_stage(1, 1, stage1_num_blocks, stage1_num_channels, 1)
        stages = [_check_stage(2, stage2_num_modules, stage2_num_blocks, stage2_num_channels, 2),
                  _check_stage(3, stage3_num_modules, stage3_num_blocks, stage3_num_channels, 3),
                  _check_stage(4, stage4_num_modules, stage4_num_blocks, stage4_num_channels, 4)]
        modules = [stage2_num_modules, stage3_num_modules, stage4_num_modules]
        padding = 'same' if padding_same else 1
        self.align_corners = align_corners
        self.pretrained = pretrained
        self.feat_channels = [sum(stages[-1][1])]

        self.conv_layer1_1 = ConvBNReLU(in_channels, 64, 3, stride=2, padding=padding, bias_attr=False)
        self.conv_layer1_2 = ConvBNReLU(64, 64, 3, stride=2, padding=padding, bias_attr=False)
        self.la1 = Stem1(64, s1_channels[0], s1_blocks[0], has_se, padding)
        previous = [s1_channels[0] * 4]
        self.transitions = []
        self.stages = []
        for n, ((blocks, channels), count) in enumerate(zip(stages, modules), start=1):
            transition = Transition(previous, channels, f"tr{n}", padding)
            stage = Stage(count, blocks, channels, has_se, f"st{n + 1}", align_corners, padding, use_psa)
            self.add_sublayer(f"tr{n}", transition)
            self.add_sublayer(f"st{n + 1}", stage)
            self.transitions.append(transition)
            self.stages.append(stage)
            previous = channels
        if pretrained:
            load_weights(self, pretrained)

    def forward_branches(self, x):
        """The four branch outputs of the last stage (strides 4, 8, 16, 32), before concatenation."""
        xs = [self.la1(self.conv_layer1_2(self.conv_layer1_1(x)))]
        for transition, stage in zip(self.transitions, self.stages):
            xs = stage(transition(xs))
        return xs

    def forward(self, x):
        xs = self.forward_branches(x)
        size = size_of(xs[0])
        ups = [resize(b, size, align_corners=self.align_corners) for b in xs[1:]]
        return [paddle.concat([xs[0]] + ups, axis=1)]


# name: (stage1 blocks, stage1 width, modules of stages 2-4, blocks per branch in stages 2-4, width W)
HRNET_VARIANTS = {
    'HRNet_W18_Small_V1': dict(s1=(1, 32), modules=(1, 1, 1), blocks=2, widths=(16, 32, 64, 128)),
    'HRNet_W18_Small_V2': dict(s1=(2, 64), modules=(1, 3, 2), blocks=2, widths=(18, 36, 72, 144)),
}
for _w in (18, 30, 32, 40, 44, 48, 60, 64):
    HRNET_VARIANTS[f'HRNet_W{_w}'] = dict(s1=(4, 64), modules=(1, 4, 3), blocks=4,
                                           widths=(_w, 2 * _w, 4 * _w, 8 * _w))


def _variant(name):
    spec = HRNET_VARIANTS[name]
    s1_blocks, s1_width = spec['s1']
    widths, blocks = spec['widths'], spec['blocks']
    fixed = dict(stage1_num_modules=1, stage1_num_blocks=[s1_blocks], stage1_num_channels=[s1_width])
    for n, count in zip((2, 3, 4), spec['modules']):
        fixed[f'stage{n}_num_modules'] = count
        fixed[f'stage{n}_num_blocks'] = [blocks] * n
        fixed[f'stage{n}_num_channels'] = list(widths[:n])

    return register_variant(register_backbone, HRNet, name,
                            f"{name}: HRNetV2 with branch widths {list(widths)} (PaddleSeg-compatible)."
                            f"\n\n    Args:\n        **kwargs: Other ``HRNet`` arguments (in_channels, pretrained, "
                            f"has_se, align_corners, padding_same, use_psa).\n", **fixed)


HRNet_W18_Small_V1 = _variant('HRNet_W18_Small_V1')
HRNet_W18_Small_V2 = _variant('HRNet_W18_Small_V2')
HRNet_W18 = _variant('HRNet_W18')
HRNet_W30 = _variant('HRNet_W30')
HRNet_W32 = _variant('HRNet_W32')
HRNet_W40 = _variant('HRNet_W40')
HRNet_W44 = _variant('HRNet_W44')
HRNet_W48 = _variant('HRNet_W48')
HRNet_W60 = _variant('HRNet_W60')
HRNet_W64 = _variant('HRNet_W64')
