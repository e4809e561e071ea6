"""PaddleSeg's published trained checkpoints by name (``paddle_models.pretrained``), models and segmenters built from
them, and fine-tuning from a checkpoint of another class count.

No test reaches the internet: a "published checkpoint" here is a state dict of PaddleSeg 2.8.0's own model class
(random weights, the checkpoint's class count) written at the registry's cache path in a temporary ``SEG_HOME``, or
served by an ``http.server`` on 127.0.0.1.
"""
import glob
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import paddleseg.models as ps_models
import paddleseg.models.backbones as ps_backbones
import pytest
import yaml

import paddle_models as pm
from conftest import REPO, LocalFileServer, camvid_root
from paddle_models.core.config import _read_yaml, load_config
from paddle_models.errors import UserError
from paddle_models.pretrained import CONFIG_DIR
from paddle_models.weights import check_fit, pretrained_cache_path

SHARED_CONFIGS = os.path.normpath(os.path.join(REPO, '..', 'shared', 'paddleseg-2.8.0-configs', 'configs'))
NAMES = [entry['name'] for entry in pm.list_pretrained()]
IMAGE = np.random.RandomState(0).randint(0, 256, (64, 96, 3)).astype('uint8')


def _shared_configs():
    """PaddleSeg's configs beside the repo; skipped where absent (a user's clone), a failure under CI=true."""
    if not os.path.isdir(SHARED_CONFIGS):
        camvid_root()  # same rule as camvid_mini: fails under CI=true, skips otherwise
        pytest.skip(f"PaddleSeg's configs not found in {SHARED_CONFIGS}")
    return SHARED_CONFIGS


def _published_table():
    """{config name: (single-scale mIoU as a fraction, URL)} read from PaddleSeg's model READMEs."""
    table = {}
    for readme in glob.glob(os.path.join(_shared_configs(), '*', 'README.md')):
        with open(readme, encoding='utf-8') as f:
            for line in f:
                match = re.search(r'\((https://[^)\s]+/([^/)]+)/model\.pdparams)\)', line)
                if match:
                    first_miou = re.search(r'\|\s*(\d+\.\d+)%\s*\|', line)
                    table[match.group(2)] = (round(float(first_miou.group(1)) / 100, 4), match.group(1))
    return table


def _paddleseg_config(name):
    """The merged PaddleSeg config of checkpoint ``name`` (its ``_base_`` files included)."""
    found = glob.glob(os.path.join(_shared_configs(), '*', f'{name}.yml'))
    assert len(found) == 1, found
    return _read_yaml(found[0])


def _without_pretrained(node):
    if isinstance(node, dict):
        return {k: _without_pretrained(v) for k, v in node.items() if k != 'pretrained'}
    if isinstance(node, list):
        return [_without_pretrained(v) for v in node]
    return node


def _paddleseg_model(model_cfg):
    """PaddleSeg 2.8.0's own classes (not ours, which replaced them in the manager) built from a model section,
    without its ``pretrained`` weights."""
    def build(node):
        if isinstance(node, dict):
            node = {k: build(v) for k, v in node.items() if k != 'pretrained'}
            if 'type' in node:
                kind = node.pop('type')
                return (getattr(ps_models, kind, None) or getattr(ps_backbones, kind))(**node)
            return node
        if isinstance(node, list):
            return [build(v) for v in node]
        return node
    return build(model_cfg)


def _reference(name, seed=0):
    """PaddleSeg's model of checkpoint ``name`` with random weights (``paddle.seed(seed)``), in eval mode."""
    entry = pm.get_pretrained(name)
    model_cfg = dict(_paddleseg_config(entry['name'])['model'])
    model_cfg.setdefault('num_classes', entry['num_classes'])
    paddle.seed(seed)
    model = _paddleseg_model(model_cfg)
    model.eval()
    return model


def _publish(home, name, model):
    """Write ``model``'s weights where PaddleSeg's cache keeps checkpoint ``name`` (under ``home``)."""
    path = os.path.join(str(home), 'pretrained_model', pm.get_pretrained(name)['name'], 'model.pdparams')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    paddle.save(model.state_dict(), path)
    return path


# --- the registry ------------------------------------------------------------------------------------------------

