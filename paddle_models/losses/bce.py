"""Binary cross-entropy for UNet 3+'s classification-guided module: "does this image contain foreground?", with the
target derived from the segmentation label.

Reference:
    Huimin Huang et al., "UNet 3+: A Full-Scale Connected UNet for Medical Image Segmentation", ICASSP 2020,
    section 2.3 (classification-guided module). https://arxiv.org/abs/2004.08790
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.errors import UserError
from paddle_models.registry import register_loss
from paddle_models.utils.validate import check_int

__all__ = ['ForegroundBCELoss', 'contains_foreground']


def contains_foreground(label, background_index=0, ignore_index=255):
    """1.0 for each image whose label has a pixel that is neither background nor ignored, else 0.0.

    Args:
        label (Tensor): (N, H, W) or (N, 1, H, W) integer class ids.
        background_index (int): The background class.
        ignore_index (int): The ignored label value.

    Returns:
        Tensor: (N,) float32.
    """
    label = label.reshape([label.shape[0], -1])
    foreground = paddle.logical_and(label != background_index, label != ignore_index)
    return foreground.astype('float32').max(axis=1)


@register_loss
class ForegroundBCELoss(nn.Layer):
    """BCE (with logits) between the CGM's two classification logits and the image-level target.

    The target of image n is t = 1 when its label contains a foreground pixel (any class other than
    ``background_index`` and ``ignore_index``), else 0; the two logits are trained towards (1 - t, t) -- channel 1
    means "contains foreground", matching the model, which keeps its side outputs where the argmax is 1.
    The loss is the mean over images and both channels.

    Args:
        background_index (int, optional): The background class. Default: 0.
        ignore_index (int, optional): Label value that is neither background nor foreground. Default: 255.
    """

    def __init__(self, background_index=0, ignore_index=255):
        super().__init__()
        self.background_index = check_int('ForegroundBCELoss', 'background_index', background_index, minimum=0)
        self.ignore_index = check_int('ForegroundBCELoss', 'ignore_index', ignore_index, minimum=None)

    def forward(self, logit, label):
        """logit (N, 2) (or (N, 2, 1, 1)), label (N, H, W) int -> scalar loss."""
        logit = logit.reshape([logit.shape[0], -1]).astype('float32')
        if logit.shape[1] != 2:
            raise UserError(f"ForegroundBCELoss: logit must be (N, 2), got shape {list(logit.shape)}; is this "
                             f"loss paired with UNet3Plus's classification output (the last one, with is_CGM)?")
        target = contains_foreground(label, self.background_index, self.ignore_index).unsqueeze(1)
        target = paddle.concat([1 - target, target], axis=1)
        target.stop_gradient = True
        return F.binary_cross_entropy_with_logits(logit, target)
