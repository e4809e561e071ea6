"""Resizing feature maps.

Every model resizes through :func:`resize` so that export can swap in a graph that Paddle Inference's oneDNN
executor accepts.

Why: under PIR (Paddle 3.x), Paddle Inference with oneDNN rejects the ``bilinear_interp`` / ``nearest_interp`` ops
("ConvertPirAttribute2RuntimeAttribute not support pir::ArrayAttribute<pir::DoubleAttribute>", the op's ``scale``
attribute). Inside :func:`trace_forms` (``portable=True``) the same resizing is built from ops oneDNN runs:

* bilinear, where the input size is free (tensors: the usual case in an exported program with a free input size):
  two matrix products with dense interpolation matrices built in-graph (each row holds the two weights of one output
  row/column, as the triangle kernel ``relu(1 - |src - i|)`` of its clamped source position ``src``): the rows as
  ``rows [out_h, in_h] @ x [N * C, in_h, in_w]`` (views by ``reshape``; ``flatten`` made Paddle Inference allocate a copy), then
  the columns as one 2-D GEMM ``x [N * C * out_h, in_w] @ cols^T [in_w, out_w]`` reshaped back to NCHW. In both
  column forms each operand gets one zero column (with ``in_w`` 1, a map one pixel wide, oneDNN returned garbage). With
  ``final=True`` (a model's last upsampling, whose result is the program's output) the columns are instead one 4-D
  product ``x [N, C, out_h, in_w] @ cols^T``: it writes the output tensor itself, which Paddle Inference then reuses
  from run to run (after a reshape it holds the previous run's output while the next one is computed: one more
  output-sized buffer). Not for a resize whose result is added to something: oneDNN's matmul+add fusion turns that
  4-D product into a far slower kernel. Under Paddle Inference the final form ran faster than the GEMM + reshape,
  and both far faster than gathers on both axes, with oneDNN on or off (figures: docs/measurements.md).
* bilinear with a fixed (python int) input height or width: that axis by gathering the two source rows/columns of
  each output one and blending them (``gather``, ``lerp``: O(output)); matrix products gave wrong results under
  oneDNN on the fixed lengths 1-6 of PSPNet's and DeepLabV3's pooled branches.
* nearest: one ``gather`` per axis.

Sizes may be python ints or int tensors (for example ``paddle.shape(x)[2:]``). Where a size (or
the input's own height/width) is a tensor, its index arithmetic happens in the graph, so an exported program keeps a
free spatial size; python ints become constants (computed in python: Paddle 2.6's oneDNN executor fails on
elementwise ops over constant 0-D tensors). On Paddle 2.6 (legacy programs) oneDNN does run ``bilinear_interp``, but
its ``nearest_interp`` rounds source indices differently from the CPU kernel; the portable path avoids both issues.

The portable path follows Paddle's own kernels (``interpolate_kernel.cc``):

* bilinear, ``align_corners=False`` (Paddle's ``align_mode=0``): source ``(dst + 0.5) * in / out - 0.5`` clamped at 0
  ("half-pixel centres"); the upper neighbour is clamped to the last row/column;
* bilinear, ``align_corners=True``: source ``dst * (in - 1) / (out - 1)``;
* a single output row/column takes the first source row/column (Paddle's ratio is 0 where ``out == 1``);
* nearest (``align_corners=False`` only, as ``F.interpolate``): source ``floor(dst * in / out)``.

Op count: Paddle Inference's set-up and first run of a program grow faster than linearly with its ops, and a model
such as MscaleOCRNet on HRNet-W48 resizes over a hundred times, so the traced form is kept small: a shape is read
with one ``shape`` + ``unbind`` (not a slice per entry), and within one trace (one ``trace_forms(portable=True)``
context) resizes whose lengths come from the same traced values share their shape entries and interpolation matrices
(memoised on the identity of those Values and the graph block; cleared on entering and leaving the context, never
holding dynamic-graph tensors). Model code can widen that sharing: :func:`size_of` gives the size entries resize
uses for a tensor, :func:`same_size` records that a tensor has another's height and width (e.g. HRNet's branches
keep their size through a module), so resizes between the same two branch sizes build their matrices once.

Outside the context :func:`resize` is plain ``F.interpolate``, except that in the dynamic graph a bilinear resize on
the CPU (and a ``final=True`` one on any device) uses two matrix products with interpolation matrices: faster on the
CPU than the ``bilinear_interp`` kernel, and in training its backward far more so (two more products instead of the
kernel's scatter).

ONNX: export traces a model for paddle2onnx (2.1.0) with Paddle's own resize ops (paddle2onnx converts them to ONNX
``Resize``, but not the portable path's ``lerp``) inside :func:`trace_forms` (``onnx=True``), where two ops take the
forms paddle2onnx converts into a model ONNX Runtime runs at a free input size: :func:`resize` passes a size tensor as
its two entries, and :func:`adaptive_avg_pool2d` (the pooled grids of PSPNet's and UPerNet's pyramid pooling)
becomes two matrix products with :func:`pooling_matrix` (see :func:`trace_forms`).
"""
import contextlib
import numbers

