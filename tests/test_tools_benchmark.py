"""tools/benchmark.py: builds any registered model (ours) or PaddleSeg's class of the same config, measures each
quantity in a fresh subprocess, prints the table, writes JSON; bad input is a one-line error (exit 2)."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import REPO
import paddle_models  # noqa: F401

sys.path.insert(0, os.path.join(REPO, 'tools'))
import benchmark  # noqa: E402

TOOL = os.path.join(REPO, 'tools', 'benchmark.py')
TINY = {"type": "SegNeXt", "num_classes": 4,
        "backbone": {"type": "MSCAN", "embed_dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1]},
        "decoder_cfg": {"channels": 16, "ham_channels": 16, "num_groups": 4, "ham_kwargs": {"MD_R": 4}}}


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
                                                    "infer, infer_onednn)"),
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
