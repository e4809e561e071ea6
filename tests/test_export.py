"""Export to Paddle Inference (core/export/) and the deployment runner (deploy/python/infer.py).

A tiny HarDNet (bilinear upsampling in its decoder and head) is exported once per module and compared with the
dynamic graph: through Paddle Inference with oneDNN on and off, at two input sizes, and through infer.py run as a
subprocess on camvid_mini images.
"""
import glob
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
import yaml
from PIL import Image

import paddleseg.transforms as T
from paddleseg.cvlibs import manager
from paddleseg.utils.visualize import get_color_map_list

from conftest import REPO, camvid_root, run_export
from helpers import TINY_HARDNET
from paddle_models.core.export import checks as export_checks
from paddle_models.core.export import dispatch as export_dispatch
from paddle_models.core.export import export_model
from paddle_models.errors import UserError
from paddle_models.models.hardnet import HarDNet

INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')
NUM_CLASSES = 5
TRANSFORMS = [{'type': 'Normalize', 'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5]}]
IS_PIR = not paddle.__version__.startswith('2.')


def _tiny_model(seed=0):
    paddle.seed(seed)
    model = HarDNet(num_classes=NUM_CLASSES, **TINY_HARDNET)
    model.eval()
    return model


@pytest.fixture(scope='module')
def model():
    return _tiny_model()


@pytest.fixture(scope='module')
def exported(model, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp('export') / 'inference_model'
    info = export_model(model, str(save_dir), transforms=TRANSFORMS)
    return info


@pytest.fixture(scope='module')
def images():
    """Two camvid_mini val images (240x180)."""
    return sorted(glob.glob(os.path.join(camvid_root(), 'images', 'val', '*.png')) +
                  glob.glob(os.path.join(camvid_root(), 'images', 'val', '*.jpg')))[:2]


def _preprocess(path, transforms=TRANSFORMS):
    """The input the runner feeds for ``path``: PaddleSeg's Compose over the deploy transforms."""
    ops = [manager.TRANSFORMS[t['type']](**{k: v for k, v in t.items() if k != 'type'}) for t in transforms]
    return T.Compose(ops)({'img': path})['img'].astype('float32')


def _logits(model, batch):
    with paddle.no_grad():
        return model(paddle.to_tensor(batch))[0].numpy()


def _assert_same_argmax(pred, logits):
    """``pred`` [N, H, W] equals the argmax of ``logits`` [N, C, H, W], except where the dynamic graph's top two
    logits tie within float error (oneDNN and the plain kernels sum in different orders)."""
    ref = logits.argmax(1)
    assert pred.shape == ref.shape
    assert len(np.unique(ref)) > 1  # a non-trivial prediction
    differ = pred != ref
    assert differ.mean() <= 1e-3, f"{differ.sum()} of {differ.size} pixels differ"
    if differ.any():
        picked = np.take_along_axis(logits, pred[:, None].astype('int64'), axis=1)[:, 0]
        gap = (logits.max(1) - picked)[differ]
        assert gap.max() <= 1e-4 * max(1.0, float(np.abs(logits).max())), gap.max()


def _run_infer(*args):
    return subprocess.run([sys.executable, INFER, '--print_detail', 'False', *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


@pytest.mark.paddle26
def test_export_writes_the_files_deploy_yaml_names(exported, model):
    save_dir = exported['save_dir']
    with open(os.path.join(save_dir, 'deploy.yaml')) as f:
        deploy = yaml.safe_load(f)['Deploy']
    program = 'model.json' if IS_PIR else 'model.pdmodel'
    assert deploy['model'] == program and deploy['params'] == 'model.pdiparams'
    for key in ('model', 'params'):
        path = os.path.join(save_dir, deploy[key])
        assert os.path.getsize(path) > 0
        assert exported[key] == path
    assert deploy['transforms'] == TRANSFORMS
    assert deploy['input_shape'] == [None, 3, None, None]
    assert (deploy['output_op'], deploy['output_dtype']) == ('argmax', 'int32')
    assert deploy['enable_mkldnn'] is True and 'mkldnn_error' not in deploy
    assert exported['onednn'] is True and exported['onednn_error'] is None
    assert exported['program_format'] == ('pir' if IS_PIR else 'legacy')
    # the temporary folder was renamed, nothing else was left beside save_dir
    assert os.listdir(os.path.dirname(save_dir)) == ['inference_model']
    assert not model.training


@pytest.mark.paddle26
def test_inference_matches_dynamic_graph_with_and_without_onednn(exported, model, images):
    batch = _preprocess(images[0])[None]
    logits = _logits(model, batch)
    for onednn in (False, True):
        pred = run_export(exported, batch, onednn)
        assert pred.dtype == np.int32
        _assert_same_argmax(pred, logits)


@pytest.mark.paddle26
def test_exported_graph_keeps_a_free_input_size(exported, model):
    rng = np.random.RandomState(0)
    for shape in [(2, 3, 64, 96), (1, 3, 45, 77)]:
        batch = rng.standard_normal(shape).astype('float32')
        logits = _logits(model, batch)
        for onednn in (False, True):
            pred = run_export(exported, batch, onednn)
            assert pred.shape == (shape[0],) + shape[2:]
            _assert_same_argmax(pred, logits)


@pytest.mark.paddle26
def test_infer_script_writes_palette_pngs_equal_to_the_dynamic_argmax(exported, model, images, tmp_path):
    image_dir = tmp_path / 'images'
    image_dir.mkdir()
    for path in images:
        shutil.copy(path, image_dir)
    logits = {os.path.splitext(os.path.basename(p))[0]: _logits(model, _preprocess(p)[None]) for p in images}
    palette = get_color_map_list(256)
    for flag in ('True', 'False'):
        out_dir = tmp_path / f'out_{flag}'
        result = _run_infer('--config', os.path.join(exported['save_dir'], 'deploy.yaml'), '--image_path',
                            str(image_dir), '--save_dir', str(out_dir), '--device', 'cpu', '--batch_size', '2',
                            '--enable_mkldnn', flag, '--benchmark', 'True')
        assert result.returncode == 0, result.stderr
        assert f"oneDNN: {'on' if flag == 'True' else 'off'}" in result.stderr
        timings = [line.split(':')[0].strip() for line in result.stdout.splitlines() if 'ms/image' in line]
        assert timings == ['preprocess', 'inference', 'postprocess'], result.stdout
        assert sorted(os.listdir(out_dir)) == sorted(f'{name}.png' for name in logits)
        for name, logit in logits.items():
            png = Image.open(out_dir / f'{name}.png')
            assert png.mode == 'P'
            assert png.getpalette()[:3 * 256] == palette[:3 * 256]
            _assert_same_argmax(np.asarray(png).astype('int32')[None], logit)


def test_infer_maps_the_result_back_to_the_image_size(exported, model, images, tmp_path):
    """With a Resize in the transforms the PNG has the image's size: the network output resized back (nearest)."""
    transforms = [{'type': 'Resize', 'target_size': [96, 64]}] + TRANSFORMS
    deploy_dir = tmp_path / 'resized'
    shutil.copytree(exported['save_dir'], deploy_dir)
    with open(deploy_dir / 'deploy.yaml') as f:
        deploy = yaml.safe_load(f)
    deploy['Deploy']['transforms'] = transforms
    with open(deploy_dir / 'deploy.yaml', 'w') as f:
        yaml.safe_dump(deploy, f)
    result = _run_infer('--config', str(deploy_dir / 'deploy.yaml'), '--image_path', images[0], '--save_dir',
                        str(tmp_path / 'out'), '--device', 'cpu')
    assert result.returncode == 0, result.stderr
    name = os.path.splitext(os.path.basename(images[0]))[0]
    png = np.asarray(Image.open(tmp_path / 'out' / f'{name}.png')).astype('int32')
    assert png.shape == (180, 240)
    logits = _logits(model, _preprocess(images[0], transforms)[None])     # at 64x96
    assert logits.shape[2:] == (64, 96)
    back = F.interpolate(paddle.to_tensor(logits), size=[180, 240], mode='nearest').numpy()
    _assert_same_argmax(png[None], back)


def test_infer_errors_are_one_line_with_exit_2(exported, tmp_path, images):
    missing = str(tmp_path / 'nowhere' / 'deploy.yaml')
    result = _run_infer('--config', missing, '--image_path', images[0])
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --config: {missing} does not exist"
    result = _run_infer('--config', os.path.join(exported['save_dir'], 'deploy.yaml'), '--image_path',
                        str(tmp_path / 'missing.png'))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --image_path: {tmp_path / 'missing.png'} does not exist"


@pytest.mark.paddle26
def test_failure_mid_export_leaves_nothing_behind(model, tmp_path, monkeypatch):
    real_save = paddle.jit.save

    def save_then_fail(layer, path, **kwargs):
        real_save(layer, path, **kwargs)  # files are written, then the export fails
        raise OSError('disk full')

    monkeypatch.setattr(paddle.jit, 'save', save_then_fail)
    with pytest.raises(OSError, match='disk full'):  # folders it had to create go too
        export_model(model, str(tmp_path / 'new' / 'deeper' / 'inference_model'), transforms=TRANSFORMS)
    assert os.listdir(tmp_path) == []
    save_dir = tmp_path / 'inference_model'
    with pytest.raises(OSError, match='disk full'):
        export_model(model, str(save_dir), transforms=TRANSFORMS)
    assert os.listdir(tmp_path) == []

    # a previous export in save_dir stays as it was (and the model's train/eval state is restored)
    monkeypatch.setattr(paddle.jit, 'save', real_save)
    model.train()
    model.stem.eval()  # a mixed state (e.g. a frozen part) comes back as it was
    try:
        export_model(model, str(save_dir), transforms=TRANSFORMS)
        assert model.training and model.encoder.training and not model.stem.training
        assert not any(layer.training for layer in model.stem.sublayers())
    finally:
        model.eval()
    before = {name: (save_dir / name).read_bytes() for name in os.listdir(save_dir)}
    monkeypatch.setattr(paddle.jit, 'save', save_then_fail)
    with pytest.raises(OSError, match='disk full'):
        export_model(model, str(save_dir), transforms=TRANSFORMS + [{'type': 'Normalize'}])
    assert os.listdir(tmp_path) == ['inference_model']
    assert {name: (save_dir / name).read_bytes() for name in os.listdir(save_dir)} == before


@pytest.mark.paddle26
def test_onednn_check_records_a_failing_program(model, images, tmp_path, caplog):
    """Without the portable resize, a PIR program holds bilinear_interp, which oneDNN rejects: the export records
    it and the runner falls back to plain CPU with a warning. Legacy programs (Paddle 2.6) run it with oneDNN."""
    with caplog.at_level(logging.WARNING, logger='paddle_models.core.export'):
        info = export_model(model, str(tmp_path / 'plain'), transforms=TRANSFORMS, portable=False)
    with open(info['deploy_yaml']) as f:
        deploy = yaml.safe_load(f)['Deploy']
    if not IS_PIR:
        assert info['onednn'] is True and deploy['enable_mkldnn'] is True
        return
    assert info['onednn'] is False and deploy['enable_mkldnn'] is False
    assert 'bilinear_interp' in deploy['mkldnn_error'] and 'ConvertPirAttribute2RuntimeAttribute' in \
        deploy['mkldnn_error']
    assert info['onednn_error'] == deploy['mkldnn_error']
    assert any('bilinear_interp' in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)

    result = _run_infer('--config', info['deploy_yaml'], '--image_path', images[0], '--save_dir',
                        str(tmp_path / 'out'), '--device', 'cpu', '--enable_mkldnn', 'True')
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if 'WARNING' in line and 'oneDNN: off' in line]
    assert warning and 'bilinear_interp' in warning[0]
    name = os.path.splitext(os.path.basename(images[0]))[0]
    png = np.asarray(Image.open(tmp_path / 'out' / f'{name}.png')).astype('int32')
    _assert_same_argmax(png[None], _logits(model, _preprocess(images[0])[None]))


@pytest.mark.paddle26
def test_softmax_and_none_output_ops(model, tmp_path):
    batch = np.random.RandomState(1).standard_normal((1, 3, 40, 56)).astype('float32')
    logits = _logits(model, batch)
    for op, want in (('softmax', F.softmax(paddle.to_tensor(logits), axis=1).numpy()), ('none', logits)):
        info = export_model(model, str(tmp_path / op), input_shape=[1, 3, -1, -1], output_op=op,
                            transforms=TRANSFORMS)
        with open(info['deploy_yaml']) as f:
            deploy = yaml.safe_load(f)['Deploy']
        assert (deploy['output_op'], deploy['output_dtype'], deploy['input_shape']) == (op, 'float32',
                                                                                        [1, 3, None, None])
        for onednn in (False, True):
            out = run_export(info, batch, onednn)
            assert out.dtype == np.float32
            np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def test_bad_arguments_raise_user_errors(model, tmp_path):
    cases = [
        (dict(output_op='max'), "output_op: unknown value 'max'; expected one of argmax, softmax, none"),
        (dict(input_shape=[1, 3, 64]), "input_shape: expected 4 dimensions [N, C, H, W], got [1, 3, 64]"),
        (dict(input_shape=[1, 3, 0, 64]),
         "input_shape: dimension 0 in [1, 3, 0, 64] must be a positive int, -1 or None"),
        (dict(transforms=[{'type': 'NoSuchTransform'}]), "transforms[0].type: unknown transform 'NoSuchTransform'"),
        (dict(transforms=[{'mean': [0.5]}]), "transforms[0]: expected a dict with a 'type' key, got {'mean': [0.5]}"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserError) as err:
            export_model(model, str(tmp_path / 'out'), **kwargs)
        assert str(err.value) == message
    busy = tmp_path / 'busy'
    busy.mkdir()
    (busy / 'notes.txt').write_text('keep me')
    with pytest.raises(UserError) as err:
        export_model(model, str(busy), transforms=TRANSFORMS)
    assert str(err.value) == (f"save_dir: {busy} is not empty and holds no previous export (deploy.yaml); "
                              f"choose a new folder")
    assert sorted(os.listdir(tmp_path)) == ['busy'] and os.listdir(busy) == ['notes.txt']


@pytest.mark.paddle26
def test_plain_cpu_run_only_where_onednn_fails_or_deviates_from_the_dynamic_graph(model, tmp_path, monkeypatch):
    """The check runs the program with oneDNN and compares it with the dynamic graph; the plain-CPU run (slow to
    start on big programs) happens only where oneDNN fails or deviates, and then decides; a failing plain run
    still fails the export."""
    calls = []
    real_predict, real_reference = export_checks.predict, export_dispatch.dynamic_output

    def spy(program, params, data, onednn):
        calls.append(onednn)
        return real_predict(program, params, data, onednn)

    monkeypatch.setattr(export_checks, 'predict', spy)
    import traceback
    from paddle.jit.dy2static import convert_call_func
    from paddle.nn.layer import layers
    patched = (traceback.extract_stack, convert_call_func.is_unsupported, getattr(layers, 'name_struct', None))
    info = export_model(model, str(tmp_path / 'agree'), transforms=TRANSFORMS)
    assert info['onednn'] is True and calls == [True]
    # the tracing shortcuts (tracing.fast_tracing) are undone after the export
    assert (traceback.extract_stack, convert_call_func.is_unsupported, getattr(layers, 'name_struct', None)) == patched

    # a reference oneDNN deviates from (every class id shifted): the plain run decides, and oneDNN matches it
    calls.clear()
    monkeypatch.setattr(export_dispatch, 'dynamic_output',
                        lambda m, data, op: (real_reference(m, data, op) + 1) % NUM_CLASSES)
    info = export_model(model, str(tmp_path / 'deviate'), transforms=TRANSFORMS)
    assert info['onednn'] is True and calls == [True, False]
    monkeypatch.setattr(export_dispatch, 'dynamic_output', real_reference)

    def onednn_fails(program, params, data, onednn):
        calls.append(onednn)
        if onednn:
            raise RuntimeError('oneDNN kernel missing')
        return real_predict(program, params, data, onednn)

    calls.clear()
    monkeypatch.setattr(export_checks, 'predict', onednn_fails)
    info = export_model(model, str(tmp_path / 'fails'), transforms=TRANSFORMS)
    # PIR: the program with folded batch norms, then the unfolded one; legacy programs (Paddle 2.6) are traced
    # unfolded only (export/program.py: _legacy_bias_is_reshaped)
    assert calls == [True, False] * (2 if IS_PIR else 1)
    assert info['onednn'] is False and info['onednn_error'] == 'oneDNN run failed (oneDNN kernel missing)'
    with open(info['deploy_yaml']) as f:
        deploy = yaml.safe_load(f)['Deploy']
    assert deploy['enable_mkldnn'] is False and deploy['mkldnn_error'] == info['onednn_error']

    def nothing_runs(program, params, data, onednn):
        raise RuntimeError('no kernel for op foo' if not onednn else 'oneDNN kernel missing')

    monkeypatch.setattr(export_checks, 'predict', nothing_runs)
    with pytest.raises(RuntimeError, match=r'does not run in Paddle Inference \(CPU, no oneDNN\) on an input of '
                                           r'shape \[1, 3, 64, 96\]: no kernel for op foo'):
        export_model(model, str(tmp_path / 'broken'), transforms=TRANSFORMS)
    assert not (tmp_path / 'broken').exists()


@pytest.mark.paddle26
def test_batch_norms_are_folded_into_the_convolutions(exported, model, images):
    """The exported program computes every ConvBNAct block as one convolution (folded batch norm; Paddle Inference
    then has no conv + batch norm pairs to fold at load) and still matches the dynamic model (the other tests);
    the model itself keeps its batch norms."""
    from paddle_models.layers.conv import ConvAct, ConvBNAct
    blocks = [layer for layer in model.sublayers() if isinstance(layer, ConvBNAct)]
    assert blocks and not any('forward' in vars(layer) for layer in blocks)  # (no forward rebound on the model)
    assert not any(isinstance(layer, ConvAct) for layer in model.sublayers())  # the fold is in the deploy copy
    if IS_PIR:
        with open(exported['model'], encoding='utf-8') as f:
            program = f.read()
        assert '"1.conv2d"' in program and 'batch_norm' not in program
    batch = _preprocess(images[0])[None]
    _assert_same_argmax(run_export(exported, batch, True), _logits(model, batch))


@pytest.mark.paddle26
def test_unfolded_export_where_onednn_fails_on_the_folded_program(model, tmp_path, monkeypatch):
    """A oneDNN check that fails on the program with folded batch norms makes the export trace and check the model
    unfolded, whose program is then saved (with its batch norms). Legacy programs (Paddle 2.6) have their batch
    norms from the start."""
    real_check, checks = export_dispatch.check_program, []

    def fail_first(program, *args):
        checks.append(program)
        return 'oneDNN output differs from the plain CPU run on 2.0% of the pixels' if len(checks) == 1 else \
            real_check(program, *args)

    monkeypatch.setattr(export_dispatch, 'check_program', fail_first)
    info = export_model(model, str(tmp_path / 'out'), transforms=TRANSFORMS)
    if not IS_PIR:  # legacy programs are traced unfolded in the first place: one check, and it decides
        assert len(checks) == 1 and info['onednn'] is False
        with open(info['model'], 'rb') as f:
            assert b'batch_norm' in f.read()
        return
    assert len(checks) == 2 and info['onednn'] is True
    assert sorted(os.listdir(tmp_path / 'out')) == sorted(['deploy.yaml', os.path.basename(info['model']),
                                                           'model.pdiparams'] + ([] if IS_PIR else
                                                                                 ['model.pdiparams.info']))
    if IS_PIR:
        with open(info['model'], encoding='utf-8') as f:
            assert 'batch_norm' in f.read()
