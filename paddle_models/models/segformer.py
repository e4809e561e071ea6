"""SegFormer: a Mix Transformer encoder and an all-MLP decoder.

Reference:
    Enze Xie, Wenhai Wang, Zhiding Yu, Anima Anandkumar, Jose M. Alvarez, Ping Luo, "SegFormer: Simple and
    Efficient Design for Semantic Segmentation with Transformers", NeurIPS 2021. https://arxiv.org/abs/2105.15203

Decoder::

    level i (strides 4..32)  linear_c{i}: per-pixel linear layer C_i -> embedding_dim, upsampled to stride 4
    fusion                   concat [c4, c3, c2, c1] -> 1x1 conv (no bias) -> BN -> ReLU (``linear_fuse``)
                             -> dropout 0.1 -> 1x1 conv to the classes (``linear_pred``) -> upsampled to the input

How it is computed: the per-level linear layer, the bilinear upsampling and the 1x1 fusion conv are all linear maps,
so ``fuse(concat(up(P_i c_i)))`` equals ``sum_i up((W_i P_i) c_i)``, where ``W_i`` is the slice of the fusion conv
that reads level i. The forward does the latter: one 1x1 conv per level with the product matrix ``W_i P_i`` at the
level's own resolution, upsampled and summed. Same function, same parameters (PaddleSeg's names and shapes), but no
4 x embedding_dim concatenation at stride 4 and no (4E x E) conv over it, so the decoder does far less work at
stride 4. Results agree with the literal form to float rounding.

Parameter names are PaddleSeg 2.8.0's (``backbone.*``, ``linear_c4.proj``, ``linear_fuse._conv``,
``linear_fuse._batch_norm``, ``linear_pred``). HuggingFace ``SegformerForSemanticSegmentation`` checkpoints
convert with :func:`convert_hf_weights` (``tools/convert_weights.py --arch SegFormer_B0 --format hf``).

mmseg's ``SegformerHead`` is a different decoder: each level goes through a 1x1 conv (no bias) + BN + ReLU (not a
plain linear layer), the levels are concatenated in the order c1, c2, c3, c4 (PaddleSeg/HuggingFace: c4 .. c1), and
the fusion conv + BN + ReLU follows. ``head_style='mmseg'`` builds that decoder (``convs.{i}``, ``fusion_conv``,
``linear_pred``); whole mmseg SegFormer checkpoints convert with :func:`convert_mmseg_weights`
(``tools/convert_weights.py --arch SegFormer_B0 --format mmseg``), which also selects this head.
"""
import re

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.backbones import mix_transformer as _mit
from paddle_models.backbones.mix_transformer import HF_EPS, MIT_SETTINGS, MMSEG_EPS, mit_from_hf, mit_from_mmseg
from paddle_models.errors import UserError
from paddle_models.layers import ConvBNReLU, resize
from paddle_models.layers.conv import folded_norm
from paddle_models.layers.cpu_training import channel_bias
from paddle_models.layers.resize import interpolation_matrix
from paddle_models.utils.spatial import feature_shape, feature_size
from paddle_models.registry import register_converter, register_model, register_variant
from paddle_models.utils.validate import check_choice, check_int
from paddle_models.weights import load_model_pretrained, torch_layout_to_paddle

__all__ = ['SegFormer', 'ExportedSegFormer', 'SegFormer_B0', 'SegFormer_B1', 'SegFormer_B2', 'SegFormer_B3',
           'SegFormer_B4', 'SegFormer_B5', 'HEAD_STYLES', 'convert_hf_weights', 'convert_mmseg_weights']

# decoder width of the released models (PaddleSeg configs, HuggingFace's decoder_hidden_size)
EMBEDDING_DIMS = {'b0': 256, 'b1': 256, 'b2': 768, 'b3': 768, 'b4': 768, 'b5': 768}
# decoders: the all-MLP head of the paper, PaddleSeg and HuggingFace; mmseg's conv + BN + ReLU head
HEAD_STYLES = ('mlp', 'mmseg')


