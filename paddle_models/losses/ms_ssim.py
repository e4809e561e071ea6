"""Multi-scale structural similarity (MS-SSIM) loss between the softmax prediction and the one-hot label, the
structure term of UNet 3+'s hybrid loss.

References:
    Zhou Wang, Eero P. Simoncelli, Alan C. Bovik, "Multiscale Structural Similarity for Image Quality
    Assessment", Asilomar Conference on Signals, Systems and Computers, 2003.
    Huimin Huang et al., "UNet 3+: A Full-Scale Connected UNet for Medical Image Segmentation", ICASSP 2020
    (MS-SSIM as a segmentation loss term). https://arxiv.org/abs/2004.08790

Per image and class, on the probability map P and the one-hot map Y (both zero at ignored pixels):

* SSIM statistics use a Gaussian window (size 11, sigma 1.5, weights summing to 1) slid over the valid region:
  means mu, variances sigma^2 = E[x^2] - mu^2 and covariance sigma_xy;
  l = (2 mu_p mu_y + C1) / (mu_p^2 + mu_y^2 + C1), cs = (2 sigma_py + C2) / (sigma_p^2 + sigma_y^2 + C2),
  C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = 1 (probabilities). ``cs_j`` is the mean of the cs map at scale j,
  ``ssim_j`` the mean of the l * cs map.
* Scale j + 1 is scale j average-pooled 2x2. Where a scale is smaller than the window, the window shrinks to the
  map (its Gaussian renormalised), so small inputs work.
* MS-SSIM = prod_{j < M} cs_j ** w_j * ssim_M ** w_M with the weights of Wang et al. (0.0448, 0.2856, 0.3001,
  0.2363, 0.1333) for M = 5. Each factor is first mapped from [-1, 1] to [0, 1] by (v + 1) / 2, so that the
  fractional powers stay real and differentiable when a factor is negative (identical maps still give 1).

loss = 1 - mean over images and classes of MS-SSIM.
"""
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.errors import UserError
from paddle_models.losses.focal import _check_logit, one_hot_and_mask
from paddle_models.registry import register_loss
from paddle_models.utils.validate import check_int, check_number, check_numbers

__all__ = ['MSSSIMLoss', 'gaussian_window', 'ms_ssim']

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window(size, sigma):
    """1-D Gaussian weights of length ``size`` centred on the middle, summing to 1 (a python list)."""
    centre = (size - 1) / 2.0
    weights = [math.exp(-((i - centre) ** 2) / (2.0 * sigma ** 2)) for i in range(size)]
    total = sum(weights)
    return [w / total for w in weights]


def _filter(x, window):
    """Valid separable filtering of every channel of x (N, C, H, W) with the 1-D window (rows, then columns)."""
    channels, size = x.shape[1], len(window)
    kernel = paddle.to_tensor(window, dtype=x.dtype)
    rows = paddle.tile(kernel.reshape([1, 1, size, 1]), [channels, 1, 1, 1])
    cols = paddle.tile(kernel.reshape([1, 1, 1, size]), [channels, 1, 1, 1])
    return F.conv2d(F.conv2d(x, rows, groups=channels), cols, groups=channels)


def _ssim_terms(x, y, window_size, sigma, c1, c2):
    """Mean SSIM and mean contrast-structure (cs) per image and channel, each (N, C)."""
    size = min(window_size, x.shape[2], x.shape[3])
    window = gaussian_window(size, sigma)
    mu_x, mu_y = _filter(x, window), _filter(y, window)
    var_x = _filter(x * x, window) - mu_x * mu_x
    var_y = _filter(y * y, window) - mu_y * mu_y
    cov = _filter(x * y, window) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1) * cs_map
    return ssim_map.mean(axis=[2, 3]), cs_map.mean(axis=[2, 3])


def ms_ssim(x, y, window_size=11, sigma=1.5, weights=MS_SSIM_WEIGHTS, data_range=1.0):
    """MS-SSIM of two (N, C, H, W) tensors per image and channel, (N, C); see the module docstring.

    Every scale but the last must keep at least one pixel after 2x2 pooling (sides >= 2 ** (len(weights) - 1)).
    """
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    result = None
    for scale, weight in enumerate(weights):
        ssim, cs = _ssim_terms(x, y, window_size, sigma, c1, c2)
        last = scale == len(weights) - 1
        factor = ((ssim if last else cs) + 1) / 2
        term = factor ** weight
        result = term if result is None else result * term
        if not last:
            x, y = F.avg_pool2d(x, 2, 2), F.avg_pool2d(y, 2, 2)
    return result


@register_loss
class MSSSIMLoss(nn.Layer):
    """1 - MS-SSIM between softmax(logit) and the one-hot label (per image and class, averaged).

    Args:
        window_size (int, optional): Gaussian window size. Default: 11.
        sigma (float, optional): Gaussian standard deviation. Default: 1.5.
        weights (list[float], optional): Exponent per scale (their number is the number of scales). Default: the
            five weights of Wang et al.
        ignore_index (int, optional): Label value excluded (prediction and target are zeroed there). Default: 255.
    """

    def __init__(self, window_size=11, sigma=1.5, weights=MS_SSIM_WEIGHTS, ignore_index=255):
        super().__init__()
        self.window_size = check_int('MSSSIMLoss', 'window_size', window_size)
        self.sigma = check_number('MSSSIMLoss', 'sigma', sigma, minimum=0, above_min=True)
        self.weights = tuple(check_numbers('MSSSIMLoss', 'weights', weights, minimum=0))
        self.ignore_index = check_int('MSSSIMLoss', 'ignore_index', ignore_index, minimum=None)

    def forward(self, logit, label):
        """logit (N, C, H, W), label (N, H, W) int -> scalar loss."""
        _check_logit('MSSSIMLoss', logit, label)
        min_side = 2 ** (len(self.weights) - 1)
        if min(logit.shape[2:]) < min_side:
            raise UserError(f"MSSSIMLoss: {len(self.weights)} scales need sides >= {min_side}, got "
                             f"{list(logit.shape[2:])}")
        target, mask = one_hot_and_mask(label, logit.shape[1], self.ignore_index)
        prob = F.softmax(logit.astype('float32'), axis=1) * mask
        return 1 - ms_ssim(prob, target, self.window_size, self.sigma, self.weights).mean()