def test_registry_lists_every_published_checkpoint_with_its_miou():
    published = _published_table()
    assert len(published) == 28
    entries = {e['name']: e for e in pm.list_pretrained()}
    assert sorted(entries) == sorted(published)
    for name, (miou, url) in published.items():
        entry = entries[name]
        assert (entry['miou'], entry['url']) == (miou, url)
        assert entry['dataset'] in ('Cityscapes', 'PascalVOC') and name.split('_')[-3] in (
            'cityscapes', 'voc12aug')
        assert entry['num_classes'] == {'Cityscapes': 19, 'PascalVOC': 21}[entry['dataset']]
        assert len(entry['class_names']) == len(entry['palette']) == entry['num_classes']
        assert entry['source'].startswith("PaddleSeg 2.8.0") and entry['source'].endswith('/README.md')
        assert os.path.dirname(entry['config']) == CONFIG_DIR and os.path.isfile(entry['config'])
        assert pretrained_cache_path(url).endswith(os.path.join('pretrained_model', name, 'model.pdparams'))
    counts = {d: len(pm.list_pretrained(dataset=d)) for d in ('Cityscapes', 'PascalVOC')}
    assert counts == {'Cityscapes': 20, 'PascalVOC': 8}
    assert entries['segformer_b0_cityscapes_1024x1024_160k']['miou'] == 0.7673
    cityscapes = entries['hardnet_cityscapes_1024x1024_160k']['class_names']
    assert cityscapes[0] == 'road' and cityscapes[13] == 'car'
    assert entries['pspnet_resnet50_os8_voc12aug_512x512_40k']['class_names'][15] == 'person'


def test_aliases_and_unknown_names():
    assert pm.get_pretrained('segformer_b0_cityscapes')['name'] == 'segformer_b0_cityscapes_1024x1024_160k'
    assert len({e['alias'] for e in pm.list_pretrained()}) == 28
    with pytest.raises(UserError, match=r"^no trained checkpoint named 'segformer_b0_cityscape' \(did you mean "
                                        r"segformer_b0_cityscapes"):
        pm.get_pretrained('segformer_b0_cityscape')
    with pytest.raises(UserError, match="^no trained checkpoint named 'HarDNet'"):
        pm.build_model('HarDNet', pretrained=True)


@pytest.mark.parametrize('name', NAMES)
def test_packaged_config_builds_paddleseg_architecture(name):
    """The packaged config's model section is PaddleSeg's (less ImageNet URLs), and a state dict of PaddleSeg's own
    classes built from PaddleSeg's config fits ours strictly: every key, every shape (built lazily: no memory)."""
    dic = _paddleseg_config(name)
    ours = load_config(pm.get_pretrained(name)['config']).dic
    expected = _without_pretrained(dic['model'])
    expected.setdefault('num_classes', ours['model']['num_classes'])
    assert ours['model'] == expected
    assert ours.get('test_config') == dic.get('test_config')
    assert ours['val_dataset']['type'] == dic['val_dataset']['type']
    assert ours['val_dataset']['transforms'] == dic['val_dataset']['transforms']
    with paddle.LazyGuard():
        reference = _paddleseg_model(dict(dic['model'], num_classes=ours['model']['num_classes']))
        model = pm.build_model(name)
    shapes = {k: list(v.shape) for k, v in reference.state_dict().items()}
    check_fit(shapes, model.state_dict(), f"PaddleSeg's {name}")


# --- loading by name ---------------------------------------------------------------------------------------------

@pytest.fixture
def seg_home(tmp_path, monkeypatch):
    home = tmp_path / 'seg_home'
    monkeypatch.setenv('SEG_HOME', str(home))
    return home


@pytest.mark.paddle26
@pytest.mark.parametrize('name', ['hardnet_cityscapes', 'segformer_b0_cityscapes_1024x1024_160k'])
def test_from_pretrained_predicts_as_paddleseg_and_as_the_dynamic_model(name, seg_home):
    reference = _reference(name)
    path = _publish(seg_home, name, reference)
    seg = pm.Segmenter.from_pretrained(name)
    assert seg.class_names[0] == 'road' and len(seg.palette) >= 19
    mask = seg.predict(IMAGE)
    # the dynamic model loaded from the same file, on the same input
    model = pm.load_weights(pm.build_model(name), path)
    model.eval()
    x = paddle.to_tensor(seg.preprocess(IMAGE)[0][None])
    with paddle.no_grad():
        ours = model(x)[0]
        theirs = reference(x)[0]
    np.testing.assert_array_equal(mask, paddle.argmax(ours, axis=1).numpy()[0])
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-4)
    # and build_model(name, pretrained=True) holds the same weights
    loaded = pm.build_model(name, pretrained=True)
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key].numpy(), value.numpy())


