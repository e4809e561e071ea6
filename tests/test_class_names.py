"""Class names and palette travel with the model: the named datasets declare them, ``config_classes`` gives them
for a config, ``export.py`` writes them into deploy.yaml, and deploy/python/infer.py (PNG colours, one log line of
the classes present per image), ``InferenceModel`` and ``val.py`` (per-class lines) use them; a deploy.yaml without
them (PaddleSeg's own exports) still runs, and a bad one is a one-line error."""
import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml
from paddleseg.utils.visualize import get_color_map_list
from PIL import Image

from conftest import REPO, camvid_root, write_tiny_hardnet
from helpers import TINY_HARDNET, TINY_TRANSFORMS, hardnet_section
from paddle_models.core.export import export_model
from paddle_models.core.exported import InferenceModel
from paddle_models.core.visualize import (check_classes, color_overlay, config_classes, dataset_info, default_palette,
                                          pseudo_color_image)
from paddle_models.datasets.camvid import CamVid
from paddle_models.datasets.paddleseg_layouts import (ADE20K, Cityscapes, MiniDeepGlobeRoadExtraction, PascalVOC,
                                                      PPHumanSeg14K)
from paddle_models.datasets.synthetic import SyntheticShapes
from paddle_models.errors import UserError
from paddle_models.models.hardnet import HarDNet
from paddle_models.tools import export as export_tool
from paddle_models.tools import val as val_tool

INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')
SHAPES = list(SyntheticShapes.CLASSES)


def _voc_colour(label):
    """The Pascal VOC devkit's colour of ``label``: its bits, three at a time, fill R, G, B from the top bit."""
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= (label & 1) << shift
        g |= ((label >> 1) & 1) << shift
        b |= ((label >> 2) & 1) << shift
        label >>= 3
    return [r, g, b]


def _read_deploy(folder):
    with open(os.path.join(folder, 'deploy.yaml'), encoding='utf-8') as f:
        return yaml.safe_load(f)


def _write_deploy(folder, dic):
    with open(os.path.join(folder, 'deploy.yaml'), 'w', encoding='utf-8') as f:
        yaml.safe_dump(dic, f, sort_keys=False)


def _copy_export(src, dst, **changes):
    """A copy of the export folder ``src`` whose Deploy mapping has ``changes`` (a None value drops the key)."""
    shutil.copytree(src, dst)
    dic = _read_deploy(dst)
    for key, value in changes.items():
        if value is None:
            dic['Deploy'].pop(key, None)
        else:
            dic['Deploy'][key] = value
    _write_deploy(dst, dic)
    return dst


def _infer(deploy_dir, image, out):
    return subprocess.run([sys.executable, INFER, '--config', os.path.join(deploy_dir, 'deploy.yaml'),
                           '--image_path', str(image), '--save_dir', str(out), '--device', 'cpu',
                           '--print_detail', 'False'], capture_output=True, text=True, cwd=REPO, timeout=300)


def _shares_line(ids, names):
    """The classes of the class map ``ids`` as infer.py logs them: name and share, largest share first."""
    values, counts = np.unique(ids, return_counts=True)
    order = sorted(range(len(values)), key=lambda i: (-counts[i], values[i]))
    return ', '.join(f"{names(int(values[i]))} {100.0 * counts[i] / ids.size:.1f}%" for i in order)


