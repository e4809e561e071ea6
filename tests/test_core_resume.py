"""Checkpoints and resuming (issue 11, items 5 and 6, and the save_dir part of item 2): a resumed run logs the same
losses as the uninterrupted one, with and without data-loader workers; leftovers of a killed save are cleaned up;
--keep_checkpoint_max counts checkpoints written before a resume; folders follow the umask; a save_dir that cannot be
written stops the run before training, and a save that fails mid-run keeps the last good checkpoint."""
import contextlib
import errno
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

import train as train_tool
from conftest import REPO
from paddle_models.core.checkpoint import load_state_dict, save_checkpoint
from paddle_models.errors import UserError
from helpers import NaNAfter, assert_one_line_error, tiny_config

ITERS = 12
# random scaling, cropping, flipping and colour distortion: PaddleSeg's transforms draw from Python's `random` and
# NumPy's global generator
AUGMENT = [{'type': 'ResizeStepScaling', 'min_scale_factor': 0.75, 'max_scale_factor': 1.25, 'scale_step_size': 0.25},
           {'type': 'RandomPaddingCrop', 'crop_size': [32, 32]},
           {'type': 'RandomHorizontalFlip'},
           {'type': 'RandomDistort', 'brightness_range': 0.4, 'contrast_range': 0.4, 'saturation_range': 0.4},
           {'type': 'Normalize'}]
# SegFormer-B0 with dropout and stochastic depth: its forward pass draws from Paddle's generator
MODEL = {'type': 'SegFormer', 'num_classes': 5, 'embedding_dim': 16, 'dropout_prob': 0.1,
         'backbone': {'type': 'MixVisionTransformer_B0', 'mlp_ratios': [1, 1, 1, 1], 'drop_rate': 0.1,
                      'drop_path_rate': 0.2}}

