"""Bad input to the command-line tools: one line on stderr naming the culprit, exit code 2, no traceback,
nothing half-written."""
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import assert_one_line_error, run_tool, tiny_config, tiny_hardnet


def test_missing_config(tmp_path):
    proc = run_tool('train.py', '--config', tmp_path / 'nope.yml')
    assert_one_line_error(proc, f"config file not found: {tmp_path / 'nope.yml'}")


def test_unknown_model_type(tmp_path):
    path = tmp_path / 'c.yml'
    cfg = yaml.safe_load(open(tiny_config(tmp_path)))
    cfg['model']['type'] = 'HarDNett'
    path.write_text(yaml.safe_dump(cfg))
    proc = run_tool('train.py', '--config', path)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    # the closest registered name comes first
    assert proc.stderr.startswith(f"error: {path}: unknown model type 'HarDNett' at model.type (did you mean HarDNet")


def test_bad_opts_key(tmp_path):
    proc = run_tool('val.py', '--config', tiny_config(tmp_path), '--opts', 'model.depth=3', '--model_path', 'x')
    assert_one_line_error(proc, "--opts key 'model.depth': HarDNet takes no argument 'depth'")


def test_fp16_on_cpu(tmp_path):
    proc = run_tool('train.py', '--config', tiny_config(tmp_path), '--device', 'cpu', '--precision', 'fp16',
                    '--save_dir', tmp_path / 'out')
    assert_one_line_error(proc, "--precision fp16 needs a GPU (--device gpu); use --precision fp32 on CPU")
    assert not os.path.exists(tmp_path / 'out')


def test_model_path_missing_or_not_fitting(tmp_path):
    config = tiny_config(tmp_path)
    proc = run_tool('val.py', '--config', config)
    assert_one_line_error(proc, "--model_path is required: the weights to evaluate (or --inference_model DIR)")
    proc = run_tool('val.py', '--config', config, '--model_path', tmp_path / 'none.pdparams')
    assert_one_line_error(proc, f"--model_path not found: {tmp_path / 'none.pdparams'}")
    import paddle
    paddle.save(tiny_hardnet(num_classes=3).state_dict(), str(tmp_path / 'other.pdparams'))
    proc = run_tool('val.py', '--config', config, '--model_path', tmp_path / 'other.pdparams')
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert proc.stderr.startswith(f"error: {tmp_path / 'other.pdparams'} does not fit the model: 2 shape mismatches, "
                                  "e.g. ")


def make_list_dataset(root, label_value):
    (root / 'img').mkdir(parents=True)
    (root / 'ann').mkdir()
    lines = []
    for i in range(4):
        Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(root / 'img' / f'{i}.png')
        label = np.zeros((32, 32), np.uint8)
        if i == 2:
            label[3, 3] = label_value
        Image.fromarray(label).save(root / 'ann' / f'{i}.png')
        lines.append(f'img/{i}.png ann/{i}.png')
    (root / 'train.txt').write_text('\n'.join(lines) + '\n')
    (root / 'val.txt').write_text('\n'.join(lines) + '\n')


def camvid_like_config(tmp_path, root):
    cfg = yaml.safe_load(open(tiny_config(tmp_path)))
    for key, mode in (('train_dataset', 'train'), ('val_dataset', 'val')):
        cfg[key] = {'type': 'CamVid', 'dataset_root': str(root), 'mode': mode,
                    'transforms': [{'type': 'Normalize'}]}
    cfg['model']['num_classes'] = 11
    path = tmp_path / 'camvid_like.yml'
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize('workers', [0, 2])
def test_label_out_of_range_names_file_and_value(tmp_path, workers):
    root = tmp_path / 'data'
    make_list_dataset(root, 17)
    proc = run_tool('train.py', '--config', camvid_like_config(tmp_path, root), '--batch_size', '4', '--iters', '2',
                    '--num_workers', workers, '--save_dir', tmp_path / 'out', '--device', 'cpu')
    assert_one_line_error(proc, f"{root / 'ann' / '2.png'}: label value 17 is out of range for 11 classes "
                                f"(ignore_index 255)")
    assert not os.path.exists(tmp_path / 'out') or not os.listdir(tmp_path / 'out')


def test_missing_dataset_root(tmp_path):
    proc = run_tool('train.py', '--config', camvid_like_config(tmp_path, tmp_path / 'absent'))
    assert_one_line_error(proc, f"dataset_root not found: {tmp_path / 'absent'}")


def test_model_num_classes_differs_from_dataset(tmp_path):
    root = tmp_path / 'data'
    make_list_dataset(root, 1)
    proc = run_tool('train.py', '--config', camvid_like_config(tmp_path, root), '--opts', 'model.num_classes=5')
    assert_one_line_error(proc, f"{tmp_path / 'camvid_like.yml'}: model.num_classes is 5 but train_dataset (CamVid) "
                                f"has 11 classes")


def test_unreadable_image_in_predict(tmp_path):
    import paddle
    paddle.save(tiny_hardnet().state_dict(), str(tmp_path / 'm.pdparams'))
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'not an image')
    proc = run_tool('predict.py', '--config', tiny_config(tmp_path), '--model_path', tmp_path / 'm.pdparams',
                    '--image_path', bad, '--save_dir', tmp_path / 'res', '--device', 'cpu')
    assert_one_line_error(proc, f"cannot read image: {bad}")
