"""MaxViT: MBConv + block (window) attention + grid attention in every block, as a four-stage backbone.

Reference:
    Zhengzhong Tu, Hossein Talebi, Han Zhang, Feng Yang, Peyman Milanfar, Alan Bovik, Yinxiao Li,
    "MaxViT: Multi-Axis Vision Transformer", ECCV 2022. https://arxiv.org/abs/2204.01697

The architecture is that of the official (TensorFlow) release, as mirrored by timm's ``maxvit_{tiny,small,base,
large}_tf_*`` models, so their ImageNet weights convert exactly (:func:`convert_timm_weights`); MaxViT-T has
30,916,528 parameters with its 1000-class head. Parameter names are timm's.

Shape of the network::

    stem      3x3 conv stride 2 (TF 'SAME' padding, bias) -> BN -> GELU -> 3x3 conv (bias)             (1/2)
    stage s   depth_s MaxViT blocks, the first with stride 2                                  (1/4 ... 1/32)
    block     MBConv:  shortcut = [2x2 avg pool ('SAME', zero padding counted) -> 1x1 conv if the width changes]
                       BN -> 1x1 conv (4x, no bias) -> BN -> GELU -> 3x3 depthwise conv (stride, 'SAME')
                       -> BN -> GELU -> squeeze-excitation (SiLU, out/4 channels, sigmoid gate) -> 1x1 conv (bias)
                       + shortcut
              block attention: x + MHSA(LN(x)) over non-overlapping 7x7 windows, then x + MLP(LN(x))
              grid attention:  x + MHSA(LN(x)) over a 7x7 grid spread over the whole map (dilated, global
                               mixing), then x + MLP(LN(x))
              attention: heads of 32 channels, qkv laid out (3, heads, 32) along the channels, relative-position
              bias looked up in a (heads, 13, 13) table; MLP 4x with GELU
    head      (classification) global average pool -> LayerNorm -> linear + tanh (``pre_logits``) -> linear

GELU is the tanh approximation throughout; BN epsilon 1e-3, LayerNorm epsilon 1e-5 (the release's).

Segmentation inputs of any size work: the windows/grid need sides that are multiples of 7, so each attention pads
its (normalised) input with zeros at the bottom/right up to the next multiple and crops the result back. Where every
stage's sides are multiples of 7 (224x224, 448x448, ...) nothing is padded and the network is exactly the released
one. This port does not carry over the bugs of the seed implementation (attention applied twice in its window
block, a softmax ending its head).
"""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.errors import UserError
from paddle_models.layers.conv_init import fan_out_attr, zero_bias_attr
from paddle_models.layers.drop_path import drop_path_or_identity, drop_path_rates
from paddle_models.layers.mlp import Mlp
from paddle_models.layers.squeeze_excite import SqueezeExcite
from paddle_models.registry import register_backbone, register_converter, register_variant
from paddle_models.utils.spatial import spatial_size
from paddle_models.utils.validate import check_int, check_ints, check_number
from paddle_models.weights import load_weights, torch_layout_to_paddle

__all__ = ['MaxViT', 'MaxViTBlock', 'MBConv', 'PartitionAttention', 'MaxViT_T', 'MaxViT_S', 'MaxViT_B', 'MaxViT_L',
           'MAXVIT_SETTINGS', 'MAXVIT_ARCHS', 'convert_timm_weights']

# embed_dims, depths, stem width, head hidden size (timm maxvit_{tiny,small,base,large}_tf)
MAXVIT_SETTINGS = {
    't': ((64, 128, 256, 512), (2, 2, 5, 2), 64, 512),
    's': ((96, 192, 384, 768), (2, 2, 5, 2), 64, 768),
    'b': ((96, 192, 384, 768), (2, 6, 14, 2), 64, 768),
    'l': ((128, 256, 512, 1024), (2, 6, 14, 2), 128, 1024),
}
MAXVIT_ARCHS = tuple(f'MaxViT_{key.upper()}' for key in MAXVIT_SETTINGS)  # the registered variants
BN_EPS = 1e-3
LN_EPS = 1e-5


