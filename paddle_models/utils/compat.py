"""Workarounds for differences between Paddle versions, in one place; each function's docstring names the
versions it is for (the project runs on Paddle 2.6.2 and 3.3.1).

``preload_zlib`` must run before ``import paddle``: Paddle 2.6.2's wheel bundles a zlib that breaks later users of
the system zlib (``zlib.crc32``, ``gzip``, PNG checks) unless the system library is loaded first. The package's
``__init__`` and ``tests/conftest.py`` call it; tools import the package before Paddle. ``all_cpu_cores`` wraps
that first import of Paddle too.
"""
import contextlib
import importlib
import os
import sys
import types


def preload_zlib():
    """Load the system zlib into the process (idempotent)."""
    importlib.import_module('zlib')


# the two lines Paddle's import prints to stderr when OMP_NUM_THREADS is above 1 (Paddle 2.6.2 and 3.x)
_THREADS_WARNING = ('WARNING: OMP_NUM_THREADS set to ', 'PLEASE USE OMP_NUM_THREADS WISELY.')
_IMPORT_THREADS = []  # the OMP_NUM_THREADS all_cpu_cores() gave Paddle's import, where it did


def cpu_threads():
    """A description of the OpenMP threads Paddle's CPU kernels use in this process, for the training log."""
    if _IMPORT_THREADS:
        return f"OMP_NUM_THREADS={_IMPORT_THREADS[0]} (set by paddle_models at import)"
    return f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"


@contextlib.contextmanager
def all_cpu_cores():
    """Wrap the first ``import paddle`` in this: Paddle's CPU kernels then use every core this process may run on.

    Paddle (2.6.2 and 3.x) sets ``OMP_NUM_THREADS=1`` at import where it is unset, which keeps its CPU kernels
    (matrix products, convolutions, elementwise ops) on one thread: a training step on 2 cores ran 10-14% slower
    (docs/speed.md, "CPU training"). Where the variable is unset and Paddle is not imported yet, it is set to the
    number of usable cores for the import (the OpenMP runtime reads it when Paddle first runs a parallel kernel)
    and unset again after it, so that child processes (data-loader workers, deploy/python/infer.py run from a
    tool) start as they would have; the two-line warning Paddle's import prints for a value above 1 (meant for
    data-parallel GPU runs) is left out of stderr, everything else the import prints passes through. An
    ``OMP_NUM_THREADS`` the user set is kept as it is (``OMP_NUM_THREADS=1`` restores Paddle's single thread)."""
    if 'paddle' in sys.modules or os.environ.get('OMP_NUM_THREADS'):
        yield
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
    os.environ['OMP_NUM_THREADS'] = str(cores)
    _IMPORT_THREADS.append(cores)
    stderr = sys.stderr
    sys.stderr = _WithoutThreadsWarning(stderr)
    try:
        yield
    finally:
        os.environ.pop('OMP_NUM_THREADS', None)
        sys.stderr = stderr


class _WithoutThreadsWarning:
    """``stream`` without Paddle's two-line OMP_NUM_THREADS warning (each line and the newline ``print`` writes after
    it). A proxy rather than a buffer: a logging handler created during the import keeps writing through it, to the
    stream it wraps, as it would have."""

    def __init__(self, stream):
        self._stream = stream
        self._dropped = False

    def write(self, text):
        dropped = text.startswith(_THREADS_WARNING) or (self._dropped and text == '\n')
        self._dropped = dropped and text != '\n'
        return len(text) if dropped else self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def paddle_3_or_later():
    """Whether Paddle is 3.x or later (a develop build, version 0.0.0, counts as the newest). Paddle 3.x traces
    PIR programs by default and its oneDNN executor rejects ``bilinear_interp`` there (``layers/resize.py`` then
    interpolates a free-length axis with a dense matrix); Paddle 2.6.2's runs it in its legacy programs."""
    import paddle
    return paddle.__version__.split('.')[0] not in ('1', '2')


