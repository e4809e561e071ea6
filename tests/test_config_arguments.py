"""Every component argument of a config is checked before anything is built: against the component's signature
(its default's kind, its annotation) and the declared rules of ARGUMENT_RULES, one UserError line naming the file,
the key path, what is expected and the value."""
import glob
import os
import subprocess
import sys

import pytest
import yaml
from paddleseg.cvlibs.config import Config

from conftest import REPO
from paddle_models.core.config import Builder, _annotation_kinds, load_config
from paddle_models.errors import UserError

pytestmark = pytest.mark.paddle26

BASE = {
    'batch_size': 2,
    'iters': 10,
    'model': {'type': 'HarDNet', 'num_classes': 5},
    'train_dataset': {'type': 'SyntheticShapes', 'mode': 'train', 'num_samples': 4,
                      'transforms': [{'type': 'RandomHorizontalFlip'},
                                     {'type': 'RandomPaddingCrop', 'crop_size': [32, 32]}, {'type': 'Normalize'}]},
    'val_dataset': {'type': 'SyntheticShapes', 'mode': 'val', 'num_samples': 2,
                    'transforms': [{'type': 'Normalize'}]},
    'optimizer': {'type': 'SGD', 'momentum': 0.9, 'weight_decay': 4.0e-5},
    'lr_scheduler': {'type': 'PolynomialDecay', 'learning_rate': 0.01, 'power': 0.9},
    'loss': {'types': [{'type': 'CrossEntropyLoss'}], 'coef': [1]},
}


def config_with(tmp_path, section, key, value, index=None):
    """BASE with ``section[key] = value`` (or the ``index``-th entry of the section's list); written as YAML."""
    dic = yaml.safe_load(yaml.safe_dump(BASE))
    node = dic[section]
    if index is not None:
        kind, i = index
        node = node[kind][i]
    node[key] = value
    path = tmp_path / 'c.yml'
    path.write_text(yaml.safe_dump(dic))
    return str(path)


def refused(path, *args, **kwargs):
    with pytest.raises(UserError) as excinfo:
        load_config(path, *args, **kwargs)
    text = str(excinfo.value)
    assert '\n' not in text
    return text