def test_from_pretrained_downloads_once_through_the_cache(seg_home, tmp_path, monkeypatch):
    name = 'hardnet_cityscapes_1024x1024_160k'
    served = tmp_path / 'site' / name
    served.mkdir(parents=True)
    paddle.save(_reference(name).state_dict(), str(served / 'model.pdparams'))
    server = LocalFileServer(tmp_path / 'site')
    try:
        url = server.url(f'{name}/model.pdparams')
        monkeypatch.setitem(pm.pretrained._entries()[name], 'url', url)
        seg = pm.Segmenter.from_pretrained(name)
        cache = seg_home / 'pretrained_model' / name / 'model.pdparams'
        assert cache.is_file() and server.requests == [f'/{name}/model.pdparams']
        pm.Segmenter.from_pretrained('hardnet_cityscapes')  # from the cache: no second request
        assert len(server.requests) == 1
        assert seg.predict(IMAGE).shape == IMAGE.shape[:2]
    finally:
        server.stop()
    # offline: one line naming the URL and where to put the file
    monkeypatch.setitem(pm.pretrained._entries()[name], 'url', url.replace(name, 'elsewhere'))
    with pytest.raises(UserError, match=r"^cannot download pretrained weights http://127\.0\.0\.1:\d+/elsewhere/"
                                        r"model\.pdparams: .*; put the file at .*elsewhere/model\.pdparams$"):
        pm.Segmenter.from_pretrained(name)


# --- fine-tuning -------------------------------------------------------------------------------------------------

def _segformer_b0_checkpoint(seg_home, num_classes=19, variant='B0'):
    """PaddleSeg's SegFormer (``variant``) with ``num_classes``, saved as the B0 Cityscapes checkpoint."""
    paddle.seed(1)
    backbone = getattr(ps_backbones, f'MixVisionTransformer_{variant}')()
    model = ps_models.SegFormer(num_classes=num_classes, backbone=backbone, embedding_dim=256)
    return model, _publish(seg_home, 'segformer_b0_cityscapes', model)


@pytest.mark.paddle26
def test_fine_tuning_from_a_name_a_url_and_a_file_keeps_all_but_the_classifier(seg_home, tmp_path, capsys):
    reference, path = _segformer_b0_checkpoint(seg_home)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    config = os.path.join(REPO, 'configs', 'segformer_b0_camvid.yml')
    server = LocalFileServer(os.path.dirname(os.path.dirname(path)))
    try:
        url = server.url('segformer_b0_cityscapes_1024x1024_160k/model.pdparams')
        builds = [lambda source=source: pm.build_model(config, pretrained=source)
                  for source in ('segformer_b0_cityscapes_1024x1024_160k', path, url)]
        builds.append(lambda: pm.build_model('segformer_b0_cityscapes', pretrained=True, num_classes=11))
        for build in builds:
            capsys.readouterr()
            paddle.seed(2)
            model = build()
            log = capsys.readouterr().out
            assert ("SegFormer: pretrained weights " in log and "2 keys of the classifier left as initialised "
                    "(another number of classes): linear_pred.weight [19, 256, 1, 1] in the file, [11, 256, 1, 1] "
                    "in the model, linear_pred.bias [19] in the file, [11] in the model" in log), log
            loaded = model.state_dict()
            for key, value in state.items():
                if key.startswith('linear_pred.'):
                    assert list(loaded[key].shape) != list(value.shape)
                else:
                    np.testing.assert_array_equal(loaded[key].numpy(), value, err_msg=key)
    finally:
        server.stop()


def test_fine_tuning_refuses_a_mismatch_outside_the_classifier(seg_home, tmp_path):
    _, path = _segformer_b0_checkpoint(seg_home, variant='B1')
    config = os.path.join(REPO, 'configs', 'segformer_b0_camvid.yml')
    with pytest.raises(UserError, match=r"^SegFormer: pretrained weights .* does not fit the model: \d+ shape "
                                        r"mismatches, e\.g\. backbone\.\S+ has shape \[64, 3, 7, 7\] in the file but "
                                        r"\[32, 3, 7, 7\] in the model$"):
        pm.build_model(config, pretrained='segformer_b0_cityscapes')
    # --model_path stays strict: a 19-class file does not go into the 11-class model
    _, path = _segformer_b0_checkpoint(seg_home)
    with pytest.raises(UserError, match=r"linear_pred\.\S+ has shape \[19.*\] in the file but \[11.*\] in the model"):
        pm.load_weights(pm.build_model(config), path)


