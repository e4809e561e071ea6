"""The spatial size of a tensor that works both in the dynamic graph and in a traced (exported) graph."""
import paddle


@paddle.jit.not_to_static
def spatial_size(x, data_format='NCHW'):
    """(H, W) of ``x`` (NCHW, or NHWC with ``data_format='NHWC'``): python ints where the shape is known, entries of
    ``paddle.shape(x)`` where a traced graph leaves them free, so reshapes built from them do not bake in the export
    size. Kept out of dy2st's rewriting, which would turn the python shape test into a graph conditional."""
    axes = (2, 3) if data_format == 'NCHW' else (1, 2)
    dims = [x.shape[a] for a in axes]
    if any(d is None or d < 0 for d in dims):
        shape = paddle.shape(x)
        return tuple(int(d) if d is not None and d >= 0 else shape[a] for d, a in zip(dims, axes))
    return int(dims[0]), int(dims[1])