import numpy as np
import paddle
import paddle.nn.functional as F

from paddle_models.utils.compat import paddle_3_or_later

# The resize forms of the trace under way, set only by trace_forms() (which layers/deploy.py: tracing_for enters
# for an export's trace): 'portable' -- the portable resize for Paddle Inference; 'onnx' -- the ONNX forms.
_FORMS = {'portable': False, 'onnx': False}
# Within one trace_forms(portable=True) context, in a traced graph only: what resizes between the same traced
# tensors share (a shape's entries, interpolation matrices), keyed on the identity of the Values (and ints) they
# come from and on the graph block they are built in. Each entry keeps its key objects alive, so an id is never
# reused for another Value while the entry exists. Cleared on entering and leaving the context; dygraph tensors are
# never stored.
_MEMO = {}


@contextlib.contextmanager
def trace_forms(portable=False, onnx=False):
    """The resize forms of one trace, each on or off; the previous forms are restored on exit, also when the body
    raises. An export sets them only through ``layers/deploy.py: tracing_for(target)``, from its
    ``DeployTarget`` (``portable_resize``; ``runtime == 'onnx'``): the one place that sets them.

    * ``portable``: :func:`resize` builds bilinear and nearest resizing from matmul or gather/lerp (and
      arange/floor/clip) ops instead of the ``*_interp`` ops (which Paddle 3.3.1's oneDNN executor rejects under
      PIR); see the module docstring. (It also applies to dynamic-graph calls inside the context, which tests use
      to compare the forms.)
    * ``onnx``: a traced graph (never the dynamic one) takes the forms of two ops that paddle2onnx 2.1.0 converts
      into a model ONNX Runtime runs at a free input size (the trace keeps Paddle's own resize ops):

      - :func:`resize` passes a size tensor (such as ``paddle.shape(y)[2:]``) as its two 0-D entries. paddle2onnx
        builds ONNX ``Resize``'s ``sizes`` as the concatenation of the input's (N, C) and the size tensor, whose
        length ONNX's shape inference cannot tell where it is read from the shape of a tensor of unknown rank: any
        output of a conv with a bias is one (paddle2onnx reshapes the bias to [1, C, 1, 1] through an ``Identity``
        of that shape, which hides it from shape inference). ONNX Runtime then refuses the model ("Number of
        elements of input 'sizes' (0) must be same as rank of input 'X' (4)"): MultiScaleAttention resizes to
        sizes read from its logits. Two 0-D entries give ``sizes`` a known length.
      - :func:`adaptive_avg_pool2d` to a grid other than 1 x 1 is ``rows @ x @ cols^T`` with
        :func:`pooling_matrix`: paddle2onnx converts adaptive pooling only for a static input size ("Adaptive only
        support static input shape"), and then as an ``AveragePool`` with kernel and stride ``input // output``,
        which computes other bins than Paddle's where the grid does not divide the map. (1 x 1 becomes
        ``GlobalAveragePool`` at any size.)

    Forms that belong to one layer (MaxViT's padding for ONNX, ...) are that layer's ``to_deploy``, not set here.

    Args:
        portable (bool): The portable resize. Default: False.
        onnx (bool): The ONNX forms. Default: False.
    """
    previous = dict(_FORMS)
    _FORMS.update(portable=bool(portable), onnx=bool(onnx))
    _MEMO.clear()
    try:
        yield
    finally:
        _FORMS.update(previous)
        _MEMO.clear()