class LevelProjection(nn.Layer):
    """The per-pixel linear layer of one level (a layer of its own for PaddleSeg's ``linear_c{i}.proj`` names)."""

    def __init__(self, in_channels, embed_dim):
        super().__init__()
        self.proj = nn.Linear(in_channels, embed_dim)

    def forward(self, x):
        """[N, C, H, W] -> [N, E, H, W] (the literal form; :class:`SegFormer` fuses it with the fusion conv)."""
        h, w = feature_size(x)
        y = self.proj(x.flatten(2).transpose([0, 2, 1]))
        return y.transpose([0, 2, 1]).reshape([0, 0, h, w])


@register_model
class SegFormer(nn.Layer):
    """SegFormer (Xie et al., NeurIPS 2021): MiT encoder + all-MLP decoder.

    Args:
        num_classes (int): Output classes.
        backbone (nn.Layer): A four-level backbone with ``feat_channels`` (a :class:`MixVisionTransformer`).
        embedding_dim (int): Decoder width (256 for B0/B1, 768 for B2-B5).
        align_corners (bool): ``align_corners`` of the bilinear upsampling. Default: False.
        dropout_prob (float): Dropout before the classifier. Default: 0.1.
        pretrained (str|None): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of the whole
            model. Default: None.
        head_style (str): 'mlp' (default: the paper's, PaddleSeg's and HuggingFace's all-MLP decoder) or 'mmseg'
            (mmseg's ``SegformerHead``: per-level 1x1 conv + BN + ReLU, levels concatenated c1..c4, then
            ``fusion_conv`` = 1x1 conv + BN + ReLU; parameters ``convs.{i}``, ``fusion_conv``, ``linear_pred``).

    forward(x) returns ``[logits]`` at the input resolution.
    """

    # the classifier layers, whose shapes follow num_classes: a whole-model `pretrained` of another class count
    # leaves them as initialised (fine-tuning, weights.load_model_pretrained)
    CLASS_PARAMS = ('linear_pred.*',)

    def __init__(self, num_classes, backbone, embedding_dim=256, align_corners=False, dropout_prob=0.1,
                 pretrained=None, head_style='mlp'):
        super().__init__()
        num_classes = check_int('SegFormer', 'num_classes', num_classes)
        embedding_dim = check_int('SegFormer', 'embedding_dim', embedding_dim)
        channels = list(getattr(backbone, 'feat_channels', []))
        if len(channels) != 4:
            raise UserError(f"SegFormer: the backbone must have 4 feat_channels, got {channels!r}")
        head_style = check_choice('SegFormer', 'head_style', head_style, HEAD_STYLES)
        self.backbone = backbone
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.align_corners = align_corners
        self.head_style = head_style
        if head_style == 'mmseg':
            self.convs = nn.LayerList([ConvBNReLU(c, embedding_dim, 1, bias_attr=False) for c in channels])
            self.fusion_conv = ConvBNReLU(4 * embedding_dim, embedding_dim, 1, bias_attr=False)
        else:
            self.linear_c4 = LevelProjection(channels[3], embedding_dim)
            self.linear_c3 = LevelProjection(channels[2], embedding_dim)
            self.linear_c2 = LevelProjection(channels[1], embedding_dim)
            self.linear_c1 = LevelProjection(channels[0], embedding_dim)
            self.linear_fuse = ConvBNReLU(4 * embedding_dim, embedding_dim, 1, bias_attr=False)
        self.dropout = nn.Dropout2D(dropout_prob) if dropout_prob > 0 else nn.Identity()
        self.linear_pred = nn.Conv2D(embedding_dim, num_classes, 1)
        if pretrained:
            load_model_pretrained(self, pretrained)

    def _mlp_decoder(self, feats):
        """The all-MLP head up to its fusion block's BN + ReLU. Each level's projection P and its slice W_slot of
        the fusion conv's input channels are one 1x1 conv (W_slot P, :func:`_level_weights`), run without its bias
        at the level's resolution; the levels are upsampled to stride 4 and summed, and their biases W_slot b added
        once (a bilinear resize keeps a per-channel constant) with ``layers/cpu_training.py: channel_bias``, whose
        backward is far faster on the CPU than a broadcasting add over the stride-4 map."""
        e = self.embedding_dim
        size = feature_size(feats[0])
        y, bias = None, 0
        for feat, projection, slot in zip(feats, (self.linear_c1, self.linear_c2, self.linear_c3, self.linear_c4),
                                          (3, 2, 1, 0)):
            weight, level_bias = _level_weights(self.linear_fuse.conv.weight, e, projection, slot)
            z = F.conv2d(feat, weight.reshape([e, -1, 1, 1]))
            y = z if y is None else y + resize(z, size, align_corners=self.align_corners)
            bias = bias + level_bias
        return self.linear_fuse.norm_act(channel_bias(y, bias))

    def _mmseg_decoder(self, feats):
        """mmseg's head: conv + BN + ReLU per level (at the level's resolution), upsampled to stride 4,
        concatenated c1..c4, fusion conv + BN + ReLU."""
        size = feature_size(feats[0])
        levels = [self.convs[0](feats[0])]
        for conv, feat in zip(self.convs[1:], feats[1:]):
            levels.append(resize(conv(feat), size, align_corners=self.align_corners))
        return self.fusion_conv(paddle.concat(levels, axis=1))

    def forward(self, x):
        c1, c2, c3, c4 = self.backbone(x)
        if self.head_style == 'mmseg':
            y = self._mmseg_decoder([c1, c2, c3, c4])
        else:
            y = self._mlp_decoder([c1, c2, c3, c4])
        logit = self.linear_pred(self.dropout(y))
        return [resize(logit, feature_size(x), align_corners=self.align_corners, final=True)]

    def to_deploy(self, target):
        """The deploy form (``layers/deploy.py``), for every target: :class:`ExportedSegFormer` with the all-MLP
        head (mmseg's head is exported as it is)."""
        return ExportedSegFormer(self) if self.head_style == 'mlp' else self


