"""tools/quantize.py: post-training INT8 quantization of a trained model, run by deploy/python/infer.py with oneDNN
INT8 (Paddle 3.3.1; the tool builds legacy programs, see its docstring).

A small HarDNet is trained briefly on camvid_mini, exported in FP32 (export.py) and quantized on a few training
images; infer.py then segments validation images with both exports. The INT8 class maps must agree with the FP32
ones on >= 95% of the pixels and keep the pixel accuracy against the labels within 2 points: INT8 rounding moves
logits by a few percent of their range, which flips the class only where the two best logits are nearly tied
(object borders), so a calibrated model that keeps its accuracy disagrees on a few percent of the pixels at most.
"""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import REPO, camvid_root

import export as export_tool
from paddle_models.errors import UserError

QUANTIZE = os.path.join(REPO, 'tools', 'quantize.py')
INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')
SIZE = [128, 96]  # [width, height] the images are resized to (camvid_mini's are 480x360)
SMALL_HARDNET = {'type': 'HarDNet', 'num_classes': 11, 'stem_channels': [8, 8, 16, 16], 'ch_list': [24, 32, 48, 64],
                 'gr': [6, 8, 10, 12], 'n_layers': [2, 2, 4, 4]}
VAL_IMAGES = 8

_spec = importlib.util.spec_from_file_location('quantize_tool', QUANTIZE)
quantize_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quantize_tool)