@paddle.jit.not_to_static
def _onnx_tracing():
    """True while a graph is traced with the ONNX forms (:func:`trace_forms`, for paddle2onnx)."""
    return _FORMS['onnx'] and not paddle.in_dynamic_mode()


def _current_block():
    """The graph block ops are being added to (PIR), or the legacy program's current block; None where unknown."""
    try:
        if hasattr(paddle, 'pir') and hasattr(paddle.pir, 'get_current_insertion_point'):
            return paddle.pir.get_current_insertion_point().block()
    except Exception:  # noqa: BLE001  (legacy static mode on Paddle 3: no PIR insertion point)
        pass
    try:
        program = paddle.static.default_main_program()
        return (id(program), program.current_block_idx)
    except Exception:  # noqa: BLE001
        return None


def _memoised(kind, objs, build):
    """``build()``, shared by later calls with the same ``kind`` and the same objects ``objs`` (Values by identity,
    python values by equality) in the same block, while tracing inside :func:`trace_forms` (``portable=True``). In
    the dynamic graph (and outside the context) it just builds."""
    if paddle.in_dynamic_mode() or not _FORMS['portable']:
        return build()
    block = _current_block()
    if block is None:
        return build()
    key = (kind, block) + tuple(('id', id(o)) if _is_tensor(o) else ('value', o) for o in objs)
    hit = _MEMO.get(key)
    if hit is None:
        hit = _MEMO[key] = (objs, build())
    return hit[1]


def resize(x, size, mode='bilinear', align_corners=False, final=False):
    """Resize an NCHW tensor to ``size`` = (h, w).

    Args:
        x (Tensor): Input of shape [N, C, H, W].
        size (list|tuple|Tensor): Output (h, w): two python ints, two 0-D/1-element int tensors, or one int tensor
            with two elements such as ``paddle.shape(x)[2:]``.
        mode (str): 'bilinear' or 'nearest' (the portable path supports these two; any other mode always goes to
            ``F.interpolate``). Default: 'bilinear'.
        align_corners (bool): As in ``F.interpolate``. Default: False.
        final (bool): The result is the model's output (its last upsampling to the input size), not an input of an
            addition. Bilinear resizing then runs as two matrix products in the portable graph as described in the
            module docstring, and in the dynamic graph on any device. (In the dynamic graph on the CPU every
            bilinear resize runs as the two products: with their backward, 2-4x faster than ``F.interpolate``'s
            kernel in a training step; docs/speed.md, "CPU training".) Default: False.

    Returns:
        Tensor: The resized tensor, [N, C, h, w].
    """
    if _FORMS['portable'] and mode in ('bilinear', 'nearest'):
        return _portable_resize(x, size, mode, align_corners, final)
    if mode == 'bilinear' and paddle.in_dynamic_mode() and len(x.shape) == 4 and (final or x.place.is_cpu_place()):
        return _matrix_resize_dygraph(x, size, align_corners)
    return F.interpolate(x, size=_onnx_size(size), mode=mode, align_corners=align_corners)


@paddle.jit.not_to_static
def _onnx_size(size):
    """``size`` for ``F.interpolate``: a size tensor as a list of its two 0-D entries while tracing inside
    :func:`trace_forms` with ``onnx=True`` (a ``sizes`` of known length in ONNX), else unchanged."""
    if _onnx_tracing() and _is_tensor(size):
        return list(_split_size(size))
    return size


def resize_to_input(logits, x, align_corners=False):
    """Each of ``logits`` upsampled (bilinear, ``final=True``) to the height and width of the model input ``x``:
    the last step of every model that returns a list of logits."""
    size = paddle.shape(x)[2:]
    return [resize(logit, size, align_corners=align_corners, final=True) for logit in logits]