def _level_weights(fuse_weight, e, projection, slot, scale=None):
    """(W_slot P [E_out, C_i], W_slot b [E_out]): level ``slot``'s projection (weight P, bias b) followed by its
    input channels W_slot of the fusion conv weight ``fuse_weight`` [E, 4E, 1, 1], as one linear map; each output
    channel times ``scale`` where given (a folded batch norm)."""
    fuse = fuse_weight.reshape([e, 4 * e])[:, slot * e:(slot + 1) * e]  # [E_out, E]
    if scale is not None:
        fuse = fuse * scale.unsqueeze(1)
    weight = paddle.matmul(fuse, projection.proj.weight, transpose_y=True)  # [E_out, C_i]
    bias = paddle.matmul(fuse, projection.proj.bias.reshape([e, 1])).reshape([e])
    return weight, bias


def _level(fuse_weight, e, feat, projection, slot, scale=None, shift=None):
    """(W_slot P) feat + W_slot b as one 1x1 conv (:func:`_level_weights`); each output channel then times
    ``scale`` plus ``shift`` where given (a folded batch norm)."""
    weight, bias = _level_weights(fuse_weight, e, projection, slot, scale)
    return F.conv2d(feat, weight.reshape([e, -1, 1, 1]), bias if shift is None else bias + shift)


def _level_gemm(fuse_weight, e, feat, projection, slot, scale, shift=None):
    """:func:`_level` as one matrix product over the flattened map: [N, E, h * w] (plain NCHW order)."""
    weight, bias = _level_weights(fuse_weight, e, projection, slot, scale)
    bias = bias.reshape([e, 1])
    shape = feature_shape(feat)
    flat = paddle.reshape(feat, [shape[0], int(feat.shape[1]), -1])  # [N, C_i, h * w]
    return paddle.matmul(weight, flat) + (bias if shift is None else bias + shift.reshape([e, 1]))


