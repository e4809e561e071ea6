"""tools/zoo.py: the fixed training budget's config, model selection, merging stored results, and one tiny end-to-end
run (one small model, one iteration, 32x32 speed measurements) that writes the table, the plot and the results."""
import json
import os
import subprocess
import sys
import time

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
                                                f"(no val.txt)\n"),
            (['--pretrained', '--timeout', '0'], "error: --timeout must be positive, got 0\n"),
            (['--pretrained', '--models', 'hardnet_voc', '--skip-benchmark'],
             "error: --models: 'hardnet_voc' is neither the name or alias of a trained checkpoint nor the model type of "
             "one (python -m paddle_models.tools.list_pretrained lists them)\n")):
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


# --- the published trained checkpoints (--pretrained) -------------------------------------------------------------

REGISTRY = pm.list_pretrained()
MSCALE = 'mscale_ocrnet_hrnetv2_psa_cityscapes_1024x2048_150k'


def _measured(ms, params, threads=2):
    return {'params': params, 'benchmark': {'infer_onednn_ms': ms, 'size': [512, 512], 'threads': threads,
                                            'repeats': 3, 'timeout': 900, 'measured': '2026-12-04'}}


def test_pretrained_section_has_a_row_per_checkpoint_with_its_published_miou(tmp_path):
    assert len(REGISTRY) == 28
    measured = {entry['name']: _measured(100.0 + i, 1_000_000 * (i + 1)) for i, entry in enumerate(REGISTRY)}
    measured[MSCALE]['benchmark']['infer_onednn_ms'] = 'n/a (did not finish within 900 s)'
    measured['hardnet_cityscapes_1024x1024_160k']['benchmark']['threads'] = 1
    results = tmp_path / 'docs' / 'pretrained_results.json'
    results.parent.mkdir()
    results.write_text(json.dumps({'models': measured}))
    md = tmp_path / 'docs' / 'model_zoo.md'
    camvid = '# Model zoo\n\nThe CamVid part.\n\n| model | oneDNN ms |\n|---|---|\n| HarDNet | 186 |\n'
    md.write_text(camvid)
    argv = ['--pretrained', '--skip-benchmark', '--pretrained-results', str(results), '--md', str(md)]
    zoo.main(argv)
    text = md.read_text()
    assert text.startswith(camvid + '\n' + zoo.PRETRAINED_HEADING + '\n')  # the CamVid part as it was
    section = text[len(camvid):]
    rows = [line for line in section.splitlines() if line.startswith('| `')]
    assert len(rows) == 28
    assert rows[0] == ('| `deeplabv3_resnet50_os8_cityscapes` / `deeplabv3_resnet50_os8_cityscapes_1024x512_80k` | '
                       'Cityscapes | 19 | [79.90](https://github.com/PaddlePaddle/PaddleSeg/blob/release/2.8/configs/'
                       'deeplabv3/README.md) | 1.00 | 100 | `--model deeplabv3_resnet50_os8_cityscapes` |')
    assert '| `fcn_hrnetw18_voc12aug` / `fcn_hrnetw18_voc12aug_512x512_40k` | PascalVOC | 21 | [75.39](' in section
    assert '| `segformer_b0_cityscapes` / `segformer_b0_cityscapes_1024x1024_160k` | Cityscapes | 19 | [76.73](' \
        in section
    for entry, row in zip(REGISTRY, rows):  # every registry entry, in its order, with its published mIoU and source
        link = entry['source'][entry['source'].index('https://'):]
        assert row.startswith(f"| `{entry['alias']}`") and f"/ `{entry['name']}` |" in row
        assert f"| {entry['dataset']} | {entry['num_classes']} | [{round(entry['miou'] * 100, 2):.2f}]({link}) |" in row
        assert row.endswith(f"| `--model {entry['alias']}` |")
    mscale_row = next(r for r in rows if MSCALE in r)
    assert '| 10.00 | n/a (did not finish within 900 s) |' in mscale_row
    assert rows[8].startswith('| `hardnet_cityscapes`* /')
    assert 'Measured with other settings than the rest: hardnet_cityscapes: measured at 512x512, 1 thread, ' \
           'median of 3.' in section
    assert 'our CPU latency at 512x512, 2 threads, median of 3, batch 1, measured 2026-12-04' in section
    assert 'did not finish within 900 s says so' in section and 'not measured yet' not in section
    assert '[`pretrained_results.json`](pretrained_results.json)' in section

    del measured[MSCALE]  # a second run replaces the section; a checkpoint without figures gets dashes
    results.write_text(json.dumps({'models': measured}))
    zoo.main(argv)
    again = md.read_text()
    assert again.startswith(camvid + '\n') and again.count(zoo.PRETRAINED_HEADING) == 1
    assert f"/ `{MSCALE}` | Cityscapes | 19 | [84.62](" in again and '| – | – | `--model mscale_ocrnet' in again
    assert '"–": not measured yet.' in again


def test_camvid_run_keeps_the_pretrained_section(tmp_path):
    md = tmp_path / 'model_zoo.md'
    section = f"{zoo.PRETRAINED_HEADING}\n\nthe checkpoints\n\n| a | b |\n"
    md.write_text('# Model zoo\n\nan older CamVid table\n\n' + section)
    zoo.write_markdown(str(md), {'a': _entry('configs/a.yml', 'A', 300.0, 0.25)}, str(tmp_path / 'zoo.png'),
                       str(tmp_path / 'zoo_results.json'), 'python tools/zoo.py')
    text = md.read_text()
    assert 'an older CamVid table' not in text and '| A | [`configs/a.yml`]' in text
    assert text.endswith('\n\n' + section) and text.count(zoo.PRETRAINED_HEADING) == 1


