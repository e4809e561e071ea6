"""ONNX export (``export.py --format onnx``) and running it with deploy/python/infer.py.

Every config in configs/ is exported to ONNX with a free input size, random weights and ``output_op: none``,
keeping the Paddle program the ONNX model was converted from (``keep_program=True``); at 1x3x50x70 (odd-sized maps
at every stride-2 level, pooled maps that the pyramid bins do not divide) ONNX Runtime's logits must match Paddle
Inference's (plain CPU kernels) on that same program within 1e-4, relative error measured as
max |onnx - paddle| / max |paddle| over the whole logits tensor. A config that does not convert fails its test.
Not marked paddle26: the ONNX path is tested on Paddle 3.x (PIR programs) only.
"""
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

from conftest import REPO, camvid_root, write_tiny_hardnet
from paddle_models.core.export import checks as export_checks
from paddle_models.core.export import onnx as export_onnx
from paddle_models.core.export import program as export_program
from paddle_models.core.config import Builder, load_config
from paddle_models.core.export import export_model
from paddle_models.errors import UserError
from paddle_models.layers.deploy import deploy_form
from paddle_models.models.hardnet import HarDNet
from paddle_models.models.multiscale_attention import MultiScaleAttention
from paddle_models.models.pspnet import PSPNet
from paddle_models.models.upernet import UPerNet
from helpers import TINY_HARDNET, TINY_TRANSFORMS, tiny_van

CONFIGS = sorted(glob.glob(os.path.join(REPO, 'configs', '*.yml')))
# the size each config's free-size export runs at in the test
INPUT_SHAPE = [1, 3, 50, 70]
INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')
TINY, TRANSFORMS = TINY_HARDNET, TINY_TRANSFORMS


@pytest.fixture(scope='module')
def onnx_export(tmp_path_factory):
    """config name -> export info (or the exception export raised), exported once per module on first use."""
    root = tmp_path_factory.mktemp('onnx')
    cache = {}

    def get(name):
        if name not in cache:
            paddle.seed(0)
            try:
                cfg = load_config(os.path.join(REPO, 'configs', name + '.yml'), require=('model',))
                model = Builder(cfg).model()
                cache[name] = export_model(model, str(root / name), output_op='none', transforms=TRANSFORMS,
                                           fmt='onnx', keep_program=True)
            except Exception as err:  # noqa: BLE001  (reported by the test of that config)
                cache[name] = err
        return cache[name]

    return get


def _paddle_inference(program_dir, data):
    from paddle.inference import Config, create_predictor

    program = next(os.path.join(program_dir, n) for n in ('model.json', 'model.pdmodel')
                   if os.path.isfile(os.path.join(program_dir, n)))
    config = Config(program, os.path.join(program_dir, 'model.pdiparams'))
    config.disable_gpu()
    config.disable_glog_info()
    config.disable_mkldnn()
    config.set_cpu_math_library_num_threads(1)
    predictor = create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(data.shape))
    handle.copy_from_cpu(data)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def _onnx_runtime(path, data):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    return session.run(None, {session.get_inputs()[0].name: data})[0]


@pytest.mark.parametrize('config', [os.path.basename(p)[:-4] for p in CONFIGS])
def test_config_exports_to_onnx_and_matches_paddle_inference(onnx_export, config):
    info = onnx_export(config)
    if isinstance(info, Exception):
        pytest.fail(f"{config}: ONNX export failed: {type(info).__name__}: {info}")
    with open(info['deploy_yaml'], encoding='utf-8') as f:
        deploy = yaml.safe_load(f)['Deploy']
    assert (deploy['model'], deploy['backend'], deploy['output_op']) == ('model.onnx', 'onnxruntime', 'none')
    shape = INPUT_SHAPE
    assert 'params' not in deploy and deploy['input_shape'] == [None, 3, None, None]
    num_classes = load_config(os.path.join(REPO, 'configs', config + '.yml'), require=('model',)) \
        .dic['model']['num_classes']

    data = np.random.default_rng(1).standard_normal(shape).astype('float32')
    want = _paddle_inference(info['paddle_program'], data)
    got = _onnx_runtime(info['model'], data)
    assert want.shape == got.shape == (1, num_classes) + tuple(shape[2:])
    assert np.abs(want).max() > 0
    relative = float(np.abs(got.astype('float64') - want).max() / np.abs(want).max())
    assert relative <= 1e-4, f"{config}: max |onnx - paddle| / max |paddle| = {relative:.3g}"


def _tiny_hardnet(seed=0):
    paddle.seed(seed)
    model = HarDNet(num_classes=5, **TINY)
    model.eval()
    return model