def _use_pir_api():
    """Paddle 3.x's ``paddle.framework.use_pir_api``; None on Paddle 2.6.2, which has no PIR."""
    import paddle
    return getattr(paddle.framework, 'use_pir_api', None)


def legacy_mode():
    """Whether this process builds legacy static programs: Paddle 2.6.2 (no PIR, always), or Paddle 3.x imported
    with ``FLAGS_enable_pir_api=0`` (what ``tools/quantize.py`` and ``export.py --format openvino`` re-run
    themselves with; see ``core/legacy.py``)."""
    use_pir = _use_pir_api()
    return use_pir is None or not use_pir()


def memory_optim_supported(program_file):
    """Whether Paddle Inference may run ``program_file`` with ``Config.enable_memory_optim()``: Paddle 3.3.1 fails
    on PIR programs (``model.json``) with it ("Not find predictor_id 0 and pass_name memory_optimize_pass" at
    ``create_predictor``); legacy programs (``model.pdmodel``, Paddle 2.6.2 and 3.x) take it fine.
    ``deploy/python/infer.py`` applies the same rule itself (it stays standalone)."""
    return not str(program_file).endswith('.json')


def shape_int32(x):
    """``x``'s shape as an int tensor, read with Paddle 3's int32 ``shape`` op while a PIR program is traced
    (there ``paddle.shape`` traces ``shape64``, which has no oneDNN kernel: Paddle Inference converts a tensor from
    oneDNN's blocked layout back to plain NCHW just to read its dims), else with ``paddle.shape`` (the dynamic
    graph, and legacy programs of Paddle 2.6 or ``FLAGS_enable_pir_api=0``, whose ``shape`` op is int32 already).
    A Paddle-version workaround of ``utils/spatial.py: feature_shape``, not a model behaviour."""
    import paddle
    if not paddle.in_dynamic_mode() and getattr(paddle.framework, 'in_pir_mode', lambda: False)():
        return paddle._C_ops.shape(x)
    return paddle.shape(x)


def _append_legacy_op(op_type, x, inputs=None, attrs=None, dtype=None):
    """Append ``op_type`` (inputs ``X`` = ``x`` plus ``inputs``, output ``Out`` of ``dtype``, default ``x``'s) to the
    current legacy program; returns ``Out``."""
    from paddle.base.layer_helper import LayerHelper

    helper = LayerHelper(op_type)
    out = helper.create_variable_for_type_inference(dtype=x.dtype if dtype is None else dtype)
    helper.append_op(type=op_type, inputs={'X': [x], **(inputs or {})}, outputs={'Out': [out]}, attrs=attrs or {})
    return out


def _legacy_matmul(x, y, transpose_x=False, transpose_y=False, name=None):
    return _append_legacy_op('matmul_v2', x, {'Y': [y]}, {'trans_x': bool(transpose_x), 'trans_y': bool(transpose_y)})


def _legacy_gelu(x, approximate=False, name=None):
    return _append_legacy_op('gelu', x, attrs={'approximate': approximate in (True, 'tanh')})


def _legacy_argmax(x, axis=None, keepdim=False, dtype='int64', name=None):
    from paddle.base.framework import convert_np_dtype_to_dtype_

    var_type = convert_np_dtype_to_dtype_(dtype)
    return _append_legacy_op('arg_max', x, attrs={'axis': 0 if axis is None else int(axis), 'flatten': axis is None,
                                                  'keepdims': bool(keepdim), 'dtype': int(var_type)}, dtype=var_type)


def _legacy_unary(op_type):
    def unary(x, name=None):
        return _append_legacy_op(op_type, x)
    return unary


def _legacy_elementwise(op_type):
    def binary(x, y, name=None):
        from paddle.base.framework import Variable

        if not isinstance(x, Variable) or not isinstance(y, Variable):
            raise TypeError(f"{op_type} in a legacy program: both operands must be tensors, got "
                            f"{type(x).__name__} and {type(y).__name__}")
        return _append_legacy_op(op_type, x, {'Y': [y]}, {'axis': -1})
    return binary


