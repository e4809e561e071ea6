"""The training engine through train.py/val.py/predict.py in-process: learning, checkpoints, resume, seeds,
VisualDL, NaN handling."""
import glob
import os

import numpy as np
import paddle
import pytest
import yaml

import predict as predict_tool
import train as train_tool
import val as val_tool
from paddle_models.core.train import train
from paddle_models.errors import UserError
from helpers import NaNAfter, load_params, tiny_config

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One short training run with evaluation, VisualDL and checkpoint rotation, shared by several tests."""
    tmp = tmp_path_factory.mktemp('trained')
    from conftest import REPO
    quickstart_model = yaml.safe_load(open(os.path.join(REPO, 'configs', 'quickstart.yml')))['model']
    config = tiny_config(tmp, train_samples=400, val_samples=40, iters=900, batch_size=8, lr=0.05,
                         model=quickstart_model, image_size=32)
    save_dir = str(tmp / 'out')
    train_tool.main(['--config', config, '--save_dir', save_dir, '--do_eval', '--use_vdl', '--save_interval', '300',
                     '--log_iters', '150', '--keep_checkpoint_max', '2', '--seed', '1', '--device', 'cpu'])
    return config, save_dir


def test_training_learns_and_keeps_best_model(trained, capsys):
    config, save_dir = trained
    score = yaml.safe_load(open(os.path.join(save_dir, 'best_model', 'score.txt')))
    # 5 classes; predicting "background" everywhere scores about 0.16 mIoU on this data (an untrained model and
    # the first evaluations sit there); the quickstart's small HarDNet at 32x32 reaches about 0.45 after 900 iters
    assert score['miou'] > 0.35, score
    assert score['iter'] in (600, 900)
    result = val_tool.main(['--config', config, '--model_path', os.path.join(save_dir, 'best_model'),
                            '--device', 'cpu'])
    assert result['miou'] == pytest.approx(score['miou'], abs=1e-6)
    assert set(result) >= {'class_iou', 'acc', 'kappa', 'mdice'}


def test_checkpoints_rotated_and_complete(trained):
    _, save_dir = trained
    kept = sorted(os.path.basename(p) for p in glob.glob(os.path.join(save_dir, 'iter_*')))
    assert kept == ['iter_600', 'iter_900']
    for name in kept:
        assert sorted(os.listdir(os.path.join(save_dir, name))) == ['model.pdopt', 'model.pdparams',
                                                                     'train_state.json']
    assert not [p for p in os.listdir(save_dir) if p.startswith('.')], 'temporary checkpoint folders left behind'


def test_visualdl_scalars_written(trained):
    _, save_dir = trained
    from visualdl import LogReader
    logs = glob.glob(os.path.join(save_dir, 'vdlrecords.*.log'))
    assert len(logs) == 1
    reader = LogReader(file_path=logs[0])
    assert {'Train/loss', 'Train/lr', 'Evaluate/mIoU'} <= set(reader.get_tags()['scalar'])
    losses = reader.get_data('scalar', 'Train/loss')
    assert [r.id for r in losses] == list(range(150, 901, 150))


def test_predict_writes_palette_pngs(trained, tmp_path):
    config, save_dir = trained
    import cv2
    from paddle_models.datasets.synthetic import SyntheticShapes
    data = SyntheticShapes(mode='val', num_samples=2, transforms=[], image_size=32)
    images = tmp_path / 'images'
    images.mkdir()
    for i in range(2):
        cv2.imwrite(str(images / f'img{i}.png'), np.asarray(data[i]['img']).transpose(1, 2, 0)[..., ::-1])
    out = tmp_path / 'result'
    written = predict_tool.main(['--config', config, '--model_path', os.path.join(save_dir, 'best_model'),
                                 '--image_path', str(images), '--save_dir', str(out), '--device', 'cpu'])
    assert [os.path.basename(p) for p in written] == ['img0.png', 'img1.png']
    from PIL import Image
    png = Image.open(written[0])
    assert png.mode == 'P' and png.size == (32, 32)
    assert np.asarray(png).max() < 5
    # the dataset's palette, as export writes it into deploy.yaml for infer.py
    assert png.getpalette()[:3 * 5] == [c for colour in SyntheticShapes.PALETTE for c in colour]
    assert os.path.isfile(out / 'added_prediction' / 'img0.jpg')


def test_logs_show_progress(tmp_path, capsys):
    config = tiny_config(tmp_path, iters=4, batch_size=2, train_samples=8)
    train_tool.main(['--config', config, '--save_dir', str(tmp_path / 'o'), '--log_iters', '2', '--device', 'cpu'])
    out = capsys.readouterr().out
    line = [l for l in out.splitlines() if '[TRAIN]' in l and 'iter: 4/4' in l][0]
    for field in ('loss:', 'lr:', 'samples/sec', 'ETA'):
        assert field in line


def test_run_saves_its_merged_config_and_logs_the_environment(tmp_path, capsys):
    """``save_dir/config.yml`` is the config the run used: the file with the command line's overrides applied (as
    PaddleSeg prints it at start); the log names Paddle, PaddleSeg and the device."""
    import paddleseg

    config = tiny_config(tmp_path, iters=2, batch_size=2, train_samples=4)
    save_dir = tmp_path / 'o'
    train_tool.main(['--config', config, '--save_dir', str(save_dir), '--iters', '1', '--learning_rate', '0.01',
                     '--opts', 'train_dataset.num_samples=6', '--device', 'cpu'])
    saved = yaml.safe_load((save_dir / 'config.yml').read_text())
    expected = yaml.safe_load(open(config))
    expected['iters'] = 1
    expected['lr_scheduler']['learning_rate'] = 0.01
    expected['train_dataset']['num_samples'] = 6
    assert saved == expected
    assert not [name for name in os.listdir(save_dir) if name.startswith('config.yml.tmp')]
    line = [l for l in capsys.readouterr().out.splitlines() if '[INFO] Environment: ' in l][0]
    assert f"Paddle {paddle.__version__}" in line and f"PaddleSeg {paddleseg.__version__}" in line
    assert 'device cpu' in line


def run_train(tmp_path, config, save_dir, extra=()):
    train_tool.main(['--config', config, '--save_dir', save_dir, '--seed', '3', '--device', 'cpu',
                     '--log_iters', '1'] + list(extra))


def test_seed_makes_runs_identical(tmp_path):
    config = tiny_config(tmp_path, iters=3, batch_size=2, train_samples=8)
    run_train(tmp_path, config, str(tmp_path / 'a'), ['--save_interval', '3'])
    run_train(tmp_path, config, str(tmp_path / 'b'), ['--save_interval', '3'])
    a = load_params(str(tmp_path / 'a' / 'iter_3' / 'model.pdparams'))
    b = load_params(str(tmp_path / 'b' / 'iter_3' / 'model.pdparams'))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_resume_continues_at_same_iteration_and_lr(tmp_path, capsys):
    # 8 samples, batch 2: 4 iterations per epoch; resume from iter 6 is mid-epoch
    config = tiny_config(tmp_path, iters=8, batch_size=2, train_samples=8, random_aug=False)
    run_train(tmp_path, config, str(tmp_path / 'full'), ['--save_interval', '2', '--keep_checkpoint_max', '10'])
    full_log = capsys.readouterr().out
    run_train(tmp_path, config, str(tmp_path / 'part'),
              ['--resume_model', str(tmp_path / 'full' / 'iter_6'), '--save_interval', '2'])
    part_log = capsys.readouterr().out
    assert 'Resumed from' in part_log and 'at iter 6' in part_log

    def lr_at(log, it):
        line = [l for l in log.splitlines() if f'iter: {it}/8,' in l][0]
        return line.split('lr: ')[1].split(',')[0]

    assert 'iter: 6/8,' not in part_log
    assert lr_at(part_log, 7) == lr_at(full_log, 7) and lr_at(part_log, 8) == lr_at(full_log, 8)
    a = load_params(str(tmp_path / 'full' / 'iter_8' / 'model.pdparams'))
    b = load_params(str(tmp_path / 'part' / 'iter_8' / 'model.pdparams'))
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    from paddle_models.datasets.synthetic import SyntheticShapes
    from paddle_models.losses.cross_entropy import CrossEntropyLoss
    import paddleseg.transforms as T
    model = NaNAfter(5, nan_from=5)
    optimizer = paddle.optimizer.SGD(paddle.optimizer.lr.PolynomialDecay(0.01, 10), parameters=model.parameters())
    dataset = SyntheticShapes(mode='train', num_samples=8, transforms=[T.Normalize()])
    save_dir = str(tmp_path / 'out')
    with pytest.raises(UserError) as excinfo:
        train(model, dataset, {'types': [CrossEntropyLoss()], 'coef': [1.0]}, optimizer, save_dir=save_dir,
              iters=10, batch_size=2, save_interval=2, log_iters=100)
    good = os.path.join(save_dir, 'iter_4')
    assert str(excinfo.value) == f"loss became nan at iter 5; training stopped, last good checkpoint: {good}"
    assert sorted(os.listdir(save_dir)) == ['iter_2', 'iter_4']
    state = paddle.load(os.path.join(good, 'model.pdparams'))
    assert all(np.isfinite(v.numpy()).all() for v in state.values())


def test_outputs_must_match_coefs(tmp_path):
    from paddle_models.datasets.synthetic import SyntheticShapes
    from paddle_models.losses.cross_entropy import CrossEntropyLoss
    import paddleseg.transforms as T
    model = NaNAfter(5, nan_from=10 ** 9)
    optimizer = paddle.optimizer.SGD(0.01, parameters=model.parameters())
    dataset = SyntheticShapes(mode='train', num_samples=4, transforms=[T.Normalize()])
    with pytest.raises(UserError) as excinfo:
        train(model, dataset, {'types': [CrossEntropyLoss()] * 2, 'coef': [1.0, 0.4]}, optimizer,
              save_dir=str(tmp_path), iters=1, batch_size=2)
    assert str(excinfo.value) == ("the model returns 1 outputs in training but loss.coef has 2 entries: "
                                  "give one coef per output")


def test_only_rank_zero_logs_and_saves(tmp_path):
    """Under paddle.distributed.launch every process runs train.py; ranks other than 0 neither log nor save."""
    import subprocess
    import sys
    from conftest import REPO
    config = tiny_config(tmp_path, iters=2, batch_size=2, train_samples=4)
    env = dict(os.environ, PADDLE_TRAINER_ID='1', PADDLE_TRAINERS_NUM='1')
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), '--config', config, '--save_dir',
                           str(tmp_path / 'rank1'), '--log_iters', '1', '--save_interval', '1', '--device', 'cpu'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert '[TRAIN]' not in proc.stdout
    assert not os.path.exists(tmp_path / 'rank1')


def test_data_parallel_under_the_launcher(tmp_path):
    """`python -m paddle.distributed.launch --nproc_per_node 2 train.py ...` (CPU processes here): two ranks train
    data-parallel; rank 0 alone logs and saves."""
    import subprocess
    import sys
    from conftest import REPO
    config = tiny_config(tmp_path, iters=4, batch_size=2, train_samples=8)
    logs = tmp_path / 'log'
    proc = subprocess.run([sys.executable, '-m', 'paddle.distributed.launch', '--log_dir', str(logs),
                           '--nproc_per_node', '2', os.path.join(REPO, 'train.py'), '--config', config,
                           '--save_dir', str(tmp_path / 'out'), '--log_iters', '2', '--save_interval', '4',
                           '--device', 'cpu'], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rank0 = (logs / 'workerlog.0').read_text()
    rank1 = (logs / 'workerlog.1').read_text()
    assert 'batch 2 x 2 device(s)' in rank0 and 'iter: 4/4' in rank0
    assert '[TRAIN]' not in rank1
    assert sorted(os.listdir(tmp_path / 'out')) == ['config.yml', 'iter_4']