def test_named_datasets_declare_names_and_colours():
    for cls in (Cityscapes, ADE20K, PascalVOC, PPHumanSeg14K, MiniDeepGlobeRoadExtraction, CamVid, SyntheticShapes):
        palette, names = dataset_info(cls.__name__)
        assert len(names) == len(set(names)) == cls.NUM_CLASSES, cls.__name__
        assert all(isinstance(name, str) and name.strip() == name and name for name in names), cls.__name__
        if cls is ADE20K:  # the benchmark publishes no colours: the default palette applies
            assert palette is None
            continue
        assert len(palette) == len(set(palette)) == cls.NUM_CLASSES, cls.__name__
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in palette), cls.__name__
    assert (Cityscapes.CLASSES[0], Cityscapes.CLASSES[13], Cityscapes.CLASSES[18]) == ('road', 'car', 'bicycle')
    assert (Cityscapes.PALETTE[0], Cityscapes.PALETTE[13]) == ([128, 64, 128], [0, 0, 142])
    assert (ADE20K.CLASSES[0], ADE20K.CLASSES[12], ADE20K.CLASSES[149]) == ('wall', 'person', 'flag')
    assert (PascalVOC.CLASSES[0], PascalVOC.CLASSES[15], PascalVOC.CLASSES[20]) == ('background', 'person',
                                                                                     'tvmonitor')
    assert PascalVOC.PALETTE == [_voc_colour(k) for k in range(21)]
    # PaddleSeg's default colour map is VOC's without the background colour
    assert [v for c in PascalVOC.PALETTE[1:] for v in c] == get_color_map_list(20)
    assert PPHumanSeg14K.CLASSES == ('background', 'person')
    assert MiniDeepGlobeRoadExtraction.CLASSES == ('background', 'road')


def test_pseudo_color_png_and_overlay_agree_with_infer_py():
    """One vocabulary, two copies (infer.py stands alone): the package's and infer.py's pseudo-color PNG and color
    overlay give the same pixels; ids past the palette stay uncoloured in the package's overlay."""
    sys.path.insert(0, os.path.dirname(INFER))
    try:
        import infer
    finally:
        sys.path.remove(os.path.dirname(INFER))
    mask = np.array([[0, 1, 2], [2, 1, 255]])
    png = pseudo_color_image(mask, default_palette(3))
    assert np.array_equal(np.asarray(png), mask) and png.getpalette()[:9] == get_color_map_list(3)
    assert infer.pseudo_color_image(mask, infer.default_palette(256)).getpalette()[:9] == png.getpalette()[:9]
    rgb = np.arange(18, dtype=np.uint8).reshape(2, 3, 3) * 13
    out = color_overlay(rgb, mask, default_palette(3), alpha=0.4)
    assert out[0, 1].tolist() == [round(0.6 * 39), round(0.6 * 52 + 0.4 * 128), round(0.6 * 65)]  # class 1: green
    assert out[1, 2].tolist() == rgb[1, 2].tolist()  # 255: no colour
    bgr = infer.color_overlay(rgb[..., ::-1], mask, infer.default_palette(256), alpha=0.4)
    assert np.array_equal(bgr[..., ::-1][mask < 3], out[mask < 3])


def test_config_classes_names_every_class_of_the_model():
    names, palette = config_classes({'model': {'num_classes': 11}, 'val_dataset': {'type': 'CamVid'}})
    assert names == list(CamVid.CLASSES)
    assert palette == [tuple(c) for c in CamVid.PALETTE]
    # the val dataset declares nothing: the train dataset's; classes past its list: class N, default colours
    dic = {'model': {'num_classes': 7}, 'val_dataset': {'type': 'Dataset'},
           'train_dataset': {'type': 'SyntheticShapes'}}
    names, palette = config_classes(dic)
    assert names == SHAPES + ['class 5', 'class 6']
    assert palette == [tuple(c) for c in SyntheticShapes.PALETTE] + default_palette(7)[5:]
    names, palette = config_classes({'model': {'num_classes': 3}, 'val_dataset': {'type': 'Cityscapes'}})
    assert names == ['road', 'sidewalk', 'building'] and palette == [tuple(c) for c in Cityscapes.PALETTE[:3]]
    names, palette = config_classes({'model': {'num_classes': 2}, 'val_dataset': {'type': 'Dataset'}})
    assert names == ['class 0', 'class 1'] and palette == default_palette(2)
    assert config_classes({'model': {'type': 'HarDNet'}}) == (None, None)
    assert config_classes({'model': {'type': 'HarDNet'}}, num_classes=2)[0] == ['class 0', 'class 1']


