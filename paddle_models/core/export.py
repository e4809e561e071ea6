"""Export a segmentation model to a Paddle Inference program + ``deploy.yaml`` (PaddleSeg's deployment format),
then check that the saved program runs under Paddle Inference with oneDNN on the CPU.

Output (``save_dir``):

* ``model.json`` (Paddle 3.x, PIR program) or ``model.pdmodel`` (Paddle 2.6, legacy program), ``model.pdiparams``
  (and ``model.pdiparams.info`` on 2.6);
* ``deploy.yaml``: ``Deploy: {model, params, transforms, input_shape, output_op, output_dtype}`` as PaddleSeg's
  ``tools/export.py`` writes it (``transforms`` are the validation transforms, for the runner's preprocessing),
  plus ``enable_mkldnn`` (whether the oneDNN check passed) and, when it failed, ``mkldnn_error`` (why); and,
  where given, ``class_names`` (a name per class id) and ``palette`` (an ``[r, g, b]`` per class id), which
  deploy/python/infer.py and ``val.py --inference_model`` name and colour the classes with (PaddleSeg's own exports
  have neither key; the runners then fall back to ``class N`` and PaddleSeg's colour map).

``output_op`` follows PaddleSeg 2.8: 'argmax' appends ``argmax(axis=1, dtype=int32)`` (output [N, H, W] int32
class ids, no channel axis), 'softmax' appends ``softmax(axis=1)`` ([N, C, H, W] float32), 'none' leaves the
logits. Only the first (main) output of the model's list is exported.

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
  ``portable_resize()``, which builds resizing from the ops above.

Paddle 2.6.2 (legacy program, oneDNN): the same list runs, ``bilinear_interp`` included; but ``nearest_interp``
runs with results that differ from the plain CPU kernel (different source-index rounding), and elementwise ops on
constant 0-D tensors fail ("could not create a primitive descriptor for an eltwise forward propagation
primitive"). The check below therefore compares the oneDNN output with a reference, not just runs it.

The check (``_check_program``): the saved program runs once with oneDNN on a small random input and its output is
compared with the dynamic graph's on the same input (cheap). Only when the oneDNN run fails or deviates does the
program also run on the plain CPU kernels (``disable_mkldnn``): that run must succeed or the export fails, and the
oneDNN output is then judged against it (so a program whose traced form differs from the dynamic model by design
still passes when oneDNN agrees with the plain kernels). The plain run is skipped otherwise because Paddle
Inference's first run of a large program (its dependency analysis grows faster than linearly with the op count) is
the slowest step of exporting a big model; a deploy with oneDNN never uses the plain kernels.

Tracing cost: dy2st re-converts every layer instance's ``forward``, re-checks every call against its list of
Paddle functions and records each op's full Python call stack; on a model of thousands of layer calls
(MscaleOCRNet on HRNet-W48) that was most of the export. ``_fast_tracing`` shares those conversions and checks per
function and keeps the innermost frames of each call stack, for the duration of the trace only (same program).

Tracing uses dy2st's AST mode (``full_graph=True``; with the default SOT mode Paddle 3.3.1 warns "You can set
full_graph=True, then you can assign input spec"). Its limits show up as export errors in model code, e.g. a default argument naming a module global
(``def f(self, x, depth=LEVELS)``) raises "NameError: name 'LEVELS' is not defined" in the converted code.

What it buys: on the CPU, oneDNN runs these convolutional networks several times faster than Paddle
Inference's plain kernels with the same argmax, and the portable resize costs nothing measurable next to
``bilinear_interp`` (figures: docs/deployment.md, "Export and Paddle Inference").

Both Paddle versions enable oneDNN by default in ``paddle.inference.Config`` on CPU: a plain-CPU run must call
``disable_mkldnn()``.

ONNX (``fmt='onnx'``, ``export.py --format onnx``): the model is traced as above but with Paddle's own resize ops
(``portable=False``: paddle2onnx 2.1.0 has no converter for the portable resize's ``lerp``, while
``bilinear_interp``/``nearest_interp`` become ONNX ``Resize``), saved to a scratch folder, converted by paddle2onnx
(opset 11 or higher as the ops need) to ``model.onnx``, and checked: ONNX Runtime (CPU) runs it once on a random
input and its output must match Paddle Inference's (plain CPU kernels) on the traced program within 1e-4 relative
(max |onnx - paddle| / max |paddle|; for argmax outputs at most 1% of the pixels may differ). ``deploy.yaml``
then names ``model: model.onnx`` and ``backend: onnxruntime`` (Paddle exports: ``backend: paddle_inference``) and
has no ``params``. With ``backend='openvino'`` (``export.py --format onnx --backend openvino``) the check runs in the
standalone OpenVINO runtime instead (``paddle_models.core.inference.OpenVinoSession``, same rule) and deploy.yaml
names ``backend: openvino``. paddle2onnx aborts the whole process (SIGABRT) on an op it cannot convert, so the
conversion runs in a child Python process; when it fails, the error names the ops missing from paddle2onnx's own list
(``get_all_supported_operators_pir``), else the specific reason paddle2onnx printed (e.g. "[OP: pd_op.pool2d]
Adaptive only support static input shape."). ``F.gelu(approximate=True)`` is traced from elementary ops
(``_onnx_exact_gelu``), and the trace runs inside ``layers/resize.py: onnx_forms()``, where a resize's size tensor
is passed as its two entries and adaptive average pooling (PSPNet's and UPerNet's pyramids) is two matrix products:
the forms paddle2onnx converts at a free input size.

OpenVINO (``fmt='openvino'``, ``export.py --format openvino``): a legacy program (``model.pdmodel``) for Paddle
Inference's OpenVINO engine, whose pass works on the legacy IR only; see :func:`_export_openvino` and
``paddle_models.core.legacy``. ``deploy.yaml`` adds ``enable_openvino: true``.
"""
import contextlib
import copy
import inspect
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import yaml

from paddle_models.core.folders import ReplacingWrite
from paddle_models.errors import UserError, error_line
from paddle_models.layers.resize import onnx_forms, portable_resize
from paddle_models.utils.compat import legacy_program_apis

logger = logging.getLogger(__name__)

