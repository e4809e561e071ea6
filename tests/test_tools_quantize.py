"""tools/quantize.py: post-training INT8 quantization of a trained model, run by deploy/python/infer.py with oneDNN
INT8 (Paddle 3.3.1; the tool builds legacy programs, see its docstring).

A small HarDNet is trained briefly on camvid_mini, exported in FP32 (export.py) and quantized on a few training
images; infer.py then segments validation images with both exports. The INT8 class maps must agree with the FP32
ones on >= 95% of the pixels and keep the pixel accuracy against the labels within 2 points: INT8 rounding moves
logits by a few percent of their range, which flips the class only where the two best logits are nearly tied
(object borders), so a calibrated model that keeps its accuracy disagrees on a few percent of the pixels at most.
"""
import re
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import REPO, camvid_root, write_tiny_config
from helpers import SMALL_HARDNET, TINY_TRANSFORMS, load_script

import export as export_tool
from paddle_models.errors import UserError

QUANTIZE = os.path.join(REPO, 'tools', 'quantize.py')
INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')
SIZE = [128, 96]  # [width, height] the images are resized to (camvid_mini's are 480x360)
VAL_IMAGES = 8

quantize_tool = load_script(os.path.relpath(QUANTIZE, REPO))


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
    from paddle_models.datasets import CamVid
    assert deploy['class_names'] == list(CamVid.CLASSES)  # the names travel with the INT8 model too
    assert deploy['palette'] == [list(c) for c in CamVid.PALETTE]
    from paddle_models.core.exported import ONEDNN_INT8_OPS
    assert deploy['quantization']['int8_ops'] == list(ONEDNN_INT8_OPS)  # what infer.py and val.py run in INT8
    assert 0.8 <= deploy['quantization']['check_agreement'] <= 1.0  # one image; the val test below is the measure
    program = framework_pb2.ProgramDesc()
    program.ParseFromString((int8 / 'model.pdmodel').read_bytes())
    types = [op.type for op in program.blocks[0].ops]
    # every convolution's input and weight pass through quantize/dequantize pairs
    assert types.count('conv2d') > 0 and types.count('quantize_linear') >= types.count('conv2d')
    # batch norms stay beside their convs (oneDNN fuses conv + BN + ReLU into one INT8 conv); folded, each conv's
    # bias came as reshape2 + elementwise_add, unfused. Only the classifier has a bias of its own, and it is added
    # as the 1-D parameter along the channel axis (core.legacy.fuse_ready_conv_bias: no reshape2 left)
    assert types.count('batch_norm') == types.count('conv2d') - 1 and types.count('reshape2') == 0
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


def test_int8_miou_within_one_point_of_fp32(trained):
    """The issue's accuracy goal on the small trained HarDNet: ``val.py --inference_model`` on camvid_mini's whole
    val split (101 images) gives the INT8 export an mIoU within 1.0 point of the FP32 export's. (With ``pool2d`` in
    INT8 too, Paddle's default, the full-size trained HarDNet lost 1.7 points: it runs in FP32, see
    paddle_models.core.exported.ONEDNN_INT8_OPS.)"""
    import val as val_tool

    fp32 = val_tool.main(['--config', trained['config'], '--inference_model', str(trained['fp32']), '--device', 'cpu'])
    int8 = val_tool.main(['--config', trained['config'], '--inference_model', str(trained['int8']), '--device', 'cpu'])
    assert int(fp32['confusion_matrix'].sum()) == int(int8['confusion_matrix'].sum()) > 0
    assert fp32['miou'] > 0.15, f"the FP32 model did not learn (mIoU {fp32['miou']:.4f})"
    assert abs(int8['miou'] - fp32['miou']) <= 0.01, f"mIoU FP32 {fp32['miou']:.4f}, INT8 {int8['miou']:.4f}"