@pytest.mark.parametrize('names, palette, num_classes, message', [
    ('road', None, None, "class_names: expected a list of class names, got 'road'"),
    (['road', ''], None, None, "class_names[1]: expected a non-empty string, got ''"),
    (['road', 3], None, None, "class_names[1]: expected a non-empty string, got 3"),
    (None, [[0, 0, 0], [1, 2]], None, "palette[1]: expected [r, g, b] with integers 0..255, got [1, 2]"),
    (None, [[0, 0, 256]], None, "palette[0]: expected [r, g, b] with integers 0..255, got [0, 0, 256]"),
    (None, [[0, 0.5, 0]], None, "palette[0]: expected [r, g, b] with integers 0..255, got [0, 0.5, 0]"),
    (None, 'red', None, "palette: expected a list of [r, g, b] colours, got 'red'"),
    (['a', 'b'], [[0, 0, 0]], None, "palette has 1 colours but class_names has 2 names"),
    (['a', 'b'], None, 3, "class_names has 2 names but the model has 3 classes"),
    (None, [[0, 0, 0]] * 4, 5, "palette has 4 colours but the model has 5 classes"),
])
def test_check_classes_one_line_errors(names, palette, num_classes, message):
    with pytest.raises(UserError) as err:
        check_classes(names, palette, num_classes)
    assert str(err.value) == message


def test_check_classes_gives_plain_lists():
    names, palette = check_classes(('a', 'b'), np.array([[1, 2, 3], [4, 5, 6]], np.uint8), 2)
    assert names == ['a', 'b'] and palette == [[1, 2, 3], [4, 5, 6]]
    assert all(type(v) is int for c in palette for v in c)
    assert check_classes(None, None, 5) == (None, None)


@pytest.fixture(scope='module')
def shapes_export(tmp_path_factory):
    """export.py (paddle format) of a tiny HarDNet whose config's val set is SyntheticShapes, and an image."""
    root = tmp_path_factory.mktemp('class_names')
    _, weights, config = write_tiny_hardnet(root, seed=4)
    save_dir = root / 'export'
    export_tool.main(['--config', str(config), '--model_path', str(weights), '--save_dir', str(save_dir),
                      '--device', 'cpu'])
    image = root / 'image.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image)
    return {'root': root, 'export': save_dir, 'image': image, 'config': config, 'weights': weights}


@pytest.mark.paddle26
def test_export_writes_names_and_palette_into_deploy_yaml(shapes_export):
    deploy = _read_deploy(shapes_export['export'])['Deploy']
    assert deploy['class_names'] == SHAPES
    assert deploy['palette'] == SyntheticShapes.PALETTE
    text = (shapes_export['export'] / 'deploy.yaml').read_text()
    assert '  - [230, 25, 75]\n' in text  # one colour per line
    runner = InferenceModel(shapes_export['export'], threads=1)
    assert runner.class_names == SHAPES and runner.palette == SyntheticShapes.PALETTE


def test_onnx_export_writes_names_and_palette(tmp_path):
    paddle.seed(0)
    model = HarDNet(num_classes=3, **TINY_HARDNET)
    colours = [[10, 20, 30], [40, 50, 60], [70, 80, 90]]
    export_model(model, str(tmp_path / 'onnx'), transforms=TINY_TRANSFORMS, fmt='onnx',
                 class_names=('sky', 'road', 'car'), palette=colours)
    deploy = _read_deploy(tmp_path / 'onnx')['Deploy']
    assert (deploy['backend'], deploy['class_names'], deploy['palette']) == ('onnxruntime', ['sky', 'road', 'car'],
                                                                             colours)
    runner = InferenceModel(tmp_path / 'onnx', threads=1)
    assert runner.class_names == ['sky', 'road', 'car'] and runner.palette == colours


def test_export_refuses_a_palette_of_the_wrong_length(tmp_path):
    model = HarDNet(num_classes=5, **TINY_HARDNET)
    save_dir = tmp_path / 'out' / 'export'
    with pytest.raises(UserError) as err:
        export_model(model, str(save_dir), transforms=TINY_TRANSFORMS, palette=SyntheticShapes.PALETTE[:4])
    assert str(err.value) == "palette has 4 colours but the model has 5 classes"
    with pytest.raises(UserError) as err:
        export_model(model, str(save_dir), transforms=TINY_TRANSFORMS, class_names=SHAPES + ['extra'])
    assert str(err.value) == "class_names has 6 names but the model has 5 classes"
    assert not os.path.exists(tmp_path / 'out')  # nothing written


