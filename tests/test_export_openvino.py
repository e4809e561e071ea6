"""``export.py --format openvino``: a legacy Paddle program that Paddle Inference runs with its OpenVINO engine, and
running it with deploy/python/infer.py and val.py's ``InferenceModel``.

A tiny HarDNet is exported by export.py's command line (which re-runs itself with ``FLAGS_enable_pir_api=0``), in
both formats from the same weights: the OpenVINO export's logits must match the Paddle export's (PIR program,
oneDNN) within 1e-4 relative (max |a - b| / max |b|), and infer.py's PNGs must agree. SegFormer and SegNeXt (traced
through ``utils.compat.legacy_program_apis``) and LinkNet (whose transposed convs the engine once ran one pixel
short) match their Paddle exports the same way. A model that cannot be traced as a legacy program, or that the engine
runs wrongly, fails in one line, leaving nothing behind. Not marked paddle26 except where stated: Paddle 2.6 has no
OpenVINO engine.
"""
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

from conftest import REPO, write_tiny_config, write_tiny_hardnet
from helpers import TINY_HARDNET, TINY_TRANSFORMS, load_infer
from paddle_models.core import exported
from paddle_models.core.export import export_model
from paddle_models.core.exported import InferenceModel
from paddle_models.datasets.synthetic import SyntheticShapes
from paddle_models.errors import UserError
from paddle_models.models.hardnet import HarDNet

INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')
TRANSFORMS = TINY_TRANSFORMS


def _export_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, os.path.join(REPO, 'export.py'), '--device', 'cpu', *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def _error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith('error:')]


@pytest.fixture(scope='module')
def tiny_exports(tmp_path_factory):
    """A tiny HarDNet's weights and config, exported with export.py as paddle and openvino, logits and argmax."""
    root = tmp_path_factory.mktemp('openvino')
    _, weights, config = write_tiny_hardnet(root, seed=3)
    dirs = {}
    cwd = root / 'cwd'
    cwd.mkdir()
    for fmt in ('paddle', 'openvino'):
        for op in ('none', 'argmax'):
            dirs[fmt, op] = root / f'{fmt}_{op}'
            result = _export_cli('--config', config, '--model_path', weights, '--save_dir', dirs[fmt, op],
                                 '--format', fmt, '--output_op', op, cwd=cwd)
            assert result.returncode == 0, result.stderr
    # the engine's compiled-model cache went to a temporary folder, not ./__cache__ (Paddle's default)
    assert os.listdir(cwd) == []
    return root, config, dirs


def test_openvino_export_writes_a_legacy_program_and_deploy_yaml(tiny_exports):
    _, _, dirs = tiny_exports
    for op, dtype in (('none', 'float32'), ('argmax', 'int32')):
        assert sorted(os.listdir(dirs['openvino', op])) == ['deploy.yaml', 'model.pdiparams', 'model.pdmodel']
        with open(dirs['openvino', op] / 'deploy.yaml', encoding='utf-8') as f:
            deploy = yaml.safe_load(f)['Deploy']
        assert deploy == {'model': 'model.pdmodel', 'params': 'model.pdiparams', 'backend': 'paddle_inference',
                          'transforms': TRANSFORMS, 'input_shape': [None, 3, None, None], 'output_op': op,
                          'output_dtype': dtype, 'enable_mkldnn': True, 'enable_openvino': True,
                          'class_names': list(SyntheticShapes.CLASSES), 'palette': SyntheticShapes.PALETTE}


def test_openvino_logits_match_the_paddle_export_at_two_sizes(tiny_exports):
    _, _, dirs = tiny_exports
    openvino = InferenceModel(dirs['openvino', 'none'], threads=2)
    pir = InferenceModel(dirs['paddle', 'none'], threads=2)
    ids = InferenceModel(dirs['openvino', 'argmax'], threads=2)
    for shape in ([1, 3, 64, 64], [2, 3, 48, 80]):
        data = np.random.default_rng(1).standard_normal(shape).astype('float32')
        got, want = openvino(data), pir(data)
        assert got.shape == want.shape == (shape[0], 5, *shape[2:])
        assert float(np.abs(got - want).max() / np.abs(want).max()) <= 1e-4
        classes = ids(data)
        assert classes.dtype == np.int32 and classes.shape == (shape[0], *shape[2:])
        assert np.mean(classes != want.argmax(1)) <= 1e-3