@pytest.mark.parametrize('section, key, value, index, expected', [
    # optimizers
    ('optimizer', 'momentum', 'fast', None, "optimizer.momentum must be a number in [0, 1), got 'fast'"),
    ('optimizer', 'momentum', 1.0, None, "optimizer.momentum must be a number in [0, 1), got 1.0"),
    ('optimizer', 'weight_decay', -0.1, None, "optimizer.weight_decay must be a number >= 0, got -0.1"),
    ('optimizer', 'use_nesterov', 'yes', None, "optimizer.use_nesterov must be true or false, got 'yes'"),
    ('optimizer', 'grad_clip_cfg', 1.0, None, "optimizer.grad_clip_cfg must be a mapping of keys to values, got 1.0"),
    ('optimizer', 'nesterov', True, None,
     "optimizer.nesterov: Momentum takes no argument 'nesterov' (did you mean use_nesterov?)"),
    # LR schedulers
    ('lr_scheduler', 'learning_rate', -1, None, "lr_scheduler.learning_rate must be a number > 0, got -1"),
    ('lr_scheduler', 'learning_rate', 'fast', None, "lr_scheduler.learning_rate must be a number > 0, got 'fast'"),
    ('lr_scheduler', 'learning_rate', '1e-4', None,
     "lr_scheduler.learning_rate must be a number > 0, got '1e-4' (YAML 1.1 reads 1e-4 without a dot as a string: "
     "write 1.0e-4)"),
    ('lr_scheduler', 'end_lr', -0.5, None, "lr_scheduler.end_lr must be a number >= 0, got -0.5"),
    ('lr_scheduler', 'power', 0, None, "lr_scheduler.power must be a number > 0, got 0"),
    ('lr_scheduler', 'decay_steps', 2.5, None, "lr_scheduler.decay_steps must be an integer >= 1, got 2.5"),
    ('lr_scheduler', 'cycle', 'no', None, "lr_scheduler.cycle must be true or false, got 'no'"),
    ('lr_scheduler', 'warmup_iters', -3, None, "lr_scheduler.warmup_iters must be an integer >= 0, got -3"),
    ('lr_scheduler', 'learningrate', 0.5, None,
     "lr_scheduler.learningrate: PolynomialDecay takes no argument 'learningrate' (did you mean learning_rate?)"),
    # losses, the coef of the loss section included
    ('loss', 'coef', ['one'], None, "loss.coef must be a non-empty list of numbers >= 0, got ['one']"),
    ('loss', 'coef', [1, -0.4], None, "loss.coef must be a non-empty list of numbers >= 0, got [1, -0.4]"),
    ('loss', 'coef', 1, None, "loss.coef must be a non-empty list of numbers >= 0, got 1"),
    ('loss', 'ignore_index', 'none', ('types', 0), "loss.types.0.ignore_index must be an integer, got 'none'"),
    ('loss', 'avg_non_ignore', 'sure', ('types', 0),
     "loss.types.0.avg_non_ignore must be true or false, got 'sure'"),
    # transforms
    ('train_dataset', 'prob', 'high', ('transforms', 0),
     "train_dataset.transforms.0.prob must be a number in [0, 1], got 'high'"),
    ('train_dataset', 'prob', 1.5, ('transforms', 0),
     "train_dataset.transforms.0.prob must be a number in [0, 1], got 1.5"),
    ('train_dataset', 'crop_size', [0, 64], ('transforms', 1),
     "train_dataset.transforms.1.crop_size must be a list of 2 integers >= 1 ([width, height]), got [0, 64]"),
    ('val_dataset', 'mean', 'imagenet', ('transforms', 0),
     "val_dataset.transforms.0.mean must be a number or a list of numbers, got 'imagenet'"),
    # datasets
    ('train_dataset', 'num_samples', 'many', None,
     "train_dataset.num_samples must be an integer >= 1, got 'many'"),
    ('val_dataset', 'image_size', [64, 64], None, "val_dataset.image_size must be a number, got [64, 64]"),
    ('val_dataset', 'transform', [], None,
     "val_dataset.transform: SyntheticShapes takes no argument 'transform' (did you mean transforms?)"),
    # models
    ('model', 'num_classes', 2.5, None, "model.num_classes must be an integer >= 1, got 2.5"),
    ('model', 'num_classes', 0, None, "model.num_classes must be an integer >= 1, got 0"),
    ('model', 'align_corners', 'yes', None, "model.align_corners must be true or false, got 'yes'"),
    ('model', 'pretrained', 3, None, "model.pretrained must be a string or null, got 3"),
])
def test_bad_argument_in_yaml_is_one_line(tmp_path, section, key, value, index, expected):
    path = config_with(tmp_path, section, key, value, index)
    assert refused(path) == f"{path}: {expected}"


def test_nested_components_and_variants_are_checked(tmp_path):
    dic = dict(BASE, model={'type': 'FCN', 'num_classes': 5,
                            'backbone': {'type': 'HRNet_W18_Small_V1', 'align_corners': 'no'}})
    path = tmp_path / 'c.yml'
    path.write_text(yaml.safe_dump(dic))
    assert refused(str(path)) == f"{path}: model.backbone.align_corners must be true or false, got 'no'"
    dic['model']['backbone'] = {'type': 'VAN_B0', 'drop_path_rate': 'some'}
    path.write_text(yaml.safe_dump(dic))
    assert refused(str(path)) == f"{path}: model.backbone.drop_path_rate must be a number, got 'some'"


def test_opts_and_flags_are_named(tmp_path):
    path = config_with(tmp_path, 'model', 'num_classes', 5)
    assert refused(path, ['lr_scheduler.learning_rate=-1']) == (
        "--opts lr_scheduler.learning_rate=-1: lr_scheduler.learning_rate must be a number > 0, got -1")
    assert refused(path, ['optimizer.momentum=2']) == (
        "--opts optimizer.momentum=2: optimizer.momentum must be a number in [0, 1), got 2")
    assert refused(path, ['loss.coef.0=-1']) == (
        "--opts loss.coef.0=-1: loss.coef must be a non-empty list of numbers >= 0, got [-1]")
    assert refused(path, learning_rate=-1.0) == "--learning_rate must be a number > 0, got -1.0"
    assert refused(path, learning_rate=0.0) == "--learning_rate must be a number > 0, got 0.0"


def test_test_config_values_are_checked(tmp_path):
    path = tmp_path / 'c.yml'
    path.write_text(yaml.safe_dump(dict(BASE, test_config={'aug_eval': 'yes'})))
    assert refused(str(path)) == f"{path}: test_config.aug_eval must be true or false, got 'yes'"


