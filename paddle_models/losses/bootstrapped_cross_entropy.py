"""Bootstrapped cross entropy: per image, the mean over its hardest pixels only (HarDNet's loss).

Reference:
    Zifeng Wu, Chunhua Shen, Anton van den Hengel, "Bridging Category-level and Instance-level Semantic Image
    Segmentation", arXiv 1605.06885 (online bootstrapping: the loss over the K hardest pixels, or all pixels above a
    loss threshold when there are more of those).

Registered as ``BootstrappedCrossEntropyLoss`` with PaddleSeg 2.8.0's arguments and the same value wherever
PaddleSeg's runs. PaddleSeg's raises (IndexError, on Paddle 2.6 and 3) when an image has ``min_K`` pixels or fewer,
e.g. HarDNet's config (``min_K: 4096``) trained on 64 x 64 crops; this one then averages over all the image's pixels.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.errors import UserError
from paddle_models.registry import register_loss
from paddle_models.utils.validate import check_int, check_number, check_numbers

__all__ = ['BootstrappedCrossEntropyLoss']


@register_loss
class BootstrappedCrossEntropyLoss(nn.Layer):
    """Per image, with l the pixel losses ``w[y] * -log softmax(logit)[y]`` (0 at ignored pixels) sorted in
    decreasing order and P pixels:

    * ``mean(l[l > loss_th])`` when P > min_K and the (min_K + 1)-th largest loss is above ``loss_th``;
    * else the mean of the min_K largest (of all P when P <= min_K) -- ignored pixels' zeros included, as in
      PaddleSeg.

    The loss is the mean over the images. Ignored pixels carry no gradient.

    Args:
        min_K (int): Least number of pixels per image averaged.
        loss_th (float): Pixels whose loss is above it are all averaged when there are more than min_K of them.
        weight (tuple|list, optional): One loss weight per class. Default: None.
        ignore_index (int, optional): Label value excluded from the loss. Default: 255.
    """

    def __init__(self, min_K, loss_th, weight=None, ignore_index=255):
        super().__init__()
        owner = 'BootstrappedCrossEntropyLoss'
        self.K = check_int(owner, 'min_K', min_K)
        self.threshold = check_number(owner, 'loss_th', loss_th)
        self.weight = None if weight is None else paddle.to_tensor(check_numbers(owner, 'weight', weight),
                                                                   dtype='float32')
        self.ignore_index = check_int(owner, 'ignore_index', ignore_index, minimum=None)

    def _pixel_losses(self, logit, label):
        """(N, P) weighted cross entropy per pixel, 0 where the label is ignore_index."""
        n, c = logit.shape[0], logit.shape[1]
        if self.weight is not None and self.weight.shape[0] != c:
            raise UserError(f"BootstrappedCrossEntropyLoss: weight has {self.weight.shape[0]} values but the logits "
                            f"have {c} classes")
        label = label.astype('int64').reshape([n, -1])
        valid = label != self.ignore_index
        safe = paddle.where(valid, label, paddle.zeros_like(label))
        log_prob = F.log_softmax(logit.astype('float32').reshape([n, c, -1]), axis=1)
        loss = -paddle.take_along_axis(log_prob, safe.unsqueeze(1), axis=1).squeeze(1)
        if self.weight is not None:
            loss = loss * paddle.gather(self.weight, safe.reshape([-1])).reshape(safe.shape)
        return loss * valid.astype(loss.dtype)

    def forward(self, logit, label):
        """logit (N, C, H, W) float, label (N, H, W) or (N, 1, H, W) int -> scalar loss."""
        if len(logit.shape) != 4:
            raise UserError(f"BootstrappedCrossEntropyLoss: logit must be (N, C, H, W), got shape "
                            f"{list(logit.shape)}")
        if len(label.shape) == 4:
            label = label.squeeze(1)
        if list(label.shape) != [logit.shape[0]] + list(logit.shape[2:]):
            raise UserError(f"BootstrappedCrossEntropyLoss: label shape {list(label.shape)} does not match the "
                            f"logits {list(logit.shape)}")
        losses = self._pixel_losses(logit, label)
        pixels = losses.shape[1]
        per_image = []
        for loss in losses:
            if pixels <= self.K:
                per_image.append(loss.mean())
                continue
            largest = paddle.topk(loss, self.K + 1)[0]
            if float(largest[self.K]) > self.threshold:
                per_image.append(paddle.masked_select(loss, loss > self.threshold).mean())
            else:
                per_image.append(largest[:self.K].mean())
        return paddle.add_n(per_image) / float(len(per_image))
