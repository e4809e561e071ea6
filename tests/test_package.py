"""The installable package: ``pip install`` of a copy of the checkout into a ``--target`` folder (no network, nothing
written into the repository), then the installed copy used from another working directory: import, build a
registered model, train / evaluate / export through the API, the tools as ``python -m paddle_models.tools.<x>``,
and relative config paths resolved against the working directory with their absolute path named when missing.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from helpers import hardnet_section
from paddle_models.datasets import CamVid, Dataset
from paddle_models.errors import UserError

# what a build in the repository itself would leave behind: the test must not make any of them
BUILD_LEFTOVERS = ('build', 'dist', 'paddle_models.egg-info', 'paddle_models.dist-info')


def _tree(root):
    """Every file under ``root`` (relative paths), to see what a run wrote."""
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, _, names in os.walk(root) for name in names)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """``pip install --target T`` of a copy of pyproject.toml, README.md and paddle_models/; returns T."""
    leftovers = [name for name in BUILD_LEFTOVERS if os.path.exists(os.path.join(REPO, name))]
    base = tmp_path_factory.mktemp('package')
    source = base / 'source'
    source.mkdir()
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy(os.path.join(REPO, name), source / name)
    shutil.copytree(os.path.join(REPO, 'paddle_models'), source / 'paddle_models',
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    target = base / 'target'
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--no-index',
                           '--disable-pip-version-check', '--target', str(target), str(source)],
                          capture_output=True, text=True, timeout=300, cwd=str(base))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [name for name in BUILD_LEFTOVERS if os.path.exists(os.path.join(REPO, name))] == leftovers
    return target


def _run(installed, args, cwd, timeout=300, env=None):
    """``python ARGS`` in ``cwd`` with the installed copy first on the path (not the repository's), writing no
    bytecode into it; ``env`` adds variables."""
    env = dict(os.environ, PYTHONPATH=str(installed), PYTHONDONTWRITEBYTECODE='1', **(env or {}))
    return subprocess.run([sys.executable, *map(str, args)], cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=timeout)


NORMALIZE = [{'type': 'Normalize', 'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5]}]


def _tiny_config(folder, train_dataset=None):
    """A 2-iteration config of a tiny HarDNet on a few 32x32 SyntheticShapes images (or on ``train_dataset``),
    written as ``folder/tiny.yml``; returns its name, relative to ``folder``."""
    config = {
        'batch_size': 2, 'iters': 2,
        'train_dataset': train_dataset or {'type': 'SyntheticShapes', 'image_size': 32, 'num_samples': 4,
                                           'mode': 'train', 'transforms': NORMALIZE},
        'val_dataset': {'type': 'SyntheticShapes', 'image_size': 32, 'num_samples': 2, 'mode': 'val',
                        'transforms': NORMALIZE},
        'model': hardnet_section(5),
        'optimizer': {'type': 'SGD', 'momentum': 0.9},
        'lr_scheduler': {'type': 'PolynomialDecay', 'learning_rate': 0.01},
        'loss': {'types': [{'type': 'CrossEntropyLoss'}], 'coef': [1]},
    }
    (folder / 'tiny.yml').write_text(yaml.safe_dump(config))
    return 'tiny.yml'


def test_installed_tree_holds_the_package_its_tools_and_configs(installed):
    package = installed / 'paddle_models'
    assert (package / '__init__.py').is_file() and (package / 'api.py').is_file()
    for tool in ('train', 'val', 'predict', 'export'):
        assert (package / 'tools' / f'{tool}.py').is_file(), tool
    # every subpackage came along (each folder with an __init__.py in the repository)
    source = os.path.join(REPO, 'paddle_models')
    subpackages = sorted(os.path.relpath(folder, source) for folder, _, names in os.walk(source)
                         if '__init__.py' in names)
    assert [p for p in subpackages if not (package / p / '__init__.py').is_file()] == []
    assert [p.name for p in installed.glob('paddle_models-*.dist-info')] == ['paddle_models-0.1.0.dist-info']
    metadata = (installed / 'paddle_models-0.1.0.dist-info' / 'METADATA').read_text()
    assert 'Name: paddle-models' in metadata and 'Requires-Dist: paddleseg==2.8.0' in metadata
    assert 'paddlepaddle' not in metadata.split('\n\n')[0]  # users install paddlepaddle or paddlepaddle-gpu
    configs = sorted(name for name in os.listdir(os.path.join(source, 'configs')) if name.endswith('.yml')) \
        if os.path.isdir(os.path.join(source, 'configs')) else []
    if configs:
        assert sorted(p.name for p in (package / 'configs').glob('*.yml')) == configs


def test_installed_copy_trains_evaluates_and_exports_from_another_directory(installed, tmp_path):
    cwd = tmp_path / 'work'
    cwd.mkdir()
    config = _tiny_config(cwd)
    script = tmp_path / 'use_package.py'  # outside cwd: only the run's own files are expected there
    script.write_text(
        "import json, os\n"
        "import paddle_models as pm\n"
        "model = pm.build_model('HarDNet', num_classes=5)\n"
        "trained = pm.build_model('hardnet_cityscapes_1024x1024_160k', pretrained=True)\n"
        "segmenter = pm.Segmenter.from_pretrained('hardnet_cityscapes')\n"
        f"summary = pm.train({config!r}, save_dir='out', save_interval=2, log_iters=1, device='cpu')\n"
        f"metrics = pm.evaluate({config!r}, 'out/iter_2/model.pdparams', device='cpu')\n"
        f"info = pm.export({config!r}, 'out/iter_2/model.pdparams', save_dir='exported', input_shape=[1, 3, 32, 32])\n"
        "print(json.dumps({'file': pm.__file__, 'model': type(model).__name__, 'last_iter': summary['last_iter'],\n"
        "                  'miou': metrics['miou'], 'deploy_yaml': info['deploy_yaml'],\n"
        "                  'checkpoints': len(pm.list_pretrained()), 'trained': type(trained).__name__,\n"
        "                  'classes': segmenter.class_names[:2], 'config': pm.get_pretrained('hardnet_cityscapes')"
        "['config']}))\n")
    # a published checkpoint already in PaddleSeg's cache (outside cwd): HarDNet's 19-class weights
    import paddle
    from paddle_models.models.hardnet import HarDNet
    cache = tmp_path / 'seg_home' / 'pretrained_model' / 'hardnet_cityscapes_1024x1024_160k'
    cache.mkdir(parents=True)
    paddle.save(HarDNet(num_classes=19).state_dict(), str(cache / 'model.pdparams'))
    before = _tree(installed)
    proc = _run(installed, [script], cwd, env={'SEG_HOME': str(tmp_path / 'seg_home')})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['file'] == str(installed / 'paddle_models' / '__init__.py')  # the installed copy, not the repo
    assert result['model'] == 'HarDNet' and result['last_iter'] == 2 and 0 <= result['miou'] <= 1
    assert (result['checkpoints'], result['trained'], result['classes']) == (28, 'HarDNet', ['road', 'sidewalk'])
    assert result['config'] == str(installed / 'paddle_models' / 'configs' / 'hardnet_cityscapes_1024x1024_160k.yml')
    assert os.path.realpath(result['deploy_yaml']) == os.path.realpath(cwd / 'exported' / 'deploy.yaml')
    written = _tree(cwd)
    assert {'tiny.yml', 'out/iter_2/model.pdparams', 'exported/deploy.yaml', 'exported/model.pdiparams'} <= \
        set(written)
    assert {path.split(os.sep)[0] for path in written} == {'tiny.yml', 'out', 'exported'}
    assert _tree(installed) == before  # nothing written into the installed package


def test_module_tools_run_from_another_directory(installed, tmp_path):
    proc = _run(installed, ['-m', 'paddle_models.tools.train', '--help'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith('usage: ') and '--do_eval' in proc.stdout and '--resume_model' in proc.stdout
    assert os.listdir(tmp_path) == []


def test_missing_relative_dataset_root_is_named_with_its_absolute_path(installed, tmp_path):
    config = _tiny_config(tmp_path, {'type': 'Dataset', 'dataset_root': 'data/missing', 'num_classes': 5,
                                     'train_path': 'train.txt', 'mode': 'train', 'transforms': NORMALIZE})
    proc = _run(installed, ['-m', 'paddle_models.tools.train', '--config', config, '--save_dir', 'out',
                            '--device', 'cpu'], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    absolute = os.path.join(os.path.realpath(tmp_path), 'data', 'missing')
    assert proc.stderr.strip().splitlines()[-1] == f"error: dataset_root not found: data/missing ({absolute})"
    assert 'Traceback' not in proc.stderr
    assert os.listdir(tmp_path) == ['tiny.yml']


def test_openvino_export_of_the_installed_copy_reruns_the_package_module(installed, tmp_path):
    """``--format openvino`` re-runs ``python -m paddle_models.tools.export`` in a legacy-mode child: from the
    installed copy, in another working directory."""
    from paddle_models.core.exported import openvino_available

    if not openvino_available():
        pytest.skip("this Paddle has no OpenVINO engine (Paddle 2.6)")
    config = _tiny_config(tmp_path)
    proc = _run(installed, ['-m', 'paddle_models.tools.export', '--config', config, '--save_dir', 'openvino',
                            '--format', 'openvino', '--input_shape', 1, 3, 32, 32], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / 'openvino')) == ['deploy.yaml', 'model.pdiparams', 'model.pdmodel']
    assert sorted(os.listdir(tmp_path)) == ['openvino', 'tiny.yml']


def test_relative_dataset_paths_resolve_against_the_working_directory(monkeypatch, tmp_path):
    """Relative roots and list files are read against the working directory, as PaddleSeg reads them; what is
    missing is named as written and as the absolute path it was looked for at."""
    monkeypatch.chdir(tmp_path)
    here = os.path.realpath(tmp_path)
    with pytest.raises(UserError) as err:
        Dataset('train', 'data/none', [], 5, train_path='train.txt')
    assert str(err.value) == f"dataset_root not found: data/none ({here}/data/none)"
    os.makedirs('data/camvid')
    with pytest.raises(UserError) as err:
        CamVid(mode='val', dataset_root='data/camvid', transforms=[])
    assert str(err.value) == f"val_path not found: data/camvid/val.txt ({here}/data/camvid/val.txt)"
    (tmp_path / 'data' / 'camvid' / 'train.txt').write_text('images/a.png labels/a.png\n')
    with pytest.raises(UserError) as err:
        Dataset('train', 'data/camvid', [], 5, train_path='train.txt')
    assert str(err.value) == (f"data/camvid/train.txt:1: image not found: data/camvid/images/a.png "
                              f"({here}/data/camvid/images/a.png)")


def test_former_module_name_of_exported_is_the_same_module():
    """docs/deployment.md once named ``paddle_models.core.inference``; it is ``core.exported`` itself, warned about."""
    sys.modules.pop('paddle_models.core.inference', None)
    with pytest.warns(DeprecationWarning, match='paddle_models.core.inference is now paddle_models.core.exported'):
        import paddle_models.core.inference as former
    from paddle_models.core import exported
    assert former is exported and former.InferenceModel is exported.InferenceModel