def test_builder_checks_what_it_builds():
    """A config handed to Builder without load_config (and the API's keywords) goes through the same check."""
    cfg = Config.__new__(Config)
    cfg.dic, cfg.path = yaml.safe_load(yaml.safe_dump(BASE)), 'cfg.yml'
    cfg.dic['optimizer']['momentum'] = 'fast'
    cfg.dic['lr_scheduler']['learning_rate'] = 'high'
    cfg.dic['loss']['coef'] = ['one']
    cfg.dic['val_dataset']['transforms'] = [{'type': 'RandomHorizontalFlip', 'prob': -1}]
    builder = Builder(cfg)
    with pytest.raises(UserError, match=r"^cfg\.yml: lr_scheduler\.learning_rate must be a number > 0, got 'high'$"):
        builder.lr_scheduler()
    with pytest.raises(UserError, match=r"^cfg\.yml: loss\.coef must be a non-empty list of numbers >= 0, "
                                        r"got \['one'\]$"):
        builder.losses()
    with pytest.raises(UserError, match=r"^cfg\.yml: val_dataset\.transforms\.0\.prob must be a number in \[0, 1\], "
                                        r"got -1$"):
        builder.val_transforms()
    with pytest.raises(UserError, match=r"^cfg\.yml: optimizer\.momentum must be a number in \[0, 1\), "
                                        r"got 'fast'$"):
        builder.optimizer(None, None)


def test_good_values_pass_and_build(tmp_path):
    """Ints where floats are declared, null where the default is None, a probability of 1, a weight decay of 0
    (PaddleSeg asserts a float: the builder passes 0.0)."""
    dic = yaml.safe_load(yaml.safe_dump(BASE))
    dic['optimizer'].update(weight_decay=0, momentum=0)
    dic['lr_scheduler'].update(learning_rate=1, end_lr=0)
    dic['model']['pretrained'] = None
    dic['train_dataset']['transforms'] = [{'type': 'RandomPaddingCrop', 'crop_size': [32, 48]},
                                          {'type': 'RandomDistort', 'brightness_prob': 1}, {'type': 'Normalize'}]
    path = tmp_path / 'c.yml'
    path.write_text(yaml.safe_dump(dic))
    builder = Builder(load_config(str(path)))
    model = builder.model()
    optimizer = builder.optimizer(model, builder.lr_scheduler())
    assert optimizer._momentum == 0 and builder.dataset('train_dataset') is not None


def test_annotations_give_kinds():
    assert _annotation_kinds('float') == ({'number'}, False)
    assert _annotation_kinds('int') == ({'int'}, False)
    assert _annotation_kinds('Sequence[int] | None') == ({'list'}, True)
    assert _annotation_kinds('Optional[bool]') == ({'bool'}, True)
    assert _annotation_kinds(float) == ({'number'}, False)
    assert _annotation_kinds('float | LRScheduler') == (None, False)  # says nothing we can check


CONFIGS = sorted(glob.glob(os.path.join(REPO, 'configs', '*.yml')) +
                 glob.glob(os.path.join(REPO, 'paddle_models', 'configs', '*.yml')))


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_every_shipped_config_passes(path):
    load_config(path, require=())