# Runs train.py with a fault injected where a path containing FAULT_AT is written by paddle.save: after the file is
# written, FAULT=kill sends SIGKILL (a save killed half-way), FAULT=enospc raises "No space left on device".
FAULT_RUNNER = '''
import errno, os, runpy, signal, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))  # the repository, as for train.py itself
import paddle_models  # first, as train.py does (it silences Paddle's import-time ccache warning)
import paddle
real_save = paddle.save
def save(obj, path, *args, **kwargs):
    real_save(obj, path, *args, **kwargs)
    if os.environ['FAULT_AT'] in str(path):
        if os.environ['FAULT'] == 'kill':
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
paddle.save = save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


def augmented_config(tmp_path):
    cfg = {'batch_size': 2, 'iters': ITERS,
           'train_dataset': {'type': 'SyntheticShapes', 'mode': 'train', 'num_samples': 8, 'image_size': 40,
                             'transforms': AUGMENT},
           'val_dataset': {'type': 'SyntheticShapes', 'mode': 'val', 'num_samples': 4, 'image_size': 32,
                           'transforms': [{'type': 'Normalize'}]},
           'model': MODEL,
           'optimizer': {'type': 'SGD', 'momentum': 0.9, 'weight_decay': 4e-5},
           'lr_scheduler': {'type': 'PolynomialDecay', 'learning_rate': 0.05, 'end_lr': 0.0, 'power': 0.9},
           'loss': {'types': [{'type': 'CrossEntropyLoss'}], 'coef': [1]}}
    path = tmp_path / 'augmented.yml'
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def train_args(config, save_dir, *extra):
    """8 samples, batch 2: 4 iterations an epoch, so iter 5 (the checkpoint resumed from) is inside epoch 2."""
    return ['--config', str(config), '--save_dir', str(save_dir), '--seed', '0', '--device', 'cpu', '--log_iters',
            '1', '--save_interval', '5', '--keep_checkpoint_max', '10'] + [str(e) for e in extra]


def eval_lines(log, after=0):
    """The [EVAL] messages (without time stamps) logged after iteration ``after``."""
    if after:
        log = log.split(f'iter: {after + 1}/{ITERS},', 1)[1]
    return [line.split('] ', 1)[1] for line in log.splitlines() if '[EVAL]' in line]


def logged_losses(log):
    """{iteration: the loss exactly as logged}."""
    found = re.findall(rf'iter: (\d+)/{ITERS}, loss: (\S+),', log)
    losses = {int(it): loss for it, loss in found}
    assert len(losses) == len(found), 'an iteration was logged twice'
    return losses


def assert_same_weights(a, b):
    a, b = load_state_dict(a), load_state_dict(b)
    assert list(a) == list(b)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


def run_script(args, env=None, runner=None):
    """train.py (or train.py under FAULT_RUNNER) in a subprocess."""
    command = [sys.executable] + ([str(runner)] if runner else []) + [os.path.join(REPO, 'train.py')]
    return subprocess.run(command + [str(a) for a in args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **(env or {})))


def hidden(folder):
    return sorted(p for p in os.listdir(folder) if p.startswith('.'))


def run_in_process(args):
    """train.py's main in this process; returns what it logged."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train_tool.main(args)
    return out.getvalue()


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """The reference: 12 iterations in one go, no workers; its config, save_dir and logged losses."""
    tmp = tmp_path_factory.mktemp('uninterrupted')
    config = augmented_config(tmp)
    save_dir = tmp / 'full'
    log = run_in_process(train_args(config, save_dir, '--do_eval'))
    losses = logged_losses(log)
    assert sorted(losses) == list(range(1, ITERS + 1))
    return config, save_dir, losses, log


@pytest.mark.paddle26
def test_resumed_run_logs_the_same_losses(uninterrupted, tmp_path):
    config, full_dir, full, full_log = uninterrupted
    state = json.loads((full_dir / 'iter_5' / 'train_state.json').read_text())
    best = state.pop('best_miou')
    assert state == {'format': 1, 'iter': 5, 'seed': 0, 'batch_size': 2, 'world_size': 1, 'samples': 8,
                     'best_iter': 5}
    assert f"The model with the best validation mIoU ({best:.4f}) was saved at iter 5." in full_log
    log = run_in_process(train_args(config, tmp_path / 'part', '--resume_model', full_dir / 'iter_5'))
    assert f"Resumed from {full_dir / 'iter_5'} at iter 5" in log
    resumed = logged_losses(log)
    assert sorted(resumed) == list(range(6, ITERS + 1))
    assert resumed == {it: full[it] for it in resumed}
    assert_same_weights(full_dir / f'iter_{ITERS}', tmp_path / 'part' / f'iter_{ITERS}')


def test_workers_change_nothing_and_resume_exactly(uninterrupted, tmp_path):
    """Each sample's augmentation is seeded by (seed, epoch, index): two worker processes see what the main process
    saw, also in a run resumed mid-epoch."""
    config, full_dir, full, _ = uninterrupted
    log = run_in_process(train_args(config, tmp_path / 'workers', '--num_workers', 2))
    assert logged_losses(log) == full
    log = run_in_process(train_args(config, tmp_path / 'part', '--num_workers', 2, '--resume_model',
                                    tmp_path / 'workers' / 'iter_5'))
    resumed = logged_losses(log)
    assert sorted(resumed) == list(range(6, ITERS + 1))
    assert resumed == {it: full[it] for it in resumed}
    assert_same_weights(full_dir / f'iter_{ITERS}', tmp_path / 'part' / f'iter_{ITERS}')


def test_run_killed_during_a_save_resumes_exactly(uninterrupted, tmp_path):
    """SIGKILL half-way through writing iter_10 leaves .iter_10.tmp-*; the resumed run in the same save_dir removes
    it (and says so), then logs the uninterrupted run's losses, and its evaluations keep comparing against the best
    model of before the resume."""
    config, full_dir, full, full_log = uninterrupted
    runner = tmp_path / 'fault.py'
    runner.write_text(FAULT_RUNNER)
    save_dir = tmp_path / 'out'
    proc = run_script(train_args(config, save_dir, '--do_eval'), env={'FAULT': 'kill', 'FAULT_AT': '.iter_10.tmp-'},
                      runner=runner)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert logged_losses(proc.stdout) == {it: full[it] for it in range(1, 11)}
    leftovers = hidden(save_dir)
    assert len(leftovers) == 2 and leftovers[0].startswith('.iter_10.tmp-') and leftovers[1] == '.paddle_models.lock'
    assert os.listdir(save_dir / leftovers[0]) == ['model.pdparams']
    killed = int((save_dir / '.paddle_models.lock').read_text())  # its lock: the next run takes it over

    proc = run_script(train_args(config, save_dir, '--do_eval', '--resume_model', save_dir / 'iter_5'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (f"Removed 1 unfinished checkpoint folder(s) left by an interrupted save in {save_dir}: {leftovers[0]}"
            in proc.stdout)
    assert f"[WARNING] --save_dir {save_dir}: took over the lock left by PID {killed}, which is no longer running" \
        in proc.stdout
    resumed = logged_losses(proc.stdout)
    assert resumed == {it: full[it] for it in range(6, ITERS + 1)}
    # 2 evaluations x (4 summary lines, 5 named per-class lines, the best-model line)
    assert eval_lines(proc.stdout) == eval_lines(full_log, after=5) and len(eval_lines(proc.stdout)) == 20
    assert hidden(save_dir) == []
    assert sorted(os.listdir(save_dir)) == ['best_model', 'config.yml', 'iter_10', 'iter_12', 'iter_5']
    assert (save_dir / 'best_model' / 'score.txt').read_text() == (full_dir / 'best_model' / 'score.txt').read_text()
    assert_same_weights(full_dir / f'iter_{ITERS}', save_dir / f'iter_{ITERS}')


@pytest.mark.paddle26
def test_resumed_run_keeps_the_best_model_record(uninterrupted, tmp_path):
    """The best mIoU so far travels in train_state.json: resumed into the save_dir that holds its best_model, a run
    replaces that model only with a better one; resumed elsewhere, it starts a best_model of its own."""
    config, full_dir, _, _ = uninterrupted
    save_dir = tmp_path / 'out'
    shutil.copytree(full_dir / 'iter_5', save_dir / 'iter_5')
    state = json.loads((save_dir / 'iter_5' / 'train_state.json').read_text())
    state['best_miou'] = 0.99  # better than any evaluation of this run
    (save_dir / 'iter_5' / 'train_state.json').write_text(json.dumps(state))
    (save_dir / 'best_model').mkdir()
    (save_dir / 'best_model' / 'score.txt').write_text('iter: 5\nmiou: 0.990000\n')
    log = run_in_process(train_args(config, save_dir, '--do_eval', '--resume_model', save_dir / 'iter_5'))
    best_lines = [l for l in eval_lines(log) if 'the best' in l]
    assert best_lines == ["[EVAL] The model with the best validation mIoU (0.9900) was saved at iter 5."] * 2
    assert (save_dir / 'best_model' / 'score.txt').read_text() == 'iter: 5\nmiou: 0.990000\n'
    assert json.loads((save_dir / 'iter_12' / 'train_state.json').read_text())['best_miou'] == 0.99

    elsewhere = tmp_path / 'elsewhere'
    log = run_in_process(train_args(config, elsewhere, '--do_eval', '--resume_model', save_dir / 'iter_5'))
    assert 'was saved at iter 10.' in log
    assert yaml.safe_load((elsewhere / 'best_model' / 'score.txt').read_text())['iter'] in (10, 12)


@pytest.mark.paddle26
def test_save_failing_mid_run_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(tmp_path, iters=ITERS, batch_size=2, train_samples=8)
    runner = tmp_path / 'fault.py'
    runner.write_text(FAULT_RUNNER)
    save_dir = tmp_path / 'out'
    proc = run_script(train_args(config, save_dir), env={'FAULT': 'enospc', 'FAULT_AT': '.iter_10.tmp-'},
                      runner=runner)
    assert_one_line_error(proc, f"saving checkpoint {save_dir / 'iter_10'} failed (No space left on device); "
                                f"training stopped, last good checkpoint: {save_dir / 'iter_5'}")
    assert 'iter: 10/12' in proc.stdout and 'iter: 11/12' not in proc.stdout
    assert sorted(os.listdir(save_dir)) == ['config.yml', 'iter_5']  # no partial .iter_10.tmp-* folder
    assert sorted(os.listdir(save_dir / 'iter_5')) == ['model.pdopt', 'model.pdparams', 'train_state.json']
    assert load_state_dict(save_dir / 'iter_5')  # complete and readable


def test_failed_replace_puts_the_previous_checkpoint_back(tmp_path, monkeypatch):
    """Overwriting best_model moves the old one aside first; when the new one cannot take its place, the old one
    goes back."""
    model = paddle.nn.Linear(2, 3)
    first = save_checkpoint(str(tmp_path), 'best_model', model, extra={'score.txt': 'first'})
    real_replace = os.replace

    def failing_replace(src, dst):
        if '.best_model.tmp-' in str(src):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_replace(src, dst)

    monkeypatch.setattr(os, 'replace', failing_replace)
    with pytest.raises(OSError):
        save_checkpoint(str(tmp_path), 'best_model', model, extra={'score.txt': 'second'})
    assert os.listdir(tmp_path) == ['best_model']
    assert open(os.path.join(first, 'score.txt')).read() == 'first'
    assert sorted(os.listdir(first)) == ['model.pdparams', 'score.txt']


def test_stale_temporary_folders_are_removed_at_start(tmp_path, capsys):
    config = tiny_config(tmp_path, iters=1, batch_size=2, train_samples=4)
    save_dir = tmp_path / 'out'
    for name in ('.iter_20.tmp-k2j4_x', '.best_model.tmp-0a1b2c3d', '.probe.tmp-9f8e7d6c'):
        (save_dir / name).mkdir(parents=True)
        (save_dir / name / 'model.pdparams').write_bytes(b'partial')
    (save_dir / 'best_model').mkdir()
    (save_dir / 'best_model' / 'score.txt').write_text('kept')
    (save_dir / '.best_model.old-1234abcd').mkdir()  # the rename that followed it completed
    (save_dir / '.ema_best_model.old-feedbeef').mkdir()  # killed between the two renames: the only copy
    (save_dir / '.ema_best_model.old-feedbeef' / 'score.txt').write_text('restored')
    (save_dir / '.iter_3.tmp-file').write_text('not a folder of ours')
    (save_dir / '.cache').mkdir()
    train_tool.main(['--config', config, '--save_dir', str(save_dir), '--device', 'cpu', '--save_interval', '1'])
    out = capsys.readouterr().out
    assert (f"Removed 4 unfinished checkpoint folder(s) left by an interrupted save in {save_dir}: "
            f".best_model.old-1234abcd, .best_model.tmp-0a1b2c3d, .iter_20.tmp-k2j4_x, .probe.tmp-9f8e7d6c") in out
    assert f"Put {save_dir / 'ema_best_model'} back: a save replacing it was interrupted" in out
    assert hidden(save_dir) == ['.cache', '.iter_3.tmp-file']
    assert sorted(p for p in os.listdir(save_dir) if not p.startswith('.')) == ['best_model', 'config.yml',
                                                                                'ema_best_model', 'iter_1']
    assert (save_dir / 'best_model' / 'score.txt').read_text() == 'kept'
    assert (save_dir / 'ema_best_model' / 'score.txt').read_text() == 'restored'


def iter_folders(save_dir):
    return sorted((p for p in os.listdir(save_dir) if p.startswith('iter_')), key=lambda p: int(p[5:]))


def test_keep_checkpoint_max_counts_checkpoints_from_before_a_resume(tmp_path):
    config = tiny_config(tmp_path, iters=12, batch_size=2, train_samples=8, random_aug=False)
    save_dir = tmp_path / 'out'

    def run(*extra):
        train_tool.main(['--config', config, '--save_dir', str(save_dir), '--device', 'cpu', '--log_iters', '100',
                         '--save_interval', '2'] + [str(e) for e in extra])

    run('--iters', 6, '--keep_checkpoint_max', 10)
    assert iter_folders(save_dir) == ['iter_2', 'iter_4', 'iter_6']
    run('--iters', 10, '--keep_checkpoint_max', 3, '--resume_model', save_dir / 'iter_6')
    assert iter_folders(save_dir) == ['iter_6', 'iter_8', 'iter_10']
    # resumed from an earlier checkpoint: iter_10 is written again and counts once
    run('--iters', 12, '--keep_checkpoint_max', 2, '--resume_model', save_dir / 'iter_8')
    assert iter_folders(save_dir) == ['iter_10', 'iter_12']


@pytest.mark.parametrize('umask', [0o022, 0o027])
def test_folders_follow_the_umask(tmp_path, umask):
    config = tiny_config(tmp_path, iters=2, batch_size=2, train_samples=4, val_samples=2)
    save_dir = tmp_path / 'out'
    previous = os.umask(umask)
    try:
        train_tool.main(['--config', config, '--save_dir', str(save_dir), '--device', 'cpu', '--save_interval', '2',
                         '--do_eval'])
    finally:
        os.umask(previous)
    folder_mode, file_mode = 0o777 & ~umask, 0o666 & ~umask
    for folder in (save_dir, save_dir / 'iter_2', save_dir / 'best_model'):
        assert stat.S_IMODE(os.stat(folder).st_mode) == folder_mode, folder
    for name in ('model.pdparams', 'model.pdopt', 'train_state.json'):
        assert stat.S_IMODE(os.stat(save_dir / 'iter_2' / name).st_mode) == file_mode, name


def test_save_dir_that_is_a_file(tmp_path):
    config = tiny_config(tmp_path, iters=2, batch_size=2, train_samples=4)
    in_the_way = tmp_path / 'out'
    in_the_way.write_text('a file')
    proc = run_script(train_args(config, in_the_way))
    assert_one_line_error(proc, f"--save_dir {in_the_way} is a file, not a folder")
    assert '[TRAIN]' not in proc.stdout
    proc = run_script(train_args(config, in_the_way / 'run1'))
    assert_one_line_error(proc, f"--save_dir {in_the_way / 'run1'} cannot be created: {in_the_way} is a file, "
                                f"not a folder")
    assert '[TRAIN]' not in proc.stdout and in_the_way.read_text() == 'a file'


@pytest.mark.parametrize('code', [errno.EROFS, errno.ENOSPC])
def test_unwritable_save_dir_stops_before_training(tmp_path, monkeypatch, capsys, code):
    """A read-only file system or a full disk (simulated: creating a folder under save_dir fails) is found by a
    probe write before the first iteration."""
    config = tiny_config(tmp_path, iters=2, batch_size=2, train_samples=4)
    save_dir = tmp_path / 'out'
    save_dir.mkdir()
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if str(path).startswith(str(save_dir)):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, 'mkdir', mkdir)
    with pytest.raises(UserError) as excinfo:
        train_tool.main(train_args(config, save_dir))
    assert str(excinfo.value) == f"--save_dir {save_dir} is not writable: {os.strerror(code)}"
    assert '[TRAIN]' not in capsys.readouterr().out
    assert os.listdir(save_dir) == []


def test_too_little_free_space_stops_before_training(tmp_path, monkeypatch, capsys):
    config = tiny_config(tmp_path, iters=2, batch_size=2, train_samples=4)
    save_dir = tmp_path / 'out'
    from paddle_models.core.config import Builder, load_config
    model = Builder(load_config(config)).model()
    # the weights, and as much again for SGD's momentum
    need = 2 * sum(int(np.prod(v.shape)) * 4 for v in model.state_dict().values())
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: real_usage(path)._replace(free=need - 1))
    with pytest.raises(UserError) as excinfo:
        train_tool.main(train_args(config, save_dir))
    assert str(excinfo.value) == (f"--save_dir {save_dir} has {(need - 1) / 2 ** 20:.1f} MB free but a checkpoint "
                                  f"needs about {need / 2 ** 20:.1f} MB (No space left on device)")
    assert '[TRAIN]' not in capsys.readouterr().out
    assert not os.path.exists(save_dir)  # created for the probe, removed again


@pytest.mark.parametrize('existed', [False, True])
def test_failure_before_the_first_save_leaves_no_save_dir(tmp_path, existed):
    """The probe creates save_dir before training; a run that fails before writing anything removes it again, but
    never a folder that was there before."""
    from paddle_models.core.train import train
    from paddle_models.datasets.synthetic import SyntheticShapes
    from paddle_models.losses.cross_entropy import CrossEntropyLoss
    import paddleseg.transforms as T
    model = NaNAfter(5, nan_from=1)
    optimizer = paddle.optimizer.SGD(0.01, parameters=model.parameters())
    dataset = SyntheticShapes(mode='train', num_samples=4, transforms=[T.Normalize()])
    save_dir = tmp_path / 'out' / 'run'
    if existed:
        save_dir.mkdir(parents=True)
    with pytest.raises(UserError) as excinfo:
        train(model, dataset, {'types': [CrossEntropyLoss()], 'coef': [1.0]}, optimizer, save_dir=str(save_dir),
              iters=4, batch_size=2, save_interval=2)
    assert str(excinfo.value) == "loss became nan at iter 1; training stopped, last good checkpoint: none was saved yet"
    assert os.path.isdir(save_dir) == existed and os.path.isdir(tmp_path / 'out') == existed


def test_bad_train_state_and_seed(uninterrupted, tmp_path):
    config, full_dir, _, _ = uninterrupted
    broken = tmp_path / 'iter_5'
    shutil.copytree(full_dir / 'iter_5', broken)
    (broken / 'train_state.json').write_text('{"seed": 0, ')
    with pytest.raises(UserError) as excinfo:
        train_tool.main(train_args(config, tmp_path / 'out', '--resume_model', broken))
    assert str(excinfo.value) == f"--resume_model {broken / 'train_state.json'} is not readable JSON (JSONDecodeError)"
    (broken / 'train_state.json').write_text('{"seed": -3}')
    with pytest.raises(UserError) as excinfo:
        train_tool.main(train_args(config, tmp_path / 'out', '--resume_model', broken))
    assert str(excinfo.value) == (f"--resume_model {broken / 'train_state.json'}: 'seed' must be a non-negative "
                                  f"integer, got -3")
    with pytest.raises(UserError) as excinfo:
        train_tool.main(train_args(config, tmp_path / 'out', '--seed', -1))
    assert str(excinfo.value) == "--seed must be an integer in [0, 2**32), got -1"