class ExportedSegFormer(nn.Layer):
    """A :class:`SegFormer` with the all-MLP head (eval) in the form exported programs use: the same values as the
    model's forward, the decoder with ``linear_pred`` computed as :meth:`decoder` says. In legacy programs
    (tools/quantize.py's INT8, the OpenVINO engine) it also replaces three ``bilinear_interp`` ops over the
    stride-4 map, the INT8 program's largest FP32 cost (docs/measurements.md).

    Args:
        model (SegFormer): The model; its layers are shared (the fusion block's conv, norm and activation
            separately).
    """

    def __init__(self, model):
        super().__init__()
        self.backbone = model.backbone
        self.num_classes, self.embedding_dim = model.num_classes, model.embedding_dim
        self.align_corners = model.align_corners
        self.linear_c4, self.linear_c3 = model.linear_c4, model.linear_c3
        self.linear_c2, self.linear_c1 = model.linear_c2, model.linear_c1
        fuse = model.linear_fuse
        self.fuse_conv, self.fuse_norm, self.fuse_act = fuse.conv, fuse.norm, fuse.act
        self.linear_pred = model.linear_pred

    def forward(self, x):
        logit = self.decoder(self.backbone(x))
        return [resize(logit, feature_size(x), align_corners=self.align_corners, final=True)]

    def decoder(self, feats):
        """The all-MLP decoder with ``linear_pred``: the stride-4 logits, computed as follows.

        * ``linear_fuse``'s batch norm (running statistics) is folded into the per-level 1x1 convs: its scale
          into every level's weights, its shift into level 1's bias; no separate normalisation over the stride-4
          map (under oneDNN it ran as its own op on plain NCHW).
        * the three coarser levels are upsampled and summed by one matrix product: with ``up(z) = A z B^T`` (the
          bilinear matrices of :func:`~paddle_models.layers.resize.interpolation_matrix`), ``sum_i A_i z_i B_i^T``
          is ``[A_2 A_3 A_4]`` times the levels' column-interpolated rows ``z_i B_i^T`` stacked; the columns are
          interpolated first, on the small maps, and the stride-4 map is written once instead of three times.
        * at stride 4, level 1's conv, the sum, the ReLU and ``linear_pred`` are matrix products and elementwise ops
          over [N, channels, H * W] in plain NCHW order, which the matrix-product upsampling writes; as 1x1 convs
          they made oneDNN convert the 256-channel stride-4 map between its plain and channels-last layouts (a
          copy as costly as the convs themselves), and the final upsampling then needed the plain layout again.
        """
        scale, shift = folded_norm(self.fuse_conv, self.fuse_norm)  # (its conv has no bias)
        c1, c2, c3, c4 = feats
        e = self.embedding_dim
        fuse_weight = self.fuse_conv.weight
        out_shape = feature_shape(c1)  # (not of the level conv's output: a second reader keeps the add unfused)
        y = _level_gemm(fuse_weight, e, c1, self.linear_c1, 3, scale, shift)  # [N, E, H * W]
        h, w = out_shape[2], out_shape[3]
        rows, stacked = [], []
        for feat, projection, slot in ((c2, self.linear_c2, 2), (c3, self.linear_c3, 1), (c4, self.linear_c4, 0)):
            z = _level(fuse_weight, e, feat, projection, slot, scale)  # [N, E, h_i, w_i]
            shape = feature_shape(z)
            cols = interpolation_matrix(shape[3], w, self.align_corners, z.dtype)  # [W, w_i]
            z = paddle.matmul(paddle.reshape(z, [-1, shape[3]]), cols, transpose_y=True)  # [N * E * h_i, W]
            stacked.append(paddle.reshape(z, [-1, shape[2], w]))  # [N * E, h_i, W]
            rows.append(interpolation_matrix(shape[2], h, self.align_corners, z.dtype))  # [H, h_i]
        up = paddle.matmul(paddle.concat(rows, axis=1), paddle.concat(stacked, axis=1))  # [N * E, H, W]
        y = self.fuse_act(y + paddle.reshape(up, [out_shape[0], e, -1]))
        k = self.num_classes
        logit = paddle.matmul(self.linear_pred.weight.reshape([k, e]), y) + self.linear_pred.bias.reshape([k, 1])
        return paddle.reshape(logit, [out_shape[0], k, h, w])


