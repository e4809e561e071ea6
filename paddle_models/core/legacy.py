"""Legacy (pre-PIR) static programs on Paddle 3.x, for the tools that need them.

Two deployments need a legacy program (``model.pdmodel``) rather than Paddle 3's PIR program (``model.json``):
oneDNN INT8 (``tools/quantize.py``: the INT8 passes exist in the legacy IR only) and Paddle Inference's OpenVINO
engine (``export.py --format openvino``: its subgraph pass runs on the legacy IR only; a PIR program runs as if
the engine were off). Paddle builds legacy programs only when it is imported with ``FLAGS_enable_pir_api=0``, so a
tool whose process already imported Paddle with PIR on re-runs itself in a child interpreter with that flag
(:func:`run_in_legacy_mode`). Paddle 2.6 has no PIR: it is always in legacy mode.

Under that flag Paddle 3.3.1's APIs that became C functions (``paddle.matmul``, ``F.gelu``, ``paddle.argmax``,
...) take no legacy Variables. The export traces inside ``paddle_models.utils.compat.legacy_program_apis``, which
gives the ones our models use (matmul, gelu, argmax, minimum, floor, sigmoid, ...) a legacy path; others
(``paddle.roll``, ...) still fail there. Programs are traced with logits out and Paddle's own resize ops
(``export_model(output_op='none', portable=False)``), and the output op is appended afterwards as a legacy op
(:func:`append_output_op`). :func:`fuse_ready_conv_bias` rewrites the convolution biases of a traced legacy program
into the form oneDNN's conv + bias fusion matches (``tools/quantize.py``).
"""
import os
import signal
import subprocess
import sys

from paddle_models.errors import UserError
from paddle_models.utils.compat import legacy_mode  # noqa: F401  (tools/quantize.py and export.py ask here)


# what dy2st raises where a model cannot be traced into a legacy program (e.g. a Paddle 3.3 C-only API that
# utils/compat.legacy_program_apis does not cover: "TypeError: (InvalidType) roll(): argument (position 1) must be
# Value, but got Variable")
TRACE_ERRORS = (TypeError, NotImplementedError, ValueError, AttributeError)


def run_in_legacy_mode(script, argv):
    """Run ``script`` with ``argv`` in a fresh interpreter with ``FLAGS_enable_pir_api=0``; its stdout and stderr
    pass through, and its one-line error (``error: ...``, exit code 2) comes back as a UserError. Other failures
    raise RuntimeError with the child's last line.

    ``script`` is a ``.py`` file (``tools/quantize.py``'s ``__file__``) or a module name run with ``python -m``
    (``'paddle_models.tools.export'``); a module is imported from this same copy of paddle_models, whatever the
    working directory (a checkout or a ``--target`` folder outside ``site-packages`` is put on the child's
    PYTHONPATH)."""
    env = dict(os.environ, FLAGS_enable_pir_api='0')
    if script.endswith('.py'):
        command = [sys.executable, os.path.abspath(script)]
    else:
        command = [sys.executable, '-m', script]
        root = _package_root()
        if root is not None:
            env['PYTHONPATH'] = os.pathsep.join([root] + [p for p in [os.environ.get('PYTHONPATH')] if p])
    proc = subprocess.Popen(command + list(argv), env=env, stderr=subprocess.PIPE)
    pending = b''  # from the start of a possible final 'error: ' line on, held back: the caller prints it once
    try:
        for chunk in iter(lambda: proc.stderr.read1(4096), b''):
            pending += chunk
            cut = pending.rfind(b'\nerror: ') + 1  # 0 where absent or at the start
            if cut == 0 and not pending.startswith(b'error: '):
                cut = len(pending)
            _write_stderr(pending[:cut])
            pending = pending[cut:]
        code = proc.wait()
    except KeyboardInterrupt as err:  # SIGTERM/SIGINT (core/signals.py): the child stops and cleans up too
        _stop_child(proc, getattr(err, 'signum', signal.SIGINT))
        raise
    lines = [line for line in pending.decode(errors='replace').splitlines() if line.strip()]
    if code == 2 and lines and lines[-1].startswith('error: '):
        _write_stderr(pending[:pending.rfind(b'error: ')])
        raise UserError(lines[-1][len('error: '):])
    _write_stderr(pending)
    if code != 0:
        raise RuntimeError(f"{os.path.basename(script)} failed in its legacy-mode subprocess (exit code {code})"
                           + (f": {lines[-1]}" if lines else ""))


