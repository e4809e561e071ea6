"""tools/benchmark.py: builds any registered model (ours) or PaddleSeg's class of the same config, measures each
quantity in a fresh subprocess, prints the table, writes JSON; bad input is a one-line error (exit 2)."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

from conftest import REPO
from helpers import tiny_config
import paddle_models  # noqa: F401
from paddle_models.errors import UserError

sys.path.insert(0, os.path.join(REPO, 'tools'))
import benchmark  # noqa: E402

TOOL = os.path.join(REPO, 'tools', 'benchmark.py')
TINY = {"type": "SegNeXt", "num_classes": 4,
        "backbone": {"type": "MSCAN", "embed_dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1]},
        "decoder_cfg": {"channels": 16, "ham_channels": 16, "num_groups": 4, "ham_kwargs": {"MD_R": 4}}}
# deterministic in the dynamic graph too (SegNeXt's Ham head draws random bases in dynamic-graph eval)
TINY_SEGFORMER = {"type": "SegFormer", "num_classes": 4, "embedding_dim": 16,
                  "backbone": {"type": "MixVisionTransformer_B0", "mlp_ratios": [1, 1, 1, 1]}}


def test_build_resolves_ours_and_paddleseg():
    from paddleseg.models import SegNeXt as ReferenceSegNeXt
    from paddle_models.models.segnext import SegNeXt

    ours = benchmark.build(TINY, 'ours')
    theirs = benchmark.build(TINY, 'paddleseg')
    assert type(ours) is SegNeXt and type(theirs) is ReferenceSegNeXt
    assert set(ours.state_dict()) == set(theirs.state_dict())
    with pytest.raises(benchmark.UserError) as err:
        benchmark.build({"type": "SegNeXt_T", "num_classes": 3}, 'paddleseg')
    assert str(err.value) == ("PaddleSeg 2.8.0 has no model 'SegNeXt_T' (builders that exist only here have no "
                              "PaddleSeg counterpart: benchmark a config)")


def test_paddleseg_side_gets_only_its_own_arguments(capsys):
    """UNet++'s ``ds_outputs`` exists only in ours: PaddleSeg's class is built without it, and the note says so."""
    from paddleseg.models import UNetPlusPlus as ReferenceUNetPlusPlus
    cfg = {"type": "UNetPlusPlus", "num_classes": 3, "in_channels": 3, "use_deconv": False, "align_corners": False,
           "is_ds": True, "ds_outputs": True}
    theirs = benchmark.build(cfg, 'paddleseg')
    assert type(theirs) is ReferenceUNetPlusPlus
    assert capsys.readouterr().err.strip() == "note: PaddleSeg's UNetPlusPlus takes no ds_outputs; built without"


def test_paddleseg_side_leaves_out_what_its_size_builder_fixes(capsys):
    """PaddleSeg's ``MixVisionTransformer_B0`` passes ``mlp_ratios`` and ``drop_path_rate`` to its class itself:
    given in the config they are left out of PaddleSeg's build (with a note), and ours takes them through Builder,
    which turns a bad argument into a one-line UserError."""
    from paddleseg.models.backbones import MixVisionTransformer_B0
    assert {'mlp_ratios', 'drop_path_rate', 'embed_dims'} <= benchmark._fixed_by_builder(MixVisionTransformer_B0)
    cfg = dict(TINY_SEGFORMER, backbone={"type": "MixVisionTransformer_B0", "mlp_ratios": [1, 1, 1, 1],
                                         "drop_path_rate": 0.0})
    ours, theirs = benchmark.build(cfg, 'ours'), benchmark.build(cfg, 'paddleseg')
    assert capsys.readouterr().err.strip() == ("note: PaddleSeg's MixVisionTransformer_B0 fixes drop_path_rate, "
                                               "mlp_ratios itself; built without")
    assert ours.backbone.block1[0].mlp.fc1.weight.shape[1] == 32  # mlp_ratio 1 at 32 channels
    assert theirs.backbone.block1[0].mlp.fc1.weight.shape[1] == 128  # PaddleSeg's own mlp_ratio 4
    with pytest.raises(UserError) as err:
        benchmark.build(dict(TINY_SEGFORMER, no_such_argument=1), 'ours')
    assert str(err.value).startswith("model config: ")


def test_config_with_base_file_is_merged(tmp_path):
    """``--config`` reads a config the way train.py does: the model may come from a ``_base_`` file."""
    (tmp_path / 'base.yml').write_text("model:\n  type: HarDNet\n  num_classes: 5\n")
    (tmp_path / 'child.yml').write_text("_base_: base.yml\nbatch_size: 2\n")

    class Args:
        config, model_cfg, model, kwargs = str(tmp_path / 'child.yml'), None, None, None
    assert benchmark._load_model_cfg(Args) == {'type': 'HarDNet', 'num_classes': 5}


def test_command_line_measures_both_implementations(tmp_path):
    out = tmp_path / 'r.json'
    result = subprocess.run([sys.executable, TOOL, '--model-cfg', json.dumps(TINY), '--size', '64', '48',
                             '--impl', 'both', '--repeats', '1', '--measure', 'dynamic,infer', '--json', str(out)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data['size'] == [64, 48] and set(data['results']) == {'ours', 'paddleseg'}
    with paddle.LazyGuard():
        params = sum(int(np.prod(p.shape)) for p in benchmark.build(TINY, 'ours').parameters()
                     if not p.stop_gradient)
    for impl, row in data['results'].items():
        assert row['params'] == params, impl
        for key in ('dynamic_ms', 'infer_ms', 'dynamic_peak_mib', 'infer_peak_mib', 'dynamic_tensor_mib',
                    'infer_tensor_mib'):
            assert isinstance(row[key], float) and row[key] > 0, (impl, key, row[key])
        assert isinstance(row['gflops'], float) and row['gflops'] > 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith('| model | impl | params | gflops | dynamic_ms | dynamic_peak_mib | '
                               'dynamic_tensor_mib | infer_ms')
    # the tensor peak holds at least the parameters (float32)
    assert all(row['dynamic_tensor_mib'] >= params * 4 / 2 ** 20 for row in data['results'].values())
    assert lines[2].startswith('| SegNeXt+MSCAN 64x48 | ours | ') and lines[3].startswith('| SegNeXt+MSCAN 64x48 | '
                                                                                           'paddleseg | ')


def test_bad_input_is_one_line(tmp_path):
    for argv, message in (
            (['--model', 'SegFormer_B0', '--kwargs', '{bad'], "error: --kwargs: not JSON: "),
            (['--config', str(tmp_path / 'none.yml')], f"error: --config: {tmp_path / 'none.yml'} does not exist"),
            (['--model', 'X', '--measure', 'gpu'], "error: --measure: unknown measurement 'gpu' (known: dynamic, "
                                                    "infer, infer_onednn, infer_openvino, infer_int8, onnx_ort, "
                                                    "onnx_openvino, train_step)"),
            (['--config', 'configs/linknet.yml', '--measure', 'train_step,dynamic'],
             "error: --measure train_step is measured alone (train.py and the PyTorch peer's training step)"),
            (['--model', 'X', '--measure', 'train_step'],
             "error: --measure train_step: give --config or --configs (no --model, --model-cfg, --suite or "
             "--markdown: the table is printed)"),
            (['--model', 'X', '--measure', 'dynamic,infer_int8'],
             "error: --measure infer_int8 needs --config (its train_dataset gives the calibration images)"),
            (['--model', 'X', '--peer', '--peer-python', str(tmp_path / 'nopython')],
             f"error: --peer-python: {tmp_path / 'nopython'} is not an executable file"),
            (['--suite', '--model', 'X'], "error: --suite/--configs: give no --config, --model or --model-cfg beside "
                                          "them"),
            (['--configs', str(tmp_path / 'none.yml')], f"error: --configs: {tmp_path / 'none.yml'} does not exist"),
            (['--model', 'X', '--processes', '0'], "error: --repeats, --size, --threads and --processes must be "
                                                   "positive, got 3, [512, 512], 2, 0")):
        result = subprocess.run([sys.executable, TOOL, *argv], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert result.returncode == 2
        assert result.stderr.startswith(message) and result.stderr.count('\n') == 1, result.stderr


def test_processes_alternate_implementations_and_cells_are_medians(monkeypatch):
    calls = []
    fake = {('ours', 1): 30.0, ('ours', 2): 10.0, ('ours', 3): 20.0,
            ('paddleseg', 1): 5.0, ('paddleseg', 2): 7.0, ('paddleseg', 3): 6.0}

    def measure(cfg, impl, what, size, repeats, threads, exported=None, directory=None):
        calls.append((impl, what))
        n = sum(1 for c in calls if c == (impl, what))
        return {'ms': fake[impl, n], 'peak_mib': 100.0 + n, 'tensor_mib': 50.0 - n, 'params': 7}
    monkeypatch.setattr(benchmark, 'measure', measure)
    table = benchmark.benchmark(TINY, ['ours', 'paddleseg'], (8, 8), measurements=('dynamic',), processes=3)
    assert calls == [('ours', 'dynamic'), ('paddleseg', 'dynamic')] * 3
    cells = {'params': 7, 'dynamic_peak_mib': 102.0, 'dynamic_tensor_mib': 48.0}
    samples = {'dynamic_peak_mib': [101.0, 102.0, 103.0], 'dynamic_tensor_mib': [49.0, 48.0, 47.0]}
    assert table == {'ours': dict(cells, dynamic_ms=20.0, samples=dict(samples, dynamic_ms=[30.0, 10.0, 20.0])),
                     'paddleseg': dict(cells, dynamic_ms=6.0, samples=dict(samples, dynamic_ms=[5.0, 7.0, 6.0]))}


# ---------------------------------------------------------------------------------------------------------------
# --peer (the PyTorch reference), INT8, the speed table

def _config_model(name):
    from paddle_models.core.config import load_config
    return load_config(os.path.join(REPO, 'configs', name), require=()).dic['model']


def test_peer_mapping_of_the_configs():
    segformer = benchmark.peer_for(_config_model('segformer_b0_camvid.yml'))
    assert segformer['kind'] == 'segformer'
    assert segformer['config'] == dict(num_channels=3, num_encoder_blocks=4, depths=[2, 2, 2, 2],
                                       sr_ratios=[8, 4, 2, 1], hidden_sizes=[32, 64, 160, 256],
                                       patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2], num_attention_heads=[1, 2, 5, 8],
                                       mlp_ratios=[4, 4, 4, 4], decoder_hidden_size=256, num_labels=11)
    assert benchmark.peer_for({'type': 'SegFormer_B0', 'num_classes': 4, 'embedding_dim': 64})['config'][
        'decoder_hidden_size'] == 64
    linknet = benchmark.peer_for(_config_model('linknet.yml'))
    assert (linknet['kind'], linknet['encoder'], linknet['classes']) == ('linknet', 'resnet18', 11)
    deeplab = benchmark.peer_for(_config_model('deeplabv3.yml'))
    assert (deeplab['kind'], deeplab['classes']) == ('deeplabv3_resnet50', 11) and 'ResNet50_vd' in deeplab['note']
    # torchvision's builder is output stride 8 only; models without a reference get none
    for name in ('deeplabv3_os16.yml', 'hardnet.yml', 'pspnet.yml', 'segnext_t_camvid.yml'):
        assert benchmark.peer_for(_config_model(name)) is None, name


def test_segformer_peer_is_the_same_architecture_at_full_resolution():
    """The HF peer has exactly our SegFormer-B0's parameter count and returns full-resolution logits."""
    import torch
    import benchmark_peer

    cfg = {'type': 'SegFormer_B0', 'num_classes': 5}
    module = benchmark_peer.build_peer(benchmark.peer_for(cfg))
    with torch.no_grad():
        out = module(torch.zeros(1, 3, 64, 96))
    assert tuple(out.shape) == (1, 5, 64, 96)
    with paddle.LazyGuard():
        ours = sum(int(np.prod(p.shape)) for p in benchmark.build(cfg, 'ours').parameters()
                   if not p.stop_gradient)  # without BN statistics, which torch keeps as buffers
    assert sum(p.numel() for p in module.parameters()) == ours


