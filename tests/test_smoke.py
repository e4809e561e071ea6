"""End to end through the command lines as a user runs them: train a few iterations, evaluate, predict, export,
and run the export in Paddle Inference with oneDNN on and off. CI also runs this on Paddle 2.6.2."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO
from helpers import tiny_config

pytestmark = pytest.mark.paddle26


def run(*args, env=None):
    proc = subprocess.run([sys.executable] + [str(a) for a in args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('smoke')
    config = tiny_config(tmp, train_samples=16, val_samples=4, iters=6, batch_size=4)
    out = tmp / 'out'
    train = run('train.py', '--config', config, '--save_dir', out, '--iters', '6', '--save_interval', '3',
                '--log_iters', '3', '--do_eval', '--seed', '0', '--device', 'cpu')
    return tmp, config, out, train


def test_train_writes_checkpoints(pipeline):
    _, _, out, train = pipeline
    assert '[TRAIN]' in train.stdout and '[EVAL]' in train.stdout
    for name in ('iter_3', 'iter_6', 'best_model'):
        assert os.path.isfile(out / name / 'model.pdparams'), name
    assert os.path.isfile(out / 'iter_6' / 'model.pdopt')


def test_val_reports_metrics(pipeline):
    _, config, out, _ = pipeline
    proc = run('val.py', '--config', config, '--model_path', out / 'iter_6' / 'model.pdparams', '--device', 'cpu')
    assert 'mIoU:' in proc.stdout and 'Kappa:' in proc.stdout


def test_predict_export_infer_agree(pipeline):
    tmp, config, out, _ = pipeline
    from paddle_models.datasets.synthetic import SyntheticShapes
    image = np.asarray(SyntheticShapes(mode='val', num_samples=1, transforms=[])[0]['img'])
    image_path = tmp / 'shape.png'
    cv2.imwrite(str(image_path), image.transpose(1, 2, 0)[..., ::-1].astype(np.uint8))
    weights = out / 'iter_6' / 'model.pdparams'

    run('predict.py', '--config', config, '--model_path', weights, '--image_path', image_path,
        '--save_dir', tmp / 'pred', '--device', 'cpu')
    predicted = np.asarray(Image.open(tmp / 'pred' / 'pseudo_color_prediction' / 'shape.png'))

    run('export.py', '--config', config, '--model_path', weights, '--save_dir', tmp / 'export')
    deploy = yaml.safe_load(open(tmp / 'export' / 'deploy.yaml'))['Deploy']
    assert os.path.isfile(tmp / 'export' / deploy['model']) and os.path.isfile(tmp / 'export' / deploy['params'])

    for mkldnn in ('True', 'False'):
        save = tmp / f'infer_{mkldnn}'
        proc = run('deploy/python/infer.py', '--config', tmp / 'export' / 'deploy.yaml', '--image_path', image_path,
                   '--save_dir', save, '--device', 'cpu', '--enable_mkldnn', mkldnn)
        inferred = np.asarray(Image.open(save / 'shape.png'))
        assert inferred.shape == predicted.shape
        assert (inferred == predicted).mean() == 1.0, (mkldnn, proc.stdout[-2000:])
