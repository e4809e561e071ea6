"""Soft IoU (Jaccard) loss, the region term of UNet 3+'s hybrid loss.

References:
    Md Atiqur Rahman, Yang Wang, "Optimizing Intersection-Over-Union in Deep Neural Networks for Image
    Segmentation", ISVC 2016.
    Huimin Huang et al., "UNet 3+: A Full-Scale Connected UNet for Medical Image Segmentation", ICASSP 2020.
    https://arxiv.org/abs/2004.08790
"""
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.errors import UserError
from paddle_models.losses.focal import _check_logit, one_hot_and_mask
from paddle_models.registry import register_loss
from paddle_models.utils.validate import check_int, check_number

__all__ = ['IoULoss']


@register_loss
class IoULoss(nn.Layer):
    """1 - soft IoU between softmax(logit) and the one-hot label, per image and class, averaged.

    With P the probabilities and Y the one-hot target of one image and class over its valid pixels:
    ``IoU = (sum(P * Y) + smooth) / (sum(P + Y - P * Y) + smooth)``.

    Args:
        smooth (float, optional): Added to numerator and denominator; keeps a class that is absent from both the
            prediction and the label at IoU 1. Default: 1.0.
        ignore_index (int, optional): Label value excluded from the sums. Default: 255.
    """

    def __init__(self, smooth=1.0, ignore_index=255):
        super().__init__()
        self.smooth = check_number('IoULoss', 'smooth', smooth, minimum=0)
        self.ignore_index = check_int('IoULoss', 'ignore_index', ignore_index, minimum=None)

    def forward(self, logit, label):
        """logit (N, C, H, W), label (N, H, W) int -> scalar loss."""
        _check_logit('IoULoss', logit, label)
        target, mask = one_hot_and_mask(label, logit.shape[1], self.ignore_index)
        prob = F.softmax(logit.astype('float32'), axis=1) * mask
        intersection = (prob * target).sum(axis=[2, 3])
        union = (prob + target - prob * target).sum(axis=[2, 3])
        return 1 - ((intersection + self.smooth) / (union + self.smooth)).mean()
