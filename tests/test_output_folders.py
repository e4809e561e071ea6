"""Output folders (issue 22, item 4): one writer per --save_dir (train.py, export.py, tools/quantize.py), stale
locks and leftovers of killed runs cleaned up, folders that follow the umask, nothing created before the first
result, and output names that never collide (predict.py, deploy/python/infer.py)."""
import os
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

import export as export_tool
import train as train_tool
from conftest import REPO, write_tiny_hardnet
from paddle_models.core.folders import FolderLock, lock_path_beside, lock_path_inside
from paddle_models.core.predict_files import predict, unique_names
from paddle_models.errors import UserError
from helpers import TINY_TRANSFORMS, load_infer, tiny_config

QUANTIZE = os.path.join(REPO, 'tools', 'quantize.py')

# holds an flock on argv[1] as our FolderLock does (its PID in the file) until its stdin closes
HOLDER = '''
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print('locked', flush=True)
sys.stdin.read()
'''


class Holder:
    """Another process holding the lock file ``path``."""

    def __init__(self, path):
        self.proc = subprocess.Popen([sys.executable, '-c', HOLDER, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == 'locked'
        self.pid = self.proc.pid

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.proc.wait(30)


def dead_pid():
    proc = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    return int(proc.stdout)


def in_use(save_dir, pid, lock, what='--save_dir'):
    return (f"{what} {save_dir} is in use by another run (PID {pid}; lock file {lock}); wait for it to finish or "
            f"choose another folder")


@pytest.fixture
def tiny(tmp_path):
    """A tiny HarDNet config with a train set (for train.py and tools/quantize.py) and its weights."""
    _, weights, config = write_tiny_hardnet(tmp_path, seed=0)
    cfg = yaml.safe_load(config.read_text())
    cfg['train_dataset'] = {'type': 'SyntheticShapes', 'image_size': 32, 'mode': 'train', 'num_samples': 2,
                            'transforms': TINY_TRANSFORMS}
    config.write_text(yaml.safe_dump(cfg))
    return config, weights


def quantize_cli(config, weights, save_dir, **kwargs):
    return subprocess.run([sys.executable, QUANTIZE, '--config', str(config), '--model_path', str(weights),
                           '--save_dir', str(save_dir), '--calib_images', '1'], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=dict(os.environ, FLAGS_enable_pir_api='0'), **kwargs)


# ---------------------------------------------------------------------------------------------- one writer

def test_a_second_training_into_a_locked_save_dir_is_refused(tmp_path):
    config = tiny_config(tmp_path, iters=2, batch_size=2, train_samples=4)
    save_dir = tmp_path / 'out'
    save_dir.mkdir()
    lock = save_dir / '.paddle_models.lock'
    with Holder(lock) as holder:
        with pytest.raises(UserError) as excinfo:
            train_tool.main(['--config', config, '--save_dir', str(save_dir), '--device', 'cpu'])
        assert str(excinfo.value) == in_use(save_dir, holder.pid, lock)
        assert os.listdir(save_dir) == ['.paddle_models.lock']  # nothing written, the holder's lock untouched
        assert lock.read_text() == f"{holder.pid}\n"


def test_a_second_export_into_a_locked_save_dir_is_refused(tmp_path):
    model, weights, config = write_tiny_hardnet(tmp_path, seed=0)
    save_dir = tmp_path / 'exports' / 'model'
    save_dir.parent.mkdir()
    lock = tmp_path / 'exports' / '.model.lock'
    assert lock_path_beside(save_dir) == str(lock)
    with Holder(lock) as holder:
        with pytest.raises(UserError) as excinfo:
            export_tool.main(['--config', str(config), '--model_path', str(weights), '--save_dir', str(save_dir)])
        assert str(excinfo.value) == in_use(save_dir, holder.pid, lock, 'save_dir')
        assert os.listdir(tmp_path / 'exports') == ['.model.lock']


def test_a_second_quantization_into_a_locked_save_dir_is_refused(tiny, tmp_path):
    config, weights = tiny
    save_dir = tmp_path / 'int8'
    lock = tmp_path / '.int8.lock'
    with Holder(lock) as holder:
        proc = quantize_cli(config, weights, save_dir)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert proc.stderr.strip().splitlines()[-1] == f"error: {in_use(save_dir, holder.pid, lock)}"
        assert 'Traceback' not in proc.stderr
        assert sorted(os.listdir(tmp_path)) == ['.int8.lock', 'model.pdparams', 'tiny.yml']  # nothing of its own


def test_the_stale_lock_of_a_dead_run_is_taken_over_and_said_so(tmp_path, capsys):
    config = tiny_config(tmp_path, iters=1, batch_size=2, train_samples=4)
    save_dir = tmp_path / 'out'
    save_dir.mkdir()
    pid = dead_pid()
    (save_dir / '.paddle_models.lock').write_text(f"{pid}\n")  # a run killed with SIGKILL leaves this
    train_tool.main(['--config', config, '--save_dir', str(save_dir), '--device', 'cpu'])
    out = capsys.readouterr().out
    assert f"[WARNING] --save_dir {save_dir}: took over the lock left by PID {pid}, which is no longer running" in out
    assert sorted(os.listdir(save_dir)) == ['config.yml', 'iter_1']  # the lock is removed at the end

    model, weights, export_config = write_tiny_hardnet(tmp_path, seed=0)
    (tmp_path / '.model.lock').write_text(f"{pid}\n")
    export_tool.main(['--config', str(export_config), '--model_path', str(weights), '--save_dir',
                      str(tmp_path / 'model')])
    out = capsys.readouterr().out
    assert f"[WARNING] save_dir {tmp_path / 'model'}: took over the lock left by PID {pid}, which is no longer " \
           f"running" in out
    assert not (tmp_path / '.model.lock').exists() and (tmp_path / 'model' / 'deploy.yaml').is_file()


@pytest.mark.paddle26
def test_folder_lock_is_released_and_reacquired(tmp_path):
    """Within one process: a second lock on the same folder is refused (naming this PID), and the folder can be
    locked again once released."""
    path = lock_path_inside(str(tmp_path))
    with FolderLock(path, str(tmp_path)):
        assert open(path).read() == f"{os.getpid()}\n"
        with pytest.raises(UserError, match=rf"^--save_dir {tmp_path} is in use by another run \(PID {os.getpid()};"):
            FolderLock(path, str(tmp_path)).acquire()
    assert not os.path.exists(path)
    with FolderLock(path, str(tmp_path)):
        pass
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------ leftovers of killed runs

def test_export_removes_the_leftovers_of_killed_exports(tmp_path, capsys):
    model, weights, config = write_tiny_hardnet(tmp_path, seed=0)
    out = tmp_path / 'out'
    (out / 'model').mkdir(parents=True)
    (out / 'model' / 'deploy.yaml').write_text('previous')
    for name in ('.model.tmp-k2j4_x', '.model.tmp-0a1b2c3d', '.model.old-1234abcd'):
        (out / name).mkdir()
        (out / name / 'model.pdiparams').write_bytes(b'partial')
    (out / '.model.tmp-file').write_text('a file, not ours')
    (out / '.other.tmp-0a1b2c3d').mkdir()  # another folder's
    (out / '.modelx.tmp-0a1b2c3d').mkdir()
    export_tool.main(['--config', str(config), '--model_path', str(weights), '--save_dir', str(out / 'model')])
    log = capsys.readouterr().out
    assert (f"Removed 3 unfinished folder(s) left by an interrupted run beside {out / 'model'}: .model.old-1234abcd, "
            f".model.tmp-0a1b2c3d, .model.tmp-k2j4_x") in log
    assert sorted(os.listdir(out)) == ['.model.tmp-file', '.modelx.tmp-0a1b2c3d', '.other.tmp-0a1b2c3d', 'model']
    assert yaml.safe_load((out / 'model' / 'deploy.yaml').read_text())['Deploy']['output_op'] == 'argmax'


def test_an_export_killed_between_its_renames_is_put_back(tmp_path, capsys):
    """Killed after moving the previous export aside (.model.old-*) and before the new one took its place: the next
    run puts the previous one back first (and says so), then replaces it as usual."""
    model, weights, config = write_tiny_hardnet(tmp_path, seed=0)
    (tmp_path / '.model.old-feedbeef').mkdir()
    (tmp_path / '.model.old-feedbeef' / 'deploy.yaml').write_text('previous')
    with pytest.raises(UserError, match=r"--input_shape needs 4 values"):  # fails after load, before the write
        export_tool.main(['--config', str(config), '--save_dir', str(tmp_path / 'model'), '--input_shape', '1'])
    assert (tmp_path / '.model.old-feedbeef').is_dir()  # nothing touched before the write starts
    export_tool.main(['--config', str(config), '--model_path', str(weights), '--save_dir', str(tmp_path / 'model'),
                      '--output_op', 'softmax'])
    log = capsys.readouterr().out
    assert f"[WARNING] Put {tmp_path / 'model'} back: a run replacing it was interrupted" in log
    assert yaml.safe_load((tmp_path / 'model' / 'deploy.yaml').read_text())['Deploy']['output_op'] == 'softmax'
    assert not [p for p in os.listdir(tmp_path) if p.startswith('.model')]


# --------------------------------------------------------------------------------------------------- umask

@pytest.mark.parametrize('umask', [0o022, 0o027])
def test_export_folders_follow_the_umask(tmp_path, umask):
    model, weights, config = write_tiny_hardnet(tmp_path, seed=0)
    previous = os.umask(umask)
    try:
        export_tool.main(['--config', str(config), '--model_path', str(weights), '--save_dir',
                          str(tmp_path / 'new' / 'model')])
    finally:
        os.umask(previous)
    for folder in (tmp_path / 'new', tmp_path / 'new' / 'model'):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o777 & ~umask, folder
    assert stat.S_IMODE(os.stat(tmp_path / 'new' / 'model' / 'deploy.yaml').st_mode) == 0o666 & ~umask


def test_quantize_follows_the_umask_and_removes_leftovers(tiny, tmp_path):
    config, weights = tiny
    (tmp_path / '.int8.tmp-ab12cd34' / 'fp32').mkdir(parents=True)  # a quantization killed half-way
    proc = quantize_cli(config, weights, tmp_path / 'int8', preexec_fn=lambda: os.umask(0o027))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Removed 1 unfinished folder(s) left by an interrupted run beside {tmp_path / 'int8'}: " \
           f".int8.tmp-ab12cd34" in proc.stdout
    assert stat.S_IMODE(os.stat(tmp_path / 'int8').st_mode) == 0o750
    assert sorted(os.listdir(tmp_path)) == ['int8', 'model.pdparams', 'tiny.yml']


# ------------------------------------------------------------------------------------------ output names

@pytest.mark.paddle26
def test_unique_names():
    assert unique_names(['a', 'b', 'a', 'a_1', 'A', 'a']) == ['a', 'b', 'a_2', 'a_1', 'A_3', 'a_4']
    assert unique_names(['d/x', 'd/x', 'e/x']) == ['d/x', 'd/x_1', 'e/x']
    assert unique_names([]) == []


def _write_images(folder, sizes):
    """Images of distinct sizes (so each result shows which image it came from); returns {name: (h, w)}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in sizes.items():
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return sizes


def test_predict_keeps_every_result_when_names_collide(tmp_path, capsys):
    import paddle_models as pm

    model, weights, config = write_tiny_hardnet(tmp_path, seed=0)
    images = tmp_path / 'images'
    _write_images(images, {'a.jpg': (24, 32), 'a.png': (28, 20), 'a_1.png': (16, 40), 'b.bmp': (20, 20)})
    model = pm.build_model(str(config), pretrained=str(weights))
    written = predict(model, str(images), [], str(tmp_path / 'res'), num_classes=5,
                      progress=False)
    colour = tmp_path / 'res' / 'pseudo_color_prediction'
    assert written == [str(colour / name) for name in ('a.png', 'a_2.png', 'a_1.png', 'b.png')]
    sizes = {name: Image.open(colour / name).size[::-1] for name in os.listdir(colour)}
    assert sizes == {'a.png': (24, 32), 'a_2.png': (28, 20), 'a_1.png': (16, 40), 'b.png': (20, 20)}
    assert sorted(os.listdir(tmp_path / 'res' / 'added_prediction')) == ['a.jpg', 'a_1.jpg', 'a_2.jpg', 'b.jpg']
    assert f"{images / 'a.png'}: its results are named a_2 (another image has the name a)" in capsys.readouterr().out


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    from paddle_models.core.export import export_model
    model, _, _ = write_tiny_hardnet(tmp_path_factory.mktemp('weights'), seed=0)
    return export_model(model, str(tmp_path_factory.mktemp('export') / 'model'), transforms=TINY_TRANSFORMS)


def test_infer_keeps_every_result_when_names_collide(tmp_path, exported):
    infer = load_infer()
    _write_images(tmp_path / 'd1', {'a.jpg': (24, 32), 'a.png': (28, 20)})
    _write_images(tmp_path / 'd2', {'a.png': (16, 40)})
    (tmp_path / 'list.txt').write_text('d1/a.jpg\nd1/a.png\nd2/a.png\n')
    for source, res, expected in (
            (tmp_path / 'd1', 'folder', {'a.png': (24, 32), 'a_1.png': (28, 20)}),
            (tmp_path / 'list.txt', 'list', {'a.png': (24, 32), 'a_1.png': (28, 20), 'a_2.png': (16, 40)})):
        assert infer.main(['--config', exported['deploy_yaml'], '--image_path', str(source), '--save_dir',
                           str(tmp_path / res), '--device', 'cpu']) == 0
        sizes = {name: Image.open(tmp_path / res / name).size[::-1] for name in os.listdir(tmp_path / res)}
        assert sizes == expected


def test_infer_creates_no_save_dir_before_its_first_result(tmp_path, exported, capsys):
    infer = load_infer()
    _write_images(tmp_path / 'images', {'a.png': (24, 32)})
    data = (tmp_path / 'images' / 'a.png').read_bytes()
    (tmp_path / 'images' / 'a.png').write_bytes(data[:len(data) // 2])
    assert infer.main(['--config', exported['deploy_yaml'], '--image_path', str(tmp_path / 'images'),
                       '--save_dir', str(tmp_path / 'res' / 'sub'), '--device', 'cpu']) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"error: --image_path: cannot read image {tmp_path / 'images' / 'a.png'}: truncated PNG file")
    assert not (tmp_path / 'res').exists()