def test_train_fine_tunes_a_cityscapes_checkpoint_on_camvid(seg_home, tmp_path):
    """The issue's command: train.py --config configs/segformer_b0_camvid.yml --opts model.pretrained=NAME."""
    camvid = camvid_root()
    _segformer_b0_checkpoint(seg_home)
    env = dict(os.environ, SEG_HOME=str(seg_home))
    cmd = [sys.executable, 'train.py', '--config', 'configs/segformer_b0_camvid.yml', '--iters', '2',
           '--batch_size', '2', '--log_iters', '1', '--save_interval', '2', '--save_dir', str(tmp_path / 'out'),
           '--opts', 'model.pretrained=segformer_b0_cityscapes_1024x1024_160k',
           f'train_dataset.dataset_root={camvid}', f'val_dataset.dataset_root={camvid}']
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "linear_pred.weight [19, 256, 1, 1] in the file, [11, 256, 1, 1] in the model" in result.stdout
    assert (tmp_path / 'out' / 'iter_2' / 'model.pdparams').is_file()
    # a backbone mismatch is one line, exit 2, no traceback
    _segformer_b0_checkpoint(seg_home, variant='B1')
    result = subprocess.run(cmd[:-2] + ['model.pretrained=segformer_b0_cityscapes'] + cmd[-2:], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert re.fullmatch(r"error: SegFormer: pretrained weights .* does not fit the model: .* in the model", lines[-1])


def _our_models():
    """One config per model class of ours: configs/*.yml and the packaged checkpoint configs."""
    chosen = {}
    for path in sorted(glob.glob(os.path.join(REPO, 'configs', '*.yml'))) + sorted(
            glob.glob(os.path.join(CONFIG_DIR, '*.yml'))):
        chosen.setdefault(_read_yaml(path)['model']['type'], path)
    return sorted(chosen.items())


@pytest.mark.parametrize('model_type,config', _our_models())
def test_class_params_are_exactly_the_parameters_that_follow_num_classes(model_type, config):
    """Each model's CLASS_PARAMS (what fine-tuning may leave as initialised) names every parameter whose shape
    changes with num_classes, and nothing else."""
    from fnmatch import fnmatchcase

    cfg = load_config(config)
    shapes = []
    for num_classes in (3, 5):
        model_cfg = dict(cfg.dic['model'], num_classes=num_classes)
        if model_type == 'MultiScaleAttention':
            model_cfg['model'] = dict(model_cfg['model'], num_classes=num_classes)
        with paddle.LazyGuard():
            model = pm.build_model(config, **{k: v for k, v in model_cfg.items() if k != 'type'})
        shapes.append({k: list(v.shape) for k, v in model.state_dict().items()})
    changing = {k for k in shapes[0] if shapes[0][k] != shapes[1][k]}
    declared = {k for k in shapes[0] if any(fnmatchcase(k, p) for p in model.CLASS_PARAMS)}
    assert changing and changing == declared


# --- the command line --------------------------------------------------------------------------------------------

@pytest.mark.paddle26
def test_predict_and_export_take_a_checkpoint_name(seg_home, tmp_path):
    """predict.py --model NAME and export.py --model NAME: no config, no weights file; the export runs in infer.py
    with the same classes as the dynamic prediction, and deploy.yaml names them."""
    import cv2
    from PIL import Image

    name = 'hardnet_cityscapes'
    _publish(seg_home, name, _reference(name))
    image = tmp_path / 'street.png'
    cv2.imwrite(str(image), IMAGE[..., ::-1])
    env = dict(os.environ, SEG_HOME=str(seg_home))

    def run(*cmd):
        result = subprocess.run([sys.executable, *cmd], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    run(os.path.join(REPO, 'predict.py'), '--model', name, '--image_path', str(image), '--save_dir', 'pred')
    predicted = np.asarray(Image.open(tmp_path / 'pred' / 'pseudo_color_prediction' / 'street.png'))  # palette ids
    expected = pm.Segmenter.from_pretrained(name).predict(IMAGE)
    np.testing.assert_array_equal(predicted, expected)
    run(os.path.join(REPO, 'export.py'), '--model', 'hardnet_cityscapes_1024x1024_160k', '--save_dir', 'exported')
    with open(tmp_path / 'exported' / 'deploy.yaml') as f:
        deploy = yaml.safe_load(f)['Deploy']
    assert deploy['class_names'] == pm.get_pretrained(name)['class_names']
    run(os.path.join(REPO, 'deploy', 'python', 'infer.py'), '--config', 'exported/deploy.yaml', '--image_path',
        str(image), '--save_dir', 'infer')
    inferred = np.asarray(Image.open(tmp_path / 'infer' / 'street.png'))
    np.testing.assert_array_equal(inferred, expected)
    # --model excludes --config and --model_path; an unknown name is one line
    for extra, message in ((['--config', 'x.yml'], "error: --model and --config exclude each other"),
                           (['--model_path', 'w.pdparams'], "error: --model and --model_path exclude each other")):
        result = subprocess.run([sys.executable, os.path.join(REPO, 'export.py'), '--model', name, *extra],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(message)
    result = subprocess.run([sys.executable, os.path.join(REPO, 'predict.py'), '--model', 'hardnet_citiscapes',
                             '--image_path', str(image)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert re.fullmatch(r"error: no trained checkpoint named 'hardnet_citiscapes' \(did you mean hardnet_cityscapes"
                        r"(, \w+)*\?\) \(paddle_models\.list_pretrained\(\) lists them\)",
                        result.stderr.strip().splitlines()[-1])


def test_val_takes_a_checkpoint_name_and_names_the_missing_data_absolutely(seg_home, tmp_path):
    name = 'hardnet_cityscapes'
    _publish(seg_home, name, _reference(name))
    result = subprocess.run([sys.executable, os.path.join(REPO, 'val.py'), '--model', name], cwd=tmp_path,
                            env=dict(os.environ, SEG_HOME=str(seg_home)), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: Cityscapes: dataset_root not found: data/cityscapes")
    assert str(tmp_path / 'data' / 'cityscapes') in line


def test_paddleseg_config_with_a_whole_model_checkpoint_of_other_classes(seg_home, capsys):
    """PaddleSeg's MscaleOCRNet config starts from a whole-model (Mapillary, 65 classes) checkpoint in
    ``pretrained:``; it loads as fine-tuning does: all but the classifiers, which are named in the log."""
    config = os.path.join(_shared_configs(), 'mscale_ocrnet', 'mscale_ocrnet_hrnetv2_psa_cityscapes_1024x2048_150k.yml')
    url = load_config(config).dic['model']['pretrained']
    with paddle.LazyGuard():
        shapes = {k: list(v.shape) for k, v in pm.build_model(
            'mscale_ocrnet_hrnetv2_psa_cityscapes_1024x2048_150k', num_classes=65).state_dict().items()}
    rng = np.random.RandomState(0)
    state = {k: rng.standard_normal(shape).astype('float32') * 0.01 for k, shape in shapes.items()}
    path = pretrained_cache_path(url)
    os.makedirs(os.path.dirname(path))
    paddle.save(state, path)
    capsys.readouterr()
    model = pm.build_model(config)
    log = capsys.readouterr().out
    assert "4 keys of the classifier left as initialised" in log and (
        "ocr.cls_head.weight [65, 512, 1, 1] in the file, [19, 512, 1, 1] in the model") in log
    loaded = model.state_dict()
    assert list(loaded['ocr.cls_head.weight'].shape) == [19, 512, 1, 1]
    key = 'backbone.conv_layer1_1._conv.weight'
    np.testing.assert_array_equal(loaded[key].numpy(), state[key])


def test_an_image_the_val_transforms_refuse_is_one_line(tmp_path):
    """PaddleSeg's VOC configs pad to 512x512 for evaluation (Padding raises for a larger image): the segmenter of
    such a checkpoint names the image and the reason instead of a traceback."""
    seg = pm.Segmenter(pm.get_pretrained('fcn_hrnetw18_voc12aug')['config'])
    with pytest.raises(UserError, match=r"^image of shape \[600, 800, 3\]: the config's val transforms refuse this "
                                        r"image: The size of image should be less than `target_size`"):
        seg.predict(np.zeros((600, 800, 3), 'uint8'))
    assert seg.predict(np.zeros((60, 80, 3), 'uint8')).shape == (60, 80)
