"""Export of every CNN-family model to Paddle Inference (tiny widths) and inference through deploy/python/infer.py
with oneDNN on; the pruned UNet++ export holds only its sub-network and reproduces that level's output."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import paddleseg.transforms as T
import pytest
import yaml
from PIL import Image
from paddleseg.cvlibs import manager

from conftest import REPO, run_export
import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones.resnet import ResNet
from paddle_models.backbones.resnet_vd import ResNet18_vd
from paddle_models.core.export import export_model
from paddle_models.models.deeplab import DeepLabV3
from paddle_models.models.linknet import LinkNet
from paddle_models.models.pspnet import PSPNet
from paddle_models.models.unet_3plus import UNet3Plus
from paddle_models.models.unet_plusplus import UNetPlusPlus

INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')
TRANSFORMS = [{'type': 'Normalize', 'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5]}]
NUM_CLASSES = 4
IS_PIR = not paddle.__version__.startswith('2.')
UNETPP = dict(channels=(4, 6, 8, 10, 12))
MODELS = {
    'PSPNet': lambda: PSPNet(NUM_CLASSES, ResNet18_vd(output_stride=8), pp_out_channels=8),
    'DeepLabV3': lambda: DeepLabV3(NUM_CLASSES, ResNet18_vd(output_stride=16, multi_grid=(1, 2)),
                                   aspp_out_channels=8),
    'UNetPlusPlus': lambda: UNetPlusPlus(NUM_CLASSES, **UNETPP),
    'UNet3Plus': lambda: UNet3Plus(num_classes=NUM_CLASSES, is_CGM=True, filters=(4, 6, 8, 10, 12)),
    'LinkNet': lambda: LinkNet(NUM_CLASSES, backbone=ResNet(18)),
}


def _build(name, seed=1):  # (seed 1: every tiny model predicts several classes on the test inputs)
    paddle.seed(seed)
    model = MODELS[name]()
    if name == 'UNet3Plus':  # let the CGM keep the side outputs of this random model (else all logits are 0)
        model.cls[1].bias.set_value(np.array([-20.0, 20.0], dtype='float32'))
    model.eval()
    return model


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.RandomState(0)
    for i, (h, w) in enumerate([(48, 64), (45, 61)]):
        pixels = (rng.rand(h, w, 3) * 255).astype('uint8')
        Image.fromarray(pixels).save(folder / f'img{i}.png')
    return sorted(str(p) for p in folder.iterdir())


@pytest.fixture(scope='module')
def exports(tmp_path_factory):
    """Every model exported once (logits output, free input size), with its dynamic-graph model."""
    root = tmp_path_factory.mktemp('exports')
    out = {}
    for name in MODELS:
        model = _build(name)
        info = export_model(model, str(root / name), output_op='none', transforms=TRANSFORMS)
        out[name] = (model, info)
    return out


def _preprocess(path):
    ops = [manager.TRANSFORMS[t['type']](**{k: v for k, v in t.items() if k != 'type'}) for t in TRANSFORMS]
    return T.Compose(ops)({'img': path})['img'].astype('float32')


def _logits(model, batch):
    with paddle.no_grad():
        return model(paddle.to_tensor(batch))[0].numpy()


def _assert_same_argmax(pred, logits):
    """``pred`` equals the argmax of ``logits`` except where the top two logits tie within float error."""
    ref = logits.argmax(1)
    assert pred.shape == ref.shape
    assert len(np.unique(ref)) > 1
    differ = pred != ref
    assert differ.mean() <= 2e-3, f"{differ.sum()} of {differ.size} pixels differ"
    if differ.any():
        picked = np.take_along_axis(logits, pred[:, None].astype('int64'), axis=1)[:, 0]
        assert (logits.max(1) - picked)[differ].max() <= 1e-4 * max(1.0, float(np.abs(logits).max()))


@pytest.mark.parametrize('name', sorted(MODELS))
def test_export_runs_with_onednn_and_matches(exports, name):
    model, info = exports[name]
    assert info['onednn'] is True and info['onednn_error'] is None
    assert info['program_format'] == ('pir' if IS_PIR else 'legacy')
    with open(info['deploy_yaml']) as f:
        deploy = yaml.safe_load(f)['Deploy']
    assert deploy['enable_mkldnn'] is True and deploy['input_shape'] == [None, 3, None, None]
    batch = np.random.RandomState(1).randn(2, 3, 45, 61).astype('float32')  # a size no stride divides
    logits = _logits(model, batch)
    assert len(np.unique(logits.argmax(1))) > 1
    # (export_model itself compared oneDNN with the plain CPU kernels on another input)
    out = run_export(info, batch, onednn=True)
    np.testing.assert_allclose(out, logits, rtol=0, atol=1e-4 * max(1.0, float(np.abs(logits).max())))


@pytest.mark.paddle26
def test_infer_script_with_onednn(exports, images, tmp_path):
    """deploy/python/infer.py (one process for all five exports) with --enable_mkldnn True writes PNGs equal to the
    dynamic graph's argmax."""
    jobs = [(exports[name][1]['deploy_yaml'], str(tmp_path / name)) for name in sorted(MODELS)]
    driver = (
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location('infer', sys.argv[1])\n"
        "infer = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(infer)\n"
        "codes = [infer.main(['--config', config, '--image_path', sys.argv[3], '--save_dir', out,\n"
        "                     '--device', 'cpu', '--enable_mkldnn', 'True', '--print_detail', 'False'])\n"
        "         for config, out in json.loads(sys.argv[2])]\n"
        "sys.exit(max(codes))\n")
    result = subprocess.run([sys.executable, '-c', driver, INFER, json.dumps(jobs), os.path.dirname(images[0])],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count('oneDNN: on') == len(jobs), result.stderr[-3000:]
    for (_, out_dir), name in zip(jobs, sorted(MODELS)):
        model = exports[name][0]
        for path in images:
            png = np.asarray(Image.open(os.path.join(out_dir, os.path.basename(path)))).astype('int32')
            _assert_same_argmax(png[None], _logits(model, _preprocess(path)[None]))


def test_pruned_unet_plusplus_export(exports, tmp_path):
    """prune_level=2: the exported program and parameters are smaller than the full model's, and Paddle Inference
    with oneDNN reproduces the full model's level-2 deep-supervision output."""
    full, full_info = exports['UNetPlusPlus']
    batch = np.random.RandomState(2).randn(1, 3, 40, 56).astype('float32')
    with paddle.no_grad():
        level_2 = full.level_outputs(paddle.to_tensor(batch))[1].numpy()
    pruned = UNetPlusPlus(NUM_CLASSES, prune_level=2, **UNETPP)
    pruned.set_state_dict(full.state_dict())  # the full checkpoint, unchanged
    pruned.eval()
    info = export_model(pruned, str(tmp_path / 'level2'), output_op='none', transforms=TRANSFORMS)
    assert info['onednn'] is True
    np.testing.assert_allclose(run_export(info, batch, onednn=True), level_2, rtol=1e-4,
                               atol=1e-4)
    for key in ('model', 'params'):  # program and parameters: a fraction of the full model's
        assert os.path.getsize(info[key]) < 0.7 * os.path.getsize(full_info[key])
