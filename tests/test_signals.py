"""SIGTERM and SIGINT (issue 22, item 6): train.py, export.py, tools/quantize.py, predict.py and
deploy/python/infer.py end within seconds with exit code 143 / 130, one ``error: interrupted by ...`` line and no
traceback; their temporary folders and locks are gone, and training names its last good checkpoint.

Each tool runs in a subprocess on a tiny model. Where the work is too short to catch in the middle, PAUSE_RUNNER
holds the tool at a named function (after it ran, while the temporary folder exists) until the signal comes: the
signal then lands in Python, and without our handlers SIGTERM would end the process by Paddle's (exit -15, or a
hang) instead."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, write_tiny_hardnet
from helpers import TINY_TRANSFORMS, tiny_config

# Runs a tool (argv[1]) with PAUSE_AT (module:function) wrapped: after the function returns, 'PAUSED' goes to
# stderr and the process sleeps. deploy/python/infer.py (module 'infer') is imported and its main called, as its
# __main__ block does; the other tools run as __main__.
PAUSE_RUNNER = '''
import importlib, os, runpy, sys, time
script = os.path.abspath(sys.argv[1])
sys.path.insert(0, os.path.dirname(script))
module_name, function = os.environ['PAUSE_AT'].split(':')
if module_name != 'infer':
    import paddle_models  # first, as the tools do (it silences Paddle's import-time warnings)
module = importlib.import_module(module_name)
real = getattr(module, function)
def paused(*args, **kwargs):
    result = real(*args, **kwargs)
    print('PAUSED', file=sys.stderr, flush=True)
    time.sleep(120)
    return result
setattr(module, function, paused)
sys.argv = sys.argv[1:]
if module_name == 'infer':
    module.install_signal_handlers()
    sys.exit(module.main(sys.argv[1:]))
runpy.run_path(script, run_name='__main__')
'''


class Tool:
    """A tool in a subprocess whose stderr is collected in a thread (``wait_for`` a line or a file)."""

    def __init__(self, args, env=None, cwd=REPO):
        self.proc = subprocess.Popen([sys.executable] + [str(a) for a in args], cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONPATH=REPO, **(env or {})))
        self.err, self.out = [], []
        self.threads = [threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
                        threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True)]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _read(stream, lines):
        for line in stream:
            lines.append(line)

    def wait_for(self, ready, timeout=240):
        """Poll ``ready()`` until true; fails if the process ends first."""
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, f"ended early ({self.proc.returncode}):\n{''.join(self.err)[-3000:]}"
            assert time.monotonic() < deadline, 'timed out waiting'
            time.sleep(0.05)

    def paused(self):
        return any(line.rstrip().endswith('PAUSED') for line in self.err)  # after a progress bar's partial line

    def stop(self, signum, timeout=30):
        """Send ``signum``; returns (exit code, stderr, stdout, seconds until the process ended)."""
        start = time.monotonic()
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"still running {timeout} s after {signal.Signals(signum).name}")
        for thread in self.threads:
            thread.join(5)
        return code, ''.join(self.err), ''.join(self.out), time.monotonic() - start


@pytest.fixture(scope='module')
def runner(tmp_path_factory):
    path = tmp_path_factory.mktemp('runner') / 'pause_runner.py'
    path.write_text(PAUSE_RUNNER)
    return path


def paused_tool(runner, tool, pause_at, *args, env=None):
    """``tool`` (a path under the repository) under PAUSE_RUNNER, held after ``pause_at`` (module:function)."""
    return Tool([runner, os.path.join(REPO, tool)] + list(args), env=dict(env or {}, PAUSE_AT=pause_at))


def assert_interrupted(code, err, signum, detail=None):
    name = signal.Signals(signum).name
    assert code == 128 + signum, err[-3000:]
    assert 'Traceback' not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    expected = f"error: interrupted by {name}" + (f": {detail}" if detail else '')
    assert lines == [expected] and err.rstrip().endswith(expected), err[-3000:]


def hidden(folder):
    return sorted(p for p in os.listdir(folder) if p.startswith('.')) if os.path.isdir(folder) else []


@pytest.mark.paddle26
@pytest.mark.parametrize('signum, workers', [(signal.SIGTERM, 0), (signal.SIGINT, 1)])
def test_training_stops_naming_its_last_good_checkpoint(tmp_path, signum, workers):
    """Caught mid-run (after its second checkpoint): exit 143/130, the iteration it stopped at and the newest
    complete checkpoint named, no temporary folder or lock left; with a data-loader worker too."""
    config = tiny_config(tmp_path, iters=100000, batch_size=2, train_samples=8, random_aug=False)
    save_dir = tmp_path / 'out'
    tool = Tool([os.path.join(REPO, 'train.py'), '--config', config, '--save_dir', save_dir, '--device', 'cpu',
                 '--save_interval', '2', '--log_iters', '1', '--num_workers', workers])
    tool.wait_for(lambda: (save_dir / 'iter_4').is_dir())
    code, err, _, _ = tool.stop(signum)
    saved = sorted((int(p[5:]) for p in os.listdir(save_dir) if p.startswith('iter_')))
    stopped = re.search(r'training stopped at iter (\d+)', err)
    assert stopped and int(stopped.group(1)) >= saved[-1], err[-3000:]
    assert_interrupted(code, err, signum, f"training stopped at iter {stopped.group(1)}, last good checkpoint: "
                                          f"{save_dir / f'iter_{saved[-1]}'}")
    assert hidden(save_dir) == []
    assert sorted(os.listdir(save_dir / f'iter_{saved[-1]}')) == ['model.pdopt', 'model.pdparams',
                                                                   'train_state.json']


def test_training_stopped_before_its_first_save_leaves_nothing(tmp_path):
    config = tiny_config(tmp_path, iters=100000, batch_size=2, train_samples=8, random_aug=False)
    save_dir = tmp_path / 'new' / 'out'
    tool = Tool([os.path.join(REPO, 'train.py'), '--config', config, '--save_dir', save_dir, '--device', 'cpu',
                 '--save_interval', '100000', '--log_iters', '1'])
    tool.wait_for(lambda: any('iter: 2/' in line for line in tool.out))
    code, err, _, _ = tool.stop(signal.SIGTERM)
    stopped = re.search(r'training stopped at iter (\d+)', err)
    assert_interrupted(code, err, signal.SIGTERM, f"training stopped at iter {stopped.group(1)}, last good "
                                                  f"checkpoint: none was saved yet")
    assert not (tmp_path / 'new').exists()


@pytest.mark.paddle26
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_export_stops_and_removes_its_temporary_folder(runner, tmp_path, signum):
    _, weights, config = write_tiny_hardnet(tmp_path, seed=0)
    save_dir = tmp_path / 'exports' / 'model'
    tool = paused_tool(runner, 'export.py', 'paddle_models.core.export.dispatch:write_deploy', '--config',
                       config, '--model_path', weights, '--save_dir', save_dir)
    tool.wait_for(tool.paused)
    assert [p for p in os.listdir(tmp_path / 'exports') if p.startswith('.model.tmp-')]
    code, err, _, _ = tool.stop(signum)
    assert_interrupted(code, err, signum)
    assert not (tmp_path / 'exports').exists()  # the temporary folder, the lock and the parent made for them


def test_export_keeps_the_previous_export_when_stopped(runner, tmp_path):
    _, weights, config = write_tiny_hardnet(tmp_path, seed=0)
    save_dir = tmp_path / 'model'
    save_dir.mkdir()
    (save_dir / 'deploy.yaml').write_text('previous')
    tool = paused_tool(runner, 'export.py', 'paddle_models.core.export.dispatch:write_deploy', '--config',
                       config, '--model_path', weights, '--save_dir', save_dir)
    tool.wait_for(tool.paused)
    code, err, _, _ = tool.stop(signal.SIGTERM)
    assert_interrupted(code, err, signal.SIGTERM)
    assert sorted(os.listdir(tmp_path)) == ['model', 'model.pdparams', 'tiny.yml']
    assert os.listdir(save_dir) == ['deploy.yaml'] and (save_dir / 'deploy.yaml').read_text() == 'previous'


def test_quantize_stops_in_static_mode_and_removes_its_temporary_folder(runner, tmp_path):
    """The issue's hang: SIGTERM during quantization (Paddle in static mode, the calibrated program being written)
    ends it at once."""
    _, weights, config = write_tiny_hardnet(tmp_path, seed=0)
    cfg = yaml.safe_load(config.read_text())
    cfg['train_dataset'] = {'type': 'SyntheticShapes', 'image_size': 32, 'mode': 'train', 'num_samples': 2,
                            'transforms': TINY_TRANSFORMS}
    config.write_text(yaml.safe_dump(cfg))
    save_dir = tmp_path / 'int8'
    tool = paused_tool(runner, 'tools/quantize.py', 'paddle_models.core.legacy:append_output_op',
                       '--config', config, '--model_path', weights, '--save_dir', save_dir, '--calib_images', '1',
                       env={'FLAGS_enable_pir_api': '0'})
    tool.wait_for(tool.paused)
    assert [p for p in os.listdir(tmp_path) if p.startswith('.int8.tmp-')]
    code, err, _, _ = tool.stop(signal.SIGTERM)
    assert_interrupted(code, err, signal.SIGTERM)
    assert sorted(os.listdir(tmp_path)) == ['model.pdparams', 'tiny.yml']


def _images(folder, count=3):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(folder / f'img{i}.png')
    return folder


def test_predict_stops(runner, tmp_path):
    _, weights, config = write_tiny_hardnet(tmp_path, seed=0)
    images = _images(tmp_path / 'images')
    tool = paused_tool(runner, 'predict.py', 'paddle_models.core.predict_files:pseudo_color_image', '--config', config,
                       '--model_path', weights, '--image_path', images, '--save_dir', tmp_path / 'result',
                       '--device', 'cpu')
    tool.wait_for(tool.paused)
    code, err, _, _ = tool.stop(signal.SIGTERM)
    assert_interrupted(code, err, signal.SIGTERM)


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_infer_stops(runner, tmp_path, signum):
    from paddle_models.core.export import export_model

    model, _, _ = write_tiny_hardnet(tmp_path, seed=0)
    export_model(model, str(tmp_path / 'export'), transforms=TINY_TRANSFORMS)
    images = _images(tmp_path / 'images')
    tool = paused_tool(runner, 'deploy/python/infer.py', 'infer:save_result', '--config',
                       tmp_path / 'export' / 'deploy.yaml', '--image_path', images, '--save_dir',
                       tmp_path / 'result', '--device', 'cpu')
    tool.wait_for(tool.paused)
    code, err, _, _ = tool.stop(signum)
    assert_interrupted(code, err, signum)
    assert os.listdir(tmp_path / 'result') == ['img0.png']


# a process whose clean-up hangs after SIGTERM: it catches the Interrupted and sleeps
HANGING = '''
import os, sys, time
from paddle_models.core import folders, signals
signals.GRACE_S = 1
signals.install()
folder = folders.new_hidden_dir(sys.argv[1], 'model')
lock = folders.FolderLock(folders.lock_path_beside(os.path.join(sys.argv[1], 'model')), sys.argv[1]).acquire()
print('ready', flush=True)
try:
    time.sleep(60)
except KeyboardInterrupt:
    time.sleep(60)  # a clean-up that never ends
'''


@pytest.mark.paddle26
def test_a_hanging_clean_up_is_ended_by_the_watchdog(tmp_path):
    """GRACE_S after the signal, the watchdog removes the registered temporary folder and lock and ends the
    process with the signal's exit code."""
    tool = Tool(['-c', HANGING, tmp_path])
    tool.wait_for(lambda: any(line.strip() == 'ready' for line in tool.out))
    assert len(os.listdir(tmp_path)) == 2
    code, err, _, _ = tool.stop(signal.SIGTERM)
    assert code == 143 and 'Traceback' not in err, err
    assert err.strip().splitlines()[-1] == "error: interrupted by SIGTERM (clean-up took over 1 s; ended it)"
    assert os.listdir(tmp_path) == []