def make_divisible(value, divisor=8):
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), never more than 10% down
    (the EfficientNet rule the release uses for the MBConv width)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _gelu():
    return nn.GELU(approximate=True)


def _conv(in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False):
    """Conv2D with TensorFlow 'SAME' padding: symmetric k // 2 at stride 1; at stride 2 Paddle's 'SAME' (total
    padding (ceil(n / s) - 1) * s + k - n, the smaller half first), as the release and timm's Conv2dSame."""
    padding = kernel_size // 2 if stride == 1 else 'SAME'
    return nn.Conv2D(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups,
                     weight_attr=fan_out_attr(kernel_size, out_channels, groups),
                     bias_attr=zero_bias_attr() if bias else False)


def _linear(in_features, out_features):
    return nn.Linear(in_features, out_features,
                     weight_attr=paddle.ParamAttr(initializer=nn.initializer.XavierUniform()),
                     bias_attr=zero_bias_attr())


class Downsample(nn.Layer):
    """2x2 average pool with stride 2 and TF 'SAME' padding (an odd side gets one zero row/column at the end that
    counts in the average), then a 1x1 conv (with bias) where the width changes.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        if in_channels != out_channels:
            self.expand = nn.Conv2D(in_channels, out_channels, 1, weight_attr=fan_out_attr(1, out_channels),
                                    bias_attr=zero_bias_attr())
        else:
            self.expand = nn.Identity()
        self.padding = [0, 1, 0, 1]  # (H, W): see forward; the ONNX deploy form names all four axes (to_deploy)

    def forward(self, x):
        # One zero row/column at the end always: for an even side a 2x2/2 pool never reaches it, for an odd side
        # the last window takes it -- TF 'SAME' pooling with the padding counted, without shape-dependent code.
        x = F.avg_pool2d(F.pad(x, self.padding), kernel_size=2, stride=2)
        return self.expand(x)

    def to_deploy(self, target):
        """The deploy form (``layers/deploy.py``): for ONNX the padding names all four axes (Paddle's ``pad`` op):
        paddle2onnx 2.1.0 converts the ``pad3d`` op of a 2-D padding without its pad value (it wrote arbitrary
        constants such as 1.0 and -2.8e36), which the last window of an odd side then averages in. This block (a
        deploy copy) is switched to that form."""
        if target.runtime == 'onnx':
            self.padding = [0, 0, 0, 0, 0, 1, 0, 1]
        return self


class MBConv(nn.Layer):
    """Pre-norm inverted bottleneck with squeeze-excitation (MaxViT's convolution block).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): 1, or 2 for the first block of a stage (depthwise conv and pooled shortcut).
        expand_ratio (float): Inner width / ``out_channels``. Default: 4.
        se_ratio (float): Squeeze-excitation width / ``out_channels``. Default: 0.25.
        drop_path (float): Stochastic depth rate. Default: 0.
    """

    def __init__(self, in_channels, out_channels, stride=1, expand_ratio=4.0, se_ratio=0.25, drop_path=0.0):
        super().__init__()
        mid = make_divisible(out_channels * expand_ratio)
        self.shortcut = Downsample(in_channels, out_channels) if stride == 2 else nn.Identity()
        self.pre_norm = nn.BatchNorm2D(in_channels, epsilon=BN_EPS)
        self.conv1_1x1 = _conv(in_channels, mid, 1)
        self.norm1 = nn.BatchNorm2D(mid, epsilon=BN_EPS)
        self.act1 = _gelu()
        self.conv2_kxk = _conv(mid, mid, 3, stride=stride, groups=mid)
        self.norm2 = nn.BatchNorm2D(mid, epsilon=BN_EPS)
        self.act2 = _gelu()
        # timm's layout: 1x1 convs fc1/fc2, SiLU
        self.se = SqueezeExcite(mid, int(se_ratio * out_channels), act='silu', fan_out_init=True)
        self.conv3_1x1 = _conv(mid, out_channels, 1, bias=True)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x):
        shortcut = self.shortcut(x)
        x = self.act1(self.norm1(self.conv1_1x1(self.pre_norm(x))))
        x = self.act2(self.norm2(self.conv2_kxk(x)))
        x = self.conv3_1x1(self.se(x))
        return self.drop_path(x) + shortcut


def relative_position_index(size):
    """[size*size, size*size] indices into a flattened (2*size-1, 2*size-1) bias table: query (i, j) and key (x, y)
    read entry (x - i + size - 1, y - j + size - 1) -- the key's offset from the query."""
    coords = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing='ij')).reshape(2, -1)
    offset = coords[:, None, :] - coords[:, :, None] + size - 1  # [2, query, key]
    return (offset[0] * (2 * size - 1) + offset[1]).astype('int64')


