"""Region Mutual Information (RMI) loss, without its cross-entropy term (PaddleSeg's form, to be combined with a
cross entropy through ``MixedLoss``).

Reference:
    Shuai Zhao, Yang Wang, Zheng Yang, Deng Cai, "Region Mutual Information Loss for Semantic Segmentation",
    NeurIPS 2019. https://arxiv.org/abs/1910.12037

Registered as ``RMILoss`` with PaddleSeg 2.8.0's arguments and defaults and the same value; PaddleSeg's own raises
on Paddle 3 (it multiplies float32 probabilities by a bool mask).

For one image and class, with Y the one-hot label map and P = sigmoid(logit) (both zero at ignored pixels, P then
raised by 1e-6), after downsampling both by ``rmi_pool_stride``:

* every pixel whose ``rmi_radius`` x ``rmi_radius`` neighbourhood lies inside the map gives a pair of
  d = radius^2 vectors (y, p): the label and probability values of that square;
* with the vectors centred over the pixels, the (unnormalised) second moments are S_Y = sum y y^T,
  S_P = sum p p^T and S_YP = sum y p^T (float64);
* the posterior variance of Y given P is approximated by
  V = S_Y - S_YP (S_P + a I)^-1 S_YP^T, a = 5e-4, and the paper's lower bound on the mutual information is
  -0.5 log det(V + a I) up to constants.

The loss is sum over classes of (mean over images of 0.5 * log det(V + a I)) / d; log det comes from a Cholesky
factor L as 2 * sum(log(diag(L) + 1e-8)). Minimising it maximises the region mutual information. It is negative in
general (log det of a small matrix).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.errors import UserError
from paddle_models.losses.focal import _check_logit, one_hot_and_mask
from paddle_models.registry import register_loss
from paddle_models.utils.validate import check_choice, check_int, check_number

__all__ = ['RMILoss']

CLIP_MIN = 1e-6     # added to the probabilities (as in the paper's code) so that no entry is exactly zero
POS_ALPHA = 5e-4    # diagonal loading that keeps both matrices positive definite
LOG_EPS = 1e-8      # inside log(diag(L)) of the Cholesky log-determinant


@register_loss
class RMILoss(nn.Layer):
    """Region mutual information loss between sigmoid(logit) and the one-hot label (see the module docstring).

    Ignored pixels carry no gradient: their probabilities and labels are zeroed before the statistics (they still
    count as all-zero vectors, as in PaddleSeg).

    Args:
        num_classes (int, optional): Number of classes; must equal the logits' channels. Default: 19.
        rmi_radius (int, optional): Side of the square neighbourhood (1 to 10); each pixel becomes a
            radius^2-dimensional vector. Default: 3.
        rmi_pool_way (int, optional): How the maps are downsampled before the statistics, which keeps the d x d
            matrices cheap on large crops: 0 max pooling, 1 average pooling, 2 interpolation (nearest for the
            label, bilinear with aligned corners for the probabilities). Default: 0.
        rmi_pool_size (int, optional): Pooling window; must equal ``rmi_pool_stride``. Default: 3.
        rmi_pool_stride (int, optional): Downsampling factor; 1 disables downsampling. Default: 3.
        loss_weight_lambda (float, optional): Kept for PaddleSeg configs; unused (PaddleSeg's RMILoss leaves the
            weighting against the cross entropy to ``MixedLoss``'s coef). Default: 0.5.
        ignore_index (int, optional): Label value excluded from the loss. Default: 255.
    """

    def __init__(self, num_classes=19, rmi_radius=3, rmi_pool_way=0, rmi_pool_size=3, rmi_pool_stride=3,
                 loss_weight_lambda=0.5, ignore_index=255):
        super().__init__()
        self.num_classes = check_int('RMILoss', 'num_classes', num_classes)
        self.rmi_radius = rmi_radius = check_int('RMILoss', 'rmi_radius', rmi_radius, maximum=10)
        self.rmi_pool_way = check_choice('RMILoss', 'rmi_pool_way', rmi_pool_way, (0, 1, 2))
        self.rmi_pool_size = check_int('RMILoss', 'rmi_pool_size', rmi_pool_size)
        self.rmi_pool_stride = check_int('RMILoss', 'rmi_pool_stride', rmi_pool_stride)
        if rmi_pool_size != rmi_pool_stride:
            raise UserError(f"RMILoss: rmi_pool_size ({rmi_pool_size}) must equal rmi_pool_stride "
                            f"({rmi_pool_stride})")
        self.weight_lambda = check_number('RMILoss', 'loss_weight_lambda', loss_weight_lambda)
        self.ignore_index = check_int('RMILoss', 'ignore_index', ignore_index, minimum=None)
        self.half_d = rmi_radius * rmi_radius

    def forward(self, logits_4D, labels_4D, do_rmi=True):
        """logits (N, C, H, W) float, labels (N, H, W) or (N, 1, H, W) int -> scalar float32 loss.

        ``do_rmi`` is accepted for PaddleSeg's signature and has no effect (as there).
        """
        _check_logit('RMILoss', logits_4D, labels_4D)
        if logits_4D.shape[1] != self.num_classes:
            raise UserError(f"RMILoss: num_classes is {self.num_classes} but the logits have {logits_4D.shape[1]} "
                            f"channels; set the loss's num_classes to the model's")
        target, mask = one_hot_and_mask(labels_4D, self.num_classes, self.ignore_index)
        probs = F.sigmoid(logits_4D.astype('float32')) * mask + CLIP_MIN
        return self.rmi_lower_bound(target, probs)

    def _downsample(self, labels, probs):
        """Both (N, C, H, W) maps reduced by ``rmi_pool_stride`` as ``rmi_pool_way`` says."""
        size, stride = self.rmi_pool_size, self.rmi_pool_stride
        if stride == 1:
            return labels, probs
        if self.rmi_pool_way == 2:
            out_size = [labels.shape[2] // stride, labels.shape[3] // stride]
            return (F.interpolate(labels, size=out_size, mode='nearest'),
                    F.interpolate(probs, size=out_size, mode='bilinear', align_corners=True))
        pool = F.max_pool2d if self.rmi_pool_way == 0 else F.avg_pool2d
        return tuple(pool(x, kernel_size=size, stride=stride, padding=size // 2) for x in (labels, probs))

    def _neighbourhoods(self, x):
        """(N, C, H, W) -> (N, C, radius^2, positions) float64: the values of each pixel's radius x radius square
        (top-left anchored, only squares fully inside the map)."""
        radius = self.rmi_radius
        height, width = x.shape[2] - radius + 1, x.shape[3] - radius + 1
        shifted = [x[:, :, dy:dy + height, dx:dx + width] for dy in range(radius) for dx in range(radius)]
        stacked = paddle.stack(shifted, axis=2)
        return stacked.reshape([x.shape[0], x.shape[1], self.half_d, -1]).astype('float64')

    def rmi_lower_bound(self, labels_4D, probs_4D):
        """The loss from the one-hot labels and the (masked, clipped) probabilities, both (N, C, H, W) float32."""
        labels, probs = self._downsample(labels_4D, probs_4D)
        if min(labels.shape[2:]) < self.rmi_radius:
            raise UserError(f"RMILoss: inputs of {list(labels_4D.shape[2:])} pixels downsample to "
                            f"{list(labels.shape[2:])}, smaller than rmi_radius {self.rmi_radius}")
        y = self._neighbourhoods(labels)
        y.stop_gradient = True
        p = self._neighbourhoods(probs)
        y = y - y.mean(axis=3, keepdim=True)
        p = p - p.mean(axis=3, keepdim=True)
        eye = paddle.eye(self.half_d, dtype='float64').reshape([1, 1, self.half_d, self.half_d]) * POS_ALPHA
        s_y = paddle.matmul(y, y, transpose_y=True)
        s_p = paddle.matmul(p, p, transpose_y=True)
        s_yp = paddle.matmul(y, p, transpose_y=True)
        s_p_inv = paddle.linalg.inv(s_p + eye)
        posterior = s_y - paddle.matmul(paddle.matmul(s_yp, s_p_inv), s_yp, transpose_y=True)
        chol = paddle.linalg.cholesky(posterior + eye)
        diagonal = paddle.diagonal(chol, offset=0, axis1=-2, axis2=-1)
        half_log_det = paddle.log(diagonal + LOG_EPS).sum(axis=-1)  # 0.5 * log det = sum(log(diag(L)))
        per_class = half_log_det.mean(axis=0).astype('float32') / float(self.half_d)
        return per_class.sum()
