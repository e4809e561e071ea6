"""YAML the user hands in is read as plain YAML: python tags are refused in one line naming the tag and the file,
aliases are bounded in number and expansion (a "billion laughs" file is refused at once), normal anchors work."""
import os
import subprocess
import sys

import pytest

from conftest import REPO
from paddle_models.core.config import load_config
from paddle_models.core.exported import InferenceModel
from paddle_models.errors import UserError
from paddle_models.safe_yaml import MAX_ALIASES, load_yaml

pytestmark = pytest.mark.paddle26

VALID = """batch_size: 2
iters: 10
model: {type: HarDNet, num_classes: 5}
"""


def refused(path):
    with pytest.raises(UserError) as excinfo:
        load_config(str(path))
    text = str(excinfo.value)
    assert '\n' not in text
    return text


@pytest.mark.parametrize('value, shown', [
    ('!!python/name:os.system', '!!python/name:os.system'),
    ('!!python/object/apply:os.system ["touch {marker}"]', '!!python/object/apply:os.system'),
    ('!!python/object/new:subprocess.Popen [["touch", "{marker}"]]', '!!python/object/new:subprocess.Popen'),
    ('!!python/module:os', '!!python/module:os'),
    ('!!python/tuple [1, 2]', '!!python/tuple'),
])
def test_python_tags_are_refused_before_anything_runs(tmp_path, value, shown):
    marker = tmp_path / 'ran'
    path = tmp_path / 'c.yml'
    path.write_text(VALID + f"export:\n  x: {value.format(marker=marker)}\n")
    assert refused(path) == (f"{path}: refusing the YAML tag {shown} at line 5 (python tags could run code); a config "
                             f"holds plain values only")
    assert not marker.exists()


def test_other_tags_and_tags_in_a_base_file(tmp_path):
    (tmp_path / 'base.yml').write_text(VALID + "optimizer: !include other.yml\n")
    child = tmp_path / 'child.yml'
    child.write_text("_base_: base.yml\nbatch_size: 4\n")
    assert refused(child) == (f"{tmp_path / 'base.yml'}: refusing the YAML tag !include at line 4; a config holds "
                              f"plain values only")


def billion_laughs(levels=9):
    """~340 bytes that expand to 9**9 strings."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    previous = 'a'
    for name in 'bcdefghijklmnop'[:levels - 1]:
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
        previous = name
    return '\n'.join(lines) + '\n'


def test_alias_bomb_is_refused_by_train_py_at_once(tmp_path):
    """The bomb in a config: train.py ends with one line (a hang would end the subprocess by the timeout)."""
    path = tmp_path / 'bomb.yml'
    path.write_text(VALID + billion_laughs())
    assert len(path.read_bytes()) < 1000
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), '--config', str(path), '--save_dir',
                           str(tmp_path / 'out')], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        f"error: {path}: the YAML expands to more than 100000 values through its aliases (*name); refusing to read "
        f"the file"]
    assert not (tmp_path / 'out').exists()


def test_alias_count_recursion_and_nesting_are_bounded(tmp_path):
    path = tmp_path / 'c.yml'
    path.write_text(VALID + "x: &x 1\ny: [" + ', '.join(['*x'] * (MAX_ALIASES + 1)) + "]\n")
    assert refused(path) == f"{path}: more than {MAX_ALIASES} YAML aliases (*name); refusing to read the file"
    path.write_text(VALID + "x: &x [1, *x]\n")
    assert refused(path) == (f"{path}: a YAML alias refers to a list or mapping that contains it (recursive alias); "
                             f"refusing to read the file")
    path.write_text(VALID + "x: " + '[' * 3000 + ']' * 3000 + "\n")
    assert refused(path) == f"{path}: lists and mappings nested too deeply; refusing to read the file"


def test_normal_anchors_aliases_and_merge_keys_still_work(tmp_path):
    path = tmp_path / 'c.yml'
    path.write_text(VALID + """optimizer: &opt {type: SGD, momentum: 0.9, weight_decay: 4.0e-5}
distill_optimizer: {<<: *opt, momentum: 0.5}
transforms: &val [{type: Normalize}]
train_dataset: {type: SyntheticShapes, mode: train, num_samples: 4, transforms: *val}
val_dataset: {type: SyntheticShapes, mode: val, num_samples: 2, transforms: *val}
""")
    dic = load_config(str(path)).dic
    assert dic['train_dataset']['transforms'] == dic['val_dataset']['transforms'] == [{'type': 'Normalize'}]
    assert dic['distill_optimizer'] == {'type': 'SGD', 'momentum': 0.5, 'weight_decay': 4.0e-5}
    assert load_yaml('a: 2024-01-02\nb: [1, 2.5, true, null, abc]\n', 'x.yml')['b'] == [1, 2.5, True, None, 'abc']


def test_deploy_yaml_is_read_the_same_way(tmp_path):
    marker = tmp_path / 'ran'
    (tmp_path / 'deploy.yaml').write_text(f"Deploy: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UserError) as excinfo:
        InferenceModel(tmp_path)
    assert str(excinfo.value) == (f"{tmp_path / 'deploy.yaml'}: refusing the YAML tag !!python/object/apply:os.system "
                                  f"at line 1 (python tags could run code); a config holds plain values only")
    assert not marker.exists()


def test_infer_py_refuses_aliases_and_tags_in_deploy_yaml(tmp_path):
    """deploy/python/infer.py (standalone, without safe_yaml) measures a deploy.yaml's size with its aliases
    expanded and refuses python tags, each in one line (aliases themselves are fine: PyYAML's dump writes them for
    repeated lists, see tests/test_class_names.py)."""
    marker = tmp_path / 'ran'
    cases = {'bomb.yaml': (billion_laughs() + 'Deploy: {model: m.json}\n',
                           'expands to more than 100000 YAML values through its aliases'),
             'tag.yaml': (f"Deploy: !!python/object/apply:os.system ['touch {marker}']\n", 'is not valid YAML')}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        proc = subprocess.run([sys.executable, os.path.join(REPO, 'deploy', 'python', 'infer.py'), '--config',
                               str(tmp_path / name), '--image_path', str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: --config: {tmp_path / name} {message}"), lines
    assert not marker.exists()


def test_infer_py_counts_yaml_values_with_aliases_expanded():
    sys.path.insert(0, os.path.join(REPO, 'deploy', 'python'))
    try:
        import infer
    finally:
        sys.path.pop(0)
    assert infer._expanded_size('a: 1\nb: [1, 2, 3]\n') == 8  # the mapping, 2 keys, 1, the list and its 3 items
    # the mapping, 3 keys, the anchored list (4), its alias (4), a list of two aliases (1 + 4 + 4)
    assert infer._expanded_size('a: &x [1, 2, 3]\nb: *x\nc: [*x, *x]\n') == 1 + 3 + 4 + 4 + 9
    assert infer._expanded_size(billion_laughs()) == infer.MAX_YAML_VALUES + 1
