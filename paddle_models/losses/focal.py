"""Focal loss (sigmoid form, one binary problem per class), the pixel term of UNet 3+'s hybrid loss.

Reference:
    Tsung-Yi Lin, Priya Goyal, Ross Girshick, Kaiming He, Piotr Dollar, "Focal Loss for Dense Object Detection",
    ICCV 2017. https://arxiv.org/abs/1708.02002

Registered as ``FocalLoss`` with PaddleSeg 2.8.0's arguments (``alpha``, ``gamma``, ``ignore_index``) and the same
value on its two-class inputs; it also takes any number of classes (PaddleSeg's asserts two).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.errors import UserError
from paddle_models.registry import register_loss
from paddle_models.utils.validate import check_int, check_number, check_numbers

__all__ = ['FocalLoss', 'one_hot_and_mask']


def one_hot_and_mask(label, num_classes, ignore_index):
    """One-hot targets and the valid-pixel mask of an integer label map.

    Args:
        label (Tensor): (N, H, W) or (N, 1, H, W) integer class ids; ``ignore_index`` marks pixels without a label.
        num_classes (int): C.
        ignore_index (int): The ignored value.

    Returns:
        (Tensor, Tensor): one-hot (N, C, H, W) float32 (all zeros at ignored pixels) and mask (N, 1, H, W) float32.
    """
    if len(label.shape) == 4:
        label = label.squeeze(1)
    if len(label.shape) != 3:
        raise UserError(f"label must be (N, H, W), got shape {list(label.shape)}")
    label = label.astype('int64')
    valid = label != ignore_index
    safe = paddle.where(valid, label, paddle.zeros_like(label))
    mask = valid.astype('float32').unsqueeze(1)
    one_hot = F.one_hot(safe, num_classes).transpose([0, 3, 1, 2]) * mask
    one_hot.stop_gradient = True
    mask.stop_gradient = True
    return one_hot, mask


def _check_logit(name, logit, label):
    if len(logit.shape) != 4:
        raise UserError(f"{name}: logit must be (N, C, H, W), got shape {list(logit.shape)}")
    if list(logit.shape[2:]) != list(label.shape[-2:]):
        raise UserError(f"{name}: logit size {list(logit.shape[2:])} differs from label size "
                         f"{list(label.shape[-2:])}")


@register_loss
class FocalLoss(nn.Layer):
    """Sigmoid focal loss over one-hot targets, averaged over the valid pixels and the classes.

    For logit x and target y in {0, 1} per pixel and class, with p = sigmoid(x), p_t = p if y else 1 - p and
    a_t = alpha if y else 1 - alpha: ``loss = -a_t * (1 - p_t) ** gamma * log(p_t)``; the sum over valid pixels and
    classes is divided by (valid pixels x C).

    Args:
        alpha (float|list[float], optional): Weight of the positive term (1 - alpha for the negative); a list gives
            one alpha per class. Default: 0.25.
        gamma (float, optional): Focusing exponent. Default: 2.0.
        ignore_index (int, optional): Label value excluded from the loss. Default: 255.
    """

    def __init__(self, alpha=0.25, gamma=2.0, ignore_index=255):
        super().__init__()
        if isinstance(alpha, (list, tuple)):  # one alpha per class
            self.alpha = check_numbers('FocalLoss', 'alpha', alpha, minimum=0, maximum=1)
        else:
            self.alpha = check_number('FocalLoss', 'alpha', alpha, minimum=0, maximum=1)
        self.gamma = check_number('FocalLoss', 'gamma', gamma, minimum=0)
        self.ignore_index = check_int('FocalLoss', 'ignore_index', ignore_index, minimum=None)
        self.eps = 1e-10

    def forward(self, logit, label):
        """logit (N, C, H, W), label (N, H, W) int -> scalar loss."""
        _check_logit('FocalLoss', logit, label)
        num_classes = logit.shape[1]
        target, mask = one_hot_and_mask(label, num_classes, self.ignore_index)
        logit = logit.astype('float32')
        if isinstance(self.alpha, (list, tuple)):
            if len(self.alpha) != num_classes:
                raise UserError(f"FocalLoss: alpha has {len(self.alpha)} entries for {num_classes} classes")
            alpha = paddle.to_tensor(self.alpha, dtype='float32').reshape([1, -1, 1, 1])
        else:
            alpha = float(self.alpha)
        ce = F.binary_cross_entropy_with_logits(logit, target, reduction='none')  # -log(p_t), stable
        prob = F.sigmoid(logit)
        p_t = prob * target + (1 - prob) * (1 - target)
        alpha_t = alpha * target + (1 - alpha) * (1 - target)
        loss = alpha_t * (1 - p_t) ** self.gamma * ce * mask
        return loss.sum() / (mask.sum() * num_classes + self.eps)
