"""PaddleSeg 2.8.0's tool flags that ours take too: train.py --use_ema, --profiler_options, --repeats, --data_format;
val.py --auc_roc (and test_config.auc_roc); predict.py --custom_color; deploy/python/infer.py --model_name."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
import yaml
from PIL import Image

import predict as predict_tool
import train as train_tool
import val as val_tool
from conftest import REPO
from paddle_models.core.config import Builder, load_config
from paddle_models.core.metrics import auc_roc, binary_auc
from paddle_models.core.profiler import parse_profiler_options
from paddle_models.core.train import RepeatedDataset
from paddle_models.errors import UserError
from helpers import assert_one_line_error, load_params, run_tool, tiny_config, tiny_hardnet

SMALL = dict(iters=3, batch_size=2, train_samples=4, val_samples=4, random_aug=False, image_size=32)


def save_random_model(path, num_classes=5, seed=0):
    model = tiny_hardnet(num_classes, seed=seed)
    paddle.save(model.state_dict(), str(path))
    return {k: v.numpy() for k, v in model.state_dict().items()}


def edit_config(path, edit):
    cfg = yaml.safe_load(open(path))
    edit(cfg)
    with open(path, 'w') as f:
        yaml.safe_dump(cfg, f)
    return path


# --use_ema ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def ema_run(tmp_path_factory):
    """Three iterations with --use_ema from known initial weights, a checkpoint after each."""
    tmp = tmp_path_factory.mktemp('ema')
    init = save_random_model(tmp / 'init.pdparams', seed=5)
    config = edit_config(tiny_config(tmp, **SMALL),
                         lambda c: c['model'].update(pretrained=str(tmp / 'init.pdparams')))
    save_dir = tmp / 'out'
    result = train_tool.main(['--config', config, '--save_dir', str(save_dir), '--use_ema', '--do_eval',
                              '--save_interval', '1', '--keep_checkpoint_max', '10', '--log_iters', '1',
                              '--seed', '2', '--device', 'cpu'])
    return init, config, save_dir, result


@pytest.mark.paddle26
def test_ema_is_the_decayed_average_of_the_weights(ema_run):
    init, _, save_dir, _ = ema_run
    expected = {k: v.astype(np.float64) for k, v in init.items()}
    for step in (1, 2, 3):
        weights = load_params(str(save_dir / f'iter_{step}' / 'model.pdparams'))
        decay = min(1 - 1 / (step + 1), 0.999)  # PaddleSeg's schedule: 1/2, 2/3, 3/4, ... up to 0.999
        expected = {k: decay * expected[k] + (1 - decay) * weights[k] for k in expected}
        ema = load_params(str(save_dir / f'iter_{step}' / 'ema_model.pdparams'))
        assert set(ema) == set(weights)
        for key in ema:  # parameters and BatchNorm statistics alike
            np.testing.assert_allclose(ema[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=f"{key} @ {step}")
    moved = [k for k in weights if np.abs(ema[k] - weights[k]).max() > 1e-4]
    assert len(moved) > len(weights) // 2  # the average is not the weights themselves


def test_ema_best_model_is_evaluated_and_saved(ema_run):
    _, config, save_dir, result = ema_run
    assert sorted(os.listdir(save_dir / 'ema_best_model')) == ['ema_model.pdparams', 'score.txt']
    score = yaml.safe_load(open(save_dir / 'ema_best_model' / 'score.txt'))
    assert score['iter'] == result['best_ema_iter'] and score['miou'] == pytest.approx(result['best_ema_miou'],
                                                                                      abs=1e-6)
    saved = load_params(str(save_dir / 'ema_best_model' / 'ema_model.pdparams'))
    at_iter = load_params(str(save_dir / f"iter_{score['iter']}" / 'ema_model.pdparams'))
    for key in saved:
        np.testing.assert_array_equal(saved[key], at_iter[key])
    again = val_tool.main(['--config', config, '--model_path', str(save_dir / 'ema_best_model' / 'ema_model.pdparams'),
                           '--device', 'cpu'])
    assert again['miou'] == pytest.approx(score['miou'], abs=1e-6)


def test_ema_resumes_from_the_checkpoint(ema_run, tmp_path):
    init, config, save_dir, _ = ema_run
    resumed = tmp_path / 'resumed'
    train_tool.main(['--config', config, '--save_dir', str(resumed), '--use_ema', '--resume_model',
                     str(save_dir / 'iter_2'), '--save_interval', '1', '--seed', '2', '--device', 'cpu'])
    full = load_params(str(save_dir / 'iter_3' / 'ema_model.pdparams'))
    part = load_params(str(resumed / 'iter_3' / 'ema_model.pdparams'))
    w2 = load_params(str(save_dir / 'iter_2' / 'model.pdparams'))
    w3 = load_params(str(resumed / 'iter_3' / 'model.pdparams'))
    restarted = {k: 0.75 * w2[k] + 0.25 * w3[k] for k in w2}  # what an average restarted at the resume would be
    assert max(np.abs(restarted[k] - full[k]).max() for k in full) > 1e-3
    for key in full:
        np.testing.assert_allclose(part[key], full[key], rtol=1e-5, atol=1e-6, err_msg=key)


# --repeats ---------------------------------------------------------------------------------------------------------

def test_repeats_multiplies_the_samples_per_epoch(tmp_path, capsys):
    config = tiny_config(tmp_path, iters=13, batch_size=2, train_samples=8, random_aug=False, image_size=32)
    result = train_tool.main(['--config', config, '--save_dir', str(tmp_path / 'out'), '--repeats', '3',
                              '--log_iters', '1', '--save_interval', '100', '--device', 'cpu'])
    out = capsys.readouterr().out
    assert 'HarDNet, 24 training samples (3 x 8)' in out
    assert result['iters_per_epoch'] == 12  # 24 samples / batch 2; without --repeats 4
    assert 'epoch: 1, iter: 12/13,' in out and 'epoch: 2, iter: 13/13,' in out


def test_repeated_dataset_indexes_the_samples_cyclically(tmp_path):
    cfg = load_config(tiny_config(tmp_path, train_samples=3, random_aug=False, image_size=32))
    base = Builder(cfg).dataset('train_dataset')
    repeated = RepeatedDataset(base, 3)
    assert len(repeated) == 9 and repeated.num_classes == 5 and repeated.ignore_index == 255
    for index in range(9):
        np.testing.assert_array_equal(repeated[index]['img'], base[index % 3]['img'])
    with pytest.raises(IndexError):
        repeated[9]


def test_repeats_must_be_positive(tmp_path):
    proc = run_tool('train.py', '--config', tiny_config(tmp_path), '--repeats', '0', '--save_dir', tmp_path / 'o')
    assert_one_line_error(proc, "--repeats must be a positive integer, got 0")
    assert not os.path.exists(tmp_path / 'o')


# --profiler_options -----------------------------------------------------------------------------------------------

def profile_steps(path):
    trace = json.load(open(path))
    names = {e['name'].split('[')[0] for e in trace['traceEvents'] if e.get('name', '').startswith('ProfileStep#')}
    return sorted(int(n.split('#')[1]) for n in names)


@pytest.mark.paddle26
def test_profiler_records_the_batch_range_and_stops(tmp_path, capsys):
    config = tiny_config(tmp_path, **dict(SMALL, iters=6))
    profile = tmp_path / 'prof' / 'train.json'
    result = train_tool.main(['--config', config, '--save_dir', str(tmp_path / 'out'), '--save_interval', '1',
                              '--log_iters', '1', '--device', 'cpu', '--profiler_options',
                              f'batch_range=[1, 3]; state=CPU; sorted_key=ave; profile_path={profile}'])
    # as PaddleSeg: the profiler starts after the 2nd iteration and stops after the 4th (calls 1 and 3, from 0),
    # so the trace holds iterations 3 and 4 (ProfileStep#2, #3); then training ends (exit_on_finished)
    assert profile_steps(profile) == [2, 3]
    assert result['last_iter'] == 4
    assert sorted(os.listdir(tmp_path / 'out')) == ['config.yml', 'iter_1', 'iter_2', 'iter_3']
    out = capsys.readouterr().out
    assert f'Profiler: trace of iterations 3..4 written to {profile}' in out
    assert 'Operator Summary' in out  # paddle.profiler's summary tables


def test_profiler_can_let_training_go_on(tmp_path):
    config = tiny_config(tmp_path, **dict(SMALL, iters=5))
    profile = tmp_path / 'p.json'
    result = train_tool.main(['--config', config, '--save_dir', str(tmp_path / 'out'), '--save_interval', '5',
                              '--device', 'cpu', '--profiler_options',
                              f'batch_range=[0,2];exit_on_finished=false;profile_path={profile}'])
    assert profile_steps(profile) == [1, 2]
    assert result['last_iter'] == 5 and sorted(os.listdir(tmp_path / 'out')) == ['config.yml', 'iter_5']


def test_profiler_option_defaults_and_errors():
    assert parse_profiler_options('') == {'batch_range': (10, 20), 'state': 'All', 'sorted_key': 'total',
                                          'tracer_option': 'Default', 'profile_path': '/tmp/profile',
                                          'exit_on_finished': True}
    assert parse_profiler_options(' batch_range = [5, 7] ; tracer_option=OpDetail;exit_on_finished=0 ;')[
        'batch_range'] == (5, 7)
    bad = {
        'batch_range=[3,3]': "--profiler_options: batch_range must be [start, end] with integers 0 <= start < end, "
                             "got '[3,3]'",
        'batch_range=[1]': "--profiler_options: batch_range must be [start, end] with integers 0 <= start < end, "
                           "got '[1]'",
        'state=cpu': "--profiler_options: state must be one of CPU, GPU, All, got 'cpu'",
        'sorted_key=total;tracer=Default': "--profiler_options: unknown key 'tracer' (keys: batch_range, state, "
                                           "sorted_key, tracer_option, profile_path, exit_on_finished)",
        'profile_path': "--profiler_options: 'profile_path' is not key=value",
        'exit_on_finished=maybe': "--profiler_options: exit_on_finished must be true or false, got 'maybe'",
    }
    for text, message in bad.items():
        with pytest.raises(UserError) as excinfo:
            parse_profiler_options(text)
        assert str(excinfo.value) == message


def test_bad_profiler_options_are_one_line(tmp_path):
    proc = run_tool('train.py', '--config', tiny_config(tmp_path), '--profiler_options', 'batch_range=[20,10]',
                    '--save_dir', tmp_path / 'o')
    assert_one_line_error(proc, "--profiler_options: batch_range must be [start, end] with integers "
                                "0 <= start < end, got '[20,10]'")
    assert not os.path.exists(tmp_path / 'o')


# --data_format -----------------------------------------------------------------------------------------------------

def test_data_format_nhwc_is_a_one_line_error(tmp_path):
    proc = run_tool('train.py', '--config', tiny_config(tmp_path), '--data_format', 'NHWC',
                    '--save_dir', tmp_path / 'o')
    assert_one_line_error(proc, "--data_format NHWC is not supported: our models run NCHW (use --data_format NCHW)")
    assert not os.path.exists(tmp_path / 'o')


def test_data_format_in_process(tmp_path):
    config = tiny_config(tmp_path, **SMALL)
    save_random_model(tmp_path / 'm.pdparams')
    with pytest.raises(UserError) as excinfo:
        val_tool.main(['--config', config, '--model_path', str(tmp_path / 'm.pdparams'), '--data_format', 'NHWC'])
    assert str(excinfo.value) == "--data_format NHWC is not supported: our models run NCHW (use --data_format NCHW)"
    with pytest.raises(UserError) as excinfo:
        train_tool.main(['--config', config, '--data_format', 'nchw'])
    assert str(excinfo.value) == "--data_format must be NCHW, got 'nchw'"
    result = val_tool.main(['--config', config, '--model_path', str(tmp_path / 'm.pdparams'), '--data_format', 'NCHW',
                            '--device', 'cpu'])
    assert 0 <= result['miou'] <= 1


# --auc_roc ---------------------------------------------------------------------------------------------------------

def reference_probabilities(config, model_path):
    """Softmax probabilities and labels of every labelled val pixel, computed here from the model directly."""
    cfg = load_config(config)
    builder = Builder(cfg)
    dataset = builder.dataset('val_dataset')
    model = builder.model()
    model.set_state_dict(paddle.load(str(model_path)))
    model.eval()
    probs, labels = [], []
    with paddle.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            logit = model(paddle.to_tensor(np.asarray(sample['img'], 'float32')[None]))[0]
            prob = F.softmax(logit, axis=1).numpy()[0]
            label = np.asarray(sample['label']).reshape(-1)
            keep = label != 255
            probs.append(prob.reshape(prob.shape[0], -1).T[keep])
            labels.append(label[keep])
    return np.concatenate(probs), np.concatenate(labels)


def two_class_config(tmp_path):
    """A 2-class list dataset: bright squares (class 1) on dark noise, a few pixels labelled 255 (ignored)."""
    root = tmp_path / 'data'
    (root / 'img').mkdir(parents=True)
    (root / 'ann').mkdir()
    rng = np.random.RandomState(0)
    lines = []
    for i in range(3):
        label = np.zeros((32, 32), np.uint8)
        label[4 + 3 * i:20 + 2 * i, 6:22 - i] = 1
        label[0, :3] = 255
        image = (rng.rand(32, 32, 3) * 90 + label[..., None] * 120).astype(np.uint8)
        Image.fromarray(image).save(root / 'img' / f'{i}.png')
        Image.fromarray(label).save(root / 'ann' / f'{i}.png')
        lines.append(f'img/{i}.png ann/{i}.png')
    (root / 'list.txt').write_text('\n'.join(lines) + '\n')
    cfg = yaml.safe_load(open(tiny_config(tmp_path, **SMALL)))
    for key, mode in (('train_dataset', 'train'), ('val_dataset', 'val')):
        cfg[key] = {'type': 'Dataset', 'dataset_root': str(root), 'mode': mode, 'num_classes': 2,
                    f'{mode}_path': 'list.txt', 'transforms': [{'type': 'Normalize'}]}
    cfg['model']['num_classes'] = 2
    path = tmp_path / 'two.yml'
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_auc_roc_two_classes_matches_sklearn(tmp_path, capsys):
    from sklearn.metrics import roc_auc_score
    config = two_class_config(tmp_path)
    save_random_model(tmp_path / 'm.pdparams', num_classes=2, seed=3)
    result = val_tool.main(['--config', config, '--model_path', str(tmp_path / 'm.pdparams'), '--auc_roc',
                            '--device', 'cpu'])
    probs, labels = reference_probabilities(config, tmp_path / 'm.pdparams')
    assert len(labels) == 3 * (32 * 32 - 3)  # ignored pixels left out
    expected = roc_auc_score(labels, probs[:, 1])
    assert 0.01 < abs(expected - 0.5)  # a model whose AUC is not trivially one half
    assert result['auc_roc'] == pytest.approx(expected, abs=1e-9)
    assert f"Auc_roc: {expected:.4f}" in capsys.readouterr().out
    off = val_tool.main(['--config', config, '--model_path', str(tmp_path / 'm.pdparams'), '--auc_roc', 'False',
                         '--device', 'cpu'])
    assert 'auc_roc' not in off


def test_auc_roc_many_classes_from_test_config(tmp_path):
    from sklearn.metrics import roc_auc_score
    config = tiny_config(tmp_path, **dict(SMALL, val_samples=6))
    save_random_model(tmp_path / 'm.pdparams', seed=4)
    result = val_tool.main(['--config', config, '--model_path', str(tmp_path / 'm.pdparams'), '--opts',
                            'test_config.auc_roc=True', '--device', 'cpu'])
    probs, labels = reference_probabilities(config, tmp_path / 'm.pdparams')
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3, 4]
    # PaddleSeg: roc_auc_score(label, probs, multi_class='ovr'), the unweighted one-vs-rest mean
    assert result['auc_roc'] == pytest.approx(roc_auc_score(labels, probs, multi_class='ovr'), abs=1e-9)
    with pytest.raises(UserError) as excinfo:
        val_tool.main(['--config', config, '--model_path', str(tmp_path / 'm.pdparams'), '--opts',
                       'test_config.auc_roc=maybe'])
    assert str(excinfo.value) == "--opts test_config.auc_roc=maybe: test_config.auc_roc must be true or false, got " \
                                 "'maybe'"


def test_auc_with_ties_and_absent_classes():
    from sklearn.metrics import roc_auc_score
    rng = np.random.RandomState(1)
    labels = rng.randint(0, 2, 5000)
    scores = np.round(rng.rand(5000) * 0.6 + labels * 0.3, 1)  # few distinct values: many ties
    assert binary_auc(scores, labels == 1) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(binary_auc(scores, np.ones(5000, bool)))
    probs = rng.dirichlet(np.ones(4), 3000).astype('float32')
    label = rng.randint(0, 3, 3000)  # class 3 never occurs; 255 is ignored
    label[:10] = 255
    value, absent = auc_roc(probs, label, 4)
    keep = label != 255
    expected = np.mean([roc_auc_score(label[keep] == c, probs[keep, c]) for c in range(3)])
    assert absent == [3] and value == pytest.approx(expected, abs=1e-12)


# --custom_color ----------------------------------------------------------------------------------------------------

def test_custom_color_replaces_the_palette(tmp_path):
    config = tiny_config(tmp_path, **SMALL)
    save_random_model(tmp_path / 'm.pdparams')
    image = tmp_path / 'img.png'
    Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype(np.uint8)).save(image)
    custom = [10, 20, 30, 40, 50, 60, 70, 80, 90]
    written = predict_tool.main(['--config', config, '--model_path', str(tmp_path / 'm.pdparams'), '--image_path',
                                 str(image), '--save_dir', str(tmp_path / 'res'), '--device', 'cpu',
                                 '--custom_color'] + [str(v) for v in custom])
    palette = Image.open(written[0]).getpalette()
    from paddle_models.core.config import load_config
    from paddle_models.core.visualize import config_classes
    dataset_palette = [c for colour in config_classes(load_config(config).dic)[1] for c in colour]
    assert palette[:15] == custom + dataset_palette[9:15]  # the first three colours replaced, the dataset's others kept
    # from test_config as well
    edit_config(config, lambda c: c.setdefault('test_config', {}).update(custom_color=[1, 2, 3]))
    written = predict_tool.main(['--config', config, '--model_path', str(tmp_path / 'm.pdparams'), '--image_path',
                                 str(image), '--save_dir', str(tmp_path / 'res2'), '--device', 'cpu'])
    assert Image.open(written[0]).getpalette()[:6] == [1, 2, 3] + dataset_palette[3:6]
    with pytest.raises(UserError) as excinfo:
        predict_tool.main(['--config', config, '--model_path', str(tmp_path / 'm.pdparams'), '--image_path',
                           str(image), '--save_dir', str(tmp_path / 'res3'), '--custom_color', '1', '2', '300'])
    assert str(excinfo.value) == ("--custom_color must be flat R G B values (a multiple of 3 integers in 0..255, "
                                  "at most 256 colours), got [1, 2, 300]")
    assert not os.path.exists(tmp_path / 'res3')


# infer.py --model_name ---------------------------------------------------------------------------------------------

def test_infer_benchmark_shows_the_model_name(tmp_path):
    from paddle_models.core.export import export_model
    model = tiny_hardnet(seed=0)
    info = export_model(model, str(tmp_path / 'inference_model'),
                        transforms=[{'type': 'Normalize', 'mean': [0.5] * 3, 'std': [0.5] * 3}])
    image = tmp_path / 'img.png'
    Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype(np.uint8)).save(image)
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'deploy', 'python', 'infer.py'), '--config',
                           info['deploy_yaml'], '--image_path', str(image), '--save_dir', str(tmp_path / 'out'),
                           '--device', 'cpu', '--print_detail', 'False', '--benchmark', 'True', '--model_name',
                           'tiny_hardnet'], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    start = [i for i, line in enumerate(lines) if line.startswith('benchmark:')][0]
    assert lines[start + 1] == '  model      : tiny_hardnet'
    assert os.path.isfile(tmp_path / 'out' / 'img.png')