def _variant(name):
    def build(num_classes, embedding_dim=EMBEDDING_DIMS[name], align_corners=False, dropout_prob=0.1,
              pretrained=None, head_style='mlp', **backbone_kwargs):
        backbone = getattr(_mit, f'MixVisionTransformer_{name.upper()}')(**backbone_kwargs)
        return SegFormer(num_classes, backbone, embedding_dim=embedding_dim, align_corners=align_corners,
                         dropout_prob=dropout_prob, pretrained=pretrained, head_style=head_style)

    return register_variant(register_model, SegFormer, f'SegFormer_{name.upper()}',
                            (f"SegFormer-{name.upper()}: MiT-{name.upper()} + decoder of width "
                             f"{EMBEDDING_DIMS[name]}. ``num_classes``, ``embedding_dim``, ``align_corners``, "
                             f"``dropout_prob``, ``pretrained``, ``head_style`` go to :class:`SegFormer`, other "
                             f"keyword arguments to the backbone."),
                            build=build, rest_to=getattr(_mit, f'MixVisionTransformer_{name.upper()}'))


SegFormer_B0 = _variant('b0')
SegFormer_B1 = _variant('b1')
SegFormer_B2 = _variant('b2')
SegFormer_B3 = _variant('b3')
SegFormer_B4 = _variant('b4')
SegFormer_B5 = _variant('b5')
_ARCHS = ('SegFormer_B0', 'SegFormer_B1', 'SegFormer_B2', 'SegFormer_B3', 'SegFormer_B4', 'SegFormer_B5')


# ----------------------------------------------------------------------------------------------------------------
# Foreign checkpoints (used by tools/convert_weights.py)


def _mit_size(checkpoint, dims, depths, arch):
    """The MiT size (``'b0'`` ... ``'b5'``) with these encoder widths and depths; a one-line error naming the
    checkpoint kind when none has them or when ``arch`` (a ``SegFormer_B*`` name, if given) is another size."""
    for name, (want_dims, want_depths) in MIT_SETTINGS.items():
        if dims == want_dims and depths == want_depths:
            if arch and arch.startswith('SegFormer_') and arch != f'SegFormer_{name.upper()}':
                raise UserError(f"{checkpoint} checkpoint is SegFormer_{name.upper()}, not {arch}")
            return name
    raise UserError(f"{checkpoint} checkpoint: encoder widths {dims} / depths {depths} match no MiT size B0-B5")


def _stage_depths(state, pattern):
    """Blocks per encoder stage: the distinct block numbers of the keys matching ``pattern`` (with ``{i}`` for the
    stage and one group for the block number)."""
    return [len({m[1] for k in state for m in [re.match(pattern.format(i=i), k)] if m}) for i in range(4)]


def _hf_size(state, arch):
    """MiT size of a HuggingFace state dict from its widths and depths (see ``_mit_size``)."""
    dims = [state.get(f'segformer.encoder.layer_norm.{i}.weight', np.zeros(0)).shape[0] for i in range(4)]
    return _mit_size('HuggingFace', dims, _stage_depths(state, r'segformer\.encoder\.block\.{i}\.(\d+)\.'), arch)


@register_converter('hf', *_ARCHS)
def convert_hf_weights(state, arch=None):
    """Map a HuggingFace ``SegformerForSemanticSegmentation`` state dict onto our SegFormer.

    ``segformer.encoder.*`` -> ``backbone.*`` (see :func:`~paddle_models.backbones.mix_transformer.mit_from_hf`);
    ``decode_head.linear_c.{i}.proj`` -> ``linear_c{i+1}.proj``; ``decode_head.linear_fuse`` ->
    ``linear_fuse._conv``; ``decode_head.batch_norm`` -> ``linear_fuse._batch_norm``; ``decode_head.classifier`` ->
    ``linear_pred``.

    Args:
        state (dict[str, numpy.ndarray]): The checkpoint's tensors.
        arch (str|None): Target architecture (``SegFormer_B0`` ...); its size must match the checkpoint's.

    Returns:
        tuple: (state dict in our names, {'num_classes', 'embedding_dim', and HuggingFace's LayerNorm epsilons}).
    """
    if 'decode_head.classifier.weight' not in state:
        raise UserError("HuggingFace checkpoint has no decode_head.classifier.weight: not a "
                        "SegformerForSemanticSegmentation state dict (for SegformerModel use --arch "
                        "MixVisionTransformer_B*)")
    _hf_size(state, arch)
    out = {'backbone.' + k: v for k, v in mit_from_hf(state, 'segformer.encoder.').items()}
    head = {}
    for key, value in state.items():
        if not key.startswith('decode_head.'):
            if not key.startswith('segformer.encoder.'):
                head[key] = value  # unknown: check_fit names it
            continue
        rest = key[len('decode_head.'):]
        m = re.match(r'linear_c\.(\d+)\.proj\.(weight|bias)$', rest)
        if m:
            head[f'linear_c{int(m[1]) + 1}.proj.{m[2]}'] = value
        elif rest.startswith('linear_fuse.'):
            head['linear_fuse._conv.' + rest[len('linear_fuse.'):]] = value
        elif rest.startswith('batch_norm.'):
            head['linear_fuse._batch_norm.' + rest[len('batch_norm.'):]] = value
        elif rest.startswith('classifier.'):
            head['linear_pred.' + rest[len('classifier.'):]] = value
        else:
            head[key] = value
    linear = [k for k in head if re.match(r'linear_c\d\.proj\.weight$', k)]
    out.update(torch_layout_to_paddle(head, linear_keys=linear))
    kwargs = {'num_classes': int(state['decode_head.classifier.weight'].shape[0]),
              'embedding_dim': int(state['decode_head.classifier.weight'].shape[1])}
    kwargs.update(HF_EPS)
    return out, kwargs


