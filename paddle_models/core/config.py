"""Loading PaddleSeg-format YAML configs, applying ``--opts`` overrides and building components from them.

``_base_`` inheritance merges files as PaddleSeg does (``paddleseg.cvlibs.config.merge_config_dicts``); the checks
are ours so that every mistake ends as one ``UserError`` line naming the file, key or value: an empty file, a value
of the wrong kind in ``--opts``, a batch size or iteration count that is not a positive integer, a component argument
of the wrong kind or range (``check_arguments``), ... Files are read by ``paddle_models.safe_yaml.load_yaml``.
"""
import ast
import copy
import inspect
import os
import re

import paddle
import yaml
from paddleseg.cvlibs import manager
from paddleseg.cvlibs.config import Config, merge_config_dicts

from paddle_models.errors import UserError
from paddle_models.safe_yaml import load_yaml
from paddle_models.utils.validate import _bounds, _inside, did_you_mean

# Top-level keys PaddleSeg's tools understand; an --opts key may add one of these even where the YAML lacks it.
TOP_LEVEL_KEYS = ('batch_size', 'iters', 'train_dataset', 'val_dataset', 'optimizer', 'lr_scheduler', 'loss',
                  'distill_loss', 'model', 'test_config', 'export', 'to_static_training')
TEST_CONFIG_KEYS = ('aug_eval', 'scales', 'flip_horizontal', 'flip_vertical', 'is_slide', 'crop_size', 'stride',
                    'auc_roc', 'custom_color')
LR_SCHEDULER_EXTRA_KEYS = ('warmup_iters', 'warmup_start_lr')

# Expected kinds of values at fixed places, where the config's own value would say too little (a YAML ``4`` does
# not tell an int from a float) or is absent. Kinds: 'int', 'number' (int or float), 'bool', 'str', 'list',
# 'numbers' (a list of numbers) and 'mapping'.
_SECTION = frozenset({'mapping'})
KNOWN_KINDS = {
    ('batch_size',): frozenset({'int'}),
    ('iters',): frozenset({'int'}),
    ('to_static_training',): frozenset({'bool'}),
    **{(key,): _SECTION for key in ('train_dataset', 'val_dataset', 'optimizer', 'lr_scheduler', 'loss',
                                     'distill_loss', 'model', 'test_config', 'export')},
    **{('test_config', key): frozenset({'bool'}) for key in ('aug_eval', 'flip_horizontal', 'flip_vertical',
                                                            'is_slide', 'auc_roc')},
    ('test_config', 'scales'): frozenset({'number', 'numbers'}),
    ('test_config', 'crop_size'): frozenset({'numbers'}),
    ('test_config', 'stride'): frozenset({'numbers'}),
    ('test_config', 'custom_color'): frozenset({'numbers'}),
    ('lr_scheduler', 'warmup_iters'): frozenset({'int'}),
    ('lr_scheduler', 'warmup_start_lr'): frozenset({'number'}),
}
# Positive integers the training loop needs, and how to say so.
POSITIVE_INT_KEYS = ('batch_size', 'iters')
_KIND_WORDS = {'int': 'an int', 'number': 'a number', 'bool': 'true or false', 'str': 'a string',
               'list': 'a list', 'numbers': 'a list of numbers', 'mapping': 'a mapping of keys to values'}

# Which manager a component's `type` is looked up in, by the key that holds the component.
_MANAGER_BY_KEY = {
    'model': manager.MODELS,
    'backbone': manager.BACKBONES,
    'train_dataset': manager.DATASETS,
    'val_dataset': manager.DATASETS,
    'transforms': manager.TRANSFORMS,
    'types': manager.LOSSES,
    'losses': manager.LOSSES,
    'optimizer': manager.OPTIMIZERS,
}
_KIND = {'models': 'model', 'backbones': 'backbone', 'datasets': 'dataset', 'transforms': 'transform',
         'losses': 'loss', 'optimizers': 'optimizer'}
_ALL_MANAGERS = (manager.MODELS, manager.BACKBONES, manager.DATASETS, manager.TRANSFORMS, manager.LOSSES,
                 manager.OPTIMIZERS)


