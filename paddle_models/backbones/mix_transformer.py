"""MiT: the Mix Transformer encoder of SegFormer (hierarchical, overlapping patch embeddings, efficient attention).

Reference:
    Enze Xie, Wenhai Wang, Zhiding Yu, Anima Anandkumar, Jose M. Alvarez, Ping Luo, "SegFormer: Simple and
    Efficient Design for Semantic Segmentation with Transformers", NeurIPS 2021. https://arxiv.org/abs/2105.15203

Shape of the network (four stages, strides 4, 8, 16, 32)::

    stage i   overlapping patch embedding: conv 7x7 stride 4 (stage 1) or 3x3 stride 2, flatten to tokens, LayerNorm
              depth_i blocks on the tokens [N, H*W, C]:
                  x = x + drop_path(attention(LN(x)))
                  x = x + drop_path(mix_ffn(LN(x)))
              LayerNorm, tokens back to an [N, C, H, W] map (the stage output)
    attention(u)  multi-head attention; queries from every token, keys/values from the tokens after a
                  ``sr_ratio`` x ``sr_ratio`` stride-``sr_ratio`` conv + LayerNorm ("efficient self-attention",
                  the sequence shrinks by sr_ratio^2); q, kv and proj are linear layers
    mix_ffn(u)    fc1 -> 3x3 depthwise conv on the map -> GELU -> fc2

Free spatial size: the token <-> map reshapes take H and W from the runtime shape of the patch embedding (a python
int in dynamic mode, a shape tensor in a traced graph), batch and sequence length are copied (0) or inferred (-1),
so an exported program accepts any input size.

Parameter names are PaddleSeg 2.8.0's (``patch_embed1.proj``, ``block1.0.attn.q``, ``attn.kv``, ``attn.sr``,
``mlp.dwconv.dwconv``, ``norm1`` ...), so its checkpoints load unchanged. HuggingFace ``SegformerModel`` and mmseg
MiT checkpoints convert with :func:`convert_hf_weights` / :func:`convert_mmseg_weights`.

LayerNorm epsilons differ between the releases: PaddleSeg (and the SegFormer release) use 1e-6 in the blocks and the
stage norms and 1e-5 in the patch embeddings and the reduction norm; HuggingFace uses 1e-5 for the stage norms;
mmseg uses 1e-6 everywhere. ``block_eps``, ``stage_eps`` and ``embed_eps`` select them; the converters return the
ones their checkpoint was trained with.
"""
import re

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.errors import UserError
from paddle_models.layers.conv_init import fan_out_conv
from paddle_models.layers.drop_path import drop_path_or_identity
from paddle_models.layers.stages import build_stages, stage_layers
from paddle_models.registry import register_backbone, register_converter, register_variant
from paddle_models.utils.spatial import feature_size
from paddle_models.utils.validate import check_int, check_ints, check_number
from paddle_models.weights import load_weights, torch_layout_to_paddle

__all__ = ['MixVisionTransformer', 'MixVisionTransformer_B0', 'MixVisionTransformer_B1', 'MixVisionTransformer_B2',
           'MixVisionTransformer_B3', 'MixVisionTransformer_B4', 'MixVisionTransformer_B5', 'MIT_SETTINGS',
           'MIT_ARCHS', 'convert_hf_weights', 'convert_mmseg_weights']

# widths and depths of the six released sizes (heads [1, 2, 5, 8], MLP ratio 4, reductions [8, 4, 2, 1] for all)
MIT_SETTINGS = {
    'b0': ([32, 64, 160, 256], [2, 2, 2, 2]),
    'b1': ([64, 128, 320, 512], [2, 2, 2, 2]),
    'b2': ([64, 128, 320, 512], [3, 4, 6, 3]),
    'b3': ([64, 128, 320, 512], [3, 4, 18, 3]),
    'b4': ([64, 128, 320, 512], [3, 8, 27, 3]),
    'b5': ([64, 128, 320, 512], [3, 6, 40, 3]),
}
_HEADS, _MLP_RATIOS, _SR_RATIOS = [1, 2, 5, 8], [4, 4, 4, 4], [8, 4, 2, 1]
MIT_ARCHS = tuple(f'MixVisionTransformer_{name.upper()}' for name in MIT_SETTINGS)  # the registered variants