OUTPUT_OPS = ('argmax', 'softmax', 'none')
FORMATS = ('paddle', 'onnx', 'openvino')
SAVE_NAME = 'model'
DEPLOY_FILE = 'deploy.yaml'
ONNX_FILE = SAVE_NAME + '.onnx'
OPENVINO_PROGRAM = SAVE_NAME + '.pdmodel'  # a legacy program (see _export_openvino)
ONNX_OPSET = 11  # the first opset whose Resize has the modes bilinear_interp and nearest_interp need
# the versions requirements.txt pins (named in the error when they are missing)
ONNX_REQUIREMENTS = 'paddle2onnx==2.1.0 onnxruntime==1.32.0'
# spatial size of the random input of the oneDNN check where the export leaves it free
CHECK_HW = (64, 96)
# ops known to break Paddle Inference's oneDNN executor under PIR (see the module docstring)
_ONEDNN_PIR_BAD_OPS = ('bilinear_interp', 'nearest_interp', 'bicubic_interp', 'linear_interp', 'trilinear_interp')


class _ExportModel(nn.Layer):
    """The model as deployed: its main output, followed by ``output_op`` (PaddleSeg 2.8's WrappedModel semantics).

    Args:
        model (nn.Layer): A segmentation model whose forward returns a list of logits [N, C, H, W].
        output_op (str): 'argmax' (int32 ids [N, H, W]), 'softmax' (probabilities) or 'none' (logits).
    """

    def __init__(self, model, output_op):
        super().__init__()
        self.model = model
        self.output_op = output_op

    def forward(self, x):
        out = self.model(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        if self.output_op == 'argmax':
            out = paddle.argmax(out, axis=1, dtype='int32')
        elif self.output_op == 'softmax':
            out = F.softmax(out, axis=1)
        return out


def export_model(model, save_dir, input_shape=None, output_op='argmax', transforms=None, portable=True,
                 fmt='paddle', keep_program=False, class_names=None, palette=None, backend=None):
    """Export ``model`` for Paddle Inference into ``save_dir`` and check it with oneDNN (``fmt='paddle'``), or to
    ONNX and check it with ONNX Runtime (``fmt='onnx'``, see the module docstring).

    The model is traced with ``paddle.jit.to_static`` (full graph) for an input of ``input_shape`` — by default
    [None, 3, None, None], a free batch and spatial size — inside ``portable_resize()`` (unless ``portable`` is
    False), saved with ``paddle.jit.save`` to ``save_dir/model``, and described in ``save_dir/deploy.yaml``.
    Everything is written into a temporary folder beside ``save_dir`` that replaces ``save_dir`` only at the end,
    so a failure leaves nothing half-written (and a previous export in ``save_dir`` intact).

    Then the saved program runs once in Paddle Inference with oneDNN on a small random input, compared with the
    dynamic graph's output; only where that fails or deviates does it also run without oneDNN (see the module
    docstring). A failing plain-CPU run fails the export (RuntimeError). A failing or deviating oneDNN run is
    recorded in deploy.yaml (``enable_mkldnn: false`` and ``mkldnn_error``) and logged as a warning naming the
    cause.

    Args:
        model (nn.Layer): Segmentation model returning a list of logits (PaddleSeg convention). Its train/eval
            state is restored afterwards.
        save_dir (str): Output folder. It must not exist, be empty, or hold a previous export (a deploy.yaml).
        input_shape (list|None): [N, C, H, W] of the exported input; None or -1 entries stay free.
            Default: [None, 3, None, None].
        output_op (str): 'argmax', 'softmax' or 'none', as PaddleSeg's export. Default: 'argmax'.
        transforms (list|None): The validation transforms config (list of dicts with a 'type'), written to
            deploy.yaml for the runner's preprocessing. None writes an empty list (with a warning).
        portable (bool): Trace inside ``portable_resize()`` (Paddle format only). Default: True.
        fmt (str): 'paddle' (Paddle Inference program), 'onnx' (``model.onnx``) or 'openvino' (a legacy program
            for Paddle Inference's OpenVINO engine; this process must be in legacy mode, see
            :func:`_export_openvino`). Default: 'paddle'.
        keep_program (bool): With ``fmt='onnx'``, keep the Paddle program the ONNX model was converted from in
            ``save_dir/paddle`` (model.json/.pdmodel + model.pdiparams), e.g. to compare ONNX Runtime with Paddle
            Inference on the very same graph. Default: False.
        class_names (list|None): A name per class id, written to deploy.yaml (``class_names``) for the runners'
            logs and reports. Default: None (not written).
        palette (list|None): An ``[r, g, b]`` (integers 0..255) per class id, written to deploy.yaml
            (``palette``) for the runners' pseudo-colour PNGs. Default: None (not written). Both lists must have
            one entry per class of the model (its ``num_classes`` attribute, where it has one).
        backend (str|None): With ``fmt='onnx'``: the runtime the export is checked in and deploy.yaml names,
            'onnxruntime' (None: the default) or 'openvino' (the standalone OpenVINO runtime). Other formats run
            in Paddle Inference only: None.

    Returns:
        dict: ``save_dir``, ``model`` (program file), ``params``, ``deploy_yaml`` (absolute paths),
        ``program_format`` ('pir' or 'legacy'), ``input_shape``, ``output_op``, ``onednn`` (bool: the oneDNN check
        passed) and ``onednn_error`` (None or the reason). With ``fmt='onnx'``: ``save_dir``, ``model``
        (model.onnx), ``params`` (None), ``deploy_yaml``, ``program_format`` ('onnx'), ``input_shape``,
        ``output_op``, ``opset``, ``check_error`` (max |onnx - paddle| / max |paddle|, or for argmax the
        fraction of differing pixels), ``backend`` (the runtime checked and named in deploy.yaml) and
        ``paddle_program`` (the kept program's folder, or None). With
        ``fmt='openvino'``: the Paddle keys plus ``openvino`` (True) and ``check_error`` (the engine against the
        same program without it).

    Raises:
        UserError: A bad ``output_op``, ``input_shape``, ``transforms``, ``class_names``, ``palette``,
            ``save_dir`` or ``fmt``; for ONNX also
            paddle2onnx/onnxruntime missing, an op paddle2onnx cannot convert, or an ONNX Runtime run that fails
            or does not match the dynamic model; for OpenVINO a Paddle without the engine, a PIR-mode process, a
            model that cannot be traced as a legacy program, or an engine run that fails or does not match.
    """
    if fmt not in FORMATS:
        raise UserError(f"format: unknown value {fmt!r}; expected one of {', '.join(FORMATS)}")
    if output_op not in OUTPUT_OPS:
        raise UserError(f"output_op: unknown value {output_op!r}; expected one of {', '.join(OUTPUT_OPS)}")
    if fmt == 'onnx':
        backend = backend or 'onnxruntime'
        _check_onnx_packages(backend)
    elif backend is not None:
        raise UserError(f"backend: {backend!r} applies to ONNX exports (format onnx); format {fmt} runs in Paddle "
                        f"Inference only")
    if fmt == 'openvino':
        _check_openvino()
    shape = _check_input_shape(input_shape)
    transforms = _check_transforms(transforms)
    classes = _check_deploy_classes(class_names, palette, model)
    save_dir = os.path.abspath(os.fspath(save_dir))
    _check_save_dir(save_dir)

    write = ReplacingWrite(save_dir, 'save_dir')  # locked: one writer; the leftovers of killed exports removed
    tmp_dir = write.open()
    modes = [(layer, layer.training) for layer in model.sublayers(include_self=True)]
    previous_stage = os.environ.get('PADDLESEG_EXPORT_STAGE')
    try:
        os.environ['PADDLESEG_EXPORT_STAGE'] = 'True'  # PaddleSeg models read it to drop training-only branches
        model.eval()
        if fmt == 'onnx':
            info = _export_onnx(model, tmp_dir, shape, output_op, transforms, keep_program, classes, backend)
            write.commit()
            return _onnx_result(info, save_dir, shape, output_op)
        if fmt == 'openvino':
            info = _export_openvino(model, tmp_dir, shape, output_op, transforms, classes)
            write.commit()
            logger.info("exported %s (%s); Paddle Inference's OpenVINO engine matches its oneDNN/CPU run", save_dir,
                        OPENVINO_PROGRAM)
            return dict(info, save_dir=save_dir, model=os.path.join(save_dir, OPENVINO_PROGRAM),
                        params=os.path.join(save_dir, SAVE_NAME + '.pdiparams'),
                        deploy_yaml=os.path.join(save_dir, DEPLOY_FILE))
        check_input = _check_input(shape)
        params_file = SAVE_NAME + '.pdiparams'
        reference = _dynamic_output(model, check_input, output_op)
        traced = _fold_batch_norms(model, check_input)
        while True:
            op_names = _save_program(traced, tmp_dir, shape, output_op, portable)
            program_file = _program_file(tmp_dir)
            program_path, params_path = os.path.join(tmp_dir, program_file), os.path.join(tmp_dir, params_file)
            onednn_error = _check_program(program_path, params_path, check_input, reference, output_op, op_names)
            if onednn_error is None or traced is model:
                break
            # oneDNN has gone wrong on some folded programs (MultiScaleAttention on HarDNet): the unfolded one decides
            logger.info("oneDNN fails on the program with folded batch norms (%s); exporting it unfolded",
                        onednn_error)
            for name in os.listdir(tmp_dir):
                os.remove(os.path.join(tmp_dir, name))
            traced = model

        deploy = {
            'model': program_file,
            'params': params_file,
            'backend': 'paddle_inference',
            'transforms': transforms,
            'input_shape': shape,
            'output_op': output_op,
            'output_dtype': 'int32' if output_op == 'argmax' else 'float32',
            'enable_mkldnn': onednn_error is None,
        }
        if onednn_error is not None:
            deploy['mkldnn_error'] = onednn_error
        _write_deploy(tmp_dir, dict(deploy, **classes))
        write.commit()
    except BaseException:
        write.abort()
        raise
    finally:
        model.train() if modes[0][1] else model.eval()  # also Paddle's global tracer mode, as the root had it
        for layer, training in modes:
            layer.training = training
        if previous_stage is None:
            os.environ.pop('PADDLESEG_EXPORT_STAGE', None)
        else:
            os.environ['PADDLESEG_EXPORT_STAGE'] = previous_stage

    if onednn_error is None:
        logger.info("exported %s (%s); Paddle Inference runs it with oneDNN", save_dir, program_file)
    else:
        logger.warning("exported %s (%s), but Paddle Inference with oneDNN fails on it: %s; deploy.yaml records "
                       "enable_mkldnn: false, so deploy/python/infer.py runs it without oneDNN",
                       save_dir, program_file, onednn_error)
    return {
        'save_dir': save_dir,
        'model': os.path.join(save_dir, program_file),
        'params': os.path.join(save_dir, params_file),
        'deploy_yaml': os.path.join(save_dir, DEPLOY_FILE),
        'program_format': 'pir' if program_file.endswith('.json') else 'legacy',
        'input_shape': shape,
        'output_op': output_op,
        'onednn': onednn_error is None,
        'onednn_error': onednn_error,
    }


# paddle2onnx's name (get_all_supported_operators_pir) of PIR ops whose name differs; used to name the ops it lacks
_P2O_NAMES = {
    'add': 'elementwise_add', 'subtract': 'elementwise_sub', 'multiply': 'elementwise_mul',
    'divide': 'elementwise_div', 'maximum': 'elementwise_max', 'minimum': 'elementwise_min',
    'floor_divide': 'elementwise_floordiv', 'remainder': 'elementwise_mod', 'elementwise_pow': 'elementwise_pow',
    'argmax': 'arg_max', 'argmin': 'arg_min', 'matmul': 'matmul_v2', 'flatten': 'flatten_contiguous_range',
    'hardswish': 'hard_swish', 'hardsigmoid': 'hard_sigmoid', 'arange': 'range', 'expand': 'expand_v2',
    'unsqueeze': 'unsqueeze2', 'mean': 'reduce_mean', 'max': 'reduce_max', 'min': 'reduce_min', 'sum': 'reduce_sum',
    'prod': 'reduce_prod', 'all': 'reduce_all', 'any': 'reduce_any', 'topk': 'top_k_v2', 'swish': 'swish',
    'nonzero': 'where_index', 'combine': 'builtin_combine', 'split_with_num': 'split_with_num',
}
# ops of every saved program that are no computation (feeds, fetches, parameters)
_P2O_IGNORED = {'data', 'feed', 'fetch', 'parameter', 'shadow_output', 'set_parameter', 'constant'}

# run in a child interpreter: paddle2onnx aborts its process (SIGABRT) on an op it cannot convert
# (C stdio unbuffered: with verbose=True paddle2onnx names the op that stops it on stdout just before aborting)
_CONVERT_SCRIPT = r"""
import ctypes, json, sys
try:
    libc = ctypes.CDLL(None)
    libc.setvbuf(ctypes.c_void_p.in_dll(libc, 'stdout'), None, 2, 0)
except Exception:
    pass
import paddle2onnx
program, params, out, opset = sys.argv[1:5]
data = paddle2onnx.export(program, params, save_file=None, opset_version=int(opset), auto_upgrade_opset=True,
                          enable_onnx_checker=True, enable_optimize=True, verbose=True)
with open(out, 'wb') as f:
    f.write(data)
import onnx
model = onnx.load_model_from_string(data)
print(json.dumps({'opset': max((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')),
                               default=None)}))
"""


def _check_onnx_packages(backend='onnxruntime'):
    """A UserError naming what to install where paddle2onnx or the ``backend`` runtime (onnxruntime, or openvino
    for the standalone OpenVINO runtime) is missing."""
    import importlib.util

    from paddle_models.core.inference import ONNX_BACKENDS, OPENVINO_REQUIREMENT

    if backend not in ONNX_BACKENDS:
        raise UserError(f"backend: unknown value {backend!r} for an ONNX export; expected one of "
                        f"{', '.join(ONNX_BACKENDS)}")
    missing = [name for name in ('paddle2onnx', backend) if importlib.util.find_spec(name) is None]
    if missing and backend == 'onnxruntime':
        raise UserError(f"--format onnx needs {' and '.join(missing)}, which "
                        f"{'is' if len(missing) == 1 else 'are'} not installed: "
                        f"pip install {ONNX_REQUIREMENTS}")
    if missing:
        requirements = ['paddle2onnx==2.1.0'] * ('paddle2onnx' in missing) + [OPENVINO_REQUIREMENT] * (
            'openvino' in missing)
        raise UserError(f"--format onnx --backend openvino needs {' and '.join(missing)}, which "
                        f"{'is' if len(missing) == 1 else 'are'} not installed: pip install {' '.join(requirements)}")


def onnx_session(path, threads=1, providers=None):
    """An ONNX Runtime session on ``path`` (CPU by default) with ONNX Runtime's own warnings silenced."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: paddle2onnx leaves unused initializers ORT warns about
    return ort.InferenceSession(path, options, providers=providers or ['CPUExecutionProvider'])


def _unconvertible_ops(op_names):
    """The ops of a traced program that paddle2onnx's list of converters lacks (best effort, to name them)."""
    try:
        from paddle2onnx import paddle2onnx_cpp2py_export as p2o

        supported = set(p2o.get_all_supported_operators_pir())
    except Exception:  # noqa: BLE001  (only used to name the culprit)
        return []
    missing = set()
    for full_name in op_names:
        name = full_name.split('.', 1)[-1]
        base = name[:-1] if name.endswith('_') and not name.endswith('__') else name
        if base in _P2O_IGNORED or full_name.startswith('builtin.') and base in ('parameter', 'shadow_output'):
            continue
        candidates = {name, base, _P2O_NAMES.get(base, base), f'builtin_{base}', f'elementwise_{base}',
                      f'reduce_{base}'}
        if not candidates & supported:
            missing.add(base)
    return sorted(missing)


_P2O_GENERIC = ('There are unsupported features', 'Due to the unsupported operators')


def _child_error(text):
    """The informative line of the conversion child's output: paddle2onnx's specific [ERROR] lines (e.g.
    "[OP: pd_op.pool2d] Adaptive only support static input shape."), else the last error line."""
    lines = [' '.join(line.split()) for line in text.splitlines() if line.strip()]
    specific = [line.replace('[ERROR][Paddle2ONNX] ', '') for line in lines
                if '[ERROR]' in line and not any(g in line for g in _P2O_GENERIC)]
    specific += [line.split('including', 1)[1].strip() for line in lines if 'not supported yet, including' in line
                 and line.split('including', 1)[1].strip()]
    if specific:
        return '; '.join(dict.fromkeys(specific))[:400]
    for marker in ('Failed to convert PaddlePaddle model', '[ERROR]', 'Error:', 'Error '):
        hits = [line for line in lines if marker in line]
        if hits:
            return hits[-1][:400]
    return lines[-1][:400] if lines else 'no message'


def _convert_onnx(program, params, out, op_names):
    """Convert the saved program to ``out`` with paddle2onnx in a child process; returns the opset written."""
    import json

    env = dict(os.environ, GLOG_minloglevel='2')
    result = subprocess.run([sys.executable, '-c', _CONVERT_SCRIPT, program, params, out, str(ONNX_OPSET)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0 or not os.path.isfile(out):
        culprits = _unconvertible_ops(op_names)
        if culprits:
            reason = f"it has no converter for op(s) {', '.join(culprits)}"
        else:
            reason = _child_error(result.stdout + '\n' + result.stderr)
            if 'Adaptive only support static input shape' in reason:
                reason += (" (adaptive pooling: export with a fixed --input_shape N C H W whose pooled feature map "
                           "divides by the pooling bins)")
        raise UserError(f"ONNX export: paddle2onnx cannot convert the model: {reason}")
    lines = [line for line in result.stdout.splitlines() if line.startswith('{')]
    try:
        return json.loads(lines[-1])['opset']
    except (IndexError, ValueError, KeyError):
        return None


@contextlib.contextmanager
def _onnx_exact_gelu():
    """While tracing for ONNX, ``F.gelu(x, approximate=True)`` (the tanh form, e.g. MaxViT's) is built from
    elementary ops: paddle2onnx 2.1.0 converts Paddle's ``gelu`` op to the erf form whatever its ``approximate``
    attribute says, which moves MaxViT-T's logits by about 1e-3 (relative) from Paddle's."""
    original = F.gelu

    def gelu(x, approximate=False, name=None):
        if approximate is True or approximate == 'tanh':
            return 0.5 * x * (1.0 + paddle.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))
        return original(x, approximate, name)

    F.gelu = gelu
    try:
        yield
    finally:
        F.gelu = original


def _export_onnx(model, tmp_dir, shape, output_op, transforms, keep_program=False, classes=None,
                 backend='onnxruntime'):
    """Trace, convert to ``tmp_dir/model.onnx``, check ``backend`` (ONNX Runtime or OpenVINO) against Paddle
    Inference on the traced program, write deploy.yaml.

    The reference is the traced program rather than the dynamic model because the two may differ by design: e.g.
    SegNeXt's Hamburger head starts from random bases in dynamic-graph eval and from fixed ones when traced
    (``paddle_models.layers.ham``). The dynamic model and the traced program agree as the Paddle export's tests
    check."""
    scratch = os.path.join(tmp_dir, 'paddle') if keep_program else tempfile.mkdtemp(prefix='.paddle-', dir=tmp_dir)
    os.makedirs(scratch, exist_ok=True)
    with _onnx_exact_gelu(), onnx_forms():
        op_names = _save_program(model, scratch, shape, output_op, portable=False)
    program = os.path.join(scratch, _program_file(scratch))
    params = os.path.join(scratch, SAVE_NAME + '.pdiparams')
    onnx_path = os.path.join(tmp_dir, ONNX_FILE)
    opset = _convert_onnx(program, params, onnx_path, op_names)

    data = _check_input(shape)
    want = _run_plain(program, params, data)
    if not keep_program:
        shutil.rmtree(scratch)
    from paddle_models.core.inference import BACKEND_NAMES, openvino_session

    runtime = BACKEND_NAMES[backend]
    try:
        if backend == 'openvino':
            got = openvino_session(onnx_path, 1, 'ONNX export')(data)
        else:
            session = onnx_session(onnx_path)
            got = session.run(None, {session.get_inputs()[0].name: data})[0]
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001  (ONNX Runtime's/OpenVINO's errors: one line)
        reason = re.sub(r'^\[ONNXRuntimeError\] : \d+ : \w+ : ', '', ' '.join(str(err).split()))
        reason = re.sub(r'/onnxruntime_src/\S+ |Exception from src/\S+:\d+: ', '', reason)[:400]  # C++ source places
        raise UserError(f"ONNX export: {runtime} cannot run the converted model on an input of shape "
                        f"{list(data.shape)}: {reason}") from None
    error, differs = _agreement(got, want, output_op, 'onnx')
    if differs:
        raise UserError(f"ONNX export: {runtime}'s output differs from Paddle Inference's on the traced "
                        f"program ({differs}; Paddle's shape is {list(want.shape)})")
    deploy = {
        'model': ONNX_FILE,
        'backend': backend,
        'transforms': transforms,
        'input_shape': shape,
        'output_op': output_op,
        'output_dtype': 'int32' if output_op == 'argmax' else 'float32',
        'opset': opset,
    }
    _write_deploy(tmp_dir, dict(deploy, **(classes or {})))
    return {'opset': opset, 'check_error': error, 'keep_program': keep_program, 'backend': backend}


def _compare(got, want, output_op):
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


def _agreement(got, want, output_op, name):
    """``(error, None)`` where the output ``got`` of runtime ``name`` matches Paddle Inference's ``want`` (argmax:
    at most 1% of the pixels differ; else max |got - want| / max |want| <= 1e-4), else ``(error, what differs)``;
    ``error`` is :func:`_compare`'s. The rule of the ONNX and OpenVINO exports' checks."""
    error = _compare(got, want, output_op)
    if error is not None and error <= (0.01 if output_op == 'argmax' else 1e-4):
        return error, None
    if error is None:
        return None, f"shape {list(got.shape)}"
    if output_op == 'argmax':
        return error, f"{error:.1%} of the pixels"
    return error, f"max |{name} - paddle| / max |paddle| = {error:.3g}"


def _onnx_result(info, save_dir, shape, output_op):
    from paddle_models.core.inference import BACKEND_NAMES

    logger.info("exported %s (%s, opset %s); %s matches Paddle Inference", save_dir, ONNX_FILE, info['opset'],
                BACKEND_NAMES[info['backend']])
    return {
        'save_dir': save_dir,
        'model': os.path.join(save_dir, ONNX_FILE),
        'params': None,
        'deploy_yaml': os.path.join(save_dir, DEPLOY_FILE),
        'program_format': 'onnx',
        'input_shape': shape,
        'output_op': output_op,
        'opset': info['opset'],
        'check_error': info['check_error'],
        'backend': info['backend'],
        'paddle_program': os.path.join(save_dir, 'paddle') if info['keep_program'] else None,
    }


def _check_openvino():
    """A UserError where this process cannot write an OpenVINO export: a Paddle without the engine (2.6), or one
    importing with PIR on (export.py re-runs itself with ``FLAGS_enable_pir_api=0``; see ``core/legacy.py``)."""
    from paddle_models.core.inference import openvino_available
    from paddle_models.core.legacy import legacy_mode

    if not openvino_available():
        raise UserError(f"--format openvino needs Paddle Inference's OpenVINO engine, which Paddle "
                        f"{paddle.__version__} does not have (Paddle 3.x CPU builds do)")
    if not legacy_mode():
        raise UserError("--format openvino needs legacy programs: run it with FLAGS_enable_pir_api=0 set before "
                        "Paddle is imported (export.py does this itself)")


def _export_openvino(model, tmp_dir, shape, output_op, transforms, classes=None):
    """Trace the logits as a legacy program (an export of its own, checked with oneDNN as every Paddle export),
    append ``output_op`` as a legacy op, check Paddle Inference's OpenVINO engine against the same program without
    it, write deploy.yaml (``enable_openvino: true``).

    Why a legacy program with logits out and Paddle's own resize ops: see ``paddle_models.core.legacy``. Why the
    check: Paddle's engine logs an error of OpenVINO's run and carries on with empty outputs (LinkNet's program:
    [N, 0, 0] class ids), so an export the engine does not run right fails here instead of in deployment."""
    from paddle_models.core.legacy import TRACE_ERRORS, append_output_op

    logits_dir = os.path.join(tmp_dir, 'logits')
    try:
        logits = export_model(model, logits_dir, input_shape=shape, output_op='none', transforms=transforms,
                              portable=False)
    except TRACE_ERRORS as err:
        raise UserError(f"OpenVINO export: model {type(model).__name__} cannot be traced as a legacy program "
                        f"(FLAGS_enable_pir_api=0): {_error_line(err)}") from None
    paddle.enable_static()
    try:
        append_output_op(logits_dir, tmp_dir, output_op, paddle.static.Executor(paddle.CPUPlace()))
    finally:
        paddle.disable_static()
    program, params = os.path.join(tmp_dir, OPENVINO_PROGRAM), os.path.join(tmp_dir, SAVE_NAME + '.pdiparams')
    data = _check_input(shape)
    want = _predict(program, params, data, onednn=logits['onednn'])
    try:
        got = _predict(program, params, data, onednn=logits['onednn'], openvino=True)
    except Exception as err:  # noqa: BLE001  (Paddle's/OpenVINO's C++ errors: one line)
        raise UserError(f"OpenVINO export: Paddle Inference's OpenVINO engine cannot run model "
                        f"{type(model).__name__} on an input of shape {list(data.shape)}: {_error_line(err)}") \
            from None
    error, differs = _agreement(got, want, output_op, 'openvino')
    if differs:
        raise UserError(f"OpenVINO export: Paddle Inference's OpenVINO engine runs model {type(model).__name__} "
                        f"wrongly ({differs}; without it: {list(want.shape)}); export it with --format paddle")
    with open(os.path.join(logits_dir, DEPLOY_FILE), encoding='utf-8') as f:
        deploy = yaml.safe_load(f)['Deploy']
    deploy.update({'model': OPENVINO_PROGRAM, 'params': SAVE_NAME + '.pdiparams', 'output_op': output_op,
                   'output_dtype': 'int32' if output_op == 'argmax' else 'float32', 'enable_openvino': True})
    _write_deploy(tmp_dir, dict(deploy, **(classes or {})))
    shutil.rmtree(logits_dir)
    return {'program_format': 'legacy', 'input_shape': shape, 'output_op': output_op, 'onednn': logits['onednn'],
            'onednn_error': logits['onednn_error'], 'openvino': True, 'check_error': error}


def _check_deploy_classes(class_names, palette, model):
    """deploy.yaml's ``class_names`` / ``palette`` entries (those given), checked against each other and against
    the model's ``num_classes`` where it has one; a UserError names a bad value."""
    from paddle_models.core.visualize import check_classes

    num_classes = getattr(model, 'num_classes', None)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        num_classes = None
    names, colours = check_classes(class_names, palette, num_classes)
    classes = {}
    if names is not None:
        classes['class_names'] = names
    if colours is not None:
        classes['palette'] = [_Colour(c) for c in colours]
    return classes


class _Colour(list):
    """An [r, g, b] that deploy.yaml shows on one line (``- [128, 64, 128]``)."""


class _DeployDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, writing :class:`_Colour` lists in flow style."""


_DeployDumper.add_representer(
    _Colour, lambda dumper, value: dumper.represent_sequence('tag:yaml.org,2002:seq', list(value), flow_style=True))


def _write_deploy(folder, deploy):
    """Write ``folder/deploy.yaml`` holding ``{'Deploy': deploy}`` (block style, keys in the given order)."""
    with open(os.path.join(folder, DEPLOY_FILE), 'w', encoding='utf-8') as f:
        yaml.dump({'Deploy': deploy}, f, Dumper=_DeployDumper, default_flow_style=False, sort_keys=False,
                  allow_unicode=True)


def _check_input_shape(input_shape):
    """[N, C, H, W] with None for free dimensions; a UserError names a bad value."""
    if input_shape is None:
        return [None, 3, None, None]
    try:
        dims = list(input_shape)
    except TypeError:
        raise UserError(f"input_shape: expected 4 dimensions [N, C, H, W], got {input_shape!r}") from None
    if len(dims) != 4:
        raise UserError(f"input_shape: expected 4 dimensions [N, C, H, W], got {input_shape!r}")
    shape = []
    for dim in dims:
        if dim is None or (isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and int(dim) == -1):
            shape.append(None)
        elif isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and int(dim) > 0:
            shape.append(int(dim))
        else:
            raise UserError(f"input_shape: dimension {dim!r} in {input_shape!r} must be a positive int, -1 or None")
    if shape[1] is None:
        raise UserError(f"input_shape: the channel dimension of {input_shape!r} must be fixed")
    return shape


def _plain(value, where):
    """``value`` as plain YAML data (dict/list/str/number/bool/None); tuples become lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f'{where}.{k}') for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    raise UserError(f"transforms: {where} = {value!r} is not plain config data (YAML str/number/list/dict)")


def _check_transforms(transforms):
    """A deep copy of the transforms config as plain data; a UserError names a bad entry."""
    if transforms is None:
        logger.warning("no transforms given: deploy.yaml lists none, so the runner feeds raw 0-255 RGB pixels")
        return []
    if not isinstance(transforms, (list, tuple)):
        raise UserError(f"transforms: expected a list of transform configs, got {type(transforms).__name__}")
    from paddleseg.cvlibs import manager  # the component registry our package registers into as well

    known = manager.TRANSFORMS.components_dict
    out = []
    for i, item in enumerate(transforms):
        if not isinstance(item, dict) or 'type' not in item:
            raise UserError(f"transforms[{i}]: expected a dict with a 'type' key, got {item!r}")
        if item['type'] not in known:
            raise UserError(f"transforms[{i}].type: unknown transform {item['type']!r}")
        out.append(_plain(copy.deepcopy(dict(item)), f'transforms[{i}]'))
    return out


def _check_save_dir(save_dir):
    if os.path.exists(save_dir) and not os.path.isdir(save_dir):
        raise UserError(f"save_dir: {save_dir} exists and is not a folder")
    if os.path.isdir(save_dir) and os.listdir(save_dir) and \
            not os.path.isfile(os.path.join(save_dir, DEPLOY_FILE)):
        raise UserError(f"save_dir: {save_dir} is not empty and holds no previous export ({DEPLOY_FILE}); "
                        f"choose a new folder")


def _save_program(model, out_dir, shape, output_op, portable):
    """Trace and save; returns the op names of the traced program (best effort, for diagnostics)."""
    wrapped = _ExportModel(model, output_op)
    wrapped.eval()
    spec = [paddle.static.InputSpec(shape=list(shape), dtype='float32', name='x')]  # it rewrites the list
    static = paddle.jit.to_static(wrapped, input_spec=spec, full_graph=True)
    # legacy_program_apis: Paddle 3.3's C-only APIs (matmul, gelu, ...) in a legacy program (a no-op under PIR)
    with portable_resize(portable), _fast_tracing(), legacy_program_apis():
        paddle.jit.save(static, os.path.join(out_dir, SAVE_NAME))
        try:
            program = static.forward.concrete_program.main_program
            ops = program.global_block().ops
            return [op.name() if callable(getattr(op, 'name', None)) else op.type for op in ops]
        except Exception:  # noqa: BLE001  (only used to name a culprit op in a message)
            return []


@contextlib.contextmanager
def _fast_tracing():
    """dy2st's costs that grow with the model, removed for the duration of one trace (same program):

    * dy2st converts each called ``forward`` into a static function and caches it in a ``WeakKeyDictionary``
      keyed by the *bound* method, which dies right after the call: every layer instance's call converts its
      class's ``forward`` again (parse, write and import a module). Here conversions of a method are shared per
      underlying function (``__func__``): the converted function is unbound (dy2st binds the instance afterwards)
      and made from the function's own source, globals and closure, so it is the same for every instance.
    * ``Layer.__call__`` wraps each call in ``paddle.base.framework.name_struct``, which under PIR lists all ops of
      the program before and after the call (quadratic in the op count) to tag the new ones with a
      ``struct_name`` attribute that only auto-parallel reads. Here the tag is not written.

    * dy2st's ``is_unsupported(func)`` (asked for every call it converts) rebuilds the list of all functions of
      the modules it never converts on each call; its answer depends on ``func`` alone (for a bound method, on
      its function), so it is asked once per function here.
    * Paddle records the Python call stack of every op it creates (``traceback.extract_stack``, called from C++),
      for error messages; here only the innermost 12 frames, which hold the model line that created the op.

    The patches touch private Paddle objects; where they are missing (another Paddle version) tracing runs as
    Paddle does it. All are restored on exit."""
    restore = []
    try:
        from paddle.jit.dy2static import convert_call_func

        original_unsupported = convert_call_func.is_unsupported
        answers = {}

        def is_unsupported(func):
            # a bound method's answer is its function's (the check reads its code's file; no bound method is
            # one of the listed module functions), whatever the instance
            key = ('method', func.__func__) if inspect.ismethod(func) else ('callable', func)
            try:
                return answers[key]
            except (KeyError, TypeError):
                answer = original_unsupported(func)
                try:
                    answers[key] = answer
                except TypeError:  # unhashable callable
                    pass
                return answer

        convert_call_func.is_unsupported = is_unsupported
        restore.append(lambda: setattr(convert_call_func, 'is_unsupported', original_unsupported))
    except (ImportError, AttributeError):
        pass
    original_extract = traceback.extract_stack

    def extract_stack(f=None, limit=None):
        return original_extract(f, limit=12 if limit is None else limit)

    traceback.extract_stack = extract_stack
    restore.append(lambda: setattr(traceback, 'extract_stack', original_extract))
    try:
        from paddle.jit.dy2static import program_translator

        cache = program_translator._FUNCTION_CACHE
        original = cache.convert_with_cache
        converted = {}

        def convert_with_cache(func):
            if not inspect.ismethod(func):
                return original(func)
            hit = converted.get(func.__func__)
            if hit is None:
                hit = converted[func.__func__] = original(func)
            return hit

        cache.convert_with_cache = convert_with_cache
        restore.append(lambda: delattr(cache, 'convert_with_cache'))
    except (ImportError, AttributeError):
        pass
    try:
        from paddle.nn.layer import layers

        original_struct = layers.name_struct

        @contextlib.contextmanager
        def name_struct(prefix=None):
            yield

        layers.name_struct = name_struct
        restore.append(lambda: setattr(layers, 'name_struct', original_struct))
    except (ImportError, AttributeError):
        pass
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()


def _folded_forward(self, x):
    """``ConvBNAct.forward`` of a block whose batch norm :func:`_fold_batch_norms` folded into ``_folded_conv``."""
    return self._act(self._folded_conv(x))


def _fold_batch_norms(model, check_input):
    """A copy of ``model`` (eval) in which every ``ConvBNAct`` block (``paddle_models.layers``: Conv2D ->
    BatchNorm2D -> activation, NCHW) computes its convolution and batch norm as one convolution with folded weights
    (``w * g / sqrt(var + eps)``, bias ``(b - mean) * g / sqrt(var + eps) + beta``), or ``model`` itself where it has
    no such block.

    Why: Paddle Inference's oneDNN passes fold each conv + batch norm pair when the predictor is created (a fuse
    pass, then constant folding that runs each pair's arithmetic as a small program); on a model with about a
    thousand of them (MscaleOCRNet on HRNet-W48) that is half of ``create_predictor``. Folded once here, the
    program holds conv2d + bias, which the same passes fuse as before. Only the block's own ``forward`` is
    replaced: code that reads ``conv`` or calls ``norm_act`` (SegFormer's and PSPNet's shortcuts) still sees the
    original layers. The copy must give the original's logits on the check input (max abs difference at most
    1e-4 of their largest magnitude) or the original model is traced instead, with a warning; and where the
    oneDNN check fails on the folded program, ``export_model`` traces and checks the unfolded model instead
    (oneDNN's output deviated on the folded MultiScaleAttention + HarDNet program, for reasons not found yet).
    Legacy programs are traced unfolded (:func:`_legacy_bias_is_reshaped`)."""
    if _legacy_bias_is_reshaped() or not any(_foldable(layer) for layer in model.sublayers(include_self=True)):
        return model
    folded = copy.deepcopy(model)
    folded.eval()
    count = 0
    for layer in folded.sublayers(include_self=True):
        if not _foldable(layer):
            continue
        conv, bn = layer._conv, layer._batch_norm
        out_channels = conv.weight.shape[0]
        gamma = bn.weight.numpy().astype('float64') if bn.weight is not None else np.ones(out_channels)
        beta = bn.bias.numpy().astype('float64') if bn.bias is not None else np.zeros(out_channels)
        scale = gamma / np.sqrt(bn._variance.numpy().astype('float64') + bn._epsilon)
        bias = conv.bias.numpy().astype('float64') if conv.bias is not None else np.zeros(out_channels)
        new = copy.deepcopy(conv)
        new.weight.set_value((conv.weight.numpy().astype('float64') *
                              scale.reshape([-1] + [1] * (len(conv.weight.shape) - 1))).astype('float32'))
        if new.bias is None:
            new.bias = new.create_parameter([out_channels], is_bias=True, dtype='float32')
        new.bias.set_value(((bias - bn._mean.numpy().astype('float64')) * scale + beta).astype('float32'))
        layer._folded_conv = new
        layer.forward = _folded_forward.__get__(layer)
        count += 1
    try:
        with paddle.no_grad():
            x = paddle.to_tensor(check_input)
            want, got = _first(model(x)).numpy(), _first(folded(x)).numpy()
        diff = float(np.max(np.abs(got.astype('float64') - want))) if want.size else 0.0
        ok = got.shape == want.shape and math.isfinite(diff) and \
            diff <= 1e-4 * max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    except Exception as err:  # noqa: BLE001  (any failure: trace the model as it is)
        ok, diff = False, err
    if not ok:
        logger.warning("folding the batch norms into the convolutions changed the model's output (%s); "
                       "exporting the model unfolded", diff)
        return model
    logger.debug("folded %d batch norms into their convolutions", count)
    return folded


def _foldable(layer):
    """Whether ``layer`` is a ``ConvBNAct`` block of a plain NCHW ``Conv2D`` and ``BatchNorm2D``
    (what :func:`_fold_batch_norms` folds)."""
    from paddle_models.layers.conv import ConvBNAct

    return (type(layer) is ConvBNAct and type(layer._conv) is nn.Conv2D and type(layer._batch_norm) is nn.BatchNorm2D
            and layer._conv._data_format == 'NCHW' and layer._batch_norm._data_format == 'NCHW')


def _legacy_bias_is_reshaped():
    """Whether the trace will be a legacy program (Paddle 2.6, or Paddle 3 under ``FLAGS_enable_pir_api=0`` as
    tools/quantize.py traces). There a conv's bias is traced as ``reshape2`` of the bias + ``elementwise_add``, which
    Paddle Inference's conv + bias fusion does not match, so a folded block would run as three ops (conv, add,
    activation; in INT8 each behind its own quantize/dequantize: a folded HarDNet's INT8 program ran 1.4x slower
    than the unfolded one), while conv + batch norm + activation fuse into one oneDNN convolution."""
    use_pir = getattr(paddle.framework, 'use_pir_api', None)
    return use_pir is None or not use_pir()


def _first(out):
    return out[0] if isinstance(out, (list, tuple)) else out


def _program_file(out_dir):
    for name in (SAVE_NAME + '.json', SAVE_NAME + '.pdmodel'):
        if os.path.isfile(os.path.join(out_dir, name)):
            return name
    raise RuntimeError(f"paddle.jit.save wrote no {SAVE_NAME}.json or {SAVE_NAME}.pdmodel in {out_dir}")


def _check_input(shape):
    rng = np.random.default_rng(0)
    n, c, h, w = shape
    dims = [n or 1, c, h or CHECK_HW[0], w or CHECK_HW[1]]
    return rng.standard_normal(dims).astype('float32')


def _predict(program, params, data, onednn, openvino=False):
    """Run the saved program once in Paddle Inference on the CPU; returns the first output."""
    from paddle.inference import Config, create_predictor

    from paddle_models.core.inference import cpu_config

    config = Config(program, params)
    config.disable_glog_info()
    predictor = create_predictor(cpu_config(config, 1, onednn, openvino=openvino))
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(data.shape))
    handle.copy_from_cpu(data)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def _error_line(err):
    """The informative line of a Paddle error (its last non-empty line, C++ location kept short)."""
    text = error_line(err, 'last', type(err).__name__, skip=('[',))
    text = re.sub(r'\s*\(at /paddle/[^)]*\)', '', text)  # the C++ source location
    return ' '.join(text.split())[:400]