def test_infer_runs_the_openvino_export_like_the_paddle_one(tiny_exports, tmp_path):
    """Same PNGs from both exports; the engine is on by deploy.yaml (Paddle's OpenVINO pass runs), off with
    --enable_openvino False; a PIR program with --enable_openvino True runs without it, with a warning."""
    _, _, dirs = tiny_exports
    image_dir = tmp_path / 'images'
    image_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(image_dir / f'im{i}.png')
    runs = {'paddle': (dirs['paddle', 'argmax'], []), 'openvino': (dirs['openvino', 'argmax'], []),
            'openvino_off': (dirs['openvino', 'argmax'], ['--enable_openvino', 'False']),
            'pir_forced': (dirs['paddle', 'argmax'], ['--enable_openvino', 'True'])}
    outputs = {}
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    for name, (export_dir, extra) in runs.items():
        out_dir = tmp_path / name
        result = subprocess.run([sys.executable, INFER, '--config', str(export_dir / 'deploy.yaml'), '--image_path',
                                 str(image_dir), '--save_dir', str(out_dir), '--device', 'cpu',
                                 '--print_detail', *extra],  # Paddle's pass log names the engine's pass
                                capture_output=True, text=True, cwd=cwd, timeout=300)
        assert result.returncode == 0, result.stderr
        assert os.listdir(cwd) == [], name  # nothing outside --save_dir (no ./__cache__)
        engine_pass = 'Running IR pass [openvino_subgraph_pass]' in result.stderr
        assert engine_pass == (name == 'openvino'), name
        if name == 'openvino':
            assert 'OpenVINO: on (deploy.yaml records enable_openvino: true)' in result.stderr
        if name == 'pir_forced':
            assert 'OpenVINO: off (its engine takes legacy programs only, not model.json' in result.stderr
        outputs[name] = {p: np.asarray(Image.open(out_dir / p)) for p in sorted(os.listdir(out_dir))}
    assert sorted(outputs['openvino']) == ['im0.png', 'im1.png']
    for name in ('openvino', 'openvino_off', 'pir_forced'):
        for png, ref in outputs['paddle'].items():
            assert outputs[name][png].shape == ref.shape == (60, 90) and len(np.unique(ref)) > 1
            assert np.mean(outputs[name][png] != ref) <= 1e-3, (name, png)


def _program_ops(program_file):
    from paddle.base.proto import framework_pb2

    program = framework_pb2.ProgramDesc()
    program.ParseFromString(program_file.read_bytes())
    return list(program.blocks[0].ops)


def _attr(op, name):
    return next(a for a in op.attrs if a.name == name)


@pytest.mark.parametrize('name', ['SegFormer', 'SegNeXt', 'LinkNet'])
def test_transformers_and_linknet_run_in_the_engine_as_their_paddle_export(name, tmp_path):
    """export.py --format openvino of SegFormer and SegNeXt (Paddle 3.3's C-only matmul and gelu traced into legacy
    ops) and LinkNet: the engine's logits equal the Paddle export's (PIR program, oneDNN) at two sizes, the second
    odd-sized (LinkNet crops its decoder's upsampled maps there)."""
    weights, config = write_tiny_config(tmp_path, name, seed=5)
    for fmt in ('paddle', 'openvino'):
        result = _export_cli('--config', config, '--model_path', weights, '--save_dir', tmp_path / fmt, '--format', fmt,
                             '--output_op', 'none')
        assert result.returncode == 0, result.stderr
    assert "Paddle Inference's OpenVINO engine matches its oneDNN/CPU run" in result.stderr
    types = [op.type for op in _program_ops(tmp_path / 'openvino' / 'model.pdmodel')]
    if name == 'SegFormer':  # the attention's products and the Mix-FFN's GELU, as Paddle 2.6 traced them
        assert types.count('matmul_v2') >= 8 and types.count('gelu') == 2 * 4
    if name == 'LinkNet':  # output padding 1 traced as padding (1, 0): OpenVINO's frontend drops output_padding
        transposed = [op for op in _program_ops(tmp_path / 'openvino' / 'model.pdmodel')
                      if op.type == 'conv2d_transpose']
        assert len(transposed) == 6
        assert sorted(tuple(_attr(op, 'paddings').ints) for op in transposed) == \
            [(0, 0), (1, 0, 1, 0), (1, 0, 1, 0), (1, 0, 1, 0), (1, 0, 1, 0), (1, 1)]
        assert all(not any(_attr(op, 'output_padding').ints) for op in transposed)
    openvino = InferenceModel(tmp_path / 'openvino', threads=2)
    pir = InferenceModel(tmp_path / 'paddle', threads=2)
    for shape in ([1, 3, 64, 64], [2, 3, 50, 70]):
        data = np.random.default_rng(2).standard_normal(shape).astype('float32')
        got, want = openvino(data), pir(data)
        assert got.shape == want.shape == (shape[0], 5, *shape[2:])
        assert float(np.abs(got - want).max() / np.abs(want).max()) <= 1e-4, shape