def _matrix_resize_dygraph(x, size, align_corners):
    """Bilinear resizing in the dynamic graph as ``rows @ x @ cols^T`` (:func:`_matrix_rows`, then the final form of
    :func:`_matrix_columns`): two multithreaded matrix products, faster than the ``bilinear_interp`` kernel for a
    model's final upsampling, same values (within float rounding). The small matrices are cheap to build, so they
    are built per call and nothing outlives the forward."""
    out_h, out_w = (int(v) for v in _split_size(size))
    in_h, in_w = _lengths(x)
    return _matrix_columns(_matrix_rows(x, in_h, out_h, align_corners), in_w, out_w, align_corners, final=True)


def _split_size(size):
    """(h, w) from the accepted forms of ``size``; each entry an int or an int tensor."""
    if _is_tensor(size):
        if len(size.shape) == 1 and size.shape[0] in (2, -1):
            if size.shape[0] == 2:  # one unbind op rather than two slices (each with its index constants)
                return _memoised('size', (size,), lambda: tuple(paddle.unbind(size)))
            return size[0], size[1]
        raise ValueError(f"size tensor must be 1-D with two elements (h, w), got shape {list(size.shape)}")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        out = []
        for item in size:
            if isinstance(item, numbers.Integral):
                out.append(int(item))
            elif _is_tensor(item):
                out.append(item.reshape([]) if len(item.shape) == 1 else item)
            else:
                raise ValueError(f"size entries must be ints or int tensors, got {type(item).__name__}")
        return out[0], out[1]
    raise ValueError(f"size must be (h, w), got {size!r}")


def _is_tensor(obj):
    """True for a dygraph tensor or a static-graph variable (legacy ``Variable`` or PIR ``Value``)."""
    return isinstance(obj, (paddle.Tensor, paddle.static.Variable)) or paddle.is_tensor(obj)


def _ratio(in_len, out_len, align_corners):
    """Source step per output step, as Paddle's kernel computes it in float32: ``(in - 1) / (out - 1)`` with
    ``align_corners``, else ``in / out``; 0 for a single output point (Paddle then takes the first row/column).

    Python ints are computed here (a python float holding the float32 value) and stay out of the graph: Paddle
    2.6's oneDNN executor cannot run elementwise ops on constant 0-D tensors. Tensors give a float32 tensor.
    """
    if isinstance(in_len, int) and isinstance(out_len, int):
        if out_len <= 1:
            return 0.0
        if align_corners:
            return float(np.float32(in_len - 1) / np.float32(out_len - 1))
        return float(np.float32(in_len) / np.float32(out_len))
    if isinstance(in_len, int) and not isinstance(out_len, int):
        # a fixed input length against a dynamic output length (upsampling after adaptive pooling): keep the
        # arithmetic between tensors, since Paddle 2.6's oneDNN rejects constant 0-D operands
        in_len = paddle.full_like(paddle.cast(out_len, 'int64'), in_len)
    in_f = float(in_len) if isinstance(in_len, int) else paddle.cast(in_len, 'float32')
    if isinstance(out_len, int):
        if out_len <= 1:
            return 0.0
        return (in_f - 1.0) / float(out_len - 1) if align_corners else in_f / float(out_len)
    out_f = paddle.cast(out_len, 'float32')
    if align_corners:
        return (in_f - 1.0) / paddle.clip(out_f - 1.0, min=1.0)
    return in_f / out_f * paddle.cast(out_f > 1.0, 'float32')


def _clip_index(index, in_len):
    """int64 ``index`` limited to the last valid position ``in_len - 1``."""
    if isinstance(in_len, int):
        last = paddle.full_like(index, in_len - 1)
    else:
        last = paddle.cast(in_len, 'int64') - 1
    return paddle.minimum(index, last)


def _linear_taps(in_len, out_len, align_corners):
    """Lower/upper source indices (int64, [out]) and the weight of the upper one (float32, [out]) for 1-D linear
    interpolation from ``in_len`` to ``out_len`` points (each a python int or an int tensor)."""
    ratio = _ratio(in_len, out_len, align_corners)
    dst = paddle.arange(out_len, dtype='float32')
    if align_corners:
        src = dst * ratio
    else:
        src = paddle.clip((dst + 0.5) * ratio - 0.5, min=0.0)
    lower_f = paddle.floor(src)
    weight = src - lower_f
    lower = _clip_index(paddle.cast(lower_f, 'int64'), in_len)
    upper = _clip_index(lower + 1, in_len)
    return lower, upper, weight


