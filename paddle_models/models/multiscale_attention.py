"""Hierarchical multi-scale attention as a wrapper around any segmentation model.

Reference:
    Andrew Tao, Karan Sapra, Bryan Catanzaro, "Hierarchical Multi-Scale Attention for Semantic Segmentation",
    arXiv 2020. https://arxiv.org/abs/2005.10821

The base model runs on several rescaled copies of the input. A light attention head predicts, from the base
model's features at each scale, a per-pixel weight ``a`` in (0, 1). The predictions are combined pairwise,
from the largest scale down (scales sorted in descending order; the first initialises the result ``P``):

* scale ``s >= 1``: ``P = a_s * p_s + (1 - a_s) * down(P)``   (``P`` brought to scale s's size)
* scale ``s < 1``:  ``P = up(a_s * p_s) + (1 - up(a_s)) * P``  (the smaller prediction brought to ``P``'s size)

so the attention of a smaller scale says how much to trust it against the next larger one. Training uses two
scales (0.5, 1.0) -- the attention learns the relative weighting between adjacent scales -- and inference chains
any list of scales (default 0.5, 1.0, 2.0). The paper's losses are on the fused prediction and on each scale's own
prediction: in training mode ``forward`` returns ``[fused, pred_at_scale_1, pred_at_scale_2, ...]`` (train
scales in the given order), all at the input size, matching a loss list of ``1 + len(train_scales)`` entries.

Features protocol
-----------------
The attention head reads features of the base model. A base model takes part by offering

* ``forward_features(x) -> (logit, feature)``: its main logit (any resolution, not necessarily upsampled) and the
  feature map the attention should read (any resolution);
* ``feature_channels`` (int): channels of that feature map.

``HarDNet`` (the decoder output), ``FCN`` (the head's hidden map), ``OCRNet`` (the OCR-augmented representation)
implement it. A model without ``forward_features`` still works: the attention then reads its main output logits
(``num_classes`` channels, or ``feature_channels`` given to the wrapper).

Export: the inference scales are python floats, so ``paddle.jit.to_static`` bakes them into the static graph (one
pass of the base model per scale); the rescaled sizes are computed in the graph from the input's shape.
"""
import paddle
import paddle.nn as nn

from paddle_models.errors import UserError
from paddle_models.layers import resize
from paddle_models.layers.scale_attention import AttentionHead, check_scales, fuse_scales, output_scale, scaled_size
from paddle_models.registry import register_model
from paddle_models.utils.validate import check_int

__all__ = ['MultiScaleAttention']


@register_model
class MultiScaleAttention(nn.Layer):
    """Hierarchical multi-scale attention around any segmentation model (Tao et al., 2020).

    Args:
        model (nn.Layer): The base segmentation model (in YAML a nested component: ``model: {type: HarDNet, ...}``).
            It should implement the features protocol (module docstring); otherwise its main logits feed the
            attention head.
        train_scales (list[float]): Scales of a training pass. Default: (0.5, 1.0).
        test_scales (list[float]): Scales of an evaluation/inference pass. Default: (0.5, 1.0, 2.0).
        attention_channels (int): Hidden channels of the attention head. Default: 256.
        feature_channels (int|None): Channels of the base model's feature map, where the model does not say
            (no ``feature_channels`` attribute). Default: None.
        align_corners (bool|None): ``align_corners`` of the upsampling of each scale's logit to its input size;
            None takes the base model's ``align_corners`` (so that a single scale 1.0 reproduces the base model).
            Default: None.
        num_classes (int|None): Classes, checked against the wrapped model's ``num_classes`` (the config loader
            fills it in from the dataset). Default: None.

    forward(x) returns ``[fused]`` in eval mode, ``[fused] + [per-scale logit for each train scale]`` in training
    mode, each [N, num_classes, H, W]. With ``test_scales=[1.0]`` the eval output equals the base model's.
    """

    def __init__(self, model, train_scales=(0.5, 1.0), test_scales=(0.5, 1.0, 2.0), attention_channels=256,
                 feature_channels=None, align_corners=None, num_classes=None):
        super().__init__()
        if not isinstance(model, nn.Layer):
            raise UserError(f"MultiScaleAttention: model must be a segmentation model component (a dict with a "
                            f"type), got {model!r}")
        self.train_scales = check_scales('MultiScaleAttention', 'train_scales', train_scales)
        self.test_scales = check_scales('MultiScaleAttention', 'test_scales', test_scales)
        attention_channels = check_int('MultiScaleAttention', 'attention_channels', attention_channels)
        self.model = model
        self.uses_features = callable(getattr(model, 'forward_features', None))
        channels = getattr(model, 'feature_channels', None) if self.uses_features else None
        self.reads_logits = channels is None and feature_channels is None and not self.uses_features
        if channels is None:
            channels = feature_channels if feature_channels is not None else (
                None if self.uses_features else getattr(model, 'num_classes', None))
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise UserError(f"MultiScaleAttention: cannot tell the feature channels of {type(model).__name__}; "
                            f"set feature_channels (a positive integer), got {channels!r}")
        own = getattr(model, 'num_classes', None)
        if num_classes is not None and own is not None and num_classes != own:
            raise UserError(f"MultiScaleAttention: num_classes is {num_classes} but the wrapped "
                            f"{type(model).__name__} has {own}")
        self.num_classes = own if own is not None else num_classes
        self.align_corners = bool(getattr(model, 'align_corners', False)) if align_corners is None \
            else bool(align_corners)
        self.attention = AttentionHead(channels, attention_channels)

    @property
    def CLASS_PARAMS(self):  # noqa: N802  (the attribute every model declares, see weights.load_model_pretrained)
        """The wrapped model's classifier layers, plus the attention head where it reads the logits."""
        inner = tuple(f'model.{p}' for p in getattr(self.model, 'CLASS_PARAMS', ()))
        return inner + (('attention.*',) if self.reads_logits else ())

    def _run(self, x):
        if self.uses_features:
            return self.model.forward_features(x)
        logit = self.model(x)[0]
        return logit, logit

    def forward(self, x):
        scales = self.train_scales if self.training else self.test_scales
        size = paddle.shape(x)[2:]
        per_scale = []
        logits = {}
        for scale in sorted(scales, reverse=True):
            xs = x if scale == 1.0 else resize(x, scaled_size(size, scale))
            logit, feature = self._run(xs)
            xs_size = paddle.shape(xs)[2:]
            logit = resize(logit, xs_size, align_corners=self.align_corners, final=True)  # as the base model's
            attn = None
            if per_scale:  # the largest scale's attention is never used
                attn = resize(self.attention(feature), xs_size)
            per_scale.append((scale, [logit], attn))
            logits[scale] = logit
        fused = fuse_scales(per_scale)[0]
        if output_scale(scales) != 1.0:
            fused = resize(fused, size)
        if not self.training:
            return [fused]
        return [fused] + [logits[s] if s == 1.0 else resize(logits[s], size) for s in self.train_scales]