@pytest.fixture(scope='module')
def tiny_onnx(tmp_path_factory):
    """A tiny HarDNet exported to ONNX with a free input size and argmax output (the default)."""
    model = _tiny_hardnet()
    save_dir = tmp_path_factory.mktemp('tiny') / 'onnx_model'
    return model, export_model(model, str(save_dir), transforms=TRANSFORMS, fmt='onnx')


def test_onnx_export_writes_model_and_deploy_yaml_only(tiny_onnx):
    model, info = tiny_onnx
    assert sorted(os.listdir(info['save_dir'])) == ['deploy.yaml', 'model.onnx']
    with open(info['deploy_yaml'], encoding='utf-8') as f:
        deploy = yaml.safe_load(f)['Deploy']
    assert deploy['model'] == 'model.onnx' and deploy['backend'] == 'onnxruntime'
    assert (deploy['output_op'], deploy['output_dtype'], deploy['input_shape']) == ('argmax', 'int32',
                                                                                    [None, 3, None, None])
    assert deploy['transforms'] == TRANSFORMS and deploy['opset'] >= 11
    # a free input size: two sizes run and match the dynamic model's argmax
    for shape in ([1, 3, 64, 64], [2, 3, 48, 80]):
        data = np.random.default_rng(2).standard_normal(shape).astype('float32')
        with paddle.no_grad():
            logits = model(paddle.to_tensor(data))[0].numpy()
        got = _onnx_runtime(info['model'], data)
        assert got.shape == (shape[0],) + tuple(shape[2:])
        assert np.mean(got != logits.argmax(1)) <= 1e-3


# tiny models whose free-size ONNX export needs layers/resize.py's ONNX forms (trace_forms(onnx=True)):
# MultiScaleAttention resizes to sizes read from its logits, PSPNet and UPerNet pool to bins 1, 2, 3, 6 (VAN's 1/16 and 1/32 maps: 4x5 and 2x3 at 50x70)
FREE_SIZE_MODELS = {
    'multiscale_attention_hardnet': lambda: MultiScaleAttention(HarDNet(num_classes=5, **TINY), attention_channels=8),
    'pspnet': lambda: PSPNet(5, tiny_van(), backbone_indices=(2, 3), pp_out_channels=16),
    'upernet': lambda: UPerNet(5, tiny_van(), channels=16),
}


@pytest.mark.parametrize('name', sorted(FREE_SIZE_MODELS))
def test_free_size_onnx_export_matches_the_dynamic_model(name, tmp_path):
    """Exported with a free input size, the ONNX model runs in ONNX Runtime at sizes the pooling bins do not divide
    (also smaller than the 6x6 grid) and equals the dynamic model: logits within 1e-4 relative, the argmax on at
    least 99.9% of the pixels."""
    paddle.seed(0)
    model = FREE_SIZE_MODELS[name]()
    model.eval()
    info = export_model(model, str(tmp_path / 'onnx'), output_op='none', transforms=TRANSFORMS, fmt='onnx')
    assert info['input_shape'] == [None, 3, None, None]
    for shape in ([1, 3, 50, 70], [2, 3, 64, 96]):
        data = np.random.default_rng(3).standard_normal(shape).astype('float32')
        with paddle.no_grad():
            want = model(paddle.to_tensor(data))[0].numpy()
        got = _onnx_runtime(info['model'], data)
        assert got.shape == want.shape == (shape[0], 5) + tuple(shape[2:])
        relative = float(np.abs(got.astype('float64') - want).max() / np.abs(want).max())
        assert relative <= 1e-4, f"{name} at {shape}: max |onnx - dynamic| / max |dynamic| = {relative:.3g}"
        assert np.mean(got.argmax(1) != want.argmax(1)) <= 1e-3


