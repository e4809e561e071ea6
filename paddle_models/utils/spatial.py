"""The spatial size of a tensor that works both in the dynamic graph and in a traced (exported) graph.

Two forms of the runtime shape, for two kinds of callers:

* :func:`spatial_size` reads it with ``paddle.shape`` (int64; ``shape64`` under PIR), the form most model code
  does its index arithmetic in.
* :func:`feature_shape` / :func:`feature_size` read it with the int32 ``shape`` op under PIR. ``shape64`` has no
  oneDNN kernel, so Paddle Inference converts its input from oneDNN's blocked layout back to plain NCHW (a reorder
  of the whole tensor) just to read four integers; the int32 op has a oneDNN kernel that reads the dims of the
  blocked tensor as they are. Code that takes the size of a large intermediate map (to crop or resize to it) in an
  exported model uses these (LinkNet's crops, the pyramid pooling module, SegFormer).
"""
import paddle

from paddle_models.utils.compat import shape_int32

__all__ = ['spatial_size', 'feature_shape', 'feature_size']


def feature_shape(x):
    """``x``'s shape as an int tensor: the int32 ``shape`` op under PIR (Paddle 3 static graphs), else
    ``paddle.shape`` (the dynamic graph, and legacy programs, whose ``shape`` op is already int32); see
    ``utils/compat.py: shape_int32``."""
    return shape_int32(x)


def _size(x, axes, shape_of):
    dims = [x.shape[a] for a in axes]
    if any(d is None or d < 0 for d in dims):
        shape = shape_of(x)
        return tuple(int(d) if d is not None and d >= 0 else shape[a] for d, a in zip(dims, axes))
    return int(dims[0]), int(dims[1])


@paddle.jit.not_to_static
def spatial_size(x, data_format='NCHW'):
    """(H, W) of ``x`` (NCHW, or NHWC with ``data_format='NHWC'``): python ints where the shape is known, entries of
    ``paddle.shape(x)`` where a traced graph leaves them free, so reshapes built from them do not bake in the export
    size. Kept out of dy2st's rewriting, which would turn the python shape test into a graph conditional."""
    return _size(x, (2, 3) if data_format == 'NCHW' else (1, 2), paddle.shape)


@paddle.jit.not_to_static
def feature_size(x):
    """(H, W) of an NCHW ``x`` as :func:`spatial_size`, but free entries come from :func:`feature_shape` (no
    whole-tensor reorder under oneDNN; see the module docstring)."""
    return _size(x, (2, 3), feature_shape)