@pytest.mark.paddle26
def test_infer_colours_and_names_classes_as_deploy_yaml_says(shapes_export, tmp_path):
    result = _infer(shapes_export['export'], shapes_export['image'], tmp_path / 'out')
    assert result.returncode == 0, result.stderr
    png = Image.open(tmp_path / 'out' / 'image.png')
    flat = [v for c in SyntheticShapes.PALETTE for v in c]
    assert png.getpalette()[:15] == flat
    assert png.getpalette()[15:] == get_color_map_list(256)[15:]  # ids past the classes: PaddleSeg's colours
    ids = np.asarray(png)
    assert ids.shape == (48, 64) and len(np.unique(ids)) > 1  # pixel values stay the class ids
    line = f"infer: {shapes_export['image']}: {_shares_line(ids, lambda i: SHAPES[i])}"
    assert line in result.stderr, result.stderr


def test_deploy_yaml_without_names_still_runs(shapes_export, tmp_path):
    """PaddleSeg's exports have no class_names/palette: infer.py uses PaddleSeg's colours and 'class N', val.py
    --inference_model the config's names, InferenceModel None."""
    bare = _copy_export(shapes_export['export'], tmp_path / 'bare', class_names=None, palette=None)
    result = _infer(bare, shapes_export['image'], tmp_path / 'out')
    assert result.returncode == 0, result.stderr
    png = Image.open(tmp_path / 'out' / 'image.png')
    assert png.getpalette() == get_color_map_list(256)
    line = f"infer: {shapes_export['image']}: {_shares_line(np.asarray(png), lambda i: f'class {i}')}"
    assert line in result.stderr, result.stderr
    runner = InferenceModel(bare, threads=1)
    assert runner.class_names is None and runner.palette is None
    out = val_tool.main(['--config', str(shapes_export['config']), '--inference_model', str(bare), '--device',
                         'cpu'])
    assert out['class_names'] == SHAPES
    # names without a palette: names from deploy.yaml, PaddleSeg's colours
    named = _copy_export(bare, tmp_path / 'named', class_names=['a', 'b', 'c', 'd', 'e'])
    result = _infer(named, shapes_export['image'], tmp_path / 'named_out')
    assert result.returncode == 0, result.stderr
    png = Image.open(tmp_path / 'named_out' / 'image.png')
    assert png.getpalette() == get_color_map_list(256)
    assert f"infer: {shapes_export['image']}: {_shares_line(np.asarray(png), lambda i: 'abcde'[i])}" in \
        result.stderr


@pytest.mark.parametrize('changes, message', [
    ({'palette': [[0, 0, 0], [1, 2]]}, "Deploy.palette[1]: expected [r, g, b] with integers 0..255, got [1, 2]"),
    ({'palette': [[0, 0, 0]] * 4}, "Deploy.palette has 4 colours but Deploy.class_names has 5 names"),
    ({'class_names': 'background'}, "Deploy.class_names: expected a list of class names, got 'background'"),
])
def test_bad_class_keys_in_deploy_yaml_are_one_line_errors(shapes_export, tmp_path, changes, message):
    bad = _copy_export(shapes_export['export'], tmp_path / 'bad', **changes)
    deploy_yaml = bad / 'deploy.yaml'
    result = _infer(bad, shapes_export['image'], tmp_path / 'out')
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: --config: {deploy_yaml}: {message}"
    assert 'Traceback' not in result.stderr
    with pytest.raises(UserError) as err:
        InferenceModel(bad, threads=1)
    assert str(err.value) == f"--inference_model: {deploy_yaml}: {message}"


