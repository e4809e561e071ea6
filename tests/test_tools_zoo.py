"""tools/zoo.py: the fixed training budget's config, model selection, merging stored results, and one tiny end-to-end
run (one small model, one iteration, 32x32 speed measurements) that writes the table, the plot and the results."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
import paddle_models as pm

sys.path.insert(0, os.path.join(REPO, 'tools'))
import zoo  # noqa: E402

TOOL = os.path.join(REPO, 'tools', 'zoo.py')
CONFIGS = zoo.list_configs(os.path.join(REPO, 'configs'))


def test_every_config_is_in_the_zoo():
    listed = {os.path.splitext(f)[0] for f in os.listdir(os.path.join(REPO, 'configs')) if f.endswith('.yml')}
    assert set(CONFIGS) == listed and 'quickstart' in listed


def test_training_config_applies_the_same_budget_to_every_model():
    dic = zoo.load_model_section(CONFIGS['maxvit_t_upernet_camvid'])
    out = zoo.training_config(dic, '/data/camvid', iters=30, batch_size=2, crop=[112, 88], scale=0.5)
    assert out['iters'] == 30 and out['batch_size'] == 2
    normalize = {'type': 'Normalize', 'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, 0.225]}  # MaxViT's own
    assert out['train_dataset'] == {'type': 'CamVid', 'dataset_root': '/data/camvid', 'mode': 'train', 'transforms': [
        {'type': 'ResizeStepScaling', 'min_scale_factor': 0.375, 'max_scale_factor': 0.75, 'scale_step_size': 0.125},
        {'type': 'RandomPaddingCrop', 'crop_size': [112, 88]},
        {'type': 'RandomHorizontalFlip'},
        {'type': 'RandomDistort', 'brightness_range': 0.4, 'contrast_range': 0.4, 'saturation_range': 0.4},
        normalize]}
    assert out['val_dataset']['transforms'] == [{'type': 'Resize', 'target_size': [120, 90]}, normalize]
    assert out['lr_scheduler']['warmup_iters'] == 6  # 100 in the config, capped at iters // 5
    assert out['optimizer'] == dic['optimizer'] and out['loss'] == dic['loss']
    assert dic['lr_scheduler']['warmup_iters'] == 100  # the input is left alone

    quick = zoo.training_config(zoo.load_model_section(CONFIGS['quickstart']), 'r', 1, 1, [8, 8], 1.0)
    assert quick['model']['num_classes'] == 11 and quick['train_dataset']['type'] == 'CamVid'
    assert quick['val_dataset']['transforms'] == [{'type': 'Normalize'}]  # scale 1: no resize
    wrapped = dict(type='MultiScaleAttention', model=dict(type='HarDNet', num_classes=5))
    assert zoo.camvid_model(wrapped) == dict(type='MultiScaleAttention', num_classes=11,
                                             model=dict(type='HarDNet', num_classes=11))
    assert wrapped['model']['num_classes'] == 5


def test_select_by_stem_or_model_type():
    assert zoo.select(CONFIGS, ['HarDNet']) == ['hardnet']  # the stem wins over quickstart's type
    assert zoo.select(CONFIGS, ['multiscaleattention']) == ['multiscale_attention_hardnet_camvid']
    assert zoo.select(CONFIGS, ['DeepLabV3']) == ['deeplabv3']  # not deeplabv3_os16 and the ResNeXt one
    assert zoo.select(CONFIGS, ['fcn', 'deeplabv3_OS16', 'FCN']) == ['fcn_hrnet_w18_camvid', 'deeplabv3_os16']
    assert zoo.select(CONFIGS, None) == list(CONFIGS)
    with pytest.raises(zoo.UserError) as err:
        zoo.select(CONFIGS, ['Nope'])
    assert str(err.value).startswith(f"--models: 'Nope' is neither a config in {os.path.join(REPO, 'configs')} nor "
                                     f"the model type of one (configs: deeplabv3, deeplabv3_os16, ")


def _entry(config, name, ms, miou, iters=30):
    return {'config': config, 'name': name,
            'benchmark': {'params': 4_000_000, 'gflops': 12.5, 'dynamic_ms': ms * 2, 'infer_onednn_ms': ms,
                          'dynamic_peak_mib': 600.0, 'dynamic_tensor_mib': 50.0, 'infer_onednn_peak_mib': 700.0,
                          'size': [512, 512], 'threads': 1, 'repeats': 1},
            'training': {'miou': miou, 'seconds': 100.0, 'iters': iters, 'batch_size': 2, 'crop': [112, 88],
                         'scale': 0.5, 'threads': 1}}


def test_table_orders_by_latency_and_marks_other_settings(tmp_path):
    models = {'a': _entry('configs/a.yml', 'A', 300.0, 0.25), 'b': _entry('configs/b.yml', 'B', 100.0, 0.125),
              'c': _entry('configs/c.yml', 'C', 200.0, 'n/a (ValueError: x)', iters=5)}
    table, speed, budget, notes = zoo.format_table(models, os.path.join(REPO, 'docs'))
    rows = table.splitlines()[2:]
    assert [r.split(' | ')[0] for r in rows] == ['| B', '| C†', '| A']
    assert rows[0] == ('| B | [`configs/b.yml`](../configs/b.yml) | 4.00 | 12.5 | 200 | 100 | 600 | 50 | 700 | '
                       '0.125 | 100 |')
    assert 'n/a (ValueError: x)' in rows[1]
    assert budget == '30 iters x batch 2, crop 112x88, scale 0.5' and speed == '512x512, 1 thread(s), median of 1'
    assert notes == ['c: trained 5 iters x batch 2, crop 112x88, scale 0.5']


def test_bad_input_is_one_line(tmp_path):
    for argv, message in (
            (['--iters', '0'], "error: --iters must be a positive integer, got 0\n"),
            (['--models', 'Nope', '--skip-training'], "error: --models: 'Nope' is neither a config in "),
            (['--dataset-root', str(tmp_path)], f"error: --dataset-root: CamVid-mini not found at {tmp_path} "
                                                f"(no val.txt)\n")):
        result = subprocess.run([sys.executable, TOOL, *argv], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert result.returncode == 2 and result.stderr.startswith(message) and result.stderr.count('\n') == 1, \
            result.stderr


def test_tiny_run_writes_table_plot_and_merged_results(tmp_path, camvid):
    results = tmp_path / 'docs' / 'zoo_results.json'
    results.parent.mkdir()
    stored = _entry('configs/hardnet.yml', 'HarDNet', 400.0, 0.3)
    gone = _entry('configs/x.yml', 'X', 1, 0.1)  # a config that no longer exists
    results.write_text(json.dumps({'models': {'hardnet': stored, 'removed_config': gone}}))
    md, plot = tmp_path / 'docs' / 'model_zoo.md', tmp_path / 'docs' / 'zoo.png'
    argv = ['--models', 'quickstart', '--iters', '1', '--batch-size', '2', '--crop', '32', '24', '--size', '32', '32',
            '--dataset-root', camvid, '--results', str(results), '--md', str(md), '--plot', str(plot)]
    result = subprocess.run([sys.executable, TOOL, *argv], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]

    data = json.loads(results.read_text())['models']
    assert data['hardnet'] == stored and 'removed_config' in data  # kept as they were
    entry = data['quickstart']
    assert entry['config'] == 'configs/quickstart.yml' and entry['name'] == 'HarDNet'
    bench, train = entry['benchmark'], entry['training']
    model = pm.build_model(os.path.join(REPO, 'configs', 'quickstart.yml'), num_classes=11)  # trained on CamVid
    assert bench['params'] == sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    for key in ('dynamic_ms', 'infer_onednn_ms', 'dynamic_peak_mib', 'infer_onednn_peak_mib', 'gflops'):
        assert isinstance(bench[key], float) and bench[key] > 0, (key, bench[key])
    assert bench['size'] == [32, 32] and bench['threads'] == 1
    assert isinstance(train['miou'], float) and 0 <= train['miou'] <= 1
    assert (train['iters'], train['batch_size'], train['crop'], train['scale']) == (1, 2, [32, 24], 0.5)

    text = md.read_text()
    rows = [line for line in text.splitlines() if line.startswith('| HarDNet')]
    assert len(rows) == 2 and 'removed_config' not in text and '| X |' not in text
    quick_row = next(r for r in rows if 'quickstart.yml' in r)
    assert quick_row.startswith('| HarDNet* | [`configs/quickstart.yml`](../../') or \
        quick_row.startswith('| HarDNet | [`configs/quickstart.yml`](../../')
    assert f"| {train['miou']:.3f} |" in quick_row
    assert 'python tools/zoo.py --iters 1 --batch-size 2' in text and '--models' not in text.split('```')[1]
    assert '![CamVid-mini val mIoU against CPU latency](zoo.png)' in text
    with Image.open(plot) as image:
        assert image.format == 'PNG' and image.size[0] > 500