def _dynamic_output(model, data, output_op):
    """The dynamic graph's output (after ``output_op``) on the check input, as the oneDNN run's first reference;
    None when the dynamic forward fails (the check then compares with a plain-CPU run only)."""
    try:
        with paddle.no_grad():
            out = _ExportModel(model, output_op)(paddle.to_tensor(data))
        return out.numpy()
    except Exception:  # noqa: BLE001  (the traced program is what is checked; this is only a shortcut)
        logger.debug("the dynamic forward on the check input failed; checking against a plain CPU run only",
                     exc_info=True)
        return None


def _check_program(program, params, data, reference, output_op, op_names):
    """Run the saved program with oneDNN and return None when it runs and matches, else the reason (one line).

    The oneDNN output is first compared with ``reference`` (the dynamic graph's output). Only when the oneDNN run
    fails or deviates from it does the program also run on the plain CPU kernels: that run must succeed (else
    RuntimeError, the export fails), and oneDNN is then judged against it (a program that matches the plain CPU
    run passes, e.g. where traced and dynamic model differ by design)."""
    fast, fast_error = None, None
    try:
        fast = _predict(program, params, data, onednn=True)
    except Exception as err:  # noqa: BLE001  (any failure is recorded, with its cause)
        fast_error = err
    if fast is not None and reference is not None and _deviation(fast, reference, output_op) is None:
        return None
    plain = _run_plain(program, params, data)
    if fast_error is not None:
        return _onednn_failure(fast_error, op_names)
    return _deviation(fast, plain, output_op)


def _run_plain(program, params, data):
    try:
        return _predict(program, params, data, onednn=False)
    except Exception as err:
        raise RuntimeError(f"the exported program does not run in Paddle Inference (CPU, no oneDNN) on an input of "
                           f"shape {list(data.shape)}: {_error_line(err)}") from err


def _onednn_failure(err, op_names):
    """The reason (one line) recorded for a oneDNN run that raised ``err``, naming the culprit ops where known."""
    reason = _error_line(err)
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
