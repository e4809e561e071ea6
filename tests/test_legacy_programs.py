"""Legacy programs on Paddle 3.3 (``FLAGS_enable_pir_api=0``, what tools/quantize.py and ``export.py --format
openvino`` trace): ``utils.compat.legacy_program_apis``, which traces the APIs Paddle 3.3 moved into C functions
(``paddle.matmul``, ``F.gelu``, ...) into legacy ops, and ``core.legacy.fuse_ready_conv_bias``, which rewrites a
traced conv bias into the form oneDNN's conv + bias fusion matches.

Both need a process that imported Paddle with the flag, so one child interpreter traces two small layers, runs them
in Paddle Inference and reports as JSON; the tests check its report against the dynamic graph's values.
"""
import json
import os
import subprocess
import sys

import paddle
import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(paddle.__version__.startswith('2.'),
                                reason='Paddle 2.6 has only legacy programs, traced by its own Python APIs')

_CHILD = r'''
import json
import os
import sys

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

import paddle_models  # noqa: F401
from paddle_models.core.export import export_model
from paddle_models.core.legacy import fuse_ready_conv_bias, legacy_mode


class Apis(nn.Layer):
    """Every API of compat's table, as a model calls it (module functions, nn layers, a tensor method)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 4, 1)
        self.gelu, self.sigmoid = nn.GELU(), nn.Sigmoid()

    def forward(self, x):
        y = self.conv(x)
        t = y.reshape([0, 4, -1])  # [N, 4, HW]
        a = paddle.matmul(t, t, transpose_y=True) * 1e-2  # [N, 4, 4]
        b = paddle.matmul(a, t, transpose_x=True) + a.matmul(t)  # [N, 4, HW]
        m = paddle.abs(b) + 1.0
        u = (self.gelu(b) + F.gelu(b, approximate=True) + paddle.tanh(b) + self.sigmoid(b) + F.sigmoid(b)
             + paddle.floor(b) + paddle.ceil(b) + paddle.sin(b) + paddle.cos(b))
        v = paddle.exp(-m) + paddle.sqrt(m) + paddle.rsqrt(m) + paddle.log(m)
        w = paddle.maximum(b, 0.5 * b) + paddle.minimum(b, 0.5 * b) + paddle.argmax(b, axis=1, keepdim=True).astype(
            'float32')
        return [(u + v + w).reshape(paddle.shape(y))]


class Biases(nn.Layer):
    """A conv, a depthwise conv and a transposed conv, each with a bias."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2D(8, 8, 3, padding=1, groups=8)
        self.up = nn.Conv2DTranspose(8, 4, 2, stride=2)

    def forward(self, x):
        return [self.up(F.relu(self.depthwise(F.relu(self.conv(x)))))]


def ops(prefix):
    paddle.enable_static()
    try:
        program, _, _ = paddle.static.load_inference_model(prefix, paddle.static.Executor(paddle.CPUPlace()))
    finally:
        paddle.disable_static()
    block = program.global_block()
    return [(op.type, {k: [(n, block.var(n).persistable) for n in op.input(k)] for k in op.input_names},
             op.attr('axis') if op.has_attr('axis') else None) for op in block.ops if op.type not in ('feed', 'fetch')]


def predict(prefix, data, onednn):
    from paddle.inference import Config, create_predictor

    config = Config(prefix + '.pdmodel', prefix + '.pdiparams')
    config.disable_glog_info()
    config.enable_mkldnn() if onednn else config.disable_mkldnn()
    predictor = create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(data.shape))
    handle.copy_from_cpu(data)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


out = sys.argv[1]
report = {'legacy_mode': legacy_mode(), 'matmul_is_c': type(paddle._C_ops.matmul).__name__}
data = np.random.default_rng(0).standard_normal((2, 3, 6, 10)).astype('float32')
paddle.seed(0)
for name, layer in (('apis', Apis()), ('biases', Biases())):
    layer.eval()
    want = layer(paddle.to_tensor(data))[0].numpy()
    export_model(layer, os.path.join(out, name), output_op='none', portable=False)
    prefix = os.path.join(out, name, 'model')
    before = ops(prefix)
    entry = {'ops': before, 'max_ref': float(np.abs(want).max()),
             'diff': float(np.abs(predict(prefix, data, False) - want).max())}
    if name == 'biases':
        entry['rewritten'] = fuse_ready_conv_bias(prefix + '.pdmodel')
        entry['again'] = fuse_ready_conv_bias(prefix + '.pdmodel')
        entry['ops_after'] = ops(prefix)
        entry['diff_after'] = float(np.abs(predict(prefix, data, False) - want).max())
        entry['diff_after_onednn'] = float(np.abs(predict(prefix, data, True) - want).max())
    report[name] = entry
report['matmul_restored'] = type(paddle._C_ops.matmul).__name__
paddle.enable_static()
with paddle.static.program_guard(paddle.static.Program()):  # outside the export's trace: Paddle's own behaviour
    x = paddle.static.data('x', [2, 2], 'float32')
    try:
        paddle.matmul(x, x)
        report['outside'] = 'traced'
    except TypeError as err:
        report['outside'] = str(err).splitlines()[0]
print(json.dumps(report))
'''


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp('legacy')
    env = dict(os.environ, FLAGS_enable_pir_api='0',
               PYTHONPATH=os.pathsep.join([REPO] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    result = subprocess.run([sys.executable, '-c', _CHILD, str(out)], capture_output=True, text=True, env=env,
                            cwd=str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_c_only_apis_trace_into_legacy_ops_with_the_dynamic_graphs_values(report):
    assert report['legacy_mode'] is True and report['matmul_is_c'] == 'builtin_function_or_method'
    types = [op for op, _, _ in report['apis']['ops']]
    for op_type, count in (('matmul_v2', 3), ('gelu', 2), ('sigmoid', 2), ('tanh', 1), ('floor', 1), ('ceil', 1),
                           ('sin', 1), ('cos', 1), ('exp', 1), ('sqrt', 1), ('rsqrt', 1), ('log', 1), ('abs', 1),
                           ('elementwise_max', 1), ('elementwise_min', 1), ('arg_max', 1)):
        assert types.count(op_type) == count, (op_type, types)
    assert report['apis']['diff'] <= 1e-5 * report['apis']['max_ref'], report['apis']


def test_the_apis_are_restored_after_the_trace(report):
    assert report['matmul_restored'] == 'builtin_function_or_method'
    assert report['outside'].startswith('(InvalidType) matmul(): argument (position 1) must be Value, but got Variable')


def test_fuse_ready_conv_bias_adds_the_parameter_along_axis_1_with_the_same_values(report):
    entry = report['biases']

    def bias_adds(ops):
        return [(inputs['Y'][0], axis) for op, inputs, axis in ops if op == 'elementwise_add']

    def reshaped_params(ops):
        return [op for op, inputs, _ in ops if op == 'reshape2' and inputs['X'][0][1]]

    # as Paddle 3.3 traces it: each bias reshaped to [1, C, 1, 1], added along axis -1
    assert len(reshaped_params(entry['ops'])) == 3
    assert [axis for _, axis in bias_adds(entry['ops'])] == [-1, -1, -1]
    assert entry['rewritten'] == 3 and entry['again'] == 0
    assert reshaped_params(entry['ops_after']) == []
    after = bias_adds(entry['ops_after'])
    assert [axis for _, axis in after] == [1, 1, 1] and all(persistable for (_, persistable), _ in after)
    assert entry['diff'] <= 1e-5 * entry['max_ref']
    assert entry['diff_after'] <= 1e-5 * entry['max_ref'] and entry['diff_after_onednn'] <= 1e-5 * entry['max_ref']


def test_legacy_program_apis_is_a_no_op_under_pir():
    from paddle_models.utils.compat import legacy_program_apis

    before = paddle._C_ops.matmul
    with legacy_program_apis():
        assert paddle._C_ops.matmul is before
    assert paddle._C_ops.matmul is before