def _linear(in_features, out_features, bias=True):
    """nn.Linear with weights ~ truncated N(0, 0.02) and zero bias (the release's init)."""
    return nn.Linear(in_features, out_features,
                     weight_attr=paddle.ParamAttr(initializer=nn.initializer.TruncatedNormal(std=0.02)),
                     bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)) if bias else False)


def _tokens(x):
    """[N, C, H, W] -> [N, H*W, C]."""
    return x.flatten(2).transpose([0, 2, 1])


def _map(tokens, channels, h, w):
    """[N, H*W, C] -> [N, C, H, W] (``h``, ``w`` ints or shape tensors; the batch is copied from the input)."""
    return tokens.transpose([0, 2, 1]).reshape([0, channels, h, w])


class OverlapPatchEmbed(nn.Layer):
    """Strided conv with overlapping windows (padding k // 2), flattened to tokens, then LayerNorm.

    Args:
        in_channels (int): Input channels.
        embed_dim (int): Output channels.
        patch_size (int): Kernel size (7 in stage 1, 3 after).
        stride (int): Stride (4 in stage 1, 2 after).
        epsilon (float): LayerNorm epsilon.

    forward(x) returns (tokens [N, H*W, C], H, W).
    """

    def __init__(self, in_channels, embed_dim, patch_size, stride, epsilon=1e-5):
        super().__init__()
        self.proj = fan_out_conv(in_channels, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, epsilon=epsilon)

    def forward(self, x):
        x = self.proj(x)
        h, w = feature_size(x)  # (no reorder of the conv's output under oneDNN: utils/spatial.py)
        return self.norm(_tokens(x)), h, w


