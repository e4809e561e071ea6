"""Every numeric flag of train.py, val.py, predict.py, export.py, tools/quantize.py and deploy/python/infer.py is
range-checked when the flags are parsed (``paddle_models.core.cli``'s argparse types; infer.py repeats the one it
needs): a bad value is one line naming the flag and the value, exit 2, before anything is loaded or written."""
import os
import subprocess
import sys

import pytest

from conftest import REPO
from paddle_models.errors import UserError
from paddle_models.tools import export as export_tool
from paddle_models.tools import predict as predict_tool
from paddle_models.tools import train as train_tool
from paddle_models.tools import val as val_tool

sys.path.insert(0, os.path.join(REPO, 'deploy', 'python'))
import infer as infer_tool  # noqa: E402

sys.path.insert(0, os.path.join(REPO, 'tools'))
import quantize as quantize_tool  # noqa: E402

pytestmark = pytest.mark.paddle26

QUICKSTART = os.path.join(REPO, 'configs', 'quickstart.yml')
CASES = [
    (train_tool, ['--batch_size', '0'], "--batch_size must be a positive integer, got 0"),
    (train_tool, ['--iters', '-3'], "--iters must be a positive integer, got -3"),
    (train_tool, ['--batch_size', '1.5'], "--batch_size must be an integer, got '1.5'"),
    (train_tool, ['--num_workers', '-1'], "--num_workers must be an integer >= 0, got -1"),
    (train_tool, ['--save_interval', '0'], "--save_interval must be a positive integer, got 0"),
    (train_tool, ['--log_iters', '-10'], "--log_iters must be a positive integer, got -10"),
    (train_tool, ['--keep_checkpoint_max', '-1'], "--keep_checkpoint_max must be an integer >= 0, got -1"),
    (train_tool, ['--seed', '4294967296'], "--seed must be an integer in [0, 2**32), got 4294967296"),
    (train_tool, ['--repeats', '0'], "--repeats must be a positive integer, got 0"),
    (val_tool, ['--aug_eval', '--scales', '-1'], "--scales must be a positive number, got -1"),
    (val_tool, ['--scales', '0.75', '0'], "--scales must be a positive number, got 0"),
    (val_tool, ['--scales', 'nan'], "--scales must be a finite number, got nan"),
    (val_tool, ['--scales', 'big'], "--scales must be a number, got 'big'"),
    (val_tool, ['--is_slide', '--crop_size', '0', '0'], "--crop_size must be a positive integer, got 0"),
    (val_tool, ['--num_workers', '-2'], "--num_workers must be an integer >= 0, got -2"),
    (predict_tool, ['--is_slide', '--crop_size', '64', '64', '--stride', '0', '0'],
     "--stride must be a positive integer, got 0"),
    (predict_tool, ['--stride', '32', '-1'], "--stride must be a positive integer, got -1"),
    (predict_tool, ['--scales', 'inf'], "--scales must be a finite number, got inf"),
    (export_tool, ['--input_shape', '1', '3', '0', '0'], "--input_shape must be a positive integer or -1 (free), got 0"),
    (export_tool, ['--input_shape', '1', '3', '-2', '64'],
     "--input_shape must be a positive integer or -1 (free), got -2"),
    (quantize_tool, ['--config', 'c.yml', '--model_path', 'm', '--calib_images', '0'],
     "--calib_images must be a positive integer, got 0"),
]


@pytest.mark.parametrize('tool, argv, message', CASES, ids=lambda v: ' '.join(v) if isinstance(v, list) else None)
def test_numeric_flags_are_range_checked(tool, argv, message):
    with pytest.raises(UserError) as err:
        tool.parse_args(argv)
    assert str(err.value) == message


@pytest.mark.parametrize('argv, message', [
    (['--batch_size', '0'], "--batch_size must be a positive integer, got 0"),
    (['--cpu_threads', '0'], "--cpu_threads must be a positive integer, got 0"),
    (['--cpu_threads', 'all'], "--cpu_threads must be an integer, got 'all'"),
    (['--min_subgraph_size', '-1'], "--min_subgraph_size must be a positive integer, got -1"),
])
def test_infer_numeric_flags_are_range_checked(argv, message):
    with pytest.raises(infer_tool.UserError) as err:  # infer.py's own UserError: it stands alone
        infer_tool.parse_args(['--config', 'deploy.yaml', '--image_path', 'a.jpg'] + argv)
    assert str(err.value) == message


def test_edge_values_pass():
    args = train_tool.parse_args(['--keep_checkpoint_max', '0', '--num_workers', '0', '--seed', '0',
                                  '--batch_size', '1'])
    assert (args.keep_checkpoint_max, args.num_workers, args.seed, args.batch_size) == (0, 0, 0, 1)
    assert export_tool.parse_args(['--input_shape', '-1', '3', '-1', '-1']).input_shape == [-1, 3, -1, -1]
    assert val_tool.parse_args(['--scales', '0.5', '1', '1.75']).scales == [0.5, 1.0, 1.75]
    assert predict_tool.parse_args(['--crop_size', '1', '1', '--stride', '1', '1']).stride == [1, 1]
    assert infer_tool.parse_args(['--config', 'd', '--image_path', 'i', '--cpu_threads', '1']).cpu_threads == 1


def _one_line_exit_2(script, *args):
    proc = subprocess.run([sys.executable, os.path.join(REPO, script)] + list(args), cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr
    return lines[0]


def test_command_lines_print_one_line_and_exit_2(tmp_path):
    """Through the scripts: the range errors and argparse's own (a bad choice) are one line, nothing written."""
    out = tmp_path / 'out'
    assert _one_line_exit_2('predict.py', '--config', QUICKSTART, '--model_path', 'x.pdparams', '--image_path',
                            'x.png', '--is_slide', '--crop_size', '32', '32', '--stride', '0', '0', '--save_dir',
                            out) == "error: --stride must be a positive integer, got 0"
    assert _one_line_exit_2('train.py', '--config', QUICKSTART, '--device', 'tpu', '--save_dir', out) == \
        "error: argument --device: invalid choice: 'tpu' (choose from 'cpu', 'gpu', 'xpu', 'npu', 'mlu')"
    assert _one_line_exit_2(os.path.join('deploy', 'python', 'infer.py'), '--config', 'd.yaml', '--image_path',
                            'a.jpg', '--batch_size', '0', '--save_dir', out) == \
        "error: --batch_size must be a positive integer, got 0"
    assert not out.exists()


@pytest.mark.parametrize('threads', [0, -2, 1.5, True, '4'])
def test_inference_model_threads_are_checked(threads):
    from paddle_models.core.exported import InferenceModel

    with pytest.raises(UserError) as err:
        InferenceModel('no_such_export', threads=threads)
    assert str(err.value) == f"--inference_model: threads must be a positive integer or None, got {threads!r}"