def parse_value(text):
    """Turn an ``--opts`` value into a Python value: numbers, lists, bools and None by literal syntax, else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if text in ('true', 'True'):
            return True
        if text in ('false', 'False'):
            return False
        if text in ('null', 'None', '~'):
            return None
        return text


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kinds_of(value):
    """The kinds (see ``KNOWN_KINDS``) an existing value or a signature default stands for; empty for None. A list
    of numbers stands for a number too (``crop_size: [512, 512]`` or ``crop_size: 512``)."""
    if isinstance(value, bool):
        return {'bool'}
    if _is_number(value):
        return {'number'}
    if isinstance(value, str):
        return {'str'}
    if isinstance(value, (list, tuple)):  # PaddleSeg's "size or (w, h)" arguments also take a single number
        return {'numbers', 'number'} if value and all(_is_number(v) for v in value) else {'list'}
    if isinstance(value, dict):
        return {'mapping'}
    return set()


def _fits(value, kind):
    if kind == 'int':
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == 'number':
        return _is_number(value)
    if kind == 'bool':
        return isinstance(value, bool)
    if kind == 'str':
        return isinstance(value, str)
    if kind == 'list':
        return isinstance(value, (list, tuple))
    if kind == 'numbers':
        return isinstance(value, (list, tuple)) and all(_is_number(v) for v in value)
    return isinstance(value, dict)


def _signature_default(node, leaf):
    """The default of argument ``leaf`` of the component (or paddle lr scheduler) that ``node`` configures:
    (True, default) where there is one, else (False, None)."""
    if not isinstance(node, dict) or 'type' not in node:
        return False, None
    cls = _component_class(node) or getattr(paddle.optimizer.lr, str(node.get('type')), None)
    try:
        param = inspect.signature(cls).parameters.get(leaf) if cls is not None else None
    except (TypeError, ValueError):
        return False, None
    if param is None or param.default is inspect.Parameter.empty:
        return False, None
    return True, param.default


def _typed_value(item, key, parts, text, value, node, leaf):
    """``value`` (parsed from ``text``) checked against what the key holds: the kinds of ``KNOWN_KINDS``, else
    those of the value already there and of the component argument's default. A key for a string takes the text
    as written (``dataset_root=2024`` stays '2024'); None passes where a string, list, mapping or None could be
    there.

    Args:
        item (str): The ``--opts`` item as given (``iters=abc``), for the message.
        key (str): Its dotted key; ``parts`` the key split at dots (list indices as digits).
        text (str): The value as written; ``value`` the same parsed by ``parse_value``.
        node (dict|list): The section or list that holds the key; ``leaf`` the key's last part.

    Returns:
        The value to store.

    Raises:
        UserError: "--opts ITEM: KEY must be an int, got 'abc'" (the kinds the key takes, joined by "or").
    """
    generic = tuple('#' if p.isdigit() else p for p in parts)
    has_old = isinstance(node, list) or leaf in node
    old = node[int(leaf)] if isinstance(node, list) else node.get(leaf)
    has_default, default = (False, None) if isinstance(node, list) else _signature_default(node, leaf)
    if generic in KNOWN_KINDS:
        kinds, none_ok = set(KNOWN_KINDS[generic]), False
    else:
        kinds = _kinds_of(old) | _kinds_of(default)
        none_ok = (has_old and old is None) or (has_default and default is None)
    if not kinds:
        return value
    if value is None:
        if none_ok or kinds & {'str', 'list', 'numbers', 'mapping'}:
            return None
    elif any(_fits(value, kind) for kind in kinds):
        return value
    elif 'str' in kinds:
        return text
    order = ('int', 'number', 'bool', 'str', 'numbers', 'list', 'mapping')
    words = [_KIND_WORDS[k] for k in order if k in kinds and not (k == 'list' and 'numbers' in kinds)]
    raise UserError(f"--opts {item}: {key} must be {' or '.join(words)}, got {value!r}")


def _component_class(cfg):
    """The registered class named by ``cfg['type']`` in any manager, or None."""
    for component_manager in _ALL_MANAGERS:
        if cfg.get('type') in component_manager.components_dict:
            return component_manager.components_dict[cfg['type']]
    return None


def _accepts_argument(cls, name):
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return True
    if name in params:
        return True
    return any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())


# ---- Checking every component argument before anything is built ----------------------------------------------
#
# Each argument a config gives a component is checked against what the component's signature says (the kind of its
# default, its annotation where there is one) and, where that says nothing or too little (no default, a None
# default, a number whose range matters), against the declared rule of ARGUMENT_RULES. One walk (``check_arguments``)
# covers ours and PaddleSeg's components, paddle's LR schedulers and the optimizers, and ``Builder`` runs the same
# check on each component it builds (so the notebook API's keywords are checked too).
#
# Why not a validation library (pydantic, jsonschema, cerberus, voluptuous)? The schema here is not written down
# anywhere: it is read from the signatures of some 200 registered classes at run time (PaddleSeg's included, which
# we do not own) plus the small table below. A library would need that schema generated from the same signatures,
# and its messages reworded into the one line the error contract asks for; what is left to write is the code
# below, which reuses the kind vocabulary (``_kinds_of``, ``_fits``, ``_KIND_WORDS``) that ``--opts`` already uses and
# the range wording of ``utils/validate.py``.

class _Rule:
    """A declared type and range: ``test(value)`` says whether it fits, ``words`` says what is expected."""

    def __init__(self, test, words, none_ok=False):
        self.test = test
        self.words = words
        self.none_ok = none_ok


def _number(minimum=None, maximum=None, below_max=False, above_min=False):
    return _Rule(lambda v: _is_number(v) and _inside(v, minimum, maximum, below_max, above_min),
                 f"a number{_bounds(minimum, maximum, below_max, above_min)}")


def _integer(minimum=None, maximum=None):
    return _Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and _inside(v, minimum, maximum),
                 f"an integer{_bounds(minimum, maximum)}")


def _numbers(minimum=None):
    return _Rule(lambda v: isinstance(v, (list, tuple)) and bool(v) and
                 all(_is_number(x) and _inside(x, minimum, None) for x in v),
                 f"a non-empty list of numbers{_bounds(minimum, None)}")


def _size():
    """A [width, height] pair of integers >= 1 (crop and resize sizes)."""
    return _Rule(lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and
                 all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v),
                 'a list of 2 integers >= 1 ([width, height])')


def _of_kind(kind, none_ok=False):
    return _Rule(lambda v: _fits(v, kind), _KIND_WORDS[kind] + (' or null' if none_ok else ''), none_ok)


_PROB = _number(0, 1)
# Declared rules by component group (the manager's name, 'lr_scheduler', or 'loss' for the loss section itself) and
# argument name. A rule replaces what the signature's default says; None still passes where the default is None.
ARGUMENT_RULES = {
    'optimizers': {'momentum': _number(0, 1, below_max=True), 'weight_decay': _number(0),
                   'beta1': _number(0, 1, below_max=True), 'beta2': _number(0, 1, below_max=True),
                   'epsilon': _number(0, above_min=True), 'layerwise_decay': _number(0, 1, above_min=True),
                   'grad_clip_cfg': _of_kind('mapping'), 'custom_cfg': _of_kind('list')},
    'lr_scheduler': {'learning_rate': _number(0, above_min=True), 'end_lr': _number(0),
                     'power': _number(0, above_min=True), 'decay_steps': _integer(1), 'warmup_iters': _integer(0),
                     'warmup_start_lr': _number(0), 'gamma': _number(0, above_min=True), 'step_size': _integer(1),
                     'T_max': _integer(1), 'eta_min': _number(0)},
    'loss': {'types': _of_kind('list'), 'coef': _numbers(0)},
    'losses': {'coef': _numbers(0), 'ignore_index': _integer()},
    'transforms': {'prob': _PROB, 'crop_size': _size(), 'target_size': _size(),
                   'min_scale_factor': _number(0, above_min=True), 'max_scale_factor': _number(0, above_min=True),
                   'scale_step_size': _number(0)},
    'datasets': {'num_classes': _integer(1), 'dataset_root': _of_kind('str'), 'mode': _of_kind('str'),
                 'transforms': _of_kind('list'), 'ignore_index': _integer(), 'num_samples': _integer(1),
                 'img_channels': _integer(1)},
    'models': {'num_classes': _integer(1), 'pretrained': _of_kind('str', none_ok=True), 'in_channels': _integer(1)},
    'backbones': {'pretrained': _of_kind('str', none_ok=True), 'in_channels': _integer(1)},
    # test_config (not a component): the values val.py and predict.py divide by and resize with
    'test_config': {'scales': _Rule(lambda v: (_is_number(v) and v > 0) or (
        isinstance(v, (list, tuple)) and bool(v) and all(_is_number(x) and x > 0 for x in v)),
        'a number > 0 or a non-empty list of numbers > 0'),
        'crop_size': _size(), 'stride': _size(),
        'custom_color': _Rule(lambda v: isinstance(v, (list, tuple)) and len(v) % 3 == 0 and all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in v),
            'a list of integers in [0, 255], three per class')},
}
# Probabilities of the random transforms (RandomDistort's brightness_prob, ...) end in _prob.
_SUFFIX_RULES = {'transforms': {'_prob': _PROB}}
_SCALAR_ANNOTATIONS = {'int': 'int', 'float': 'number', 'bool': 'bool', 'str': 'str', 'list': 'list',
                       'tuple': 'list', 'dict': 'mapping'}
_LIST_ANNOTATIONS = ('list[', 'List[', 'tuple[', 'Tuple[', 'Sequence[')
_FLOAT_TEXT = re.compile(r'^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$')


def _annotation_kinds(annotation):
    """(kinds, none_ok) from an annotation such as ``float``, ``'int'``, ``'Sequence[int] | None'``; (None, False)
    where any part is something else (``Tensor``, a class): then the annotation says nothing we can check."""
    if annotation is inspect.Parameter.empty:
        return None, False
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation).replace('typing.', '')
    if text.startswith('Optional[') and text.endswith(']'):
        text = f"{text[len('Optional['):-1]} | None"
    kinds, none_ok = set(), False
    for part in (p.strip() for p in text.split('|')):
        if part in ('None', 'NoneType'):
            none_ok = True
        elif part in _SCALAR_ANNOTATIONS:
            kinds.add(_SCALAR_ANNOTATIONS[part])
        elif part.startswith(_LIST_ANNOTATIONS) and part.endswith(']'):
            kinds.add('list')
        else:
            return None, False
    if 'number' in kinds:
        kinds.discard('int')
    return (kinds or None), none_ok


def _rule(group, name):
    rules = ARGUMENT_RULES.get(group, {})
    if name in rules:
        return rules[name]
    for suffix, rule in _SUFFIX_RULES.get(group, {}).items():
        if name.endswith(suffix):
            return rule
    return None


def _refuse(origin, keypath, words, value):
    """One line: where the value came from (the file, an --opts item or a flag), the key, what fits, the value."""
    hint = ''
    if isinstance(value, str) and _FLOAT_TEXT.match(value) and 'e' in value.lower() and 'number' in words:
        hint = ' (YAML 1.1 reads 1e-4 without a dot as a string: write 1.0e-4)'
    where = origin if origin.startswith('--') and ' ' not in origin else f"{origin}: {keypath}"
    return UserError(f"{where} must be {words}, got {value!r}{hint}")


def _origin(origins, keypath, path):
    """What set ``keypath``: the ``--opts`` item or flag for it or for an entry of it (``loss.coef.0=x`` for
    ``loss.coef``), else the config file."""
    if keypath in origins:
        return origins[keypath]
    inner = [origin for key, origin in origins.items() if key.startswith(keypath + '.')]
    return inner[-1] if inner else path


def _check_value(value, param, group, name, keypath, origin):
    """``value`` against the declared rule of (group, name), else the parameter's annotation and default."""
    has_default = param is not None and param.default is not inspect.Parameter.empty
    default = param.default if has_default else None
    rule = _rule(group, name)
    if rule is not None:
        if value is None and (rule.none_ok or (has_default and default is None)):
            return
        if not rule.test(value):
            raise _refuse(origin, keypath, rule.words, value)
        return
    if param is None:
        return
    kinds, none_ok = _annotation_kinds(param.annotation)
    if kinds is None:
        kinds, none_ok = _kinds_of(default), none_ok or (has_default and default is None)
    if not kinds:
        return
    if value is None:
        if none_ok or kinds & {'str', 'list', 'numbers', 'mapping'}:
            return
    elif any(_fits(value, kind) for kind in kinds):
        return
    order = ('int', 'number', 'bool', 'str', 'numbers', 'list', 'mapping')
    words = [_KIND_WORDS[k] for k in order if k in kinds and not (k == 'list' and 'numbers' in kinds)]
    raise _refuse(origin, keypath, ' or '.join(words), value)