class RelPosBias(nn.Layer):
    """Learned relative-position bias of the release: a (heads, 2s-1, 2s-1) table expanded to (heads, s*s, s*s).

    Args:
        size (int): Window / grid side s.
        num_heads (int): Attention heads.
    """

    def __init__(self, size, num_heads):
        super().__init__()
        self.size = size
        self.relative_position_bias_table = self.create_parameter(
            [num_heads, 2 * size - 1, 2 * size - 1], default_initializer=nn.initializer.Normal(0.0, 0.02))
        self.register_buffer('index', paddle.to_tensor(relative_position_index(size).reshape([-1])),
                             persistable=False)

    def bias(self):
        """The (heads, s*s, s*s) bias. Called as a method, not through ``__call__``: a layer call without inputs
        breaks forward hooks that read the first input (``paddle.flops``)."""
        heads = self.relative_position_bias_table.shape[0]
        table = self.relative_position_bias_table.reshape([heads, -1])
        area = self.size * self.size
        return paddle.gather(table, self.index, axis=1).reshape([heads, area, area])


class Attention(nn.Layer):
    """Multi-head self-attention over the tokens of each window, with relative-position bias.

    The qkv projection's output channels are ordered (q|k|v, head, channel) -- the release's layout (timm's
    ``head_first=False``).

    Args:
        dim (int): Channels.
        dim_head (int): Channels per head.
        size (int): Window side (for the bias table).
    """

    def __init__(self, dim, dim_head, size):
        super().__init__()
        if dim % dim_head:
            raise UserError(f"MaxViT: width {dim} is not a multiple of dim_head {dim_head}")
        self.num_heads = dim // dim_head
        self.dim_head = dim_head
        self.scale = dim_head ** -0.5
        self.qkv = _linear(dim, 3 * dim)
        self.rel_pos = RelPosBias(size, self.num_heads)
        self.proj = _linear(dim, dim)

    def forward(self, x):
        # x: [windows, tokens, dim]
        qkv = self.qkv(x).reshape([0, 0, 3, self.num_heads, self.dim_head]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0], qkv[1], qkv[2]  # [windows, heads, tokens, dim_head]
        attn = paddle.matmul(q * self.scale, k, transpose_y=True) + self.rel_pos.bias().unsqueeze(0)
        out = paddle.matmul(F.softmax(attn, axis=-1), v)
        return self.proj(out.transpose([0, 2, 1, 3]).reshape([0, 0, -1]))


def _zero_pad_end(x, axis, amount):
    """``amount`` (a python int) zero rows (axis 1) or columns (axis 2) appended to the NHWC map ``x``.

    Built from slice/scale/tile/concat: an NHWC ``pad`` op is mis-read by Paddle Inference's oneDNN kernel (and
    zeros_like/full_like warn while being traced under PIR).
    """
    if amount <= 0:
        return x
    edge = x[:, :1] if axis == 1 else x[:, :, :1]
    repeats = [1, amount, 1, 1] if axis == 1 else [1, 1, amount, 1]
    return paddle.concat([x, (edge * 0.0).tile(repeats)], axis=axis)