def test_command_line_peer_times_eager_and_onnx_runtime(tmp_path):
    out = tmp_path / 'r.json'
    result = subprocess.run([sys.executable, TOOL, '--model', 'SegFormer_B0', '--kwargs', '{"num_classes": 3}',
                             '--size', '64', '64', '--repeats', '1', '--measure', 'dynamic', '--peer',
                             '--peer-python', sys.executable, '--json', str(out)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())['results']
    assert set(rows) == {'ours', 'pytorch'}
    peer = rows['pytorch']
    assert peer['peer'] == 'transformers SegformerForSemanticSegmentation'
    assert peer['params'] == rows['ours']['params']  # the same architecture
    assert isinstance(peer['torch_eager_ms'], float) and peer['torch_eager_ms'] > 0
    assert isinstance(peer['torch_eager_peak_mib'], float)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:  # the cell says why (onnxruntime, or onnx for the export, missing)
        assert peer['ort_ms'].startswith("n/a (") and "No module named 'onnx" in peer['ort_ms'], peer['ort_ms']
    else:
        assert isinstance(peer['ort_ms'], float) and peer['ort_ms'] > 0 and peer['ort_setup_s'] > 0
    header = result.stdout.strip().splitlines()[0]
    assert header.endswith('| torch_eager_ms | torch_eager_peak_mib | ort_ms | ort_peak_mib | ort_setup_s |')


def test_unavailable_peer_library_is_a_one_line_cell(tmp_path, monkeypatch):
    """A peer whose library does not import gets "n/a (reason)" in both of its cells, no traceback."""
    fake = tmp_path / 'segmentation_models_pytorch'
    fake.mkdir()
    (fake / '__init__.py').write_text("raise ImportError('segmentation_models_pytorch is not installed here')\n")
    monkeypatch.setenv('PYTHONPATH', str(tmp_path))
    cfg = {'type': 'LinkNet', 'num_classes': 3, 'backbone': {'type': 'ResNet18'}}
    table = benchmark.benchmark(cfg, ['ours'], (32, 32), repeats=1, measurements=(), peer_python=sys.executable)
    cell = "n/a (ImportError: segmentation_models_pytorch is not installed here)"
    assert table['pytorch']['torch_eager_ms'] == cell and table['pytorch']['ort_ms'] == cell
    assert table['pytorch']['peer'] == "segmentation_models_pytorch Linknet('resnet18')"
    # a model without a reference: no peer process, "-" cells
    table = benchmark.benchmark({'type': 'HarDNet', 'num_classes': 3}, ['ours'], (32, 32), repeats=1,
                                measurements=(), peer_python=sys.executable)
    assert table['pytorch'] == {'peer': '-', 'peer_note': '', 'samples': {}}


def test_peer_worker_imports_neither_paddle_nor_paddle_models():
    tool = benchmark.PEER_TOOL
    code = (f"import runpy, sys; sys.argv = [{tool!r}, '--versions']; runpy.run_path({tool!r}, run_name='__main__'); "
            f"bad = [m for m in sys.modules if m == 'paddle' or m.startswith(('paddle.', 'paddle_models'))]; "
            f"assert not bad, bad")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.split('BENCHMARK ', 1)[1])['torch'] == __import__('torch').__version__


