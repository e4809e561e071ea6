"""``deploy.yaml`` (PaddleSeg's deployment description) and the checks of what goes into it.

An export writes ``Deploy: {model, params, transforms, input_shape, output_op, output_dtype}`` as PaddleSeg's
``tools/export.py`` does (``transforms`` are the validation transforms, for the runner's preprocessing), plus
``backend`` (``paddle_inference``, ``onnxruntime`` or ``openvino``), for Paddle programs ``enable_mkldnn`` (whether
the oneDNN check passed) and, when it failed, ``mkldnn_error`` (why); and, where given, ``class_names`` (a name per
class id) and ``palette`` (an ``[r, g, b]`` per class id), which deploy/python/infer.py and
``val.py --inference_model`` name and colour the classes with (PaddleSeg's own exports have neither key; the
runners then fall back to ``class N`` and PaddleSeg's colour map).

``output_op`` follows PaddleSeg 2.8: 'argmax' appends ``argmax(axis=1, dtype=int32)`` (output [N, H, W] int32
class ids, no channel axis), 'softmax' appends ``softmax(axis=1)`` ([N, C, H, W] float32), 'none' leaves the
logits. Only the first (main) output of the model's list is exported.
"""
import copy
import logging
import os

import numpy as np
import yaml

from paddle_models.errors import UserError

logger = logging.getLogger(__name__)

OUTPUT_OPS = ('argmax', 'softmax', 'none')


SAVE_NAME = 'model'


DEPLOY_FILE = 'deploy.yaml'
PARAMS_FILE = SAVE_NAME + '.pdiparams'


def check_input_shape(input_shape):
    """[N, C, H, W] with None for free dimensions; a UserError names a bad value."""
    if input_shape is None:
        return [None, 3, None, None]
    try:
        dims = list(input_shape)
    except TypeError:
        raise UserError(f"input_shape: expected 4 dimensions [N, C, H, W], got {input_shape!r}") from None
    if len(dims) != 4:
        raise UserError(f"input_shape: expected 4 dimensions [N, C, H, W], got {input_shape!r}")
    shape = []
    for dim in dims:
        if dim is None or (isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and int(dim) == -1):
            shape.append(None)
        elif isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and int(dim) > 0:
            shape.append(int(dim))
        else:
            raise UserError(f"input_shape: dimension {dim!r} in {input_shape!r} must be a positive int, -1 or None")
    if shape[1] is None:
        raise UserError(f"input_shape: the channel dimension of {input_shape!r} must be fixed")
    return shape


def _plain(value, where):
    """``value`` as plain YAML data (dict/list/str/number/bool/None); tuples become lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f'{where}.{k}') for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    raise UserError(f"transforms: {where} = {value!r} is not plain config data (YAML str/number/list/dict)")


def check_transforms(transforms):
    """A deep copy of the transforms config as plain data; a UserError names a bad entry."""
    if transforms is None:
        logger.warning("no transforms given: deploy.yaml lists none, so the runner feeds raw 0-255 RGB pixels")
        return []
    if not isinstance(transforms, (list, tuple)):
        raise UserError(f"transforms: expected a list of transform configs, got {type(transforms).__name__}")
    from paddleseg.cvlibs import manager  # the component registry our package registers into as well

    known = manager.TRANSFORMS.components_dict
    out = []
    for i, item in enumerate(transforms):
        if not isinstance(item, dict) or 'type' not in item:
            raise UserError(f"transforms[{i}]: expected a dict with a 'type' key, got {item!r}")
        if item['type'] not in known:
            raise UserError(f"transforms[{i}].type: unknown transform {item['type']!r}")
        out.append(_plain(copy.deepcopy(dict(item)), f'transforms[{i}]'))
    return out


def check_deploy_classes(class_names, palette, model):
    """deploy.yaml's ``class_names`` / ``palette`` entries (those given), checked against each other and against
    the model's ``num_classes`` where it has one; a UserError names a bad value."""
    from paddle_models.core.visualize import check_classes

    num_classes = getattr(model, 'num_classes', None)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        num_classes = None
    names, colours = check_classes(class_names, palette, num_classes)
    classes = {}
    if names is not None:
        classes['class_names'] = names
    if colours is not None:
        classes['palette'] = [_Colour(c) for c in colours]
    return classes


class _Colour(list):
    """An [r, g, b] that deploy.yaml shows on one line (``- [128, 64, 128]``)."""


class _DeployDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, writing :class:`_Colour` lists in flow style."""


_DeployDumper.add_representer(
    _Colour, lambda dumper, value: dumper.represent_sequence('tag:yaml.org,2002:seq', list(value), flow_style=True))


def write_deploy(folder, deploy):
    """Write ``folder/deploy.yaml`` holding ``{'Deploy': deploy}`` (block style, keys in the given order)."""
    with open(os.path.join(folder, DEPLOY_FILE), 'w', encoding='utf-8') as f:
        yaml.dump({'Deploy': deploy}, f, Dumper=_DeployDumper, default_flow_style=False, sort_keys=False,
                  allow_unicode=True)


def check_save_dir(save_dir):
    if os.path.exists(save_dir) and not os.path.isdir(save_dir):
        raise UserError(f"save_dir: {save_dir} exists and is not a folder")
    if os.path.isdir(save_dir) and os.listdir(save_dir) and \
            not os.path.isfile(os.path.join(save_dir, DEPLOY_FILE)):
        raise UserError(f"save_dir: {save_dir} is not empty and holds no previous export ({DEPLOY_FILE}); "
                        f"choose a new folder")


def output_dtype(output_op):
    """deploy.yaml's ``output_dtype``: int32 class ids after 'argmax', float32 otherwise."""
    return 'int32' if output_op == 'argmax' else 'float32'
