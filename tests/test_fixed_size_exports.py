"""An export of a fixed input size (``export.py --input_shape 1 3 H W``) runs on images of any size: the network input
is resized to H x W (bilinear) and the prediction back to the image's size (class ids by nearest neighbour, scores
bilinear), logged once, in deploy/python/infer.py and in ``InferenceModel`` (val.py --inference_model).

Each result is compared with its definition, computed here: the image through the val transforms, resized with
``cv2.resize`` (INTER_LINEAR), run at the export's size, the output resized back by Paddle's rules."""
import os
import subprocess
import sys

import cv2
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from PIL import Image

import val as val_tool
from conftest import REPO, write_tiny_hardnet
from helpers import TINY_TRANSFORMS
from paddle_models.core.config import Builder, load_config
from paddle_models.core.export import export_model
from paddle_models.core.exported import InferenceModel

pytestmark = pytest.mark.paddle26

INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')
sys.path.insert(0, os.path.dirname(INFER))
import infer as infer_tool  # noqa: E402
FIXED = (64, 96)  # the exports' H, W; the images below are smaller, larger, and of other aspect ratios
SIZES = [(30, 40), (50, 20), (100, 130)]  # (h, w)


@pytest.fixture(scope='module')
def exports(tmp_path_factory):
    """A tiny HarDNet's config and fixed-size exports (argmax and softmax) of its random weights."""
    tmp = tmp_path_factory.mktemp('fixed')
    model, _, config = write_tiny_hardnet(tmp, seed=11)
    folders = {op: export_model(model, str(tmp / f'export_{op}'), input_shape=[1, 3, *FIXED], output_op=op,
                                transforms=TINY_TRANSFORMS)['save_dir'] for op in ('argmax', 'softmax')}
    return {'config': str(config), 'tmp': tmp, 'model': model, **folders}


def _network_input(bgr):
    """TINY_TRANSFORMS by hand: RGB, (x / 255 - 0.5) / 0.5, CHW float32."""
    return ((bgr[..., ::-1].astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1).copy()


def _resized(chw, size):
    return cv2.resize(np.ascontiguousarray(chw.transpose(1, 2, 0)), (size[1], size[0]),
                      interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)


def _nearest(ids, size):
    """Class ids resized as Paddle resizes them (nearest neighbour, ``F.interpolate``)."""
    tensor = paddle.to_tensor(ids[np.newaxis, np.newaxis].astype(np.float32))
    return F.interpolate(tensor, list(size), mode='nearest').numpy()[0, 0].astype(ids.dtype)


def _images(folder):
    rng = np.random.default_rng(4)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(SIZES):
        path = os.path.join(folder, f'img{i}.png')
        cv2.imwrite(path, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def test_infer_resizes_to_the_fixed_size_and_the_labels_back(exports):
    images = _images(str(exports['tmp'] / 'images'))
    out = exports['tmp'] / 'infer_out'
    proc = subprocess.run([sys.executable, INFER, '--config', os.path.join(exports['softmax'], 'deploy.yaml'),
                           '--image_path', os.path.dirname(images[0]), '--save_dir', str(out), '--batch_size', '2',
                           '--device', 'cpu'], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("the export's input is fixed at 64x96 (HxW, deploy.yaml input_shape)") == 1
    assert "the export's batch size is fixed at 1 (deploy.yaml input_shape): batches of 1, not --batch_size 2" \
        in proc.stderr
    runner = InferenceModel(exports['softmax'])  # the program at its own size: nothing resized
    transforms = infer_tool.DeployConfig(os.path.join(exports['softmax'], 'deploy.yaml')).build_transforms()
    for path, (h, w) in zip(images, SIZES):
        label = np.asarray(Image.open(out / os.path.basename(path)))
        assert label.shape == (h, w)
        chw = _network_input(cv2.imread(path))
        reference, _ = infer_tool.preprocess(transforms, path)  # infer.py's own reading, at the image's size
        np.testing.assert_allclose(reference, chw, atol=1e-6)
        chw = _resized(reference, FIXED)
        expected = _nearest(np.argmax(runner(chw[np.newaxis])[0], axis=0), (h, w))
        np.testing.assert_array_equal(label, expected)
        with paddle.no_grad():  # and the dynamic model on the same resized input agrees
            dynamic = exports['model'](paddle.to_tensor(chw[np.newaxis]))[0].argmax(axis=1).numpy()[0]
        assert (_nearest(dynamic, (h, w)) == label).mean() > 0.99


@pytest.mark.parametrize('op', ['argmax', 'softmax'])
def test_inference_model_maps_any_size_back(exports, op, capsys):
    runner = InferenceModel(exports[op])
    rng = np.random.default_rng(5)
    for h, w in SIZES:
        batch = rng.standard_normal((2, 3, h, w)).astype(np.float32)  # two images: the fixed batch of 1, twice
        out = runner(batch)
        fitted = np.stack([_resized(chw, FIXED) for chw in batch])
        at_size = np.concatenate([runner(fitted[i:i + 1]) for i in range(2)])
        if op == 'argmax':
            assert out.shape == (2, h, w) and out.dtype == np.int32
            np.testing.assert_array_equal(out, np.stack([_nearest(ids, (h, w)) for ids in at_size]))
        else:
            assert out.shape == (2, 5, h, w)
            expected = F.interpolate(paddle.to_tensor(at_size), [h, w], mode='bilinear', align_corners=False)
            np.testing.assert_allclose(out, expected.numpy(), atol=1e-6)
    assert capsys.readouterr().out.count("the export's input is fixed at 64x96") == 1  # logged once


@pytest.mark.parametrize('op', ['argmax', 'softmax'])
def test_val_inference_model_on_images_of_another_size(exports, op):
    opts = ['val_dataset.num_samples=3', 'val_dataset.image_size=40']
    result = val_tool.main(['--config', exports['config'], '--inference_model', exports[op], '--device', 'cpu',
                            '--opts'] + opts)
    dataset = Builder(load_config(exports['config'], opts)).dataset('val_dataset')
    runner = InferenceModel(exports[op])
    cm = np.zeros((5, 5), np.int64)
    for index in range(len(dataset)):
        sample = dataset[index]
        label = np.asarray(sample['label']).reshape(40, 40)
        out = runner(_resized(np.asarray(sample['img'], np.float32), FIXED)[np.newaxis])
        if op == 'argmax':
            pred = _nearest(out[0], (40, 40))
        else:
            logits = F.interpolate(paddle.to_tensor(out), [40, 40], mode='bilinear', align_corners=False)
            pred = logits.numpy()[0].argmax(axis=0)
        keep = label != 255
        np.add.at(cm, (label[keep].astype(int), pred[keep]), 1)
    assert cm.sum() > 0
    np.testing.assert_array_equal(result['confusion_matrix'], cm)