def _hardnet_config(tmp_path, camvid):
    import yaml
    from helpers import SMALL_HARDNET
    cfg = {'train_dataset': {'type': 'CamVid', 'dataset_root': camvid, 'mode': 'train',
                             'transforms': [{'type': 'Resize', 'target_size': [64, 48]}, {'type': 'Normalize'}]},
           'val_dataset': {'type': 'CamVid', 'dataset_root': camvid, 'mode': 'val',
                           'transforms': [{'type': 'Resize', 'target_size': [64, 48]}, {'type': 'Normalize'}]},
           'model': dict(SMALL_HARDNET)}
    path = tmp_path / 'hardnet_small.yml'
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_infer_openvino_and_int8_export_the_random_model_and_time_it(tmp_path, camvid):
    out = tmp_path / 'r.json'
    result = subprocess.run([sys.executable, TOOL, '--config', _hardnet_config(tmp_path, camvid), '--size', '64',
                             '64', '--repeats', '1', '--measure', 'infer_onednn,infer_openvino,infer_int8', '--json',
                             str(out)],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr
    row = json.loads(out.read_text())['results']['ours']
    for key in ('infer_onednn_ms', 'infer_openvino_ms', 'infer_int8_ms', 'infer_onednn_setup_s',
                'infer_openvino_setup_s', 'infer_int8_setup_s', 'export_s', 'export_openvino_s', 'quantize_s'):
        assert isinstance(row[key], float) and row[key] > 0, (key, row[key])


def test_int8_failure_is_a_cell(monkeypatch, tmp_path):
    """A model tools/quantize.py cannot quantize: the INT8 cell names the tool's one-line reason."""
    def run(cmd, **kwargs):
        assert cmd[1].endswith(os.path.join('tools', 'quantize.py')) and cmd[cmd.index('--calib_images') + 1] == '8'
        assert kwargs['env']['FLAGS_enable_pir_api'] == '0'
        return subprocess.CompletedProcess(cmd, 2, '', "log line\nerror: c.yml: model X cannot be quantized: "
                                                       "TypeError: bad (at /paddle/x.cc:1)\n")
    monkeypatch.setattr(benchmark.subprocess, 'run', run)
    assert benchmark.quantize_int8('c.yml', 'w.pdparams', str(tmp_path / 'q'), 2) == {
        'ms': 'n/a (INT8: model X cannot be quantized: TypeError: bad)'}


def test_speed_table_markdown(monkeypatch, tmp_path):
    """--configs runs each config (PaddleSeg's side only where PaddleSeg has the model) and writes the page."""
    calls = []

    def fake_benchmark(cfg, impls, size, repeats, threads, measurements, processes, config_path=None,
                       peer_python=None, impl_measurements=None):
        calls.append((cfg['type'], tuple(impls), config_path, impl_measurements))
        table = {'ours': {'infer_onednn_ms': 300.0, 'infer_openvino_ms': 250.0, 'infer_int8_ms': 'n/a (INT8: a | b)',
                          'dynamic_ms': 500.0, 'onnx_ort_ms': 280.0, 'onnx_openvino_ms': 240.0,
                          'export_s': 12.5, 'infer_onednn_setup_s': 1.25},
                 'pytorch': {'peer': 'some peer', 'peer_note': 'differs', 'torch_eager_ms': 450.0, 'ort_ms': 200.0}}
        if 'paddleseg' in impls:
            table['paddleseg'] = {'dynamic_ms': 600.0}
        return table
    monkeypatch.setattr(benchmark, 'benchmark', fake_benchmark)
    monkeypatch.setattr(benchmark, 'peer_versions', lambda python: {'torch': '9.9'})
    monkeypatch.chdir(REPO)
    page = tmp_path / 'docs' / 'speed.md'
    benchmark.main(['--configs', 'configs/hardnet.yml', 'configs/linknet.yml', '--markdown', str(page),
                    '--peer-python', sys.executable])
    assert [c[:3] for c in calls] == [('HarDNet', ('ours', 'paddleseg'), 'configs/hardnet.yml'),
                                      ('LinkNet', ('ours',), 'configs/linknet.yml')]
    assert calls[0][3] == {'ours': ('dynamic', 'infer_onednn', 'infer_openvino', 'infer_int8', 'onnx_ort',
                                    'onnx_openvino'), 'paddleseg': ('dynamic',)}
    text = page.read_text()
    lines = text.splitlines()
    header = lines.index('| model | ours oneDNN FP32 ms | ours ONNX: ONNX Runtime ms | ours ONNX: OpenVINO ms | ours '
                         'OpenVINO engine FP32 ms | ours oneDNN INT8 ms | ours dynamic ms | PaddleSeg dynamic ms | '
                         'ratio ours oneDNN / PaddleSeg dynamic | PyTorch eager ms | ONNX Runtime ms | export s | '
                         'setup s |')
    common = ' | 450.0 | 200.0 | 12.5 | 1.25 |'  # the peer's cells, export s, setup s
    ours = '300.0 | 280.0 | 240.0 | 250.0 | n/a (INT8: a \\| b) | 500.0'
    assert lines[header + 2] == f'| HarDNet | {ours} | 600.0 | 0.50' + common
    assert lines[header + 3] == f'| LinkNet-R18 | {ours} | - | -' + common
    # the same network in three runtimes: Paddle Inference over the better of the other two
    same = lines.index('| config | Paddle Inference oneDNN ms | ONNX Runtime ms | OpenVINO ms | Paddle / best other |')
    assert lines[same + 2:same + 4] == ['| `configs/hardnet.yml` | 300.0 | 280.0 | 240.0 | 1.25 |',
                                        '| `configs/linknet.yml` | 300.0 | 280.0 | 240.0 | 1.25 |']
    assert ('Generated by `python tools/benchmark.py --configs configs/hardnet.yml configs/linknet.yml --markdown '
            f'{page} --peer-python {sys.executable}`') in text
    assert f"{os.cpu_count()} logical cores; 2 threads" in text and 'torch 9.9' in text
    from importlib import metadata
    assert f"paddlepaddle {metadata.version('paddlepaddle')}, paddleseg 2.8.0, torch 9.9." in text
    assert '* LinkNet-R18: some peer -- differs' in text


def test_suite_adds_the_same_graph_rows_of_every_other_config(monkeypatch, tmp_path):
    """--suite: the SUITE configs with every measurement, then each other config in configs/ with the three
    same-graph measurements only (ours)."""
    calls = []

    def fake_benchmark(cfg, impls, size, repeats, threads, measurements, processes, config_path=None,
                       peer_python=None, impl_measurements=None):
        calls.append((config_path, tuple(impls), tuple(measurements), impl_measurements))
        return {'ours': {'infer_onednn_ms': 90.0, 'onnx_ort_ms': 100.0, 'onnx_openvino_ms': 'n/a (x)'}}
    monkeypatch.setattr(benchmark, 'benchmark', fake_benchmark)
    monkeypatch.setattr(benchmark, 'peer_versions', lambda python: {})
    monkeypatch.chdir(REPO)
    page = tmp_path / 'speed.md'
    benchmark.main(['--suite', '--markdown', str(page), '--peer-python', sys.executable])
    suite = [config for _, config in benchmark.SUITE]
    others = sorted(f'configs/{n}' for n in os.listdir(os.path.join(REPO, 'configs'))
                    if f'configs/{n}' not in suite)
    assert others and [c[0] for c in calls] == suite + others
    assert all(c[1] == ('ours',) and c[2] == benchmark.SAME_GRAPH and c[3] is None for c in calls[len(suite):])
    lines = page.read_text().splitlines()
    same = lines.index('| config | Paddle Inference oneDNN ms | ONNX Runtime ms | OpenVINO ms | Paddle / best other |')
    assert len([line for line in lines[same + 2:] if line.startswith('| `configs/')]) == len(suite) + len(others)
    assert f'| `{others[0]}` | 90.0 | 100.0 | n/a (x) | 0.90 |' in lines


def test_same_graph_mode_replaces_only_its_section_of_the_page(monkeypatch, tmp_path):
    """--same-graph: every config in configs/ with the three same-graph measurements; --markdown replaces that
    section of an existing page and keeps the rest."""
    calls = []

    def fake_benchmark(cfg, impls, size, repeats, threads, measurements, processes, config_path=None,
                       peer_python=None, impl_measurements=None):
        calls.append((config_path, tuple(impls), tuple(measurements)))
        return {'ours': {'infer_onednn_ms': 120.0, 'onnx_ort_ms': 100.0, 'onnx_openvino_ms': 80.0}}
    monkeypatch.setattr(benchmark, 'benchmark', fake_benchmark)
    monkeypatch.chdir(REPO)
    page = tmp_path / 'speed.md'
    page.write_text('# CPU speed\n\nthe suite table\n\n## The same network in three runtimes\n\nold rows\n')
    benchmark.main(['--same-graph', '--markdown', str(page)])
    configs = sorted(f'configs/{n}' for n in os.listdir(os.path.join(REPO, 'configs')))
    assert calls == [(c, ('ours',), benchmark.SAME_GRAPH) for c in configs]
    text = page.read_text()
    assert text.startswith('# CPU speed\n\nthe suite table\n\n## The same network in three runtimes\n\nGenerated by '
                           '`python tools/benchmark.py --same-graph --markdown')
    assert 'old rows' not in text and text.count('## The same network in three runtimes') == 1
    assert f'| `{configs[0]}` | 120.0 | 100.0 | 80.0 | 1.50 |' in text.splitlines()
    with pytest.raises(UserError, match='--same-graph: give no --suite'):
        benchmark.main(['--same-graph', '--suite'])


def test_same_graph_measurements_time_our_onnx_export(tmp_path):
    """onnx_ort / onnx_openvino export the model with export.py's ONNX path and time it in each runtime."""
    out = tmp_path / 'r.json'
    result = subprocess.run([sys.executable, TOOL, '--model-cfg', json.dumps(TINY_SEGFORMER), '--size', '64', '48',
                             '--repeats', '1', '--measure', 'infer_onednn,onnx_ort,onnx_openvino', '--json', str(out)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    row = json.loads(out.read_text())['results']['ours']
    for key in ('infer_onednn_ms', 'onnx_ort_ms', 'onnx_openvino_ms', 'onnx_ort_peak_mib', 'onnx_openvino_setup_s',
                'export_onnx_s'):
        assert isinstance(row[key], float) and row[key] > 0, (key, row[key])
    assert 'onnx_ort_tensor_mib' not in row


def test_onnx_runners_compute_the_same_logits(tmp_path):
    """The two ONNX runners the same-graph columns time give the dynamic model's logits."""
    from paddle_models.core.export import export_model
    paddle.seed(0)
    model = benchmark.build(TINY_SEGFORMER, 'ours')
    model.eval()
    info = export_model(model, str(tmp_path / 'onnx'), output_op='none', fmt='onnx')
    x = np.random.RandomState(1).randn(1, 3, 64, 48).astype('float32')
    with paddle.no_grad():
        want = model(paddle.to_tensor(x))[0].numpy()
    for what in benchmark.ONNX_MEASUREMENTS:
        got = benchmark.onnx_runner(info['model'], what, 1)(x)
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), what


def test_long_reasons_are_cut_in_the_table_only():
    reason = 'n/a (INT8: ' + 'x' * 200 + ')'
    assert benchmark._cell(reason) == reason[:96] + '...)' and len(benchmark._cell(reason)) == 100
    assert benchmark._cell(12.345) == '12.3' and benchmark._cell(None) == '-'


def test_suite_page_keeps_its_hand_written_sections():
    """``--suite --markdown docs/speed.md`` replaces the generated head and the same-graph section and keeps the
    ``## `` sections written by hand between them (the measured notes moved from the README)."""
    page = ('# CPU speed\n\nGenerated by `old`.\n\n| old table |\n\n## Notes\n\nkept text\n\n## More\n\nkept too\n\n'
            f"{benchmark.SAME_GRAPH_HEADING}\n\nold same graph\n")
    doc = f"# CPU speed\n\nGenerated by `new`.\n\n| new table |\n\n{benchmark.SAME_GRAPH_HEADING}\n\nnew same graph\n"
    assert benchmark.merge_speed_page(page, doc) == (
        '# CPU speed\n\nGenerated by `new`.\n\n| new table |\n\n## Notes\n\nkept text\n\n## More\n\nkept too\n\n'
        f"{benchmark.SAME_GRAPH_HEADING}\n\nnew same graph\n")
    # a suite without the ONNX columns keeps the page's same-graph section; a new page is the generated one
    assert benchmark.merge_speed_page(page, '# CPU speed\n\n| new table |\n').endswith('## More\n\nkept too\n\n'
                                                                                     f"{benchmark.SAME_GRAPH_HEADING}"
                                                                                     '\n\nold same graph\n')
    assert benchmark.merge_speed_page('', doc) == doc


def test_train_step_times_train_py_and_the_peer_step_at_the_config_batch_and_crop(tmp_path):
    """--measure train_step (issue 24): train.py's seconds per iteration beside the PyTorch peer's eager step, at
    the config's own batch and crop, as a table row and in --json."""
    model = {'type': 'SegFormer', 'num_classes': 5, 'embedding_dim': 16, 'backbone': {'type': 'MixVisionTransformer_B0'}}
    config = yaml.safe_load(open(tiny_config(tmp_path, train_samples=8, batch_size=2, model=model, image_size=48)))
    config['train_dataset']['transforms'].insert(0, {'type': 'RandomPaddingCrop', 'crop_size': [40, 32]})
    path = tmp_path / 'crop.yml'
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / 'train.json'
    result = subprocess.run([sys.executable, TOOL, '--measure', 'train_step', '--config', str(path), '--threads', '1',
                             '--peer-python', sys.executable, '--json', str(out)],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr
    row, = json.loads(out.read_text())['results']
    assert row['batch'] == 2 and row['crop'] == [32, 40]
    assert isinstance(row['ours_s'], float) and row['ours_s'] > 0, row
    assert isinstance(row['peer_s'], float) and row['peer_s'] > 0, row
    assert row['peer'] == 'transformers SegformerForSemanticSegmentation' and row['peer_size'] == [32, 40]
    table = [line for line in result.stdout.splitlines() if line.startswith('|')]
    assert table[0] == '| config | batch, crop (HxW) | train.py s/iter | PyTorch eager s/step | ratio | peer |'
    ratio = f"{row['ours_s'] / row['peer_s']:.2f}"
    assert table[2].startswith(f"| `{path}` | 2, 32x40 | {row['ours_s']:.2f} | {row['peer_s']:.2f} | {ratio} |")


def test_train_step_of_a_failing_run_is_a_cell(tmp_path):
    """A config train.py refuses gives "n/a (its one-line error)", and a model without a peer "-"."""
    config = yaml.safe_load(open(tiny_config(tmp_path, batch_size=2)))
    config['model']['num_classes'] = 11
    del config['val_dataset']
    config['train_dataset'] = {'type': 'CamVid', 'dataset_root': str(tmp_path / 'nothing'), 'mode': 'train',
                               'transforms': [{'type': 'Normalize'}]}
    path = tmp_path / 'bad.yml'
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, TOOL, '--measure', 'train_step', '--config', str(path),
                             '--peer-python', sys.executable], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    row = [line for line in result.stdout.splitlines() if line.startswith('| `')][0]
    assert row.startswith(f"| `{path}` | 2, full image | n/a (") and str(tmp_path / 'nothing') in row, row
    assert row.endswith('| - | - | - |'), row