def test_export_cli_onnx_and_infer_matches_paddle_results(tmp_path):
    """export.py --format onnx and --format paddle of the same weights; infer.py gives the same PNGs for both, with
    the palette deploy.yaml records (the config's SyntheticShapes colours, then PaddleSeg's)."""
    _, weights, config = write_tiny_hardnet(tmp_path, seed=3)
    images = sorted(glob.glob(os.path.join(camvid_root(), 'images', 'val', '*')))[:2]
    image_dir = tmp_path / 'images'
    image_dir.mkdir()
    for path in images:
        shutil.copy(path, image_dir)
    outputs = {}
    for fmt in ('paddle', 'onnx'):
        save_dir = tmp_path / f'export_{fmt}'
        result = subprocess.run([sys.executable, 'export.py', '--config', str(config), '--model_path', str(weights),
                                 '--save_dir', str(save_dir), '--format', fmt, '--device', 'cpu'],
                                capture_output=True, text=True, cwd=REPO, timeout=600)
        assert result.returncode == 0, result.stderr
        out_dir = tmp_path / f'out_{fmt}'
        result = subprocess.run([sys.executable, INFER, '--config', str(save_dir / 'deploy.yaml'), '--image_path',
                                 str(image_dir), '--save_dir', str(out_dir), '--device', 'cpu', '--print_detail',
                                 'False', '--benchmark', 'True'], capture_output=True, text=True, cwd=REPO,
                                timeout=300)
        assert result.returncode == 0, result.stderr
        if fmt == 'onnx':
            assert 'ONNX Runtime' in result.stdout and 'ONNX Runtime: providers CPUExecutionProvider' in \
                result.stderr
        outputs[fmt] = {name: Image.open(out_dir / name) for name in sorted(os.listdir(out_dir))}
    assert sorted(outputs['onnx']) == sorted(outputs['paddle']) == \
        sorted(os.path.splitext(os.path.basename(p))[0] + '.png' for p in images)
    from paddleseg.utils.visualize import get_color_map_list

    from paddle_models.datasets.synthetic import SyntheticShapes
    palette = [v for colour in SyntheticShapes.PALETTE for v in colour] + get_color_map_list(256)[3 * 5:]
    for name, png in outputs['onnx'].items():
        ref = np.asarray(outputs['paddle'][name])
        assert png.size == outputs['paddle'][name].size and len(np.unique(ref)) > 1
        assert np.mean(np.asarray(png) != ref) <= 1e-3
        assert png.getpalette() == outputs['paddle'][name].getpalette() == palette


def test_infer_refuses_a_broken_onnx_model_in_one_line(tiny_onnx, tmp_path):
    _, info = tiny_onnx
    broken = tmp_path / 'broken'
    shutil.copytree(info['save_dir'], broken)
    data = (broken / 'model.onnx').read_bytes()
    (broken / 'model.onnx').write_bytes(data[:len(data) // 2])
    image = sorted(glob.glob(os.path.join(camvid_root(), 'images', 'val', '*')))[0]
    result = subprocess.run([sys.executable, INFER, '--config', str(broken / 'deploy.yaml'), '--image_path', image,
                             '--save_dir', str(tmp_path / 'out'), '--device', 'cpu'],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and str(broken / 'model.onnx') in lines[0] and 'ONNX Runtime cannot load it' in lines[0]
    assert 'Traceback' not in result.stderr


def test_unconvertible_op_is_a_user_error_naming_it_and_leaves_nothing(tmp_path):
    """The portable resize (lerp) has no paddle2onnx converter: tracing with it must fail naming the op."""
    model = _tiny_hardnet()
    save_dir = tmp_path / 'out'
    with pytest.raises(UserError) as err:
        scratch = tmp_path / 'scratch'
        scratch.mkdir()
        target = export_program.deploy_target(portable=True)
        ops = export_program.save_program(deploy_form(model, target), str(scratch), [1, 3, 64, 64], 'none', target)
        export_onnx.convert_onnx(str(scratch / 'model.json'), str(scratch / 'model.pdiparams'),
                                 str(save_dir / 'model.onnx'), ops)
    assert str(err.value) == "ONNX export: paddle2onnx cannot convert the model: it has no converter for op(s) lerp"
    assert not save_dir.exists()


def test_failed_onnx_check_leaves_nothing_behind(tmp_path, monkeypatch):
    model = _tiny_hardnet()
    save_dir = tmp_path / 'sub' / 'out'
    monkeypatch.setattr(export_checks, 'compare', lambda got, want, op: 0.5)
    with pytest.raises(UserError) as err:
        export_model(model, str(save_dir), input_shape=[1, 3, 64, 64], transforms=TRANSFORMS, fmt='onnx')
    assert str(err.value) == ("ONNX export: ONNX Runtime's output differs from Paddle Inference's on the traced "
                              "program (50.0% of the pixels; Paddle's shape is [1, 64, 64])")
    assert not (tmp_path / 'sub').exists()


def test_missing_onnx_packages_and_bad_format_are_user_errors(tmp_path, monkeypatch):
    import importlib.util

    model = _tiny_hardnet()
    with pytest.raises(UserError) as err:
        export_model(model, str(tmp_path / 'out'), fmt='tflite')
    assert str(err.value) == "format: unknown value 'tflite'; expected one of paddle, onnx, openvino"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'paddle2onnx' else
                        real(name, *a))
    with pytest.raises(UserError) as err:
        export_model(model, str(tmp_path / 'out'), fmt='onnx')
    assert str(err.value) == ("--format onnx needs paddle2onnx, which is not installed: pip install "
                              "paddle2onnx==2.1.0 onnxruntime==1.32.0")
    assert not (tmp_path / 'out').exists()