def _nearest_taps(in_len, out_len):
    """Source index (int64, [out]) of each output point for nearest resizing (Paddle: floor(dst * in / out))."""
    src = paddle.floor(paddle.arange(out_len, dtype='float32') * _ratio(in_len, out_len, False))
    return _clip_index(paddle.cast(src, 'int64'), in_len)


def _dims(x):
    """[N, C, H, W] of the 4-D ``x``: python ints where the shape is known (dygraph, fixed export shape), else
    entries of ``paddle.shape(x)`` (one shape op and one unbind, shared by resizes of the same traced ``x``)."""
    static = [int(d) if d is not None and d >= 0 else None for d in x.shape]
    if all(d is not None for d in static):
        return tuple(static)
    dynamic = _memoised('dims', (x,), lambda: tuple(paddle.unbind(paddle.shape(x))))
    return tuple(d if d is not None else dynamic[i] for i, d in enumerate(static))


def _lengths(x):
    """Input (h, w): python ints where the shape is known (dygraph, fixed export shape), tensors otherwise; while
    tracing, those :func:`same_size` recorded for ``x`` where it did."""
    static = [int(d) if d is not None and d >= 0 else None for d in x.shape[2:]]
    if all(d is not None for d in static):
        return tuple(static)
    if not paddle.in_dynamic_mode() and _FORMS['portable']:
        hinted = _MEMO.get(('hw', _current_block(), ('id', id(x))))
        if hinted is not None:
            return tuple(s if s is not None else h for s, h in zip(static, hinted[1]))
    return _dims(x)[2:]


@paddle.jit.not_to_static
def same_size(y, like):
    """``y``, unchanged. While a model is traced inside :func:`trace_forms` (``portable=True``), also records that
    ``y`` has the height and width of ``like`` (e.g. a stride-1 conv's output and its input), so resizes of ``y`` or to
    :func:`size_of` ``(y)`` use ``like``'s shape entries: resizes between tensors of the same two sizes then share
    their interpolation matrices instead of rebuilding them from new shape ops (fewer ops in the exported program,
    which Paddle Inference then loads faster). Elsewhere (dynamic graph, plain tracing) it does nothing. The
    caller vouches for the sizes being equal; nothing checks it."""
    if paddle.in_dynamic_mode() or not _FORMS['portable'] or y is like or len(y.shape) != 4 or len(like.shape) != 4:
        return y
    block = _current_block()
    if block is not None:
        key = ('hw', block, ('id', id(y)))
        if key not in _MEMO:
            _MEMO[key] = ((y, like), _lengths(like))
    return y


@paddle.jit.not_to_static
def size_of(x):
    """(H, W) of the NCHW ``x`` as a ``size`` for :func:`resize`: ``paddle.shape(x)[2:]``, except while tracing
    inside :func:`trace_forms` (``portable=True``), where it is the two entries :func:`resize` itself uses for ``x``
    (shared with other resizes of or to ``x`` and the tensors :func:`same_size` ties to it)."""
    if paddle.in_dynamic_mode() or not _FORMS['portable']:
        return paddle.shape(x)[2:]
    return _lengths(x)


def _blend_axis(x, lower, upper, weight, axis):
    """Linear blend of the rows (axis 2) or columns (axis 3) picked by ``lower`` and ``upper``."""
    a = paddle.gather(x, lower, axis=axis)
    b = paddle.gather(x, upper, axis=axis)
    shape = [1, 1, -1, 1] if axis == 2 else [1, 1, 1, -1]
    weight = paddle.reshape(paddle.cast(weight, x.dtype), shape)
    return paddle.lerp(a, b, weight)