def _parameters(cls):
    """(parameters by name, takes **kwargs) of ``cls``'s constructor; (None, True) where it has no signature."""
    try:
        params = dict(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return None, True
    var_keyword = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {n: p for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}, var_keyword


def _owner_key(where):
    """The key that holds the component at dotted place ``where`` (``val_dataset.transforms.0`` -> 'transforms')."""
    return next((p for p in reversed(where.split('.')) if not p.isdigit()), where)


def optimizer_type(opt_cfg):
    """The optimizer class name an ``optimizer`` section stands for: the lower-case names ``sgd``, ``adam`` and
    ``adamw`` are accepted, and SGD with a ``momentum`` is ``Momentum`` (as PaddleSeg's configs write it)."""
    name = opt_cfg.get('type')
    name = {'sgd': 'SGD', 'adam': 'Adam', 'adamw': 'AdamW'}.get(name, name) if isinstance(name, str) else name
    return 'Momentum' if name == 'SGD' and 'momentum' in opt_cfg else name


def _check_component(node, where, path, origins, recurse=True):
    """Each argument of the component configured by ``node`` (a mapping with ``type``) at dotted place ``where``:
    accepted by its constructor and of the kind and range expected; nested components too when ``recurse``."""
    name = node.get('type')
    owner = _owner_key(where)
    preferred = _MANAGER_BY_KEY.get(owner)
    cls = preferred.components_dict.get(name) if preferred is not None and isinstance(name, str) else None
    group = preferred.name if cls is not None else None
    for component_manager in _ALL_MANAGERS if cls is None and isinstance(name, str) else ():
        if name in component_manager.components_dict:
            cls, group = component_manager.components_dict[name], component_manager.name
            break
    if cls is None:
        return  # _check_types names unknown types
    params, var_keyword = _parameters(cls)
    for key, value in node.items():
        if key == 'type':
            continue
        keypath = f"{where}.{key}"
        origin = _origin(origins, keypath, path)
        if params is not None and key not in params and not var_keyword:
            close = did_you_mean(key, [p for p in params if p != 'self'])
            raise UserError(f"{origin}: {keypath}: {name} takes no argument {key!r}{close}")
        if isinstance(value, dict) and 'type' in value:
            if recurse:
                _check_component(value, keypath, path, origins)
            continue
        if isinstance(value, list) and any(isinstance(v, dict) and 'type' in v for v in value):
            for i, item in enumerate(value):
                if recurse and isinstance(item, dict) and 'type' in item:
                    _check_component(item, f"{keypath}.{i}", path, origins)
            continue
        _check_value(value, (params or {}).get(key), group, key, keypath, origin)


def _check_lr_scheduler(lr_cfg, path, origins):
    """The ``lr_scheduler`` section: paddle's scheduler class named by ``type`` plus the warm-up keys."""
    cls = getattr(paddle.optimizer.lr, str(lr_cfg.get('type')), None)
    params, var_keyword = _parameters(cls) if inspect.isclass(cls) else (None, True)
    for key, value in lr_cfg.items():
        if key == 'type':
            continue
        keypath = f"lr_scheduler.{key}"
        origin = _origin(origins, keypath, path)
        if params is not None and key not in params and key not in LR_SCHEDULER_EXTRA_KEYS and not var_keyword:
            close = did_you_mean(key, [p for p in list(params) + list(LR_SCHEDULER_EXTRA_KEYS) if p != 'self'])
            raise UserError(f"{origin}: {keypath}: {lr_cfg['type']} takes no argument {key!r}{close}")
        _check_value(value, (params or {}).get(key), 'lr_scheduler', key, keypath, origin)


def _check_loss_section(loss_cfg, key, path, origins):
    for name in ('types', 'coef'):
        if name in loss_cfg:
            _check_value(loss_cfg[name], None, 'loss', name, f"{key}.{name}", _origin(origins, f"{key}.{name}", path))
    for i, item in enumerate(loss_cfg.get('types') or []):
        if isinstance(item, dict) and 'type' in item:
            _check_component(item, f"{key}.types.{i}", path, origins)


def check_arguments(dic, path, origins=None):
    """Every component argument of config ``dic`` (read from ``path``) checked before anything is built.

    Args:
        dic (dict): The config after ``--opts`` and flags.
        path (str): The config file, named in messages.
        origins (dict): Dotted key -> the ``--opts`` item or flag that set it, named instead of the file.

    Raises:
        UserError: e.g. "c.yml: optimizer.momentum must be a number in [0, 1), got 'fast'".
    """
    origins = origins or {}
    for key in ('model', 'train_dataset', 'val_dataset'):
        if isinstance(dic.get(key), dict):
            _check_component(dic[key], key, path, origins)
    for key in ('loss', 'distill_loss'):
        if isinstance(dic.get(key), dict):
            _check_loss_section(dic[key], key, path, origins)
    if isinstance(dic.get('optimizer'), dict):
        _check_component(dict(dic['optimizer'], type=optimizer_type(dic['optimizer'])), 'optimizer', path, origins)
    if isinstance(dic.get('lr_scheduler'), dict):
        _check_lr_scheduler(dic['lr_scheduler'], path, origins)
    for keys, kinds in KNOWN_KINDS.items():
        if len(keys) == 2 and isinstance(dic.get(keys[0]), dict) and keys[1] in dic[keys[0]]:
            value = dic[keys[0]][keys[1]]
            if value is not None and not any(_fits(value, kind) for kind in kinds):
                keypath = '.'.join(keys)
                words = ' or '.join(_KIND_WORDS[k] for k in sorted(kinds))
                raise _refuse(_origin(origins, keypath, path), keypath, words, value)
    for name, value in (dic.get('test_config') or {}).items() if isinstance(dic.get('test_config'), dict) else ():
        rule = _rule('test_config', name)
        if rule is not None and value is not None and not rule.test(value):
            keypath = f"test_config.{name}"
            raise _refuse(_origin(origins, keypath, path), keypath, rule.words, value)


def apply_opts(dic, opts):
    """Apply ``--opts`` overrides ``['a.b=c', ...]`` to the config dict in place.

    A key must name something that exists, or an argument that the component at that place accepts
    (e.g. ``model.pretrained=x.pdparams``). List items are addressed by index (``loss.coef.1=0.4``). The value must
    be of the kind the key holds (``_typed_value``): ``iters=abc`` is an error naming the key and the kind.
    """
    for item in opts or []:
        if '=' not in item:
            raise UserError(f"--opts item {item!r} is not key=value")
        key, text = item.split('=', 1)
        value = parse_value(text)
        parts = key.split('.')
        if not all(parts):
            raise UserError(f"--opts key {key!r} is malformed")
        node = dic
        for depth, part in enumerate(parts[:-1]):
            path = '.'.join(parts[:depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserError(f"--opts key {key!r}: {path!r} is not an index of a list of {len(node)}")
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            elif depth == 0 and part in ('test_config', 'export'):
                node = node.setdefault(part, {})
            else:
                raise UserError(f"--opts key {key!r}: {path!r} is not in the config")
            if not isinstance(node, (dict, list)):
                raise UserError(f"--opts key {key!r}: {path!r} holds a value, not a section")
        leaf = parts[-1]
        if isinstance(node, list):
            if not leaf.isdigit() or int(leaf) >= len(node):
                raise UserError(f"--opts key {key!r}: {leaf!r} is not an index of a list of {len(node)}")
            node[int(leaf)] = _typed_value(item, key, parts, text, value, node, leaf)
            continue
        if leaf not in node:
            _check_new_key(key, parts, node)
        node[leaf] = _typed_value(item, key, parts, text, value, node, leaf)
    return dic


def _check_new_key(key, parts, node):
    leaf = parts[-1]
    if len(parts) == 1:
        if leaf not in TOP_LEVEL_KEYS:
            raise UserError(f"--opts key {key!r} is not in the config{did_you_mean(leaf, TOP_LEVEL_KEYS)}")
        return
    parent = parts[-2]
    if parent == 'test_config' and len(parts) == 2:
        if leaf not in TEST_CONFIG_KEYS:
            raise UserError(f"--opts key {key!r}: test_config has no key {leaf!r}{did_you_mean(leaf, TEST_CONFIG_KEYS)}")
        return
    if parent == 'lr_scheduler' and len(parts) == 2:
        cls = getattr(paddle.optimizer.lr, str(node.get('type')), None)
        if leaf in LR_SCHEDULER_EXTRA_KEYS or (cls is not None and _accepts_argument(cls, leaf)):
            return
        raise UserError(f"--opts key {key!r}: {node.get('type')} takes no argument {leaf!r}")
    if 'type' in node:
        cls = _component_class(node)
        if cls is None or _accepts_argument(cls, leaf):
            return
        raise UserError(f"--opts key {key!r}: {node['type']} takes no argument {leaf!r}")
    raise UserError(f"--opts key {key!r} is not in the config")


def _check_types(dic, path):
    """Every ``type`` names a registered component (or a paddle lr scheduler); suggest close names otherwise."""

    def visit(node, where, owner_key):
        if isinstance(node, dict):
            if 'type' in node and owner_key != 'lr_scheduler':
                name = node['type']
                component_manager = _MANAGER_BY_KEY.get(owner_key)
                known = component_manager.components_dict if component_manager else {}
                if not isinstance(name, str) or (name not in known and _component_class(node) is None):
                    kind = f"{_KIND[component_manager.name]} " if component_manager else ''
                    candidates = known or set().union(*[m.components_dict for m in _ALL_MANAGERS])
                    raise UserError(f"{path}: unknown {kind}type {name!r} at {where}.type"
                                    f"{did_you_mean(str(name), candidates)}")
            for key, value in node.items():
                visit(value, f"{where}.{key}" if where else key, key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{where}.{i}", owner_key)

    visit(dic, '', None)
    lr_cfg = dic.get('lr_scheduler')
    if isinstance(lr_cfg, dict) and 'type' in lr_cfg:
        if not inspect.isclass(getattr(paddle.optimizer.lr, str(lr_cfg['type']), None)):
            names = [n for n in dir(paddle.optimizer.lr) if inspect.isclass(getattr(paddle.optimizer.lr, n))]
            raise UserError(f"{path}: unknown lr_scheduler type {lr_cfg['type']!r}{did_you_mean(str(lr_cfg['type']), names)}")


def load_config(path, opts=None, learning_rate=None, batch_size=None, iters=None, require=('model',)):
    """Read a PaddleSeg YAML config, apply overrides and check it.

    Args:
        path (str): The YAML file.
        opts (list[str]): ``key=value`` overrides.
        learning_rate, batch_size, iters: Command-line overrides (None keeps the config's value).
        require (tuple[str]): Top-level keys the calling tool needs.

    Returns:
        paddleseg.cvlibs.Config: with ``dic`` holding the final config and ``path`` the file.
    """
    if not path:
        raise UserError("no config given: pass --config FILE.yml")
    if not os.path.isfile(path):
        raise UserError(f"config file not found: {path}")
    if not path.endswith(('.yml', '.yaml')):
        raise UserError(f"config file must be YAML (.yml or .yaml): {path}")
    dic = _read_yaml(path)
    dic = copy.deepcopy(dic)
    apply_opts(dic, opts)
    if learning_rate is not None:
        dic.setdefault('lr_scheduler', {})['learning_rate'] = learning_rate
    if batch_size is not None:
        dic['batch_size'] = batch_size
    if iters is not None:
        dic['iters'] = iters
    flags = {'batch_size': batch_size, 'iters': iters}
    for key in POSITIVE_INT_KEYS:
        if key in dic and (key in require or flags[key] is not None):
            _check_positive_int(dic[key], key, path, flags[key] is not None, opts)
    for key in require:
        if key not in dic or dic[key] in (None, {}):
            raise UserError(f"{path}: no '{key}' section in the config")
    _check_types(dic, path)
    origins = {item.split('=', 1)[0]: f"--opts {item}" for item in opts or [] if '=' in item}
    if learning_rate is not None:
        origins['lr_scheduler.learning_rate'] = '--learning_rate'
    check_arguments(dic, path, origins)
    _sync_num_classes(dic, path)

    cfg = Config.__new__(Config)
    cfg.dic = dic
    cfg.path = path
    return cfg


def _read_yaml(path, chain=()):
    """The mapping of a YAML config with its ``_base_`` files merged in (as PaddleSeg's ``parse_from_yaml``), each
    file checked: readable UTF-8 YAML, not empty, a mapping, its bases present and not including itself."""
    try:
        with open(path, 'r', encoding='utf-8') as f:
            dic = load_yaml(f, path)
    except yaml.YAMLError as err:
        mark = getattr(err, 'problem_mark', None)
        where = f" at line {mark.line + 1}" if mark is not None else ''
        raise UserError(f"{path}: invalid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read the config ({err.strerror or err})") from None
    if dic is None:
        raise UserError(f"{path}: the config file is empty")
    if not isinstance(dic, dict):
        raise UserError(f"{path}: the config must be a mapping of keys to values, got {type(dic).__name__}")
    bases = dic.pop('_base_', None)
    for base in [bases] if isinstance(bases, str) else bases or []:
        base_path = os.path.join(os.path.dirname(path), str(base))
        if not os.path.isfile(base_path):
            raise UserError(f"{path}: _base_ file not found: {base_path}")
        if os.path.realpath(base_path) in chain + (os.path.realpath(path),):
            raise UserError(f"{path}: _base_ {base_path} includes itself")
        dic = merge_config_dicts(dic, _read_yaml(base_path, chain + (os.path.realpath(path),)))
    return dic


def _check_positive_int(value, key, path, from_flag, opts):
    """``batch_size`` and ``iters`` must be integers >= 1; the message names where the value came from."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return
    if from_flag:
        where = f"--{key}"
    else:
        given = [item for item in opts or [] if item.split('=', 1)[0] == key]
        where = f"--opts {given[-1]}: {key}" if given else f"{path}: {key}"
    raise UserError(f"{where} must be a positive integer, got {value!r}")


def _dataset_num_classes(dataset_cfg):
    if not isinstance(dataset_cfg, dict):
        return None
    if 'num_classes' in dataset_cfg:
        return dataset_cfg['num_classes']
    cls = manager.DATASETS.components_dict.get(dataset_cfg.get('type'))
    return getattr(cls, 'NUM_CLASSES', None)


def _sync_num_classes(dic, path):
    """The model's num_classes must equal the datasets'; a model without it takes the dataset's."""
    model_cfg = dic.get('model') or {}
    for key in ('train_dataset', 'val_dataset'):
        n = _dataset_num_classes(dic.get(key))
        if n is None:
            continue
        if 'num_classes' not in model_cfg:
            model_cfg['num_classes'] = n
        elif model_cfg['num_classes'] != n:
            raise UserError(f"{path}: model.num_classes is {model_cfg['num_classes']} but {key} "
                            f"({dic[key].get('type')}) has {n} classes")


class Builder:
    """Builds models, datasets, losses, optimizers and lr schedulers from a loaded config.

    Components come from PaddleSeg's manager (where ours replaced PaddleSeg's entries); errors raised by a
    component's constructor that are the user's (``UserError``) pass through unchanged.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.dic = cfg.dic
        self.path = getattr(cfg, 'path', 'config')

    def build_component(self, cfg, where):
        """The component ``cfg['type']`` built with the other keys as arguments, nested ``{'type': ...}`` mappings
        (and lists of them) first; ``where`` is the dotted place in the config, named in messages."""
        cfg = copy.deepcopy(cfg)
        name = cfg.get('type')
        cls = _component_class({'type': name}) if isinstance(name, str) else None
        if cls is None:
            raise UserError(f"{self.path}: unknown type {name!r} at {where}.type")
        _check_component(cfg, where, self.path, {}, recurse=False)
        cfg.pop('type')
        kwargs = {}
        for key, value in cfg.items():
            if isinstance(value, dict) and 'type' in value:
                value = self.build_component(value, f"{where}.{key}")
            elif isinstance(value, list):
                value = [self.build_component(v, f"{where}.{key}.{i}") if isinstance(v, dict) and 'type' in v else v
                         for i, v in enumerate(value)]
            kwargs[key] = value
        try:
            return cls(**kwargs)
        except UserError:
            raise
        except TypeError as err:
            raise UserError(f"{self.path}: cannot build {name} at {where}: {err}") from None
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"{self.path}: {where} ({name}): {err}") from None

    def _section(self, key):
        section = self.dic.get(key)
        if not isinstance(section, dict) or not section:
            raise UserError(f"{self.path}: no '{key}' section in the config")
        return section

    def model(self):
        """The ``model`` section built."""
        return self.build_component(self._section('model'), 'model')

    def dataset(self, key):
        """The dataset of section ``key`` (``train_dataset``, ``val_dataset``); an empty training set is an error."""
        dataset = self.build_component(self._section(key), key)
        if key == 'train_dataset' and len(dataset) == 0:
            raise UserError(f"{self.path}: {key} has no samples")
        return dataset

    def val_transforms(self):
        """The validation transforms (``Normalize`` alone where the config has none), for prediction."""
        transforms = (self.dic.get('val_dataset') or {}).get('transforms') or [{'type': 'Normalize'}]
        return [self.build_component(t, f'val_dataset.transforms.{i}') for i, t in enumerate(transforms)]

    def losses(self, key='loss'):
        """``{'types': [loss layers], 'coef': [floats]}``; one type with several coefs is used for every output."""
        loss_cfg = self._section(key)
        types, coef = loss_cfg.get('types'), loss_cfg.get('coef')
        if not isinstance(types, list) or not isinstance(coef, list) or not types or not coef:
            raise UserError(f"{self.path}: {key} needs non-empty lists 'types' and 'coef'")
        if len(types) == 1 and len(coef) > 1:
            types = types * len(coef)
        _check_value(coef, None, 'loss', 'coef', f"{key}.coef", self.path)
        if len(types) != len(coef):
            raise UserError(f"{self.path}: {key}.types has {len(types)} entries but {key}.coef has {len(coef)}")
        return {'types': [self.build_component(t, f'{key}.types.{i}') for i, t in enumerate(types)],
                'coef': [float(c) for c in coef]}

    def lr_scheduler(self):
        """A ``paddle.optimizer.lr`` scheduler by name, as PaddleSeg builds it: ``PolynomialDecay`` decays over
        ``iters`` (less the warm-up) unless ``decay_steps`` is given; ``warmup_iters`` wraps it in ``LinearWarmup``."""
        lr_cfg = copy.deepcopy(self._section('lr_scheduler'))
        _check_lr_scheduler(lr_cfg, self.path, {})
        name = lr_cfg.pop('type', None)
        warmup_iters = lr_cfg.pop('warmup_iters', 0)
        warmup_start_lr = lr_cfg.pop('warmup_start_lr', 0.0)
        iters = int(self.dic.get('iters', 1))
        if name == 'PolynomialDecay':
            lr_cfg.setdefault('decay_steps', max(iters - warmup_iters, 1))
        cls = getattr(paddle.optimizer.lr, str(name), None)
        if cls is None:
            raise UserError(f"{self.path}: unknown lr_scheduler type {name!r}")
        try:
            scheduler = cls(**lr_cfg)
        except TypeError as err:
            raise UserError(f"{self.path}: cannot build lr_scheduler {name}: {err}") from None
        if warmup_iters:
            scheduler = paddle.optimizer.lr.LinearWarmup(scheduler, warmup_iters, warmup_start_lr,
                                                         lr_cfg.get('learning_rate'))
        return scheduler

    def optimizer(self, model, lr_scheduler):
        """The optimizer of ``model``'s parameters driven by ``lr_scheduler``; the lower-case names ``sgd``, ``adam``
        and ``adamw`` are accepted, and SGD with a ``momentum`` builds ``Momentum``."""
        opt_cfg = copy.deepcopy(self._section('optimizer'))
        opt_cfg['type'] = optimizer_type(opt_cfg)
        if _is_number(opt_cfg.get('weight_decay')):  # PaddleSeg asserts a float: `weight_decay: 0` is meant as 0.0
            opt_cfg['weight_decay'] = float(opt_cfg['weight_decay'])
        factory = self.build_component(opt_cfg, 'optimizer')
        return factory(model, lr_scheduler)
