"""SegNeXt: the MSCAN encoder and the light Hamburger (NMF) decoder.

Reference:
    Meng-Hao Guo, Cheng-Ze Lu, Qibin Hou, Zhengning Liu, Ming-Ming Cheng, Shi-Min Hu, "SegNeXt: Rethinking
    Convolutional Attention Design for Semantic Segmentation", NeurIPS 2022. https://arxiv.org/abs/2209.08575

The decoder reads backbone levels 2-4 (strides 8, 16, 32), see :class:`paddle_models.layers.ham.LightHamHead`;
logits come at stride 8 and are upsampled to the input.

Determinism: with ``RAND_INIT`` (the default) the NMF draws random bases on every forward, as PaddleSeg and mmseg do,
so two eval forwards of the same image differ slightly unless the RNG is seeded. ``inference_bases='fixed'`` makes
eval forwards start from fixed bases; exported programs use them by default (``'auto'``). The fixed bases are not in
the state dict: PaddleSeg checkpoints load unchanged whichever mode is chosen.

Parameter names are PaddleSeg 2.8.0's (``backbone.*``, ``decode_head.squeeze._conv``, ``decode_head.hamburger.
ham_in``, ``...ham_out._group_norm``, ``decode_head.align``, ``decode_head.conv_seg``). mmseg checkpoints convert
with :func:`convert_mmseg_weights` (``tools/convert_weights.py --arch SegNeXt_T --format mmseg``).
"""
import paddle.nn as nn

from paddle_models.backbones import mscan as _mscan
from paddle_models.backbones.mscan import mscan_from_mmseg
from paddle_models.errors import UserError
from paddle_models.layers.features import backbone_channels
from paddle_models.layers.ham import LightHamHead
from paddle_models.layers.resize import resize
from paddle_models.registry import register_converter, register_model, register_variant
from paddle_models.utils.spatial import spatial_size
from paddle_models.utils.validate import check_int
from paddle_models.weights import load_model_pretrained, torch_layout_to_paddle

__all__ = ['SegNeXt', 'SegNeXt_T', 'SegNeXt_S', 'SegNeXt_B', 'SegNeXt_L', 'DECODER_SETTINGS',
           'convert_mmseg_weights']

# the released decoders: channels, ham_channels, MD_R
DECODER_SETTINGS = {'t': (256, 256, 16), 's': (256, 256, 16), 'b': (512, 512, 64), 'l': (1024, 1024, 64)}


@register_model
class SegNeXt(nn.Layer):
    """SegNeXt (Guo et al., NeurIPS 2022): MSCAN backbone + light Hamburger head.

    Args:
        backbone (nn.Layer): A backbone with ``feat_channels`` (an :class:`~paddle_models.backbones.mscan.MSCAN`).
        decoder_cfg (dict): Arguments of :class:`~paddle_models.layers.ham.LightHamHead` (``channels``,
            ``ham_channels``, ``num_groups``, ``dropout_rate``, ``align_corners``, ``ham_kwargs`` with UPPER CASE
            keys, ``inference_bases``).
        num_classes (int): Output classes.
        backbone_indices (list[int]): Backbone levels the head reads. Default: [1, 2, 3].
        pretrained (str|None): A local ``.pdparams`` file or an http(s) URL (PaddleSeg's weight cache) of the whole
            model. Default: None.

    forward(x) returns ``[logits]`` at the input resolution.
    """

    # the classifier layers, whose shapes follow num_classes: a whole-model `pretrained` of another class count
    # leaves them as initialised (fine-tuning, weights.load_model_pretrained)
    CLASS_PARAMS = ('decode_head.conv_seg.*',)

    def __init__(self, backbone, decoder_cfg, num_classes, backbone_indices=(1, 2, 3), pretrained=None):
        super().__init__()
        num_classes = check_int('SegNeXt', 'num_classes', num_classes)
        indices, channels = backbone_channels('SegNeXt', backbone, backbone_indices)
        if not isinstance(decoder_cfg, dict):
            raise UserError(f"SegNeXt: decoder_cfg must be a mapping, got {decoder_cfg!r}")
        self.backbone = backbone
        self.backbone_indices = indices
        try:
            self.decode_head = LightHamHead(channels, num_classes, **decoder_cfg)
        except TypeError as err:
            raise UserError(f"SegNeXt: bad decoder_cfg: {err}") from None
        self.align_corners = self.decode_head.align_corners
        if pretrained:
            load_model_pretrained(self, pretrained)

    def forward(self, x):
        feats = self.backbone(x)
        logit = self.decode_head([feats[i] for i in self.backbone_indices])
        return [resize(logit, spatial_size(x), align_corners=self.align_corners, final=True)]


