"""Loading weight files into models and turning PyTorch-layout state dicts into Paddle's, shared by every
backbone and model (no model-specific code here)."""
import os

import numpy as np
import paddle

from paddle_models.errors import UserError


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_backbone_weights(model, path, head_prefixes=()):
    """Load a local ``.pdparams`` file into a backbone, requiring every key of the model with its exact shape.

    Keys in the file that start with one of ``head_prefixes`` (the ImageNet classifier) are ignored when the model
    has no classifier; any other extra key, a missing key or a different shape is an error.

    Args:
        model (nn.Layer): The backbone.
        path (str): The ``.pdparams`` file.
        head_prefixes (tuple[str]): Key prefixes of the classifier.

    Raises:
        UserError: The file is missing or unreadable, or does not fit (the message names the file and the key).
    """
    path = os.fspath(path)
    name = type(model).__name__
    if '://' in path:
        raise UserError(f"{name}: pretrained must be a local .pdparams file (no downloads): {path}")
    if not os.path.isfile(path):
        raise UserError(f"{name}: pretrained weights not found: {path}")
    try:
        state = paddle.load(path)
    except Exception as exc:  # noqa: BLE001  (any failure to read is the file's fault)
        raise UserError(f"{name}: cannot read pretrained weights {path}: {_first_line(exc)}") from None
    if not isinstance(state, dict):
        raise UserError(f"{name}: pretrained weights {path} hold a {type(state).__name__}, not a dict of parameters")
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k != 'StructuredToParameterName@@'}
    for key, param in own.items():
        if key not in state:
            raise UserError(f"{name}: pretrained weights {path} lack {key}")
        file_shape = list(getattr(state[key], 'shape', []))
        if file_shape != list(param.shape):
            raise UserError(f"{name}: pretrained weights {path} do not fit: {key} has shape {file_shape} in the "
                            f"file, {list(param.shape)} in the model")
    for key in state:
        if key not in own and not key.startswith(tuple(head_prefixes)):
            raise UserError(f"{name}: pretrained weights {path} hold {key}, which the model does not have")
    model.set_state_dict({k: v for k, v in state.items() if k in own})


# ----------------------------------------------------------------------------------------------------------------
# Foreign checkpoints (used by tools/convert_weights.py)

_BN_RENAMES = (('.running_mean', '._mean'), ('.running_var', '._variance'))


def torch_layout_to_paddle(state, linear_keys=()):
    """Rename PyTorch BatchNorm statistics (``running_mean``/``running_var`` -> ``_mean``/``_variance``), drop
    ``num_batches_tracked`` and transpose the weights of the ``nn.Linear`` layers named in ``linear_keys``
    (PyTorch stores [out, in], Paddle [in, out]).

    Args:
        state (dict[str, numpy.ndarray]): A PyTorch state dict as numpy arrays.
        linear_keys (iterable[str]): Keys (in PyTorch naming) of 2-D linear weights.

    Returns:
        dict[str, numpy.ndarray]: The same tensors under Paddle's names and layouts.
    """
    linear_keys = set(linear_keys)
    out = {}
    for key, value in state.items():
        if key.endswith('num_batches_tracked'):
            continue
        value = np.asarray(value)
        if key in linear_keys and value.ndim == 2:
            value = value.T
        for old, new in _BN_RENAMES:
            if key.endswith(old):
                key = key[:-len(old)] + new
        out[key] = np.ascontiguousarray(value)
    return out