@paddle.jit.not_to_static
def _portable_resize(x, size, mode, align_corners, final=False):
    # not_to_static: dy2st must not rewrite this python-level shape logic (it would turn ``x.shape`` into a tensor
    # and the int/tensor branches into graph conditionals); the ops it builds are recorded as they are.
    if mode == 'nearest' and align_corners:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    if len(x.shape) != 4:
        raise ValueError(f"resize expects an NCHW tensor, got shape {list(x.shape)}")
    out_h, out_w = _split_size(size)
    in_h, in_w = _lengths(x)
    if mode == 'nearest':
        x = paddle.gather(x, _nearest_taps(in_h, out_h), axis=2)
        return paddle.gather(x, _nearest_taps(in_w, out_w), axis=3)
    if _dense_axis(in_h) and _dense_axis(in_w):
        return _matrix_resize(x, in_h, in_w, out_h, out_w, align_corners, final)
    if _dense_axis(in_h):
        x = _matrix_rows(x, in_h, out_h, align_corners)
    else:
        lower, upper, weight = _linear_taps(in_h, out_h, align_corners)
        x = _blend_axis(x, lower, upper, weight, axis=2)
    if _dense_axis(in_w):
        return _matrix_columns(x, in_w, out_w, align_corners, final)
    lower, upper, weight = _linear_taps(in_w, out_w, align_corners)
    return _blend_axis(x, lower, upper, weight, axis=3)


def _matrix_resize(x, in_h, in_w, out_h, out_w, align_corners, final):
    """Both axes by interpolation matrices, with the fewest ops a traced graph needs: ``rows [out_h, in_h] @ x
    [N * C, in_h, in_w]`` (the 3-D view, see :func:`_matrix_rows`), then the columns as the 4-D product
    ``[N, C, out_h, in_w] @ cols^T`` where ``final``, else as one 2-D GEMM ``[N * C * out_h, in_w] @ cols^T``
    reshaped to NCHW."""
    c = int(x.shape[1]) if x.shape[1] is not None and x.shape[1] >= 0 else _dims(x)[1]
    n = -1 if isinstance(c, int) else _dims(x)[0]  # with C known, the batch follows from the rest
    rows = interpolation_matrix(in_h, out_h, align_corners, x.dtype)  # [out_h, in_h]
    cols = interpolation_matrix(in_w, out_w, align_corners, x.dtype)  # [out_w, in_w]
    y = paddle.matmul(rows, paddle.reshape(x, [-1, in_h, in_w]))  # [N * C, out_h, in_w]
    if final:
        return _columns_gemm(paddle.reshape(y, [n, c, out_h, in_w]), cols)
    y = _columns_gemm(paddle.reshape(y, [-1, in_w]), cols)  # [N * C * out_h, out_w]
    return paddle.reshape(y, [n, c, out_h, out_w])


def _columns_gemm(x, cols):
    """``x [..., in_w] @ cols^T``; in a traced graph with one zero column appended to both operands, so that the
    inner length is at least 2: Paddle 3.3.1's oneDNN matmul returns garbage (values near 1e35, NaN) for this
    product when ``in_w`` is 1 (a map one pixel wide: HarDNet's deepest level for an input under 64 pixels wide),
    although the same graph runs right without oneDNN. The zero column adds nothing to the product; it costs a copy
    of ``x``, small beside the product's output. The dynamic graph (no oneDNN) multiplies as it is."""
    if paddle.in_dynamic_mode():
        return paddle.matmul(x, cols, transpose_y=True)
    x = paddle.concat([x, paddle.zeros_like(x[..., :1])], axis=-1)
    cols = _memoised('padded', (cols,), lambda: paddle.concat([cols, paddle.zeros_like(cols[:, :1])], axis=1))
    return paddle.matmul(x, cols, transpose_y=True)


def _channels(x, shape):
    """``x``'s channel count for a reshape target: a python int where the graph knows it (a following conv needs it
    static), else the entry of ``shape`` (``paddle.shape(x)``)."""
    return int(x.shape[1]) if x.shape[1] is not None and x.shape[1] >= 0 else shape[1]