class EfficientAttention(nn.Layer):
    """Multi-head attention whose keys and values come from a spatially reduced copy of the tokens.

    Args:
        dim (int): Channels.
        num_heads (int): Heads (``dim`` must divide by it).
        sr_ratio (int): Kernel and stride of the reduction conv; 1 attends to every token.
        qkv_bias (bool): Biases on the query and key/value projections. Default: True.
        epsilon (float): Epsilon of the reduction LayerNorm.
        attn_drop (float): Dropout on the attention weights. Default: 0.
        proj_drop (float): Dropout after the output projection. Default: 0.
    """

    def __init__(self, dim, num_heads, sr_ratio, qkv_bias=True, epsilon=1e-5, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        if dim % num_heads:
            raise UserError(f"MixVisionTransformer: width {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.sr_ratio = sr_ratio
        self.q = _linear(dim, dim, bias=qkv_bias)
        self.kv = _linear(dim, 2 * dim, bias=qkv_bias)  # output: [keys | values]
        self.proj = _linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop) if attn_drop > 0 else nn.Identity()
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()
        if sr_ratio > 1:
            self.sr = fan_out_conv(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, epsilon=epsilon)

    def forward(self, x, h, w):
        # queries scaled before the product: [L, d] values instead of the larger [L, L'] attention matrix
        q = (self.q(x) * self.scale).reshape([0, -1, self.num_heads, self.head_dim]).transpose([0, 2, 1, 3])
        if self.sr_ratio > 1:
            x = self.norm(_tokens(self.sr(_map(x, self.dim, h, w))))
        kv = self.kv(x).reshape([0, -1, 2, self.num_heads, self.head_dim]).transpose([2, 0, 3, 1, 4])
        attn = F.softmax(paddle.matmul(q, kv[0], transpose_y=True), axis=-1)
        out = paddle.matmul(self.attn_drop(attn), kv[1])
        out = out.transpose([0, 2, 1, 3]).reshape([0, 0, self.dim])
        return self.proj_drop(self.proj(out))


class DWConv(nn.Layer):
    """3x3 depthwise conv applied to tokens (reshaped to the map and back); its own layer for the parameter names
    (``mlp.dwconv.dwconv``)."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.dwconv = fan_out_conv(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x, h, w):
        return _tokens(self.dwconv(_map(x, self.dim, h, w)))


class MixFFN(nn.Layer):
    """fc1 -> depthwise 3x3 conv -> GELU -> fc2 (the conv gives the positional information MiT has no encoding for).

    Args:
        dim (int): Input and output channels.
        hidden_dim (int): Hidden channels.
        drop (float): Dropout after the activation and after fc2. Default: 0.
    """

    def __init__(self, dim, hidden_dim, drop=0.0):
        super().__init__()
        self.fc1 = _linear(dim, hidden_dim)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = _linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x, h, w):
        x = self.drop(self.act(self.dwconv(self.fc1(x), h, w)))
        return self.drop(self.fc2(x))

    def to_deploy(self, target):
        """The deploy form (``layers/deploy.py``), for every target: :class:`MixFFNMapForm`."""
        return MixFFNMapForm(self)


def _linear_as_conv(linear):
    """A 1x1 ``nn.Conv2D`` computing ``linear`` per pixel of an NCHW map (weights transposed once, here)."""
    in_features, out_features = linear.weight.shape
    conv = nn.Conv2D(in_features, out_features, 1, bias_attr=None if linear.bias is not None else False)
    conv.weight.set_value(linear.weight.transpose([1, 0]).reshape([out_features, in_features, 1, 1]))
    if linear.bias is not None:
        conv.bias.set_value(linear.bias)
    return conv


class MixFFNMapForm(nn.Layer):
    """A :class:`MixFFN` (eval) with fc1 and fc2 as 1x1 convolutions on the map: the same values, but the tokens
    become a map once, at ``dim`` channels, and everything up to fc2 stays in oneDNN's blocked conv layout. The
    literal form turns the 4x wider hidden tokens into a map and back around the depthwise conv, each a transpose
    plus a layout conversion. Exported programs use it (PIR and legacy: in tools/quantize.py's INT8 program fc1 and
    fc2 then run as INT8 convolutions).

    Args:
        ffn (MixFFN): The block; its depthwise conv and activation are shared, fc1 and fc2 become 1x1 convs.
    """

    def __init__(self, ffn):
        super().__init__()
        self.fc1 = _linear_as_conv(ffn.fc1)
        self.dwconv = ffn.dwconv.dwconv
        self.act = ffn.act
        self.fc2 = _linear_as_conv(ffn.fc2)

    def forward(self, x, h, w):
        y = self.act(self.dwconv(self.fc1(_map(x, x.shape[-1], h, w))))
        return _tokens(self.fc2(y))


class MiTBlock(nn.Layer):
    """LN -> efficient attention and LN -> Mix-FFN, each with stochastic depth and a residual connection.

    Args:
        dim (int): Channels.
        num_heads (int): Attention heads.
        mlp_ratio (float): Hidden channels of the FFN / dim.
        sr_ratio (int): Key/value reduction of the attention.
        drop_path (float): Stochastic depth rate of this block.
        block_eps (float): Epsilon of norm1/norm2.
        embed_eps (float): Epsilon of the reduction LayerNorm.
        drop (float): Dropout rate after the projections. Default: 0.
        attn_drop (float): Dropout on the attention weights. Default: 0.
    """

    def __init__(self, dim, num_heads, mlp_ratio, sr_ratio, drop_path=0.0, block_eps=1e-6, embed_eps=1e-5,
                 drop=0.0, attn_drop=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, epsilon=block_eps)
        self.attn = EfficientAttention(dim, num_heads, sr_ratio, epsilon=embed_eps, attn_drop=attn_drop,
                                       proj_drop=drop)
        self.drop_path = drop_path_or_identity(drop_path)
        self.norm2 = nn.LayerNorm(dim, epsilon=block_eps)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x, h, w):
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixVisionTransformer(nn.Layer):
    """Mix Transformer encoder (Xie et al., "SegFormer", NeurIPS 2021).

    Args:
        embed_dims (list[int]): Channels of the four stages. Default: MiT-B0's [32, 64, 160, 256].
        depths (list[int]): Blocks per stage. Default: [2, 2, 2, 2].
        num_heads (list[int]): Attention heads per stage. Default: [1, 2, 5, 8].
        mlp_ratios (list[int]): FFN expansion per stage. Default: [4, 4, 4, 4].
        sr_ratios (list[int]): Key/value reduction per stage. Default: [8, 4, 2, 1].
        in_channels (int): Input image channels. Default: 3.
        drop_rate (float): Dropout after the attention/FFN projections. Default: 0.
        attn_drop_rate (float): Dropout on the attention weights. Default: 0.
        drop_path_rate (float): Stochastic depth, rising linearly from 0 at the first block to this value at the
            last. Default: 0.1.
        block_eps (float): LayerNorm epsilon inside the blocks. Default: 1e-6.
        stage_eps (float): Epsilon of the stage output LayerNorms ``norm1``..``norm4``. Default: 1e-6.
        embed_eps (float): Epsilon of the patch-embedding and reduction LayerNorms. Default: 1e-5.
        pretrained (str|None): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of this backbone.
            Default: None.

    Attributes:
        feat_channels (list[int]): ``embed_dims``.

    forward(x) returns the four stage outputs [N, C_i, H_i, W_i] at strides 4, 8, 16, 32 (ceil division).
    """

    def __init__(self, embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), num_heads=(1, 2, 5, 8),
                 mlp_ratios=(4, 4, 4, 4), sr_ratios=(8, 4, 2, 1), in_channels=3, drop_rate=0.0, attn_drop_rate=0.0,
                 drop_path_rate=0.1, block_eps=1e-6, stage_eps=1e-6, embed_eps=1e-5, pretrained=None):
        super().__init__()
        owner = 'MixVisionTransformer'
        embed_dims = check_ints(owner, 'embed_dims', embed_dims, length=4)
        depths = check_ints(owner, 'depths', depths, length=4)
        num_heads = check_ints(owner, 'num_heads', num_heads, length=4)
        mlp_ratios = check_ints(owner, 'mlp_ratios', mlp_ratios, length=4)
        sr_ratios = check_ints(owner, 'sr_ratios', sr_ratios, length=4)
        in_channels = check_int(owner, 'in_channels', in_channels)
        drop_rate, attn_drop_rate, drop_path_rate = (
            check_number(owner, key, value, minimum=0, maximum=1, below_max=True)
            for key, value in (('drop_rate', drop_rate), ('attn_drop_rate', attn_drop_rate),
                               ('drop_path_rate', drop_path_rate)))
        self.feat_channels = embed_dims
        self.depths = depths
        build_stages(self, depths, drop_path_rate,
                     embed=lambda i: OverlapPatchEmbed(in_channels if i == 0 else embed_dims[i - 1], embed_dims[i],
                                                       patch_size=7 if i == 0 else 3, stride=4 if i == 0 else 2,
                                                       epsilon=embed_eps),
                     block=lambda i, rate: MiTBlock(embed_dims[i], num_heads[i], mlp_ratios[i], sr_ratios[i],
                                                    drop_path=rate, block_eps=block_eps, embed_eps=embed_eps,
                                                    drop=drop_rate, attn_drop=attn_drop_rate),
                     norm=lambda i: nn.LayerNorm(embed_dims[i], epsilon=stage_eps))
        if pretrained:
            load_weights(self, pretrained)

    def forward(self, x):
        outs = []
        for (embed, blocks, norm), channels in zip(stage_layers(self), self.feat_channels):
            x, h, w = embed(x)
            for block in blocks:
                x = block(x, h, w)
            x = _map(norm(x), channels, h, w)
            outs.append(x)
        return outs


def _variant(name):
    dims, depths = MIT_SETTINGS[name]
    return register_variant(register_backbone, MixVisionTransformer, f'MixVisionTransformer_{name.upper()}',
                            f"MiT-{name.upper()}: embed_dims {dims}, depths {depths}, heads {_HEADS}, sr_ratios "
                            f"{_SR_RATIOS}. Keyword arguments go to :class:`MixVisionTransformer`.",
                            embed_dims=dims, depths=depths)


MixVisionTransformer_B0 = _variant('b0')
MixVisionTransformer_B1 = _variant('b1')
MixVisionTransformer_B2 = _variant('b2')
MixVisionTransformer_B3 = _variant('b3')
MixVisionTransformer_B4 = _variant('b4')
MixVisionTransformer_B5 = _variant('b5')


# ----------------------------------------------------------------------------------------------------------------
# Foreign checkpoints (used by tools/convert_weights.py and by the SegFormer converters)

# HuggingFace SegformerModel block names -> ours (after ``encoder.block.{i}.{j}.``)
_HF_BLOCK = [
    ('layer_norm_1.', 'norm1.'), ('layer_norm_2.', 'norm2.'),
    ('attention.self.query.', 'attn.q.'), ('attention.self.sr.', 'attn.sr.'),
    ('attention.self.layer_norm.', 'attn.norm.'), ('attention.output.dense.', 'attn.proj.'),
    ('mlp.dense1.', 'mlp.fc1.'), ('mlp.dwconv.dwconv.', 'mlp.dwconv.dwconv.'), ('mlp.dense2.', 'mlp.fc2.'),
]
HF_EPS = {'block_eps': 1e-6, 'stage_eps': 1e-5, 'embed_eps': 1e-5}
MMSEG_EPS = {'block_eps': 1e-6, 'stage_eps': 1e-6, 'embed_eps': 1e-6}


def mit_from_hf(state, prefix='encoder.'):
    """Our MiT names (PaddleSeg layout) for the ``{prefix}...`` tensors of a HuggingFace Segformer state dict.

    Keys outside ``prefix`` are left out. Linear weights are transposed; ``key`` and ``value`` are stacked into
    ``kv`` (keys first).
    """
    out, pending = {}, {}
    for key, value in ((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix)):
        m = re.match(r'patch_embeddings\.(\d+)\.(proj|layer_norm)\.(weight|bias)$', key)
        if m:
            out[f"patch_embed{int(m[1]) + 1}.{'proj' if m[2] == 'proj' else 'norm'}.{m[3]}"] = value
            continue
        m = re.match(r'layer_norm\.(\d+)\.(weight|bias)$', key)
        if m:
            out[f'norm{int(m[1]) + 1}.{m[2]}'] = value
            continue
        m = re.match(r'block\.(\d+)\.(\d+)\.(.*)$', key)
        if not m:
            out[prefix + key] = value  # unknown: check_fit names it
            continue
        head, rest = f'block{int(m[1]) + 1}.{m[2]}.', m[3]
        kv = re.match(r'attention\.self\.(key|value)\.(weight|bias)$', rest)
        if kv:
            pending.setdefault(head + 'attn.kv.' + kv[2], {})[kv[1]] = value
            continue
        for old, new in _HF_BLOCK:
            if rest.startswith(old):
                rest = new + rest[len(old):]
                break
        else:
            rest = prefix + key  # unknown
        out[head + rest if not rest.startswith(prefix) else rest] = value
    for key, parts in pending.items():
        if set(parts) != {'key', 'value'}:
            raise UserError(f"HuggingFace checkpoint has only the {next(iter(parts))} half of {key}")
        out[key] = np.concatenate([parts['key'], parts['value']], axis=0)
    linear = [k for k, v in out.items() if re.search(r'\.(attn\.(q|kv|proj)|mlp\.fc[12])\.weight$', k)]
    return torch_layout_to_paddle(out, linear_keys=linear)


@register_converter('hf', *MIT_ARCHS)
def convert_hf_weights(state, arch=None):
    """Map a HuggingFace ``SegformerModel`` (``encoder.*``) or the encoder of ``SegformerForSemanticSegmentation``
    / ``SegformerForImageClassification`` (``segformer.encoder.*``) onto our MiT; heads are left out.

    Returns:
        tuple: (state dict in our names, HuggingFace's LayerNorm epsilons as keyword arguments).
    """
    prefix = 'segformer.encoder.' if any(k.startswith('segformer.encoder.') for k in state) else 'encoder.'
    return mit_from_hf(state, prefix), dict(HF_EPS)


def mit_from_mmseg(state, prefix='backbone.'):
    """Our MiT names for the tensors of an mmseg ``MixVisionTransformer`` (``{prefix}layers.{i}.0`` patch embedding,
    ``.1.{j}`` blocks with ``nn.MultiheadAttention`` and conv FFNs, ``.2`` stage norm). Keys outside ``prefix`` are
    left out; an empty prefix takes every key (mmseg's ImageNet ``mit_b*.pth`` files)."""
    out = {}
    for key, value in ((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix)):
        value = np.asarray(value)
        m = re.match(r'layers\.(\d+)\.(\d+)\.(.*)$', key)
        if not m:
            out[prefix + key] = value
            continue
        stage, part, rest = int(m[1]) + 1, int(m[2]), m[3]
        if part == 0:
            rest = rest.replace('projection.', 'proj.')
            out[f'patch_embed{stage}.{rest}'] = value
            continue
        if part == 2:
            out[f'norm{stage}.{rest}'] = value
            continue
        b = re.match(r'(\d+)\.(.*)$', rest)
        head, rest = f'block{stage}.{b[1]}.', b[2]
        if rest in ('attn.attn.in_proj_weight', 'attn.attn.in_proj_bias'):
            q, k, v = np.split(value, 3, axis=0)
            kind = 'weight' if rest.endswith('weight') else 'bias'
            out[head + 'attn.q.' + kind] = q.T if kind == 'weight' else q
            kvv = np.concatenate([k, v], axis=0)
            out[head + 'attn.kv.' + kind] = kvv.T if kind == 'weight' else kvv
            continue
        if rest.startswith('attn.attn.out_proj.'):
            kind = rest.rsplit('.', 1)[1]
            out[head + 'attn.proj.' + kind] = value.T if kind == 'weight' else value
            continue
        if rest.startswith('ffn.layers.'):
            idx, kind = rest[len('ffn.layers.'):].split('.')
            target = {'0': 'mlp.fc1.', '1': 'mlp.dwconv.dwconv.', '4': 'mlp.fc2.'}.get(idx)
            if target is None:
                out[prefix + key] = value
                continue
            if idx in ('0', '4') and kind == 'weight':
                value = value.reshape(value.shape[0], value.shape[1]).T  # 1x1 conv [out, in, 1, 1] -> [in, out]
            out[head + target + kind] = value
            continue
        rest = rest.replace('attn.sr.', 'attn.sr.').replace('attn.norm.', 'attn.norm.')
        out[head + rest] = value
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


@register_converter('mmseg', *MIT_ARCHS)
def convert_mmseg_weights(state, arch=None):
    """Map the MiT of an mmseg SegFormer checkpoint (``backbone.layers.*``) or mmseg's ImageNet ``mit_b*.pth``
    (``layers.*``) onto our MiT; the decode head is left out.

    Returns:
        tuple: (state dict in our names, mmseg's LayerNorm epsilons as keyword arguments).
    """
    prefix = 'backbone.' if any(k.startswith('backbone.') for k in state) else ''
    return mit_from_mmseg(state, prefix), dict(MMSEG_EPS)