_REFUSED = """
import sys

import numpy as np
import paddle
import paddle.nn as nn

from paddle_models.core.cli import main_wrapper
from paddle_models.registry import register_model
from paddle_models.tools import export as export_tool


@register_model
class RollNet(nn.Layer):
    # paddle.roll: one of Paddle 3.3's C-only APIs that utils/compat.legacy_program_apis does not cover
    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2D(3, num_classes, 1)

    def forward(self, x):
        return [paddle.roll(self.conv(x), 1, axis=3)]


@register_model
class ConstantProductNet(nn.Layer):
    # a product with a constant 4-D right operand plus a scalar: OpenVINO's CPU plugin makes it a FullyConnected
    # node with a fused bias it cannot build, and Paddle's engine returns an empty output (as SegNeXt's NMF did)
    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2D(3, num_classes, 1)
        weight = np.random.RandomState(0).rand(1, 1, num_classes, num_classes).astype('float32')
        self.register_buffer('weight', paddle.to_tensor(weight))

    def forward(self, x):
        y = self.conv(x)
        tokens = y.reshape([0, 1, self.num_classes, -1]).transpose([0, 1, 3, 2])
        out = (paddle.matmul(tokens, self.weight) + 1e-6).transpose([0, 1, 3, 2])
        return [out.reshape(paddle.shape(y))]


main_wrapper(lambda: export_tool.main(sys.argv[1:]))
"""