def _matrix_rows(x, in_h, out_h, align_corners):
    """Rows by ``rows [out_h, in_h] @ x [N * C, in_h, W]``. The 3-D view matters: the same product on the 4-D
    tensor gave wrong results under oneDNN (a conv's blocked output layout read as NCHW)."""
    shape = paddle.shape(x)
    rows = interpolation_matrix(in_h, out_h, align_corners, x.dtype)  # [out_h, in_h]
    y = paddle.matmul(rows, paddle.reshape(x, [-1, shape[2], shape[3]]))
    return paddle.reshape(y, [shape[0], _channels(x, shape), -1, shape[3]])


def _matrix_columns(x, in_w, out_w, align_corners, final):
    """Columns by ``x @ cols^T`` (cols [out_w, in_w]): one 4-D product where ``final``, else a plain 2-D GEMM
    ``[N * C * H, in_w] @ [in_w, out_w]`` and a reshape (a 4-D product followed by an addition is fused by oneDNN
    into a far slower kernel; the plain GEMM also ran faster than the 4-D product under oneDNN elsewhere)."""
    cols = interpolation_matrix(in_w, out_w, align_corners, x.dtype)  # [out_w, in_w]
    if final:
        return _columns_gemm(x, cols)
    shape = paddle.shape(x)
    y = _columns_gemm(paddle.reshape(x, [-1, shape[3]]), cols)
    return paddle.reshape(y, [shape[0], _channels(x, shape), shape[2], -1])


# Paddle 2.6's oneDNN runs ``bilinear_interp`` in its legacy programs, so there the portable path only needs to avoid
# its ``nearest_interp``; it keeps the gather form (whose ops legacy programs shape-infer statically).
_MATRIX_FORM = paddle_3_or_later()


def _dense_axis(in_len):
    """Whether to interpolate an axis with a dense matrix: for a free length (a tensor in a traced graph), on
    Paddle 3."""
    return _MATRIX_FORM and not isinstance(in_len, int)


@paddle.jit.not_to_static  # python-level memo and shape logic; called from traced code (layers/pyramid.py)
def interpolation_matrix(in_len, out_len, align_corners, dtype=None):
    """[out_len, in_len] matrix (float32, or ``dtype``: the input's) whose row o holds the two linear-interpolation
    weights of output point o (1 - w at its lower source index, w at its upper one; both on one index where they
    coincide)."""
    return _memoised('matrix', (in_len, out_len, bool(align_corners), str(dtype)),
                     lambda: _build_interpolation_matrix(in_len, out_len, align_corners, dtype))


def _build_interpolation_matrix(in_len, out_len, align_corners, dtype):
    """The matrix as the triangle kernel ``relu(1 - |src_o - i|)`` of each output point's source position ``src_o``
    (Paddle's, see the module docstring) clamped to [0, in - 1]: the same two weights ``1 - w`` and ``w`` at
    ``floor(src_o)`` and the next index (one weight 1 where the clamp puts it on the last index, as Paddle's
    kernel clamps the upper neighbour), from about half the ops of building both one-hots."""
    if isinstance(in_len, int) or isinstance(out_len, int):
        ratio = _ratio(in_len, out_len, align_corners)
        dst = paddle.arange(out_len, dtype='float32')
        last = float(in_len - 1) if isinstance(in_len, int) else paddle.cast(in_len, 'float32') - 1.0
        positions = paddle.arange(in_len, dtype='float32')  # [in]
    else:  # both free (the traced case): each length cast once, the ratio from those
        in_f, positions = _positions(in_len)
        out_f, dst = _positions(out_len)
        last = in_f - 1.0
        if align_corners:
            ratio = last / paddle.clip(out_f - 1.0, min=1.0)
        else:
            ratio = in_f / out_f * paddle.cast(out_f > 1.0, 'float32')
    src = dst * ratio if align_corners else (dst + 0.5) * ratio - 0.5
    if isinstance(last, float):
        src = paddle.clip(src, min=0.0, max=last)
    else:  # a traced length: clip's tensor bound is dropped by OpenVINO's Paddle frontend (it reads the attribute)
        src = paddle.minimum(paddle.clip(src, min=0.0), last)
    column = paddle.unsqueeze(src, 1)  # [out, 1]
    if not paddle.in_dynamic_mode():
        # the first operand at the full [out, in] shape: oneDNN's fused subtract+abs broadcasting its first operand
        # ran on its reference kernel (~3 ms for 512 x 128, a model's final resize, twice per run)
        column = paddle.expand(column, [out_len, in_len])
    matrix = F.relu(1.0 - paddle.abs(column - positions))  # [out, in]
    return matrix if dtype is None or dtype == matrix.dtype else paddle.cast(matrix, dtype)