# Paddle 3.3 moved these Python APIs into C++ (``paddle.matmul`` is ``paddle._C_ops.matmul``, ``F.gelu`` is
# ``_C_ops.gelu``, ...): the C functions take dygraph Tensors and PIR Values and raise on a legacy program's
# Variable ("matmul(): argument (position 1) must be Value, but got Variable"). Each is traced here into the legacy
# op Paddle 2.6's Python code appended, with the API's signature (less the keyword-only ``out``).
_LEGACY_APIS = {
    'matmul': _legacy_matmul,
    'gelu': _legacy_gelu,
    'argmax': _legacy_argmax,
    'maximum': _legacy_elementwise('elementwise_max'),
    'minimum': _legacy_elementwise('elementwise_min'),
    **{name: _legacy_unary(name) for name in ('abs', 'ceil', 'cos', 'exp', 'floor', 'log', 'rsqrt', 'sigmoid',
                                              'sin', 'sqrt', 'tanh')},
}


def _legacy_op_api(name, original):
    """``original`` (one of Paddle's C functions) that also takes a legacy program's Variables: where any argument
    is one, ``_LEGACY_APIS[name]`` appends the legacy op; dygraph Tensors and PIR Values go to ``original``. Marked
    for dy2st not to convert it (it is called while tracing, not traced through)."""
    import paddle
    from paddle.base.framework import Variable

    legacy = _LEGACY_APIS[name]

    def api(*args, **kwargs):
        if any(isinstance(a, Variable) for a in (*args, *kwargs.values())):
            return legacy(*args, **kwargs)
        return original(*args, **kwargs)

    api.__name__ = api.__qualname__ = name
    api.__doc__ = f"paddle.{name} with a legacy-program path (paddle_models.utils.compat.legacy_program_apis)"
    return paddle.jit.not_to_static(api)


@contextlib.contextmanager
def legacy_program_apis():
    """Within this context Paddle's C-only APIs of ``_LEGACY_APIS`` (``paddle.matmul``, ``F.gelu``/``nn.GELU``,
    ``paddle.minimum``, ``paddle.floor``, ``F.sigmoid``, ...) also trace into a legacy program (Paddle 3.x under
    ``FLAGS_enable_pir_api=0``, what ``tools/quantize.py`` and ``export.py --format openvino`` trace), as the same
    legacy ops Paddle 2.6 traced them to (``matmul_v2``, ``gelu``, ...). Without it SegFormer and SegNeXt fail to
    trace there (``matmul(): argument (position 1) must be Value, but got Variable``).

    Every place that holds one of those C functions is patched (the ``paddle`` modules' attributes, e.g.
    ``paddle.matmul``, ``paddle.tensor.linalg.matmul``, ``paddle.nn.functional.gelu``, and the legacy
    ``Variable``'s methods, e.g. ``x.matmul``) and restored on exit. Dygraph Tensors and PIR Values still go to the
    C function. A no-op in PIR mode; on Paddle 2.6 the Python APIs keep their own legacy path and hand the C
    functions dygraph tensors only."""
    import paddle
    from paddle.base.framework import Variable

    originals = {}
    if _use_pir_api() is not None and legacy_mode():  # Paddle 3.x in legacy mode only
        for name in _LEGACY_APIS:
            function = getattr(paddle._C_ops, name, None)
            if isinstance(function, types.BuiltinFunctionType):
                originals[name] = function
    replaced = []  # (owner, attribute, original)
    try:
        if originals:
            apis = {id(function): _legacy_op_api(name, function) for name, function in originals.items()}
            owners = [module for key, module in list(sys.modules.items())
                      if module is not None and (key == 'paddle' or key.startswith('paddle.'))] + [Variable]
            for owner in owners:
                namespace = getattr(owner, '__dict__', {})
                for name, function in originals.items():
                    if namespace.get(name) is function:
                        setattr(owner, name, apis[id(function)])
                        replaced.append((owner, name, function))
        yield
    finally:
        for owner, name, function in reversed(replaced):
            setattr(owner, name, function)
