"""Config loading: --opts overrides, and every mistake is one UserError line naming the file, key or value."""
import pytest
import yaml

from paddle_models.core.config import Builder, load_config, parse_value
from paddle_models.errors import UserError

BASE = {
    'batch_size': 2,
    'iters': 10,
    'model': {'type': 'HarDNet', 'num_classes': 5},
    'train_dataset': {'type': 'SyntheticShapes', 'mode': 'train', 'num_samples': 4,
                      'transforms': [{'type': 'Normalize'}]},
    'val_dataset': {'type': 'SyntheticShapes', 'mode': 'val', 'num_samples': 2,
                    'transforms': [{'type': 'Normalize'}]},
    'optimizer': {'type': 'SGD', 'momentum': 0.9, 'weight_decay': 4e-5},
    'lr_scheduler': {'type': 'PolynomialDecay', 'learning_rate': 0.01, 'power': 0.9},
    'loss': {'types': [{'type': 'CrossEntropyLoss'}], 'coef': [1]},
}


def write(tmp_path, dic, name='c.yml'):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(dic))
    return str(path)


def message(excinfo):
    text = str(excinfo.value)
    assert '\n' not in text
    return text


def test_opts_override_existing_and_accepted_keys(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ['batch_size=4', 'model.pretrained=None', 'loss.coef.0=0.5',
                                              'train_dataset.transforms.0.type=Normalize',
                                              'lr_scheduler.end_lr=1e-4', 'test_config.scales=[0.75,1.0]'])
    assert cfg.dic['batch_size'] == 4
    assert cfg.dic['model']['pretrained'] is None
    assert cfg.dic['loss']['coef'] == [0.5]
    assert cfg.dic['lr_scheduler']['end_lr'] == 1e-4
    assert cfg.dic['test_config']['scales'] == [0.75, 1.0]


def test_parse_value():
    assert parse_value('3') == 3 and parse_value('[1, 2]') == [1, 2] and parse_value('abc') == 'abc'
    assert parse_value('true') is True and parse_value('null') is None


@pytest.mark.parametrize('opt, expected', [
    ('model.foo=1', "--opts key 'model.foo': HarDNet takes no argument 'foo'"),
    ('nosuch.key=1', "--opts key 'nosuch.key': 'nosuch' is not in the config"),
    ('batchsize=1', "--opts key 'batchsize' is not in the config (did you mean batch_size?)"),
    ('loss.coef.3=1', "--opts key 'loss.coef.3': '3' is not an index of a list of 1"),
    ('batch_size.x=1', "--opts key 'batch_size.x': 'batch_size' holds a value, not a section"),
    ('novalue', "--opts item 'novalue' is not key=value"),
])
def test_bad_opts(tmp_path, opt, expected):
    with pytest.raises(UserError) as excinfo:
        load_config(write(tmp_path, BASE), [opt])
    assert message(excinfo) == expected


def test_unknown_model_type_suggests_close_names(tmp_path):
    path = write(tmp_path, dict(BASE, model={'type': 'HardNet', 'num_classes': 5}))
    with pytest.raises(UserError) as excinfo:
        load_config(path)
    assert message(excinfo) == f"{path}: unknown model type 'HardNet' at model.type (did you mean HarDNet?)"


def test_unknown_loss_and_scheduler(tmp_path):
    path = write(tmp_path, dict(BASE, loss={'types': [{'type': 'CrossEntropy'}], 'coef': [1]}))
    with pytest.raises(UserError, match=r"unknown loss type 'CrossEntropy' at loss.types.0.type \(did you mean"):
        load_config(path)
    path = write(tmp_path, dict(BASE, lr_scheduler={'type': 'Polynomial', 'learning_rate': 0.1}))
    with pytest.raises(UserError, match="unknown lr_scheduler type 'Polynomial'"):
        load_config(path)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_config(str(tmp_path / 'none.yml'))
    assert message(excinfo) == f"config file not found: {tmp_path / 'none.yml'}"
    bad = tmp_path / 'bad.yml'
    bad.write_text('model: [unclosed\n')
    with pytest.raises(UserError, match=r'bad.yml: invalid YAML at line 2'):
        load_config(str(bad))
    with pytest.raises(UserError, match="no config given"):
        load_config(None)


def test_num_classes_mismatch(tmp_path):
    path = write(tmp_path, dict(BASE, model={'type': 'HarDNet', 'num_classes': 3}))
    with pytest.raises(UserError) as excinfo:
        load_config(path)
    assert message(excinfo) == (f"{path}: model.num_classes is 3 but train_dataset (SyntheticShapes) has 5 classes")


def test_num_classes_taken_from_dataset(tmp_path):
    path = write(tmp_path, dict(BASE, model={'type': 'HarDNet'}))
    assert load_config(path).dic['model']['num_classes'] == 5


def test_base_inheritance_and_builder(tmp_path):
    write(tmp_path, BASE, 'base.yml')
    child = write(tmp_path, {'_base_': 'base.yml', 'batch_size': 3}, 'child.yml')
    cfg = load_config(child, require=('model', 'train_dataset'))
    assert cfg.dic['batch_size'] == 3 and cfg.dic['iters'] == 10
    builder = Builder(cfg)
    losses = builder.losses()
    assert len(losses['types']) == 1 and losses['coef'] == [1.0]
    scheduler = builder.lr_scheduler()
    assert scheduler.decay_steps == 10


def test_constructor_error_is_user_error(tmp_path):
    path = write(tmp_path, dict(BASE, loss={'types': [{'type': 'MixedLoss', 'coef': [1]}], 'coef': [1]}))
    with pytest.raises(UserError, match=r"cannot build MixedLoss at loss.types.0: .*missing .*'losses'"):
        Builder(load_config(path)).losses()
