"""Pixel-wise softmax cross entropy, with class weights, an ignore index and hard-pixel mining.

Registered as ``CrossEntropyLoss`` so that PaddleSeg YAML files build this one.  Same arguments and, wherever
PaddleSeg 2.8's loss gives a result, the same value; unlike it this one runs on Paddle 3.x (no float32 * int64
arithmetic) and accepts int32 labels and labels of shape (N, 1, H, W).

Hard-pixel mining (``top_k_percent_pixels``) follows Wu et al., "Bridging Category-level and Instance-level Semantic
Image Segmentation", arXiv 1605.06885 (online bootstrapping of the hardest pixels).
"""
import paddle
import paddle.nn.functional as F
from paddle import nn

from ..errors import UserError
from ..registry import register_loss
from ..utils.validate import check_bool, check_choice, check_int, check_number


@register_loss
class CrossEntropyLoss(nn.Layer):
    """Softmax cross entropy over the class axis, averaged over pixels.

    With ``l_i = w[y_i] * -log softmax(logit_i)[y_i]`` for a labelled pixel (``l_i = 0`` where ``y_i`` is
    ``ignore_index``), multiplied by ``semantic_weights`` where given, and the pixel's coefficient ``c_i = w[y_i]``
    (1 without ``weight``):

    * ``top_k_percent_pixels == 1``: ``sum(l) / (sum(c * m) + eps * P)`` with ``P`` pixels, where ``m`` is 1 for
      labelled pixels and, for ignored ones, 0 if ``avg_non_ignore`` else 1 (an ignored pixel counts with c = 1).
      So with weights and ``avg_non_ignore`` it is the weighted mean over labelled pixels.
    * ``top_k_percent_pixels < 1``: the ``k = int(top_k_percent_pixels * P)`` largest ``l`` (at least one), divided
      by the sum of their coefficients (+ ``eps * k``); ignored pixels count with c = 1.

    Args:
        weight (tuple|list|ndarray|Tensor, optional): One rescaling weight per class. Default: None.
        ignore_index (int, optional): Label value that adds no loss and no gradient. Default: 255.
        top_k_percent_pixels (float, optional): In (0, 1]; below 1 only that fraction of pixels with the largest
            loss is averaged (hard-pixel mining). Default: 1.0.
        avg_non_ignore (bool, optional): Average over labelled pixels only (True) or over all pixels (False).
            Default: True.
        data_format (str, optional): 'NCHW' or 'NHWC' (class axis last). Default: 'NCHW'.
    """
    EPS = 1e-8

    def __init__(self, weight=None, ignore_index=255, top_k_percent_pixels=1.0, avg_non_ignore=True,
                 data_format='NCHW'):
        super().__init__()
        owner = 'CrossEntropyLoss'
        self.data_format = check_choice(owner, 'data_format', data_format, ('NCHW', 'NHWC'))
        self.top_k_percent_pixels = check_number(owner, 'top_k_percent_pixels', top_k_percent_pixels, minimum=0,
                                                 maximum=1, above_min=True)
        self.ignore_index = check_int(owner, 'ignore_index', ignore_index, minimum=None)
        self.avg_non_ignore = check_bool(owner, 'avg_non_ignore', avg_non_ignore)
        if weight is None:
            self.weight = None
        else:
            self.weight = paddle.to_tensor(weight, dtype='float32').reshape([-1])
            self.weight.stop_gradient = True

    def forward(self, logit, label, semantic_weights=None):
        """Compute the loss.

        Args:
            logit (Tensor): Float logits, (N, C, H, W) for 'NCHW' or (N, H, W, C) for 'NHWC' (any number of
                spatial axes, or none).
            label (Tensor): Integer class ids (int64 or int32), (N, H, W) or with a size-1 class axis.  Values must
                be class ids or ``ignore_index``.
            semantic_weights (Tensor, optional): Per-pixel loss weights, shaped like ``label``.

        Returns:
            Tensor: The loss, 0-D.
        """
        axis = 1 if self.data_format == 'NCHW' else logit.ndim - 1
        num_classes = logit.shape[axis]
        if self.weight is not None and self.weight.shape[0] != num_classes:
            raise UserError(f"CrossEntropyLoss: weight has {self.weight.shape[0]} values but the logits have "
                            f"{num_classes} classes")
        if label.ndim == logit.ndim:
            label = paddle.squeeze(label, axis=axis)
        label = label.astype('int64')
        label.stop_gradient = True

        valid = label != self.ignore_index
        safe_label = paddle.where(valid, label, paddle.zeros_like(label))
        picked = -_label_nll(logit, safe_label, axis)
        valid_f = valid.astype(picked.dtype)

        if self.weight is None:
            coef = paddle.ones_like(picked)
        else:
            class_weight = self.weight.astype(picked.dtype)
            coef = paddle.gather(class_weight, safe_label.reshape([-1])).reshape(safe_label.shape)
            coef = paddle.where(valid, coef, paddle.ones_like(coef))  # an ignored pixel counts with c = 1
        coef.stop_gradient = True

        loss = -picked * valid_f
        if self.weight is not None:
            loss = loss * coef
        if semantic_weights is not None:
            loss = loss * semantic_weights.astype(loss.dtype).reshape(loss.shape)

        if self.top_k_percent_pixels == 1.0:
            counted = coef * valid_f if self.avg_non_ignore else coef
            return paddle.mean(loss) / (paddle.mean(counted) + self.EPS)
        loss = loss.reshape([-1])
        k = max(1, int(self.top_k_percent_pixels * loss.shape[0]))
        top_loss, indices = paddle.topk(loss, k)
        top_coef = paddle.gather(coef.reshape([-1]), indices)
        return paddle.mean(top_loss) / (paddle.mean(top_coef) + self.EPS)


def _label_nll(logit, label, axis):
    """``-log softmax(logit)`` at each pixel's ``label`` (all valid class ids), one value per pixel.

    Paddle's fused ``cross_entropy`` kernel over the last axis, with the class axis moved there first: on the CPU a
    training step's loss then costs a third of ``log_softmax`` + ``take_along_axis`` on the class axis of an NCHW
    map (docs/speed.md, "CPU training"); the same values and gradients up to float rounding."""
    if axis != logit.ndim - 1:
        perm = [a for a in range(logit.ndim) if a != axis] + [axis]
        logit = logit.transpose(perm)
    return F.cross_entropy(logit, label.unsqueeze(-1), axis=-1, reduction='none').squeeze(-1)
