"""Cross entropy with online hard example mining (OHEM) by predicted probability of the true class.

Registered as ``OhemCrossEntropyLoss`` with PaddleSeg 2.8.0's arguments and defaults and the same value; PaddleSeg's
own raises on Paddle 3 as soon as it mines (it adds an int64 mask to float32 probabilities).

Reference:
    Abhinav Shrivastava, Abhinav Gupta, Ross Girshick, "Training Region-based Object Detectors with Online Hard
    Example Mining", CVPR 2016 (https://arxiv.org/abs/1604.03540); the pixel-wise, probability-threshold form is the
    one PaddleSeg (and OCRNet's code) use.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.errors import UserError
from paddle_models.registry import register_loss
from paddle_models.utils.validate import check_int, check_number

__all__ = ['OhemCrossEntropyLoss']


@register_loss
class OhemCrossEntropyLoss(nn.Layer):
    """Softmax cross entropy averaged over the hard pixels only.

    With p_i the softmax probability of pixel i's true class and V the labelled pixels:

    * if ``min_kept < |V|`` (and ``min_kept > 0``), the threshold is t = max(``thresh``, the ``min_kept``-th
      smallest p over V) and the kept pixels are those of V with p_i < t (strictly) -- so at least the hardest
      pixels are kept, and every pixel predicted with probability below ``thresh``;
    * otherwise (few labelled pixels, or ``min_kept == 0``) every labelled pixel is kept.

    loss = sum over kept pixels of -log p_i / (number kept + 1e-5 * number of pixels). Ignored and unkept pixels add
    no loss and no gradient.

    Args:
        thresh (float, optional): Pixels whose true-class probability is below it are always kept. Default: 0.7.
        min_kept (int, optional): Least number of pixels (over the batch) kept. Default: 10000.
        ignore_index (int, optional): Label value excluded from the loss. Default: 255.
    """
    EPS = 1e-5

    def __init__(self, thresh=0.7, min_kept=10000, ignore_index=255):
        super().__init__()
        self.thresh = check_number('OhemCrossEntropyLoss', 'thresh', thresh)
        self.min_kept = check_int('OhemCrossEntropyLoss', 'min_kept', min_kept, minimum=0)
        self.ignore_index = check_int('OhemCrossEntropyLoss', 'ignore_index', ignore_index, minimum=None)

    def forward(self, logit, label):
        """logit (N, C, H, W) float, label (N, H, W) or (N, 1, H, W) int -> scalar loss."""
        if len(logit.shape) != 4:
            raise UserError(f"OhemCrossEntropyLoss: logit must be (N, C, H, W), got shape {list(logit.shape)}")
        if len(label.shape) == 4:
            label = label.squeeze(1)
        if list(label.shape) != [logit.shape[0]] + list(logit.shape[2:]):
            raise UserError(f"OhemCrossEntropyLoss: label shape {list(label.shape)} does not match the logits "
                            f"{list(logit.shape)}")
        label = label.astype('int64').reshape([-1])
        valid = label != self.ignore_index
        safe_label = paddle.where(valid, label, paddle.zeros_like(label))
        num_classes = logit.shape[1]
        log_prob = F.log_softmax(logit.astype('float32').transpose([0, 2, 3, 1]).reshape([-1, num_classes]), axis=1)
        picked = paddle.take_along_axis(log_prob, safe_label.unsqueeze(1), axis=1).squeeze(1)

        kept = valid
        num_valid = int(valid.astype('int64').sum())
        if 0 < self.min_kept < num_valid:
            prob = paddle.exp(picked.detach())
            valid_prob = paddle.masked_select(prob, valid)
            kth = float(paddle.sort(valid_prob)[self.min_kept - 1])
            threshold = max(kth, self.thresh)
            kept = paddle.logical_and(valid, prob < threshold)
        kept = kept.astype('float32')
        kept.stop_gradient = True
        return -(picked * kept).sum() / (kept.sum() + self.EPS * label.shape[0])