def test_int8_setting_from_deploy_yaml():
    """What the runners pass to ``enable_mkldnn_int8``: nothing for FP32, the recorded op types, or Paddle's
    default set for an INT8 export that records none."""
    from paddle_models.core.exported import ONEDNN_INT8_OPS, int8_setting

    assert int8_setting({'precision': 'fp32'}) is False and int8_setting({}) is False
    assert int8_setting({'precision': 'int8', 'quantization': {'int8_ops': ['conv2d', 'concat']}}) == \
        ['conv2d', 'concat']
    assert int8_setting({'precision': 'int8', 'quantization': {'method': 'post-training'}}) is True
    assert 'pool2d' not in ONEDNN_INT8_OPS and {'conv2d', 'concat', 'elementwise_add'} <= set(ONEDNN_INT8_OPS)
    assert not {'matmul', 'matmul_v2', 'fused_matmul'} & set(ONEDNN_INT8_OPS)  # SegFormer's decoder stopped the pass


@pytest.mark.parametrize('name', ['SegFormer', 'SegNeXt'])
def test_transformers_quantize_and_keep_the_fp32_class_maps(name, tmp_path):
    """A tiny SegFormer and SegNeXt (random weights, two SyntheticShapes calibration images) quantize: traced as
    legacy programs (Paddle 3.3's C-only matmul/gelu through utils.compat.legacy_program_apis), every conv bias
    rewritten for oneDNN's conv + bias fusion (no reshaped bias parameter left), convolutions with quantize/dequantize
    pairs, and the INT8 program's class ids (oneDNN INT8) agreeing with the FP32 export's (PIR program, oneDNN) on
    most pixels of the val images (random weights leave many near-ties, hence 85%; 98-99% here)."""
    from paddle.base.proto import framework_pb2

    from paddle_models.core.export import export_model
    from paddle_models.core.exported import InferenceModel
    from paddle_models.datasets.synthetic import SyntheticShapes
    import paddle_models as pm

    weights, config = write_tiny_config(tmp_path, name, seed=7)
    result = subprocess.run([sys.executable, QUANTIZE, '--config', str(config), '--model_path', str(weights),
                             '--save_dir', str(tmp_path / 'int8'), '--calib_images', '2'],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    deploy = yaml.safe_load((tmp_path / 'int8' / 'deploy.yaml').read_text())['Deploy']
    assert deploy['precision'] == 'int8' and deploy['quantization']['calib_images'] == 2

    program = framework_pb2.ProgramDesc()
    program.ParseFromString((tmp_path / 'int8' / 'model.pdmodel').read_bytes())
    block = program.blocks[0]
    def dims(var):
        return list(var.type.dense_tensor.tensor.dims) if var.type.HasField('dense_tensor') else []

    vectors = {var.name for var in block.vars if var.persistable and len(dims(var)) == 1}
    types = [op.type for op in block.ops]
    convs = types.count('conv2d') + types.count('depthwise_conv2d')
    assert convs > 0 and types.count('quantize_linear') >= convs

    def to_channels(op):  # a 1-D parameter reshaped to [1, C, 1, 1]: a conv bias as Paddle 3 traces it
        shape = next(list(a.ints) for a in op.attrs if a.name == 'shape')
        return len(shape) == 4 and shape[0] == shape[2] == shape[3] == 1 and \
            any(name in vectors for slot in op.inputs if slot.parameter == 'X' for name in slot.arguments)

    assert [op for op in block.ops if op.type == 'reshape2' and to_channels(op)] == []
    if name == 'SegFormer':
        assert types.count('gelu') == 8 and types.count('matmul_v2') >= 16  # MiT-B0: 8 blocks, 2 products each

    model = pm.build_model(str(config), pretrained=str(weights))
    fp32 = export_model(model, str(tmp_path / 'fp32'), transforms=TINY_TRANSFORMS)
    assert fp32['program_format'] == 'pir'
    val = SyntheticShapes(mode='val', image_size=64, transforms=None)  # CHW, 0-255; TINY_TRANSFORMS by hand
    batch = np.stack([(val[i]['img'] / 255.0 - 0.5) / 0.5 for i in range(4)]).astype('float32')
    int8_ids = np.concatenate([InferenceModel(tmp_path / 'int8', threads=2)(b[None]) for b in batch])
    fp32_ids = np.concatenate([InferenceModel(tmp_path / 'fp32', threads=2)(b[None]) for b in batch])
    assert int8_ids.shape == fp32_ids.shape == (4, 64, 64)
    assert len(np.unique(fp32_ids)) > 1
    assert np.mean(int8_ids == fp32_ids) >= 0.85, np.mean(int8_ids == fp32_ids)


_UNTRACEABLE = """
import sys

import paddle
import paddle.nn as nn

from paddle_models.registry import register_model

sys.path.insert(0, sys.argv[1])
import quantize as quantize_tool  # noqa: E402  (tools/quantize.py)
from paddle_models.errors import UserError  # noqa: E402


@register_model
class RollNet(nn.Layer):
    # paddle.roll: one of Paddle 3.3's C-only APIs that utils/compat.legacy_program_apis does not cover
    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2D(3, num_classes, 1)

    def forward(self, x):
        return [paddle.roll(self.conv(x), 1, axis=3)]


paddle.save(RollNet(5).state_dict(), sys.argv[3])
try:
    quantize_tool.main(['--config', sys.argv[2], '--model_path', sys.argv[3], '--save_dir', sys.argv[4],
                        '--calib_images', '1'])
except UserError as err:
    print('error: ' + str(err), file=sys.stderr)
    sys.exit(2)
"""


@pytest.mark.skipif(not hasattr(__import__('paddle').framework, 'use_pir_api'), reason='Paddle 2.6: no C-only APIs')
def test_a_model_that_cannot_be_traced_as_a_legacy_program_is_one_line_and_leaves_nothing(tmp_path):
    """tools/quantize.py's own code in a legacy-mode process that registers a model calling ``paddle.roll``."""
    script, config = tmp_path / 'untraceable.py', tmp_path / 'roll.yml'
    script.write_text(_UNTRACEABLE)
    config.write_text(yaml.safe_dump({'model': {'type': 'RollNet', 'num_classes': 5},
                                      'train_dataset': {'type': 'SyntheticShapes', 'image_size': 32, 'mode': 'train',
                                                        'num_samples': 2, 'transforms': TINY_TRANSFORMS}}))
    env = dict(os.environ, FLAGS_enable_pir_api='0',
               PYTHONPATH=os.pathsep.join([REPO] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    save_dir = tmp_path / 'out' / 'int8'
    result = subprocess.run([sys.executable, str(script), os.path.join(REPO, 'tools'), str(config),
                             str(tmp_path / 'roll.pdparams'), str(save_dir)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {config}: model RollNet cannot be quantized: tracing it as a legacy program "
        f"(FLAGS_enable_pir_api=0) failed: ") and \
        "roll(): argument (position 1) must be Value, but got Variable" in lines[0], result.stderr[-3000:]
    assert not (tmp_path / 'out').exists()


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
    with pytest.raises(UserError, match=rf"^--calib_images must be a positive integer, got {count}$"):
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


def test_low_agreement_writes_nothing_unless_min_agreement_is_lowered():
    """A quantized model whose class map agrees with the FP32 one on too few pixels is refused (the run's folder
    swap is aborted, as for the untraceable model above); ``--min_agreement`` moves the bar, 0 writes anything."""
    quantize_tool.check_min_agreement(0.85, quantize_tool.MIN_AGREEMENT, 3)
    quantize_tool.check_min_agreement(0.33, 0.0, 3)
    with pytest.raises(UserError) as err:
        quantize_tool.check_min_agreement(0.3301, 0.8, 3)
    assert str(err.value) == ("--min_agreement 0.8: INT8 and FP32 agree on only 33.0% of the pixels of calibration "
                              "image 3; nothing written (more --calib_images or another --algo may help; "
                              "--min_agreement 0 writes it anyway)")
    assert quantize_tool.parse_args(['--config', 'c', '--model_path', 'w']).min_agreement == 0.8


@pytest.mark.parametrize('value', ['1.5', '-0.1', 'nan', 'x'])
def test_min_agreement_outside_zero_one(files, tmp_path, value):
    config, weights = files
    message = f"must be a number in [0, 1], got {value}" if value not in ('nan', 'x') else \
        (f"must be a finite number, got nan" if value == 'nan' else "must be a number, got 'x'")
    with pytest.raises(UserError, match=rf"^--min_agreement {re.escape(message)}$"):
        _main('--config', config, '--model_path', weights, '--save_dir', tmp_path / 'o', '--min_agreement', value)