@paddle.jit.not_to_static
def _partition_attention(attn, x, s, partition):
    """``attn`` applied to every s x s window ('block') or grid ('grid') of the NHWC map ``x``, sides zero-padded
    to multiples of s and cropped back.

    not_to_static: the shape logic below (python ints in dygraph or at a fixed export size, shape tensors for a
    free size) must not be rewritten by dy2st into graph conditionals; the ops it builds are recorded as they are.
    """
    h, w = spatial_size(x, data_format='NHWC')
    if isinstance(h, int) and isinstance(w, int):
        hp, wp = -(-h // s) * s, -(-w // s) * s
        x = _zero_pad_end(_zero_pad_end(x, 1, hp - h), 2, wp - w)
    else:  # free size in a static graph: append s - 1 zero rows and columns, then keep the multiple of s
        hp, wp = (h + s - 1) // s * s, (w + s - 1) // s * s
        x = _zero_pad_end(_zero_pad_end(x, 1, s - 1), 2, s - 1)[:, :hp, :wp, :]
    channels = x.shape[-1]
    if partition == 'block':
        parts = x.reshape([0, hp // s, s, wp // s, s, channels]).transpose([0, 1, 3, 2, 4, 5])
        out = attn(parts.reshape([-1, s * s, channels]))
        out = out.reshape([-1, hp // s, wp // s, s, s, channels]).transpose([0, 1, 3, 2, 4, 5])
    else:
        parts = x.reshape([0, s, hp // s, s, wp // s, channels]).transpose([0, 2, 4, 1, 3, 5])
        out = attn(parts.reshape([-1, s * s, channels]))
        out = out.reshape([-1, hp // s, wp // s, s, s, channels]).transpose([0, 3, 1, 4, 2, 5])
    out = out.reshape([-1, hp, wp, channels])
    if not (isinstance(h, int) and isinstance(w, int) and (hp, wp) == (h, w)):
        out = out[:, :h, :w, :]
    return out


class PartitionAttention(nn.Layer):
    """Block (window) or grid attention followed by an MLP, on channels-last tensors:
    x = x + drop_path(attention(LN(x))), x = x + drop_path(MLP(LN(x))).

    ``partition='block'`` attends within each non-overlapping ``size`` x ``size`` window; ``partition='grid'``
    splits the map into a ``size`` x ``size`` grid of cells and attends among the tokens at the same position of
    every cell (a dilated, global pattern). Sides that are not multiples of ``size`` are zero-padded (after the
    LayerNorm) and cropped back.

    Args:
        dim (int): Channels.
        partition (str): 'block' or 'grid'.
        size (int): Window side (block) or grid side (grid). Default: 7.
        dim_head (int): Channels per head. Default: 32.
        mlp_ratio (float): MLP hidden width / dim. Default: 4.
        drop_path (float): Stochastic depth rate. Default: 0.
    """

    def __init__(self, dim, partition='block', size=7, dim_head=32, mlp_ratio=4.0, drop_path=0.0):
        super().__init__()
        if partition not in ('block', 'grid'):
            raise ValueError(f"partition must be 'block' or 'grid', got {partition!r}")
        self.partition = partition
        self.size = size
        self.norm1 = nn.LayerNorm(dim, epsilon=LN_EPS)
        self.attn = Attention(dim, dim_head, size)
        self.drop_path = drop_path_or_identity(drop_path)
        self.norm2 = nn.LayerNorm(dim, epsilon=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=_gelu(), linear=_linear)

    def forward(self, x):
        x = x + self.drop_path(_partition_attention(self.attn, self.norm1(x), self.size, self.partition))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MaxViTBlock(nn.Layer):
    """MBConv, then block attention, then grid attention (each with its MLP).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the MBConv (2 in the first block of a stage).
        size (int): Window and grid side. Default: 7.
        dim_head (int): Channels per attention head. Default: 32.
        drop_path (float): Stochastic depth rate of the three parts. Default: 0.
    """

    def __init__(self, in_channels, out_channels, stride=1, size=7, dim_head=32, drop_path=0.0):
        super().__init__()
        self.conv = MBConv(in_channels, out_channels, stride, drop_path=drop_path)
        self.attn_block = PartitionAttention(out_channels, 'block', size, dim_head, drop_path=drop_path)
        self.attn_grid = PartitionAttention(out_channels, 'grid', size, dim_head, drop_path=drop_path)

    def forward(self, x):
        x = paddle.transpose(self.conv(x), [0, 2, 3, 1])  # NHWC for the attention parts
        x = self.attn_grid(self.attn_block(x))
        return paddle.transpose(x, [0, 3, 1, 2])


class Stem(nn.Layer):
    """3x3 conv stride 2 (bias) -> BN -> GELU -> 3x3 conv (bias)."""

    def __init__(self, in_channels, width):
        super().__init__()
        self.conv1 = _conv(in_channels, width, 3, stride=2, bias=True)
        self.norm1 = nn.BatchNorm2D(width, epsilon=BN_EPS)
        self.act1 = _gelu()
        self.conv2 = _conv(width, width, 3, bias=True)

    def forward(self, x):
        return self.conv2(self.act1(self.norm1(self.conv1(x))))


class MaxViTStage(nn.Layer):
    def __init__(self, in_channels, out_channels, depth, size, dim_head, drop_paths):
        super().__init__()
        self.blocks = nn.LayerList([
            MaxViTBlock(in_channels if i == 0 else out_channels, out_channels, 2 if i == 0 else 1, size, dim_head,
                        drop_paths[i]) for i in range(depth)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class NormMlpHead(nn.Layer):
    """Classifier: global average pool -> LayerNorm -> linear + tanh -> linear."""

    def __init__(self, in_channels, hidden, num_classes):
        super().__init__()
        self.norm = nn.LayerNorm(in_channels, epsilon=LN_EPS)
        self.pre_logits = nn.Sequential(('fc', _linear(in_channels, hidden)), ('act', nn.Tanh()))
        self.fc = _linear(hidden, num_classes)

    def forward(self, x):
        return self.fc(self.pre_logits(self.norm(paddle.flatten(F.adaptive_avg_pool2d(x, 1), 1))))


class MaxViT(nn.Layer):
    """MaxViT backbone (Tu et al., "MaxViT: Multi-Axis Vision Transformer", ECCV 2022), the official architecture.

    Args:
        embed_dims (list[int]): Widths of the four stages (multiples of ``dim_head``). Default: MaxViT-T's
            (64, 128, 256, 512).
        depths (list[int]): Blocks per stage. Default: (2, 2, 5, 2).
        stem_width (int): Width of the stem. Default: 64.
        head_hidden_size (int): Width of the classifier's pre-logits layer. Default: 512.
        window_size (int): Side of the attention windows and of the attention grid. Default: 7.
        dim_head (int): Channels per attention head. Default: 32.
        drop_path_rate (float): Stochastic depth, rising linearly over the blocks from 0 to this. Default: 0.1.
        num_classes (int): 0 (default): features only; > 0 adds the ImageNet classifier used by :meth:`classify`.
        in_channels (int): Input image channels. Default: 3.
        pretrained (str|None): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) (e.g. from
            ``tools/convert_weights.py``); its classifier is ignored when ``num_classes`` is 0. Default: None.

    Attributes:
        feat_channels (list[int]): ``embed_dims``.

    forward(x) returns the four stage outputs (NCHW) at strides 4, 8, 16, 32 (each stride-2 step rounds up).
    """

    def __init__(self, embed_dims=(64, 128, 256, 512), depths=(2, 2, 5, 2), stem_width=64, head_hidden_size=512,
                 window_size=7, dim_head=32, drop_path_rate=0.1, num_classes=0, in_channels=3, pretrained=None):
        super().__init__()
        embed_dims = check_ints('MaxViT', 'embed_dims', embed_dims, length=4)
        depths = check_ints('MaxViT', 'depths', depths, length=4)
        stem_width = check_int('MaxViT', 'stem_width', stem_width)
        head_hidden_size = check_int('MaxViT', 'head_hidden_size', head_hidden_size)
        window_size = check_int('MaxViT', 'window_size', window_size)
        dim_head = check_int('MaxViT', 'dim_head', dim_head)
        num_classes = check_int('MaxViT', 'num_classes', num_classes, minimum=0)
        in_channels = check_int('MaxViT', 'in_channels', in_channels)
        if any(d % dim_head for d in embed_dims):
            raise UserError(f"MaxViT: embed_dims {embed_dims} must be multiples of dim_head {dim_head}")
        drop_path_rate = check_number('MaxViT', 'drop_path_rate', drop_path_rate, minimum=0, maximum=1,
                                      below_max=True)
        self.feat_channels = embed_dims
        self.num_classes = num_classes
        self.stem = Stem(in_channels, stem_width)
        stages, channels = [], stem_width
        for dim, depth, rates in zip(embed_dims, depths, drop_path_rates(drop_path_rate, depths)):
            stages.append(MaxViTStage(channels, dim, depth, window_size, dim_head, rates))
            channels = dim
        self.stages = nn.LayerList(stages)
        if num_classes > 0:
            self.head = NormMlpHead(embed_dims[-1], head_hidden_size, num_classes)
        if pretrained:
            load_weights(self, pretrained, skip_prefixes=('head.',))

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def classify(self, x):
        """ImageNet logits [N, num_classes] (needs ``num_classes > 0``)."""
        if self.num_classes <= 0:
            raise UserError("MaxViT: classify() needs a model built with num_classes > 0")
        return self.head(self.forward(x)[-1])


def _variant(key, name):
    dims, depths, stem, hidden = MAXVIT_SETTINGS[key]
    timm_name = {'t': 'tiny', 's': 'small', 'b': 'base', 'l': 'large'}[key]
    return register_variant(register_backbone, MaxViT, name,
                            f"{name.replace('_', '-')}: embed_dims {dims}, depths {depths}, stem "
                            f"{stem}, head hidden {hidden} (timm maxvit_{timm_name}_tf_*). Keyword arguments go to "
                            f":class:`MaxViT`.", embed_dims=dims, depths=depths, stem_width=stem,
                            head_hidden_size=hidden)


MaxViT_T = _variant('t', 'MaxViT_T')
MaxViT_S = _variant('s', 'MaxViT_S')
MaxViT_B = _variant('b', 'MaxViT_B')
MaxViT_L = _variant('l', 'MaxViT_L')


# ----------------------------------------------------------------------------------------------------------------
# Foreign checkpoints (used by tools/convert_weights.py)


@register_converter('timm', *MAXVIT_ARCHS)
def convert_timm_weights(state, arch=None):
    """Map a timm ``maxvit_{tiny,small,base,large}_tf_*`` state dict onto ours.

    The names are the same (``stem.conv1``, ``stages.{s}.blocks.{b}.conv.*``, ``...attn_block.attn.qkv``,
    ``...attn.rel_pos.relative_position_bias_table``, ``head.pre_logits.fc`` ...): BatchNorm statistics are renamed,
    ``num_batches_tracked`` dropped and the weights of the linear layers (attention qkv/proj, MLP fc1/fc2, head
    pre_logits.fc/fc) transposed. A checkpoint without ``head.fc`` (timm's ``num_classes=0``) keeps no head at all
    (its head norm and pre-logits layer only serve the classifier). The window size follows from the bias tables
    (7 for the 224 models, 12 for ``*_tf_384``, 16 for ``*_tf_512``). timm's rw variants (``maxvit_tiny_rw_224``)
    have another layout and do not fit.

    Returns:
        tuple: (state dict in our names, constructor kwargs: ``num_classes`` from ``head.fc.bias`` (0 without it)
        and ``window_size`` where it is not 7).
    """
    linear = [k for k, v in state.items() if np.ndim(v) == 2 and k.endswith('.weight') and
              (k.startswith('head.') or '.attn.qkv.' in k or '.attn.proj.' in k or '.mlp.fc' in k)]
    out = torch_layout_to_paddle(state, linear_keys=linear)
    num_classes = int(out['head.fc.bias'].shape[0]) if 'head.fc.bias' in out else 0
    if num_classes == 0:
        out = {k: v for k, v in out.items() if not k.startswith('head.')}
    kwargs = {'num_classes': num_classes}
    tables = [v for k, v in out.items() if k.endswith('relative_position_bias_table')]
    if tables and (tables[0].shape[-1] + 1) // 2 != 7:
        kwargs['window_size'] = int((tables[0].shape[-1] + 1) // 2)
    return out, kwargs