def _mmseg_size(state, arch):
    """MiT size of an mmseg SegFormer checkpoint from its widths and depths (see ``_mit_size``)."""
    dims = [state.get(f'backbone.layers.{i}.0.projection.weight', np.zeros(0)).shape[0] for i in range(4)]
    return _mit_size('mmseg', dims, _stage_depths(state, r'backbone\.layers\.{i}\.1\.(\d+)\.'), arch)


@register_converter('mmseg', *_ARCHS)
def convert_mmseg_weights(state, arch=None):
    """Map a whole mmseg SegFormer checkpoint (``backbone.layers.*`` MiT + ``decode_head.*`` SegformerHead) onto our
    SegFormer with ``head_style='mmseg'``.

    ``backbone.*`` -> ``backbone.*`` (see :func:`~paddle_models.backbones.mix_transformer.mit_from_mmseg`);
    ``decode_head.convs.{i}.conv`` / ``.bn`` -> ``convs.{i}._conv`` / ``._batch_norm``; ``decode_head.fusion_conv.
    conv`` / ``.bn`` -> ``fusion_conv._conv`` / ``._batch_norm``; ``decode_head.conv_seg`` -> ``linear_pred``.

    Args:
        state (dict[str, numpy.ndarray]): The checkpoint's tensors.
        arch (str|None): Target architecture (``SegFormer_B0`` ...); its size must match the checkpoint's.

    Returns:
        tuple: (state dict in our names, {'num_classes', 'embedding_dim', 'head_style': 'mmseg', and mmseg's
        LayerNorm epsilons}).
    """
    for key in ('decode_head.conv_seg.weight', 'decode_head.fusion_conv.conv.weight'):
        if key not in state:
            raise UserError(f"mmseg checkpoint has no {key}: not a SegFormer (SegformerHead) checkpoint (for a "
                            f"backbone use --arch MixVisionTransformer_B*)")
    _mmseg_size(state, arch)
    out = {'backbone.' + k: v for k, v in mit_from_mmseg(state, 'backbone.').items()}
    head = {}
    for key, value in state.items():
        if key.startswith('backbone.'):
            continue
        new = key
        m = re.match(r'decode_head\.(convs\.\d+|fusion_conv)\.(conv|bn)\.(.+)$', key)
        if m:
            new = f"{m[1]}.{'_conv' if m[2] == 'conv' else '_batch_norm'}.{m[3]}"
        elif key.startswith('decode_head.conv_seg.'):
            new = 'linear_pred.' + key[len('decode_head.conv_seg.'):]
        head[new] = value  # anything else keeps its name: check_fit reports it
    out.update(torch_layout_to_paddle(head))
    kwargs = {'num_classes': int(state['decode_head.conv_seg.weight'].shape[0]),
              'embedding_dim': int(state['decode_head.conv_seg.weight'].shape[1]), 'head_style': 'mmseg'}
    kwargs.update(MMSEG_EPS)
    return out, kwargs
