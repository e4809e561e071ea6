"""``val.py --inference_model DIR``: an exported model (Paddle program, ONNX in ONNX Runtime or in the standalone
OpenVINO runtime, or OpenVINO-engine program) evaluated on the config's val set with the dynamic graph's metrics; and
one palette (PaddleSeg's) for predict.py and deploy/python/infer.py.

A tiny HarDNet is trained for a few iterations on camvid_mini (a generic list ``Dataset``, so no dataset palette
applies), exported four ways, and evaluated from its weights and from each export: the mIoU must agree within 1e-3.
Not marked paddle26: the ONNX path runs on Paddle 3.x only.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

import paddle_models as pm
import predict as predict_tool
import val as val_tool
from conftest import REPO, camvid_root
from paddle_models.core.checkpoint import load_model_weights
from paddle_models.core.config import Builder, load_config
from paddle_models.core.export import export_model
from paddle_models.errors import UserError

INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')
TINY = dict(stem_channels=[8, 8, 8, 8], ch_list=[8, 12, 16], gr=[4, 4, 6], n_layers=[2, 2, 4])
NUM_CLASSES = 11


def _write_lists(root, tmp_path):
    """A 16-image train list and an 8-image val list of camvid_mini (absolute paths)."""
    paths = {}
    for mode, count in (('train', 16), ('val', 8)):
        with open(os.path.join(root, f'{mode}.txt'), encoding='utf-8') as f:
            lines = [line.split() for line in f if line.strip()][:count]
        path = tmp_path / f'{mode}_list.txt'
        path.write_text(''.join(f"{os.path.join(root, a)} {os.path.join(root, b)}\n" for a, b in lines))
        paths[mode] = str(path)
    return paths


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Config, trained weights, and the paddle and ONNX exports of those weights."""
    root = camvid_root()
    tmp_path = tmp_path_factory.mktemp('val_export')
    lists = _write_lists(root, tmp_path)
    dataset = dict(type='Dataset', dataset_root=root, num_classes=NUM_CLASSES, ignore_index=255)
    config = {
        'batch_size': 4, 'iters': 8,
        'train_dataset': dict(dataset, mode='train', train_path=lists['train'], transforms=[
            {'type': 'RandomPaddingCrop', 'crop_size': [128, 96]}, {'type': 'Normalize'}]),
        'val_dataset': dict(dataset, mode='val', val_path=lists['val'], transforms=[{'type': 'Normalize'}]),
        'model': dict(type='HarDNet', num_classes=NUM_CLASSES, **TINY),
        'optimizer': {'type': 'SGD', 'momentum': 0.9},
        'lr_scheduler': {'type': 'PolynomialDecay', 'learning_rate': 0.05, 'end_lr': 0, 'power': 0.9},
        'loss': {'types': [{'type': 'CrossEntropyLoss'}], 'coef': [1]},
    }
    config_path = tmp_path / 'tiny_camvid.yml'
    config_path.write_text(yaml.safe_dump(config))
    save_dir = tmp_path / 'run'
    pm.train(str(config_path), iters=8, batch_size=4, save_interval=8, seed=0, save_dir=str(save_dir))
    weights = str(save_dir / 'iter_8' / 'model.pdparams')
    model = Builder(load_config(str(config_path), require=('model',))).model()
    load_model_weights(model, weights)
    exports = {fmt: export_model(model, str(tmp_path / f'export_{fmt}'), transforms=[{'type': 'Normalize'}],
                                 fmt=fmt)['save_dir']
               for fmt in ('paddle', 'onnx')}
    # the same ONNX model for the standalone OpenVINO runtime (deploy.yaml: backend openvino)
    exports['onnx_openvino'] = export_model(model, str(tmp_path / 'export_onnx_openvino'),
                                            transforms=[{'type': 'Normalize'}], fmt='onnx',
                                            backend='openvino')['save_dir']
    exports['openvino'] = str(tmp_path / 'export_openvino')  # a legacy program: export.py's own subprocess
    result = subprocess.run([sys.executable, 'export.py', '--config', str(config_path), '--model_path', weights,
                             '--save_dir', exports['openvino'], '--format', 'openvino'], capture_output=True,
                            text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    return {'config': str(config_path), 'weights': weights, 'exports': exports, 'tmp': tmp_path}


def test_val_inference_model_matches_the_dynamic_graph(trained, capsys):
    dynamic = val_tool.main(['--config', trained['config'], '--model_path', trained['weights'], '--device', 'cpu'])
    assert 0 < dynamic['miou'] < 1  # trained a little: neither empty nor perfect
    capsys.readouterr()
    for fmt, export_dir in trained['exports'].items():
        result = val_tool.main(['--config', trained['config'], '--inference_model', export_dir, '--device', 'cpu'])
        assert abs(result['miou'] - dynamic['miou']) <= 1e-3, (fmt, result['miou'], dynamic['miou'])
        assert abs(result['acc'] - dynamic['acc']) <= 1e-3, fmt
        assert result['confusion_matrix'].sum() == dynamic['confusion_matrix'].sum()
        printed = capsys.readouterr().out
        assert f"[EVAL] #Images: 8 mIoU: {result['miou']:.4f} Acc: {result['acc']:.4f}" in printed, fmt
        assert "[EVAL] Class IoU: " in printed


def test_val_inference_model_with_logits_export_and_auc_roc(trained):
    """An export with output_op none gives the same mIoU, and class scores for --auc_roc; an argmax export
    refuses --auc_roc in one line."""
    model = Builder(load_config(trained['config'], require=('model',))).model()
    load_model_weights(model, trained['weights'])
    logits_dir = export_model(model, str(trained['tmp'] / 'export_logits'), output_op='none',
                              transforms=[{'type': 'Normalize'}], fmt='onnx')['save_dir']
    dynamic = val_tool.main(['--config', trained['config'], '--model_path', trained['weights'], '--device', 'cpu',
                             '--auc_roc'])
    result = val_tool.main(['--config', trained['config'], '--inference_model', logits_dir, '--device', 'cpu',
                            '--auc_roc'])
    assert abs(result['miou'] - dynamic['miou']) <= 1e-3
    assert abs(result['auc_roc'] - dynamic['auc_roc']) <= 1e-3
    with pytest.raises(UserError) as err:
        val_tool.main(['--config', trained['config'], '--inference_model', trained['exports']['onnx'], '--auc_roc'])
    assert str(err.value) == (f"--auc_roc needs class scores, but "
                              f"{os.path.join(trained['exports']['onnx'], 'deploy.yaml')} exports class ids "
                              f"(output_op: argmax); export with --output_op none or softmax")


def test_val_inference_model_bad_dir_is_one_line_exit_2(trained, tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    result = subprocess.run([sys.executable, 'val.py', '--config', trained['config'], '--inference_model',
                             str(empty), '--device', 'cpu'], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --inference_model: {empty / 'deploy.yaml'} does not exist (not an export folder: export.py "
        f"writes it)")
    assert 'Traceback' not in result.stderr

    no_model = tmp_path / 'no_model'
    no_model.mkdir()
    with open(os.path.join(trained['exports']['onnx'], 'deploy.yaml'), encoding='utf-8') as f:
        (no_model / 'deploy.yaml').write_text(f.read())
    with pytest.raises(UserError) as err:
        val_tool.main(['--config', trained['config'], '--inference_model', str(no_model)])
    assert str(err.value) == (f"--inference_model: {no_model / 'deploy.yaml'}: Deploy.model file "
                              f"{no_model / 'model.onnx'} does not exist")
    with pytest.raises(UserError) as err:
        val_tool.main(['--config', trained['config'], '--inference_model', str(tmp_path / 'absent')])
    assert str(err.value) == (f"--inference_model: {tmp_path / 'absent'} is not a folder (expected an export "
                              f"folder with deploy.yaml)")
    with pytest.raises(UserError) as err:
        val_tool.main(['--config', trained['config'], '--inference_model', trained['exports']['paddle'],
                       '--model_path', trained['weights']])
    assert str(err.value).startswith("--model_path and --inference_model exclude each other")
    with pytest.raises(UserError) as err:
        val_tool.main(['--config', trained['config'], '--inference_model', trained['exports']['paddle'],
                       '--is_slide', '--crop_size', '64', '64', '--stride', '32', '32'])
    assert str(err.value) == ("--inference_model runs the exported model as it is: --aug_eval and --is_slide are "
                              "not supported with it")


def test_predict_and_infer_colour_a_class_alike(trained, tmp_path):
    """One palette: predict.py (weights) and infer.py (the paddle and the ONNX export) write PNGs whose palettes
    agree on every class id, PaddleSeg's get_color_map_list; --custom_color still replaces the first colours."""
    from paddleseg.utils.visualize import get_color_map_list

    with open(os.path.join(camvid_root(), 'val.txt'), encoding='utf-8') as f:
        image = os.path.join(camvid_root(), f.readline().split()[0])
    name = os.path.splitext(os.path.basename(image))[0]
    predict_tool.main(['--config', trained['config'], '--model_path', trained['weights'], '--image_path', image,
                       '--save_dir', str(tmp_path / 'predict'), '--device', 'cpu'])
    predicted = Image.open(tmp_path / 'predict' / 'pseudo_color_prediction' / f'{name}.png')
    ids = np.asarray(predicted)
    assert len(np.unique(ids)) > 1
    expected = get_color_map_list(NUM_CLASSES)
    assert predicted.getpalette()[:3 * NUM_CLASSES] == expected
    for fmt, export_dir in trained['exports'].items():
        out = tmp_path / f'infer_{fmt}'
        result = subprocess.run([sys.executable, INFER, '--config', os.path.join(export_dir, 'deploy.yaml'),
                                 '--image_path', image, '--save_dir', str(out), '--device', 'cpu',
                                 '--print_detail', 'False'], capture_output=True, text=True, cwd=REPO, timeout=300)
        assert result.returncode == 0, result.stderr
        inferred = Image.open(out / f'{name}.png')
        assert inferred.getpalette()[:3 * NUM_CLASSES] == predicted.getpalette()[:3 * NUM_CLASSES], fmt
        assert np.mean(np.asarray(inferred) != ids) <= 1e-3, fmt
        for class_id in np.unique(ids):  # the colour each present class is shown in
            assert inferred.getpalette()[3 * class_id:3 * class_id + 3] == expected[3 * class_id:3 * class_id + 3]

    predict_tool.main(['--config', trained['config'], '--model_path', trained['weights'], '--image_path', image,
                       '--save_dir', str(tmp_path / 'custom'), '--device', 'cpu', '--custom_color', '1', '2', '3'])
    custom = Image.open(tmp_path / 'custom' / 'pseudo_color_prediction' / f'{name}.png').getpalette()
    assert custom[:3 * NUM_CLASSES] == [1, 2, 3] + expected[3:]