@pytest.fixture(scope='module')
def camvid_export(tmp_path_factory):
    """A tiny random HarDNet with a CamVid val set of 3 images (camvid_mini), its weights and export.py's
    export."""
    root = camvid_root()
    tmp = tmp_path_factory.mktemp('camvid_names')
    with open(os.path.join(root, 'val.txt'), encoding='utf-8') as f:
        (tmp / 'val3.txt').write_text(''.join(f.readlines()[:3]))
    paddle.seed(2)
    model = HarDNet(num_classes=11, **TINY_HARDNET)
    weights = tmp / 'model.pdparams'
    paddle.save(model.state_dict(), str(weights))
    config = tmp / 'camvid.yml'
    config.write_text(yaml.safe_dump({
        'model': hardnet_section(11),
        'val_dataset': {'type': 'CamVid', 'dataset_root': root, 'mode': 'val', 'val_path': str(tmp / 'val3.txt'),
                        'transforms': TINY_TRANSFORMS}}))
    save_dir = tmp / 'export'
    export_tool.main(['--config', str(config), '--model_path', str(weights), '--save_dir', str(save_dir),
                      '--device', 'cpu'])
    return {'tmp': tmp, 'config': str(config), 'weights': str(weights), 'export': save_dir}


def _class_lines(printed):
    return [line.split('[EVAL] ', 1)[1] for line in printed.splitlines() if '[EVAL] class ' in line]


def _expected_lines(result, names):
    width = max(len(n) for n in names)
    return [f"class {i:>2} {name:<{width}}  IoU {result['class_iou'][i]:.4f}  Precision "
            f"{result['class_precision'][i]:.4f}  Recall {result['class_recall'][i]:.4f}"
            for i, name in enumerate(names)]


def test_val_prints_per_class_lines_with_names(camvid_export, capsys, tmp_path):
    deploy = _read_deploy(camvid_export['export'])['Deploy']
    assert deploy['class_names'] == list(CamVid.CLASSES) and deploy['palette'] == CamVid.PALETTE
    base = ['--config', camvid_export['config'], '--device', 'cpu']
    capsys.readouterr()
    dynamic = val_tool.main(base + ['--model_path', camvid_export['weights']])
    assert dynamic['class_names'] == list(CamVid.CLASSES)
    assert _class_lines(capsys.readouterr().out) == _expected_lines(dynamic, CamVid.CLASSES)

    exported = val_tool.main(base + ['--inference_model', str(camvid_export['export'])])
    printed = capsys.readouterr().out
    assert "[EVAL] Class IoU: " in printed  # PaddleSeg's list stays
    assert exported['class_names'] == list(CamVid.CLASSES)
    assert _class_lines(printed) == _expected_lines(exported, CamVid.CLASSES)
    assert abs(exported['miou'] - dynamic['miou']) <= 1e-3

    # the export's names win over the config's
    own = [f'c{i}' for i in range(11)]
    renamed = _copy_export(camvid_export['export'], tmp_path / 'renamed', class_names=own)
    result = val_tool.main(base + ['--inference_model', str(renamed)])
    assert result['class_names'] == own
    assert _class_lines(capsys.readouterr().out) == _expected_lines(result, own)

    # names for another number of classes: a warning, and the config's names
    short = _copy_export(camvid_export['export'], tmp_path / 'short', class_names=own[:5], palette=None)
    result = val_tool.main(base + ['--inference_model', str(short)])
    assert result['class_names'] == list(CamVid.CLASSES)
    printed = capsys.readouterr().out
    assert f"[EVAL] {short / 'deploy.yaml'} names 5 classes but the val set has 11; the per-class lines use the " \
           f"config's names" in printed


def test_infer_names_camvid_classes(camvid_export, tmp_path):
    with open(os.path.join(camvid_root(), 'val.txt'), encoding='utf-8') as f:
        image = os.path.join(camvid_root(), f.readline().split()[0])
    result = _infer(camvid_export['export'], image, tmp_path / 'out')
    assert result.returncode == 0, result.stderr
    png = Image.open(tmp_path / 'out' / (os.path.splitext(os.path.basename(image))[0] + '.png'))
    assert png.getpalette()[:33] == [v for c in CamVid.PALETTE for v in c]
    assert f"infer: {image}: {_shares_line(np.asarray(png), lambda i: CamVid.CLASSES[i])}" in result.stderr