def _variant(name):
    channels, ham_channels, rank = DECODER_SETTINGS[name]

    def build(num_classes, inference_bases='auto', dropout_rate=0.1, align_corners=False, pretrained=None,
              **backbone_kwargs):
        backbone = getattr(_mscan, f'MSCAN_{name.upper()}')(**backbone_kwargs)
        decoder = dict(channels=channels, ham_channels=ham_channels, num_groups=32, dropout_rate=dropout_rate,
                       align_corners=align_corners, inference_bases=inference_bases,
                       ham_kwargs=dict(MD_S=1, MD_R=rank, TRAIN_STEPS=6, EVAL_STEPS=7, INV_T=100, RAND_INIT=True))
        return SegNeXt(backbone, decoder, num_classes, pretrained=pretrained)

    return register_variant(register_model, SegNeXt, f'SegNeXt_{name.upper()}',
                            (f"SegNeXt-{name.upper()} as released: MSCAN-{name.upper()}, decoder channels {channels}, "
                             f"ham_channels {ham_channels}, MD_R {rank}. Other keyword arguments go to the backbone."),
                            build=build, rest_to=getattr(_mscan, f'MSCAN_{name.upper()}'))


SegNeXt_T = _variant('t')
SegNeXt_S = _variant('s')
SegNeXt_B = _variant('b')
SegNeXt_L = _variant('l')
_ARCHS = ('SegNeXt_T', 'SegNeXt_S', 'SegNeXt_B', 'SegNeXt_L')


# ----------------------------------------------------------------------------------------------------------------
# Foreign checkpoints (used by tools/convert_weights.py)

_MMSEG_HEAD = [
    ('decode_head.squeeze.conv.', 'decode_head.squeeze._conv.'),
    ('decode_head.squeeze.gn.', 'decode_head.squeeze._group_norm.'),
    ('decode_head.hamburger.ham_in.conv.', 'decode_head.hamburger.ham_in.'),
    ('decode_head.hamburger.ham_out.conv.', 'decode_head.hamburger.ham_out._conv.'),
    ('decode_head.hamburger.ham_out.gn.', 'decode_head.hamburger.ham_out._group_norm.'),
    ('decode_head.align.conv.', 'decode_head.align._conv.'),
    ('decode_head.align.gn.', 'decode_head.align._group_norm.'),
    ('decode_head.conv_seg.', 'decode_head.conv_seg.'),
]


@register_converter('mmseg', *_ARCHS)
def convert_mmseg_weights(state, arch=None):
    """Map an mmseg SegNeXt checkpoint (``backbone.*`` MSCAN + ``decode_head.*`` LightHamHead with ConvModule
    names ``conv``/``gn``) onto our SegNeXt.

    Args:
        state (dict[str, numpy.ndarray]): The checkpoint's tensors.
        arch (str|None): Target architecture (``SegNeXt_T`` ...).

    Returns:
        tuple: (state dict in our names, {'num_classes': from ``decode_head.conv_seg``}).
    """
    if 'decode_head.conv_seg.weight' not in state:
        raise UserError("mmseg checkpoint has no decode_head.conv_seg.weight: not a SegNeXt checkpoint (for a "
                        "backbone use --arch MSCAN_*)")
    out = {'backbone.' + k: v for k, v in mscan_from_mmseg(state, 'backbone.').items()}
    head = {}
    for key, value in state.items():
        if key.startswith('backbone.'):
            continue
        for old, new in _MMSEG_HEAD:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        head[key] = value
    out.update(torch_layout_to_paddle(head))
    return out, {'num_classes': int(state['decode_head.conv_seg.weight'].shape[0])}
