"""The checks of a saved Paddle program: run it in Paddle Inference with oneDNN, and on the plain CPU kernels
where that fails or deviates; the agreement rule of the ONNX and OpenVINO exports.

oneDNN + PIR findings (Paddle 3.3.1, CPU; each op exported under PIR with a free [N, C, H, W] input and run by
Paddle Inference with oneDNN on and off, outputs compared):

* Run and match the plain CPU kernels (max abs diff <= 1e-6, sums over many elements ~5e-5): conv2d (stride 2,
  dilated, depthwise), conv2d_transpose, batch_norm, relu, relu6, leaky_relu, sigmoid, hardswish, silu, gelu (erf
  and tanh forms), erf, tanh, pow, exp, sqrt, concat, split, slice, pad (constant, reflect), pool2d (avg with and
  without ceil_mode, max), adaptive avg pool (1, 3, 6), adaptive max pool, softmax, argmax (int32), layer_norm,
  group_norm, instance_norm, matmul (with transpose_y), flatten/transpose/reshape with dynamic H and W (shape op
  + slicing), mean/sum reductions, elementwise ops with broadcasting, dropout (eval), pixel_shuffle, and the
  portable resize's ops (arange, floor, clip, cast, gather, minimum, lerp, equal, matmul).
* Fail: ``bilinear_interp`` and ``nearest_interp`` (whether sized from ``paddle.shape``, ``x.shape`` or
  ``scale_factor``): "ConvertPirAttribute2RuntimeAttribute not support [pir::ArrayAttribute<pir::DoubleAttribute>]"
  at ``run()``. Hence models resize through ``paddle_models.layers.resize`` and export traces them inside
  ``trace_forms(portable=True)`` (``layers/resize.py``, entered by ``layers/deploy.py: tracing_for``), which builds
  resizing from the ops above.

Paddle 2.6.2 (legacy program, oneDNN): the same list runs, ``bilinear_interp`` included; but ``nearest_interp``
runs with results that differ from the plain CPU kernel (different source-index rounding), and elementwise ops on
constant 0-D tensors fail ("could not create a primitive descriptor for an eltwise forward propagation
primitive"). The check therefore compares the oneDNN output with a reference, not just runs it.

The check (``check_program``): the saved program runs once with oneDNN on a small random input and its output is
compared with the dynamic graph's on the same input (cheap). Only when the oneDNN run fails or deviates does the
program also run on the plain CPU kernels (``disable_mkldnn``): that run must succeed or the export fails, and the
oneDNN output is then judged against it (so a program whose traced form differs from the dynamic model by design
still passes when oneDNN agrees with the plain kernels). The plain run is skipped otherwise because Paddle
Inference's first run of a large program (its dependency analysis grows faster than linearly with the op count) is
the slowest step of exporting a big model; a deploy with oneDNN never uses the plain kernels.

What it buys: on the CPU, oneDNN runs these convolutional networks several times faster than Paddle
Inference's plain kernels with the same argmax, and the portable resize costs nothing measurable next to
``bilinear_interp`` (figures: docs/deployment.md, "Export and Paddle Inference").

Both Paddle versions enable oneDNN by default in ``paddle.inference.Config`` on CPU: a plain-CPU run must call
``disable_mkldnn()``.
"""
import logging
import math
import re

import numpy as np
import paddle

from paddle_models.core.export.program import ExportModel
from paddle_models.errors import error_line

logger = logging.getLogger(__name__)

# ops known to break Paddle Inference's oneDNN executor under PIR (see the module docstring)
_ONEDNN_PIR_BAD_OPS = ('bilinear_interp', 'nearest_interp', 'bicubic_interp', 'linear_interp', 'trilinear_interp')


def predict(program, params, data, onednn, openvino=False):
    """Run the saved program once in Paddle Inference on the CPU; returns the first output."""
    from paddle.inference import Config, create_predictor

    from paddle_models.core.exported import cpu_config

    config = Config(program, params)
    config.disable_glog_info()
    predictor = create_predictor(cpu_config(config, 1, onednn, openvino=openvino))
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(data.shape))
    handle.copy_from_cpu(data)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def paddle_error_line(err):
    """The informative line of a Paddle error (its last non-empty line, C++ location kept short)."""
    text = error_line(err, 'last', type(err).__name__, skip=('[',))
    text = re.sub(r'\s*\(at /paddle/[^)]*\)', '', text)  # the C++ source location
    return ' '.join(text.split())[:400]