def _config(tmp, camvid, **extra):
    cfg = {
        'batch_size': 4,
        'iters': 60,
        'train_dataset': {'type': 'CamVid', 'dataset_root': camvid, 'mode': 'train',
                          'transforms': [{'type': 'Resize', 'target_size': SIZE}, {'type': 'RandomHorizontalFlip'},
                                         {'type': 'Normalize'}]},
        'val_dataset': {'type': 'CamVid', 'dataset_root': camvid, 'mode': 'val',
                        'transforms': [{'type': 'Resize', 'target_size': SIZE}, {'type': 'Normalize'}]},
        'model': dict(SMALL_HARDNET),
        'optimizer': {'type': 'SGD', 'momentum': 0.9, 'weight_decay': 4e-5},
        'lr_scheduler': {'type': 'PolynomialDecay', 'learning_rate': 0.05, 'end_lr': 0.0, 'power': 0.9},
        'loss': {'types': [{'type': 'CrossEntropyLoss'}], 'coef': [1]},
    }
    cfg.update(extra)
    path = tmp / 'hardnet_small.yml'
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _weights(save_dir):
    """The model.pdparams of the last checkpoint train.py wrote in ``save_dir``."""
    found = []
    for root, _, files in os.walk(save_dir):
        if 'model.pdparams' in files:
            found.append(os.path.join(root, 'model.pdparams'))
    assert found, f"train.py wrote no model.pdparams in {save_dir}"
    return max(found, key=os.path.getmtime)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Train the small HarDNet for 60 iterations on camvid_mini (128x96), export it in FP32 and quantize it."""
    camvid = camvid_root()
    import train as train_tool

    tmp = tmp_path_factory.mktemp('quantize')
    config = _config(tmp, camvid)
    train_tool.main(['--config', config, '--save_dir', str(tmp / 'train'), '--save_interval', '60',
                     '--log_iters', '30', '--seed', '0', '--device', 'cpu'])
    weights = _weights(str(tmp / 'train'))
    export_tool.main(['--config', config, '--model_path', weights, '--save_dir', str(tmp / 'fp32')])
    int8_dir = tmp / 'out' / 'int8'
    result = subprocess.run([sys.executable, QUANTIZE, '--config', config, '--model_path', weights,
                             '--save_dir', str(int8_dir), '--calib_images', '8'],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return {'tmp': tmp, 'camvid': camvid, 'config': config, 'weights': weights, 'fp32': tmp / 'fp32',
            'int8': int8_dir, 'stderr': result.stderr}


def _infer(deploy_dir, image_list, out_dir):
    result = subprocess.run([sys.executable, INFER, '--config', str(deploy_dir / 'deploy.yaml'), '--image_path',
                             str(image_list), '--save_dir', str(out_dir), '--device', 'cpu', '--cpu_threads', '2',
                             '--print_detail', 'False'], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def test_int8_export_files_and_deploy_yaml(trained):
    from paddle.base.proto import framework_pb2

    int8 = trained['int8']
    assert sorted(os.listdir(int8)) == ['deploy.yaml', 'model.pdiparams', 'model.pdmodel']
    assert os.listdir(int8.parent) == ['int8']  # the temporary folder was renamed, nothing else left behind
    deploy = yaml.safe_load((int8 / 'deploy.yaml').read_text())['Deploy']
    assert deploy['precision'] == 'int8' and deploy['enable_mkldnn'] is True
    assert (deploy['output_op'], deploy['output_dtype']) == ('argmax', 'int32')
    assert deploy['transforms'] == [{'type': 'Resize', 'target_size': SIZE}, {'type': 'Normalize'}]
    assert deploy['quantization']['calib_images'] == 8 and deploy['quantization']['algo'] == 'hist'
    assert 0.8 <= deploy['quantization']['check_agreement'] <= 1.0  # one image; the val test below is the measure
    program = framework_pb2.ProgramDesc()
    program.ParseFromString((int8 / 'model.pdmodel').read_bytes())
    types = [op.type for op in program.blocks[0].ops]
    # every convolution's input and weight pass through quantize/dequantize pairs
    assert types.count('conv2d') > 0 and types.count('quantize_linear') >= types.count('conv2d')
    assert types[-2:] == ['arg_max', 'fetch']
    assert 'calibration images' in trained['stderr']  # the tqdm progress bar


def test_int8_masks_agree_with_fp32_and_keep_the_accuracy(trained, tmp_path):
    from PIL import Image

    camvid = trained['camvid']
    with open(os.path.join(camvid, 'val.txt')) as f:
        pairs = [line.split() for line in f if line.strip()][:VAL_IMAGES]
    image_list = tmp_path / 'images.txt'
    image_list.write_text(''.join(os.path.join(camvid, image) + '\n' for image, _ in pairs))
    _infer(trained['fp32'], image_list, tmp_path / 'fp32')
    log = _infer(trained['int8'], image_list, tmp_path / 'int8')
    assert 'oneDNN INT8: on' in log

    agree = total = correct_fp32 = correct_int8 = 0
    classes = set()
    for image, label in pairs:
        name = os.path.splitext(os.path.basename(image))[0] + '.png'
        fp32 = np.asarray(Image.open(tmp_path / 'fp32' / name))
        int8 = np.asarray(Image.open(tmp_path / 'int8' / name))
        gt = np.asarray(Image.open(os.path.join(camvid, label)))
        assert fp32.shape == int8.shape == gt.shape
        agree += int((fp32 == int8).sum())
        total += fp32.size
        valid = gt != 255
        correct_fp32 += int((fp32 == gt)[valid].sum())
        correct_int8 += int((int8 == gt)[valid].sum())
        classes.update(np.unique(fp32).tolist())
    assert len(classes) >= 3, f"the trained model predicts only classes {sorted(classes)}: agreement would be trivial"
    assert agree / total >= 0.95, f"INT8 and FP32 agree on {agree / total:.1%} of the pixels"
    valid_total = sum(int((np.asarray(Image.open(os.path.join(camvid, lab))) != 255).sum()) for _, lab in pairs)
    acc_fp32, acc_int8 = correct_fp32 / valid_total, correct_int8 / valid_total
    assert acc_fp32 > 0.4, f"the FP32 model did not learn (pixel accuracy {acc_fp32:.1%})"
    assert abs(acc_int8 - acc_fp32) <= 0.02, f"pixel accuracy FP32 {acc_fp32:.1%}, INT8 {acc_int8:.1%}"


# --- bad input: one-line UserErrors, checked before anything heavy runs ---

@pytest.fixture
def files(tmp_path):
    config = tmp_path / 'c.yml'
    config.write_text(yaml.safe_dump({'model': dict(SMALL_HARDNET)}))
    weights = tmp_path / 'w.pdparams'
    weights.write_bytes(b'')
    return config, weights


def _main(*argv):
    return quantize_tool.main([str(a) for a in argv])


def test_missing_config_and_weights(files, tmp_path):
    config, weights = files
    with pytest.raises(UserError, match=r"^--config: .*nope\.yml does not exist$"):
        _main('--config', tmp_path / 'nope.yml', '--model_path', weights, '--save_dir', tmp_path / 'o')
    with pytest.raises(UserError, match=r"^--model_path: .*nope\.pdparams does not exist$"):
        _main('--config', config, '--model_path', tmp_path / 'nope.pdparams', '--save_dir', tmp_path / 'o')


@pytest.mark.parametrize('count', [0, -3])
def test_calib_images_below_one(files, tmp_path, count):
    config, weights = files
    with pytest.raises(UserError, match=rf"^--calib_images must be >= 1, got {count}$"):
        _main('--config', config, '--model_path', weights, '--save_dir', tmp_path / 'o', '--calib_images', count)


def test_unusable_save_dir(files, tmp_path):
    config, weights = files
    a_file = tmp_path / 'file.txt'
    a_file.write_text('x')
    with pytest.raises(UserError, match=r"^--save_dir: .*file\.txt exists and is not a folder$"):
        _main('--config', config, '--model_path', weights, '--save_dir', a_file)
    with pytest.raises(UserError, match=r"^--save_dir: .*file\.txt \(a parent of .*\) is not a folder$"):
        _main('--config', config, '--model_path', weights, '--save_dir', a_file / 'sub' / 'out')
    busy = tmp_path / 'busy'
    busy.mkdir()
    (busy / 'notes.txt').write_text('keep me')
    with pytest.raises(UserError, match=r"^--save_dir: .*busy is not empty and holds no previous export"):
        _main('--config', config, '--model_path', weights, '--save_dir', busy)
    assert os.listdir(busy) == ['notes.txt']


def test_unwritable_save_dir(files, tmp_path, monkeypatch):
    """A folder the user cannot write in (read-only mode bits; the access check is answered as for a non-root user,
    since CI runs as root, which writes anywhere): one line, nothing created."""
    config, weights = files
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o500)
    real_access = os.access
    monkeypatch.setattr(os, 'access', lambda path, mode, **kw: False if os.fspath(path) == str(locked)
                        else real_access(path, mode, **kw))
    try:
        with pytest.raises(UserError, match=r"^--save_dir: cannot write in .*locked \(permission denied\)$"):
            _main('--config', config, '--model_path', weights, '--save_dir', locked / 'out')
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o700)


def test_cli_error_is_one_line_exit_2_and_config_without_train_dataset(files, tmp_path):
    """The command line prints one ``error:`` line; a config without train_dataset (found in the legacy-mode
    subprocess, since this process runs Paddle with PIR) comes back as the same UserError, with nothing written."""
    config, weights = files
    result = subprocess.run([sys.executable, QUANTIZE, '--config', str(tmp_path / 'nope.yml'), '--model_path',
                             str(weights), '--save_dir', str(tmp_path / 'o')],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: --config: {tmp_path / 'nope.yml'} does not exist"]

    with pytest.raises(UserError, match=r"^.*c\.yml: no 'train_dataset' section to calibrate on$"):
        _main('--config', config, '--model_path', weights, '--save_dir', tmp_path / 'out')
    assert not (tmp_path / 'out').exists()
