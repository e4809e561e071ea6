"""Resizing feature maps. Every model resizes through ``resize`` so that export can swap in a graph that Paddle
Inference's oneDNN executor accepts (see ``portable_resize``)."""
import contextlib

import paddle.nn.functional as F

_PORTABLE = [False]


@contextlib.contextmanager
def portable_resize(enabled=True):
    """Within this context ``resize`` builds bilinear resizing from gather + lerp ops instead of the
    ``bilinear_interp`` op (which Paddle 3.3.1's oneDNN executor rejects under PIR). Used while exporting."""
    previous = _PORTABLE[0]
    _PORTABLE[0] = enabled
    try:
        yield
    finally:
        _PORTABLE[0] = previous


def resize(x, size, mode='bilinear', align_corners=False):
    """Resize an NCHW tensor to ``size`` = (h, w) (ints or 0-D tensors)."""
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)