def dynamic_output(model, data, output_op):
    """The dynamic graph's output (after ``output_op``) on the check input, as the oneDNN run's first reference;
    None when the dynamic forward fails (the check then compares with a plain-CPU run only)."""
    try:
        with paddle.no_grad():
            out = ExportModel(model, output_op)(paddle.to_tensor(data))
        return out.numpy()
    except Exception:  # noqa: BLE001  (the traced program is what is checked; this is only a shortcut)
        logger.debug("the dynamic forward on the check input failed; checking against a plain CPU run only",
                     exc_info=True)
        return None


def check_program(program, params, data, reference, output_op, op_names):
    """Run the saved program with oneDNN and return None when it runs and matches, else the reason (one line).

    The oneDNN output is first compared with ``reference`` (the dynamic graph's output). Only when the oneDNN run
    fails or deviates from it does the program also run on the plain CPU kernels: that run must succeed (else
    RuntimeError, the export fails), and oneDNN is then judged against it (a program that matches the plain CPU
    run passes, e.g. where traced and dynamic model differ by design)."""
    fast, fast_error = None, None
    try:
        fast = predict(program, params, data, onednn=True)
    except Exception as err:  # noqa: BLE001  (any failure is recorded, with its cause)
        fast_error = err
    if fast is not None and reference is not None and _deviation(fast, reference, output_op) is None:
        return None
    plain = run_plain(program, params, data)
    if fast_error is not None:
        return _onednn_failure(fast_error, op_names)
    return _deviation(fast, plain, output_op)


def run_plain(program, params, data):
    try:
        return predict(program, params, data, onednn=False)
    except Exception as err:
        raise RuntimeError(f"the exported program does not run in Paddle Inference (CPU, no oneDNN) on an input of "
                           f"shape {list(data.shape)}: {paddle_error_line(err)}") from err


def _onednn_failure(err, op_names):
    """The reason (one line) recorded for a oneDNN run that raised ``err``, naming the culprit ops where known."""
    reason = paddle_error_line(err)
    culprits = sorted({name for name in op_names for bad in _ONEDNN_PIR_BAD_OPS if bad in name})
    culprits += sorted(set(re.findall(r'operator < (\w+) >', str(err))) - set(culprits))
    if culprits:
        reason = f"ops {', '.join(culprits)}: {reason}"
    return f"oneDNN run failed ({reason})"


def _deviation(fast, plain, output_op):
    """None when the oneDNN output ``fast`` matches the reference ``plain`` (argmax: at most 1% of the pixels
    differ; else max abs diff <= 1e-3 * max(1, max |plain|)), else the reason (one line)."""
    if fast.shape != plain.shape:
        return f"oneDNN output shape {list(fast.shape)} differs from the plain CPU run's {list(plain.shape)}"
    if output_op == 'argmax':
        mismatch = float(np.mean(fast != plain))
        if mismatch > 0.01:
            return f"oneDNN output differs from the plain CPU run on {mismatch:.1%} of the pixels"
    else:
        diff = float(np.max(np.abs(fast.astype('float64') - plain))) if plain.size else 0.0
        scale = max(1.0, float(np.max(np.abs(plain)))) if plain.size else 1.0
        if not math.isfinite(diff) or diff > 1e-3 * scale:
            return f"oneDNN output differs from the plain CPU run (max abs diff {diff:.3g})"
    return None


def compare(got, want, output_op):
    """None for different shapes; else for argmax the fraction of differing pixels, otherwise
    max |got - want| / max |want| (relative to the largest magnitude of the reference)."""
    if got.shape != want.shape:
        return None
    if output_op == 'argmax':
        return float(np.mean(got != want)) if want.size else 0.0
    if not want.size:
        return 0.0
    diff = float(np.max(np.abs(got.astype('float64') - want)))
    return diff / max(float(np.max(np.abs(want))), 1e-12)


def agreement(got, want, output_op, name):
    """``(error, None)`` where the output ``got`` of runtime ``name`` matches Paddle Inference's ``want`` (argmax:
    at most 1% of the pixels differ; else max |got - want| / max |want| <= 1e-4), else ``(error, what differs)``;
    ``error`` is :func:`compare`'s. The rule of the ONNX and OpenVINO exports' checks."""
    error = compare(got, want, output_op)
    if error is not None and error <= (0.01 if output_op == 'argmax' else 1e-4):
        return error, None
    if error is None:
        return None, f"shape {list(got.shape)}"
    if output_op == 'argmax':
        return error, f"{error:.1%} of the pixels"
    return error, f"max |{name} - paddle| / max |paddle| = {error:.3g}"