def test_select_checkpoints_by_name_alias_or_type():
    names = lambda entries: [e['name'] for e in entries]  # noqa: E731
    assert names(zoo.select_checkpoints(None)) == [e['name'] for e in REGISTRY]
    assert names(zoo.select_checkpoints(['hardnet_cityscapes', 'segformer_b0_cityscapes_1024x1024_160k',
                                         'hardnet_cityscapes_1024x1024_160k'])) == \
        ['hardnet_cityscapes_1024x1024_160k', 'segformer_b0_cityscapes_1024x1024_160k']
    assert names(zoo.select_checkpoints(['segnext'])) == [f'segnext_mscan_{s}_cityscapes_1024x1024_160k'
                                                          for s in 'tsbl']
    with pytest.raises(zoo.UserError) as err:
        zoo.select_checkpoints(['hardnet_voc'])
    assert str(err.value) == ("--models: 'hardnet_voc' is neither the name or alias of a trained checkpoint nor the "
                              "model type of one (python -m paddle_models.tools.list_pretrained lists them)")


def test_params_are_counted_without_allocating_the_same_as_a_built_model():
    model = pm.build_model('hardnet_cityscapes')  # a small one (4.1M)
    trainable = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    assert zoo.count_params('hardnet_cityscapes_1024x1024_160k') == trainable == 4_119_257


FAKE_TOOL = '''import json, subprocess, sys
mode = {mode!r}
out = sys.argv[sys.argv.index('--json') + 1]
if mode == 'ok':
    json.dump({{'results': {{'ours': {{'infer_onednn_ms': 12.5, 'export_s': 3.0, 'samples': {{}}}}}}}}, open(out, 'w'))
elif mode == 'fail':
    print('some progress', flush=True)
    sys.exit('Traceback (most recent call last):\\n  ...\\nerror: oneDNN: the program does not run')
else:  # hangs, with a worker of its own, as benchmark.py's export and inference workers
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
    open({pid_file!r}, 'w').write(str(child.pid))
    child.wait()
'''


def _gone(pid):
    """Whether process ``pid`` has ended (absent, or a zombie not reaped yet)."""
    try:
        with open(f'/proc/{pid}/status') as f:
            return any(line.startswith('State:') and 'Z' in line.split()[1] for line in f)
    except FileNotFoundError:
        return True


def test_measure_checkpoint_reads_the_tool_and_stops_it_at_the_timeout(tmp_path):
    entry = next(e for e in REGISTRY if e['alias'] == 'hardnet_cityscapes')
    pid_file = tmp_path / 'child.pid'
    outcome = {}
    for mode in ('ok', 'fail', 'hang'):
        tool = tmp_path / f'{mode}.py'
        tool.write_text(FAKE_TOOL.format(mode=mode, pid_file=str(pid_file)))
        work = tmp_path / mode
        work.mkdir()
        outcome[mode] = zoo.measure_checkpoint(entry, [64, 64], 1, 1, 8 if mode == 'hang' else 60, str(work),
                                               tool=str(tool))
    assert {k: v for k, v in outcome['ok'].items() if k != 'seconds'} == {'infer_onednn_ms': 12.5, 'export_s': 3.0}
    assert outcome['fail']['infer_onednn_ms'] == 'n/a (oneDNN: the program does not run)'
    assert outcome['hang']['infer_onednn_ms'] == 'n/a (did not finish within 8 s)'
    pid = int(pid_file.read_text())
    for _ in range(100):  # killed with its session; the kernel may take a moment to reap it
        if _gone(pid):
            break
        time.sleep(0.1)
    assert _gone(pid)


def test_tiny_pretrained_run_measures_one_checkpoint(tmp_path):
    results, md = tmp_path / 'pretrained_results.json', tmp_path / 'model_zoo.md'
    argv = ['--pretrained', '--models', 'hardnet_cityscapes', '--size', '64', '64', '--threads', '1', '--repeats', '1',
            '--pretrained-results', str(results), '--md', str(md)]
    result = subprocess.run([sys.executable, TOOL, *argv], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    entry = json.loads(results.read_text())['models']['hardnet_cityscapes_1024x1024_160k']
    assert entry['alias'] == 'hardnet_cityscapes' and entry['params'] == 4_119_257
    bench = entry['benchmark']
    assert isinstance(bench['infer_onednn_ms'], float) and bench['infer_onednn_ms'] > 0
    assert (bench['size'], bench['threads'], bench['repeats'], bench['timeout']) == ([64, 64], 1, 1, 900)
    text = md.read_text()
    assert text.startswith('# Model zoo\n\n' + zoo.PRETRAINED_HEADING + '\n')
    assert f"| 4.12 | {bench['infer_onednn_ms']:.0f} | `--model hardnet_cityscapes` |" in text
    command = text.split('```')[1]
    assert 'python tools/zoo.py --pretrained --size 64 64 --threads 1 --repeats 1' in command
    assert '--models' not in command
