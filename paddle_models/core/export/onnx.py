"""ONNX exports (``fmt='onnx'``, ``export.py --format onnx``): trace, convert with paddle2onnx in a child process,
check in ONNX Runtime (or the standalone OpenVINO runtime) against Paddle Inference.

The model is traced as a Paddle export but with Paddle's own resize ops (``portable=False``: paddle2onnx 2.1.0 has
no converter for the portable resize's ``lerp``, while ``bilinear_interp``/``nearest_interp`` become ONNX
``Resize``), saved to a scratch folder, converted by paddle2onnx (opset 11 or higher as the ops need) to
``model.onnx``, and checked: ONNX Runtime (CPU) runs it once on a random input and its output must match Paddle
Inference's (plain CPU kernels) on the traced program within 1e-4 relative (max |onnx - paddle| / max |paddle|; for
argmax outputs at most 1% of the pixels may differ). ``deploy.yaml`` then names ``model: model.onnx`` and
``backend: onnxruntime`` (Paddle exports: ``backend: paddle_inference``) and has no ``params``. With
``backend='openvino'`` (``export.py --format onnx --backend openvino``) the check runs in the standalone OpenVINO
runtime instead (``paddle_models.core.exported.OpenVinoSession``, same rule) and deploy.yaml names
``backend: openvino``.

paddle2onnx aborts the whole process (SIGABRT) on an op it cannot convert, so the conversion runs in a child Python
process; when it fails, the error names the ops missing from paddle2onnx's own list
(``get_all_supported_operators_pir``), else the specific reason paddle2onnx printed (e.g. "[OP: pd_op.pool2d]
Adaptive only support static input shape."). ``F.gelu(approximate=True)`` is traced from elementary ops
(``_onnx_exact_gelu``), and the model's deploy form for the ONNX runtime (``layers/deploy.py``) is traced inside
``tracing_for(target)``, which sets ``layers/resize.py``'s ONNX forms: a resize's size tensor is passed as its two
entries and adaptive average pooling (PSPNet's and UPerNet's pyramids) is two matrix products, the forms
paddle2onnx converts at a free input size.
"""
import contextlib
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

import paddle
import paddle.nn.functional as F

from paddle_models.core.export.checks import agreement, run_plain
from paddle_models.core.export.deploy import DEPLOY_FILE, PARAMS_FILE, SAVE_NAME, output_dtype, write_deploy
from paddle_models.core.export.program import deploy_target, find_program_file, random_input, save_program
from paddle_models.errors import UserError
from paddle_models.layers.deploy import deploy_form

logger = logging.getLogger(__name__)

ONNX_FILE = SAVE_NAME + '.onnx'


ONNX_OPSET = 11  # the first opset whose Resize has the modes bilinear_interp and nearest_interp need


# the versions requirements.txt pins (named in the error when they are missing)
ONNX_REQUIREMENTS = 'paddle2onnx==2.1.0 onnxruntime==1.32.0'


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


def check_onnx_packages(backend='onnxruntime'):
    """A UserError naming what to install where paddle2onnx or the ``backend`` runtime (onnxruntime, or openvino
    for the standalone OpenVINO runtime) is missing."""
    import importlib.util

    from paddle_models.core.exported import ONNX_BACKENDS, OPENVINO_REQUIREMENT

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


def convert_onnx(program, params, out, op_names):
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


def export_onnx(model, tmp_dir, shape, output_op, transforms, keep_program=False, classes=None,
                 backend='onnxruntime'):
    """Trace, convert to ``tmp_dir/model.onnx``, check ``backend`` (ONNX Runtime or OpenVINO) against Paddle
    Inference on the traced program, write deploy.yaml.

    The reference is the traced program rather than the dynamic model because the two may differ by design: e.g.
    SegNeXt's Hamburger head starts from random bases in dynamic-graph eval and from fixed ones when traced
    (``paddle_models.layers.ham``). The dynamic model and the traced program agree as the Paddle export's tests
    check."""
    scratch = os.path.join(tmp_dir, 'paddle') if keep_program else tempfile.mkdtemp(prefix='.paddle-', dir=tmp_dir)
    os.makedirs(scratch, exist_ok=True)
    target = deploy_target('onnx')
    with _onnx_exact_gelu():
        op_names = save_program(deploy_form(model, target), scratch, shape, output_op, target)
    program = os.path.join(scratch, find_program_file(scratch))
    params = os.path.join(scratch, PARAMS_FILE)
    onnx_path = os.path.join(tmp_dir, ONNX_FILE)
    opset = convert_onnx(program, params, onnx_path, op_names)

    data = random_input(shape)
    want = run_plain(program, params, data)
    if not keep_program:
        shutil.rmtree(scratch)
    from paddle_models.core.exported import BACKEND_NAMES, openvino_session

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
    error, differs = agreement(got, want, output_op, 'onnx')
    if differs:
        raise UserError(f"ONNX export: {runtime}'s output differs from Paddle Inference's on the traced "
                        f"program ({differs}; Paddle's shape is {list(want.shape)})")
    deploy = {
        'model': ONNX_FILE,
        'backend': backend,
        'transforms': transforms,
        'input_shape': shape,
        'output_op': output_op,
        'output_dtype': output_dtype(output_op),
        'opset': opset,
    }
    write_deploy(tmp_dir, dict(deploy, **(classes or {})))
    return {'opset': opset, 'check_error': error, 'keep_program': keep_program, 'backend': backend}


def onnx_result(info, save_dir, shape, output_op):
    from paddle_models.core.exported import BACKEND_NAMES

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