def run_train(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, 'train.py')] + [str(a) for a in args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('section, key, value, index, flags, expected', [
    ('optimizer', 'momentum', 'fast', None, [], "{path}: optimizer.momentum must be a number in [0, 1), got 'fast'"),
    ('loss', 'coef', ['one'], None, [], "{path}: loss.coef must be a non-empty list of numbers >= 0, got ['one']"),
    ('train_dataset', 'prob', 'high', ('transforms', 0), [],
     "{path}: train_dataset.transforms.0.prob must be a number in [0, 1], got 'high'"),
    ('model', 'num_classes', 5, None, ['--learning_rate', '-1'], "--learning_rate must be a number > 0, got -1.0"),
])
def test_train_cli_refuses_before_anything_runs(tmp_path, section, key, value, index, flags, expected):
    path = config_with(tmp_path, section, key, value, index)
    save_dir = tmp_path / 'out'
    proc = run_train('--config', path, '--save_dir', save_dir, *flags)
    assert proc.returncode == 2, proc.stderr
    assert 'Traceback' not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [f"error: {expected.format(path=path)}"]
    assert not save_dir.exists()


@pytest.mark.parametrize('key, value, expected', [
    ('stride', [0, 0], "test_config.stride must be a list of 2 integers >= 1 ([width, height]), got [0, 0]"),
    ('crop_size', [512], "test_config.crop_size must be a list of 2 integers >= 1 ([width, height]), got [512]"),
    ('scales', [0.75, -1.0], "test_config.scales must be a number > 0 or a non-empty list of numbers > 0, "
                             "got [0.75, -1.0]"),
    ('scales', 0, "test_config.scales must be a number > 0 or a non-empty list of numbers > 0, got 0"),
    ('custom_color', [0, 0, 300], "test_config.custom_color must be a list of integers in [0, 255], three per "
                                  "class, got [0, 0, 300]"),
])
def test_test_config_values_are_range_checked(tmp_path, key, value, expected):
    dic = yaml.safe_load(yaml.safe_dump(BASE))
    dic['test_config'] = {'is_slide': True, 'crop_size': [32, 32], 'stride': [16, 16], key: value}
    path = tmp_path / 'c.yml'
    path.write_text(yaml.safe_dump(dic))
    assert refused(str(path)) == f"{path}: {expected}"
    dic['test_config'][key] = {'stride': [8, 8], 'crop_size': [32, 24], 'scales': [0.75, 1.0],
                               'custom_color': [0, 0, 255]}[key]
    path.write_text(yaml.safe_dump(dic))
    assert load_config(str(path)).dic['test_config'][key] == dic['test_config'][key]


@pytest.mark.parametrize('name, fixed, where', [
    ('VAN_B0', 'depths', 'VAN'),
    ('MSCAN_T', 'depths', 'MSCAN'),
    ('MixVisionTransformer_B0', 'embed_dims', 'MixVisionTransformer'),
    ('HRNet_W18_Small_V1', 'stage2_num_channels', 'HRNet'),
    ('MaxViT_T', 'stem_width', 'MaxViT'),
    ('ResNet18', 'layers', 'ResNet'),
    ('ResNet50_vd', 'layers', 'ResNet_vd'),
    ('ResNeXt50_32x4d', 'cardinality', 'ResNeXt'),
    ('SegFormer_B0', 'depths', 'SegFormer with a MixVisionTransformer backbone'),
    ('SegNeXt_T', 'embed_dims', 'SegNeXt with a MSCAN backbone'),
])
def test_every_size_variant_refuses_unknown_and_fixed_arguments_in_one_line(tmp_path, name, fixed, where):
    """One mechanism (registry.register_variant) for every variant family: an argument the variant does not take,
    or one its size fixes, is the same one-line UserError called directly, built by Builder and read from YAML."""
    import inspect
    import types

    from paddleseg.cvlibs import manager

    is_model = name in manager.MODELS.components_dict
    factory = (manager.MODELS if is_model else manager.BACKBONES)[name]
    value = inspect.signature(factory).parameters[fixed].default  # of the kind the config check expects
    unknown = f"{name} takes no argument 'colour'"
    clash = f"{name}: {fixed} is fixed by the variant; use {where} to set it"
    base = {'num_classes': 5} if is_model else {}
    for kwargs, expected in (({'colour': 1}, unknown), ({fixed: value}, clash)):
        with pytest.raises(UserError) as err:
            factory(**base, **kwargs)
        assert str(err.value) == expected
    place = 'model' if is_model else 'model.backbone'
    builder = Builder(types.SimpleNamespace(dic={}, path='v.yml'))
    for kwargs, expected in (({'colour': 1}, f"v.yml: {place}.colour: {unknown}"), ({fixed: value}, clash)):
        with pytest.raises(UserError) as err:
            builder.build_component({'type': name, **base, **kwargs}, place)
        assert str(err.value) == expected
    path = tmp_path / 'c.yml'
    for kwargs in ({'colour': 1}, {fixed: value}):
        node = {'type': name, **base, **kwargs}
        model = node if is_model else {'type': 'FCN', 'num_classes': 5, 'backbone': node}
        path.write_text(yaml.safe_dump(dict(BASE, model=model)))
        if 'colour' in kwargs:
            assert refused(str(path)) == f"{path}: {place}.colour: {unknown}"
        else:
            with pytest.raises(UserError) as err:
                Builder(load_config(str(path))).model()
            assert str(err.value) == clash