def _positions(length):
    """``length`` (a python int, or an int tensor: a free length in a traced graph) as a python float or a float32
    tensor (cast once), and the float32 positions 0 .. length - 1 ([length])."""
    if isinstance(length, int):
        return float(length), paddle.arange(length, dtype='float32')
    length_f = paddle.cast(length, 'float32')
    return length_f, paddle.arange(0.0, length_f, 1.0, dtype='float32')


@paddle.jit.not_to_static  # python-level shape logic; called from traced code (adaptive_avg_pool2d)
def pooling_matrix(in_len, out_len, dtype=None):
    """[out_len, in_len] matrix (float32, or ``dtype``) whose row i averages the points of bin i of adaptive average
    pooling from ``in_len`` to ``out_len`` points: ``1 / n`` over the n points of [floor(i * in / out),
    ceil((i + 1) * in / out)) (Paddle's bins, as its ``adaptive_avg_pool2d`` kernel computes them: they overlap
    where ``out`` does not divide ``in``, and cover one or two points each where ``in < out``), 0 elsewhere.

    ``in_len`` is a python int or an int tensor (a free length, built in the graph), ``out_len`` a python int.
    Point j belongs to bin i where ``(j + 1) * out > i * in`` and ``j * out < (i + 1) * in`` (the two bounds
    multiplied out, so no rounded division decides a boundary; exact in float32 while ``in * out < 2**24``)."""
    if isinstance(out_len, bool) or not isinstance(out_len, int) or out_len < 1:
        raise ValueError(f"pooling_matrix: out_len must be a positive python int, got {out_len!r}")
    return _memoised('pooling', (in_len, out_len, str(dtype)), lambda: _build_pooling_matrix(in_len, out_len, dtype))


def _build_pooling_matrix(in_len, out_len, dtype):
    in_f, points = _positions(in_len)  # [in]
    bins = paddle.arange(out_len, dtype='float32').unsqueeze(1)  # [out, 1]
    inside = paddle.logical_and((points + 1.0) * float(out_len) > bins * in_f,
                                points * float(out_len) < (bins + 1.0) * in_f)  # [out, in]
    members = paddle.cast(inside, 'float32')
    matrix = members / paddle.sum(members, axis=1, keepdim=True)
    return matrix if dtype is None or dtype == matrix.dtype else paddle.cast(matrix, dtype)


@paddle.jit.not_to_static  # python-level choice of form and shape logic; the ops it builds are recorded as they are
def adaptive_avg_pool2d(x, output_size):
    """``F.adaptive_avg_pool2d(x, output_size)`` of an NCHW ``x`` (``output_size``: an int or (h, w) ints).

    While tracing inside :func:`trace_forms` (``onnx=True``), a grid other than 1 x 1 is computed as
    ``rows [h, H] @ x @ cols^T``
    with :func:`pooling_matrix` (the same bins; sums in another order, so equal up to float rounding): the form
    paddle2onnx converts at a free input size. Everywhere else (the dynamic graph, Paddle Inference exports, whose
    oneDNN runs the pooling op) it is Paddle's op."""
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if not _onnx_tracing() or (out_h, out_w) == (1, 1):
        return F.adaptive_avg_pool2d(x, output_size)
    return _matrix_pool(x, int(out_h), int(out_w))


def _matrix_pool(x, out_h, out_w):
    if len(x.shape) != 4:
        raise ValueError(f"adaptive_avg_pool2d expects an NCHW tensor, got shape {list(x.shape)}")
    in_h, in_w = _lengths(x)
    rows = pooling_matrix(in_h, out_h, x.dtype)  # [out_h, in_h]
    cols = pooling_matrix(in_w, out_w, x.dtype)  # [out_w, in_w]
    return paddle.matmul(paddle.matmul(rows, x), cols, transpose_y=True)