def test_models_the_engine_cannot_take_fail_in_one_line_and_leave_nothing(tmp_path):
    """A model using a C-only API without a legacy path cannot be traced; one the engine runs to an empty output is
    caught by the export's check. Exit code 2, one error line, no traceback, no save_dir or parent left, no engine
    cache left. (export.py's own code in a legacy-mode process that registers the two models.)"""
    script = tmp_path / 'refused.py'
    script.write_text(_REFUSED)
    env = dict(os.environ, FLAGS_enable_pir_api='0',
               PYTHONPATH=os.pathsep.join([REPO] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    before = glob.glob(os.path.join(tempfile.gettempdir(), 'paddle_models-openvino-*'))
    cases = (('RollNet', "error: OpenVINO export: model RollNet cannot be traced as a legacy program "
                         "(FLAGS_enable_pir_api=0): TypeError: ",
              "roll(): argument (position 1) must be Value, but got Variable"),
             ('ConstantProductNet', "error: OpenVINO export: Paddle Inference's OpenVINO engine runs model "
                                    "ConstantProductNet wrongly (shape [0, ",
              "; without it: [1, 64, 96]); export it with --format paddle"))
    for model, prefix, suffix in cases:
        config = tmp_path / f'{model}.yml'
        config.write_text(yaml.safe_dump({'model': {'type': model, 'num_classes': 4}}))
        save_dir = tmp_path / model / 'out'
        result = subprocess.run([sys.executable, str(script), '--config', str(config), '--save_dir', str(save_dir),
                                 '--format', 'openvino', '--device', 'cpu'],
                                capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
        assert result.returncode == 2, result.stderr
        lines = _error_lines(result)
        assert len(lines) == 1 and lines[0].startswith(prefix) and lines[0].endswith(suffix), result.stderr
        assert 'Traceback' not in result.stderr
        assert not (tmp_path / model).exists()
    assert glob.glob(os.path.join(tempfile.gettempdir(), 'paddle_models-openvino-*')) == before  # cache removed


def test_export_model_openvino_needs_legacy_mode_and_the_engine(tmp_path, monkeypatch):
    """In-process (this test process imported Paddle with PIR on): a one-line UserError, nothing written."""
    model = HarDNet(num_classes=5, **TINY_HARDNET)
    with pytest.raises(UserError) as err:
        export_model(model, str(tmp_path / 'out'), fmt='openvino')
    assert str(err.value) == ("--format openvino needs legacy programs: run it with FLAGS_enable_pir_api=0 set "
                              "before Paddle is imported (export.py does this itself)")
    monkeypatch.setattr(exported, 'openvino_available', lambda: False)
    with pytest.raises(UserError) as err:
        export_model(model, str(tmp_path / 'out'), fmt='openvino')
    assert str(err.value) == (f"--format openvino needs Paddle Inference's OpenVINO engine, which Paddle "
                              f"{paddle.__version__} does not have (Paddle 3.x CPU builds do)")
    assert not (tmp_path / 'out').exists()


def test_inference_model_keeps_the_engine_cache_in_a_temporary_folder(tiny_exports, monkeypatch, tmp_path):
    _, _, dirs = tiny_exports
    monkeypatch.chdir(tmp_path)
    model = InferenceModel(dirs['openvino', 'none'], threads=1)
    model(np.zeros((1, 3, 32, 32), 'float32'))
    assert os.listdir(tmp_path) == []
    cache = exported.openvino_cache_dir()
    assert os.path.isdir(cache) and os.path.basename(cache).startswith('paddle_models-openvino-')
    assert not cache.startswith(str(tmp_path))


def test_inference_model_refuses_openvino_where_paddle_has_no_engine(tiny_exports, monkeypatch):
    _, _, dirs = tiny_exports
    monkeypatch.setattr(exported, 'openvino_available', lambda: False)
    with pytest.raises(UserError) as err:
        InferenceModel(dirs['openvino', 'none'])
    assert str(err.value) == (f"--inference_model: {dirs['openvino', 'none'] / 'deploy.yaml'} asks for Paddle "
                              f"Inference's OpenVINO engine (enable_openvino: true), which this Paddle "
                              f"{paddle.__version__} does not have (Paddle 3.x CPU builds do)")


@pytest.mark.paddle26
def test_paddle26_has_no_engine_and_says_so(tmp_path):
    """On Paddle 2.6 (CI's second pass) the check is real; on 3.x the engine exists."""
    from paddle.inference import Config

    assert exported.openvino_available() == hasattr(Config, 'enable_openvino_engine')
    assert exported.openvino_available() == (not paddle.__version__.startswith('2.'))
    if exported.openvino_available():
        return
    with pytest.raises(UserError) as err:
        export_model(HarDNet(num_classes=5, **TINY_HARDNET), str(tmp_path / 'out'), fmt='openvino')
    assert str(err.value) == (f"--format openvino needs Paddle Inference's OpenVINO engine, which Paddle "
                              f"{paddle.__version__} does not have (Paddle 3.x CPU builds do)")


def test_infer_refuses_openvino_where_paddle_has_no_engine(tiny_exports, tmp_path, monkeypatch, capsys):
    """infer.py (standalone, so its own check): one ``error:`` line naming deploy.yaml, exit code 2, no PNG."""
    import paddle.inference

    infer = load_infer()
    monkeypatch.setattr(paddle.inference, 'Config', type('Config', (), {}))  # a Config without the engine
    image = tmp_path / 'im.png'
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(image)
    deploy = tiny_exports[2]['openvino', 'argmax'] / 'deploy.yaml'
    code = infer.main(['--config', str(deploy), '--image_path', str(image), '--save_dir',
                       str(tmp_path / 'out'), '--device', 'cpu'])
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
    assert lines == [f"error: --config: {deploy} asks for Paddle Inference's OpenVINO engine, which this Paddle "
                     f"{paddle.__version__} does not have (Paddle 3.x CPU builds do)"]
    assert not (tmp_path / 'out').exists()