def _stop_child(proc, signum, wait_s=30):
    """Pass ``signum`` on to the child ``proc`` and wait for it to clean up (SIGKILL after ``wait_s`` seconds); its
    output is dropped: the caller reports the interruption."""
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        proc.communicate(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def _package_root():
    """The folder that holds this paddle_models package, where a child interpreter would not find it by itself
    (a checkout, a ``--target`` folder); None for an install in ``site-packages`` (putting that folder on
    PYTHONPATH would place it before the standard library)."""
    import site

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    installed = [*site.getsitepackages(), site.getusersitepackages()]
    if any(os.path.normcase(os.path.realpath(root)) == os.path.normcase(os.path.realpath(p)) for p in installed):
        return None
    return root


def _write_stderr(data):
    if not data:
        return
    if hasattr(sys.stderr, 'buffer'):
        sys.stderr.buffer.write(data)
        sys.stderr.buffer.flush()
    else:  # a replaced stderr (pytest's capture, a notebook)
        sys.stderr.write(data.decode(errors='replace'))


def append_output_op(src_dir, dst_dir, output_op, executor):
    """Save the legacy program ``src_dir/model`` (logits out) as ``dst_dir/model`` with ``output_op`` appended as a
    legacy op: 'argmax' -> ``arg_max(axis=1, dtype=int32)`` (class ids [N, H, W], as ``export.py``'s default),
    'softmax' -> ``softmax(axis=1)``, 'none' -> unchanged. Call in static mode (``paddle.enable_static()``)."""
    import paddle

    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, feeds, fetches = paddle.static.load_inference_model(os.path.join(src_dir, 'model'), executor)
        block = program.global_block()
        out = fetches[0]
        if output_op == 'argmax':
            ids = block.create_var(name='class_ids', dtype='int32', shape=[out.shape[0], *out.shape[2:]])
            block.append_op(type='arg_max', inputs={'X': [out]}, outputs={'Out': [ids]},
                            attrs={'axis': 1, 'keepdims': False, 'flatten': False,
                                   'dtype': int(paddle.base.core.VarDesc.VarType.INT32)})
            out = ids
        elif output_op == 'softmax':
            probs = block.create_var(name='probabilities', dtype='float32', shape=out.shape)
            block.append_op(type='softmax', inputs={'X': [out]}, outputs={'Out': [probs]}, attrs={'axis': 1})
            out = probs
        paddle.static.save_inference_model(os.path.join(dst_dir, 'model'), [block.var(name) for name in feeds],
                                           [out], executor, program=program)


_CONVS = ('conv2d', 'depthwise_conv2d', 'conv2d_transpose')


def fuse_ready_conv_bias(program_file):
    """Rewrite the legacy program ``program_file`` (``model.pdmodel``; parameters unchanged) in place so that each
    convolution's bias is added the way Paddle Inference's conv + bias fusion matches it; returns how many.

    Paddle 3.x traces ``F.conv2d(x, w, b)`` into a legacy program as ``reshape2(b)`` to [1, C, 1, 1] and
    ``elementwise_add(conv, reshaped, axis=-1)``. ``conv_bias_onednn_fuse_pass`` wants the 1-D parameter itself,
    added along ``axis=1`` (as Paddle 2.6 traced it), and logs "Check the Attr(axis) of Op(elementwise_add) in
    pass(conv_bias_onednn_fuse_pass) failed!" otherwise: each such conv then runs as a conv and a separate add (in
    INT8 each behind its own quantize/dequantize) instead of one oneDNN convolution. The rewrite gives the same
    values: both forms add b[c] to channel c at every position."""
    import paddle
    from paddle.base.framework import Program  # the legacy program class (paddle.static.Program is PIR's under PIR)

    dynamic = paddle.in_dynamic_mode()
    paddle.enable_static()  # (parsing a program builds its Python ops, which needs static mode)
    try:
        with open(program_file, 'rb') as f:
            program = Program.parse_from_string(f.read())
    finally:
        if dynamic:
            paddle.disable_static()
    block = program.global_block()
    producer, readers = {}, {}
    for op in block.ops:
        for name in op.output_arg_names:
            producer[name] = op
        for name in op.input_arg_names:
            readers[name] = readers.get(name, 0) + 1
    reshapes = []
    for op in block.ops:
        if op.type != 'elementwise_add' or op.attr('axis') != -1:
            continue
        conv, reshape = producer.get(op.input('X')[0]), producer.get(op.input('Y')[0])
        if conv is None or conv.type not in _CONVS or conv.attr('data_format') not in ('NCHW', 'AnyLayout') or \
                reshape is None or reshape.type != 'reshape2' or readers.get(op.input('Y')[0]) != 1 or \
                reshape.input('Shape') or reshape.input('ShapeTensor'):
            continue
        bias = block.var(reshape.input('X')[0])
        if not bias.persistable or len(bias.shape) != 1 or list(reshape.attr('shape')) != [1, bias.shape[0], 1, 1]:
            continue
        op._rename_input(op.input('Y')[0], bias.name)
        op._set_attr('axis', 1)
        reshapes.append(reshape)
    for reshape in reshapes:
        index = next(i for i, op in enumerate(block.ops) if op is reshape)
        outputs = reshape.output_arg_names
        block._remove_op(index)
        for name in outputs:
            block._remove_var(name)
    if reshapes:
        with open(program_file, 'wb') as f:
            f.write(program.desc.serialize_to_string())
    return len(reshapes)
