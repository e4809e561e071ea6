"""Checkpoints: written atomically (a temporary folder renamed into place), loaded strictly."""
import os
import re
import shutil
import tempfile

import paddle

from paddle_models.errors import UserError


EMA_FILE = 'ema_model.pdparams'


def save_checkpoint(save_dir, name, model, optimizer=None, extra=None, ema=None, model_file='model.pdparams'):
    """Write ``save_dir/name/model.pdparams`` (+ ``model.pdopt``, + ``ema_model.pdparams``, + ``extra`` text files)
    atomically.

    Everything goes into a temporary folder beside the target first; the folder is renamed into place only when
    complete, so an interrupted save never leaves a half-written checkpoint under ``name``.

    Args:
        save_dir (str): The folder that holds the checkpoint folders.
        name (str): The checkpoint folder's name (``iter_N``, ``best_model``, ``ema_best_model``).
        model (nn.Layer): Whose weights go into ``model_file``.
        optimizer: Its state goes into ``model.pdopt`` (for resuming); None leaves it out.
        extra (dict): ``{file name: text}`` written beside the weights (e.g. ``score.txt``).
        ema (ModelEMA): An exponential moving average of the weights, saved as ``ema_model.pdparams`` (PaddleSeg's
            name) so that a resumed run continues the same average.
        model_file (str): File name of ``model``'s weights; PaddleSeg names the best EMA weights
            ``ema_best_model/ema_model.pdparams``.
    """
    os.makedirs(save_dir, exist_ok=True)
    target = os.path.join(save_dir, name)
    tmp = tempfile.mkdtemp(prefix=f'.{name}.tmp-', dir=save_dir)
    try:
        paddle.save(model.state_dict(), os.path.join(tmp, model_file))
        if optimizer is not None:
            paddle.save(portable_optimizer_state(model, optimizer), os.path.join(tmp, 'model.pdopt'))
        if ema is not None:
            paddle.save(ema.state_dict(), os.path.join(tmp, EMA_FILE))
        for filename, text in (extra or {}).items():
            with open(os.path.join(tmp, filename), 'w') as f:
                f.write(text)
        if os.path.isdir(target):
            old = tempfile.mkdtemp(prefix=f'.{name}.old-', dir=save_dir)
            os.rmdir(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


_STRUCTURED = '__structured_names__'


def _rename_keys(state, renames):
    """Rename optimizer-state keys ``<param name><suffix>`` (and master-weight keys) by ``renames``."""
    ordered = sorted(renames, key=len, reverse=True)
    out = {}
    for key, value in state.items():
        if key == 'master_weights' and isinstance(value, dict):
            out[key] = {renames.get(k, k): v for k, v in value.items()}
            continue
        for old in ordered:
            if key.startswith(old + '_'):
                key = renames[old] + key[len(old):]
                break
        out[key] = value
    return out


def portable_optimizer_state(model, optimizer):
    """The optimizer's state keyed by structured parameter names (``backbone.conv1.weight_velocity_0``) instead of
    Paddle's per-process unique names (``conv2d_42.w_0_velocity_0``), which change with what else the process built."""
    renames = {param.name: name for name, param in model.named_parameters()}
    state = _rename_keys(optimizer.state_dict(), renames)
    state[_STRUCTURED] = True
    return state


def load_optimizer_state(model, optimizer, state):
    """Inverse of ``portable_optimizer_state``; a plain Paddle/PaddleSeg ``.pdopt`` loads as it is."""
    if state.pop(_STRUCTURED, False):
        state = _rename_keys(state, {name: param.name for name, param in model.named_parameters()})
    optimizer.set_state_dict(state)


def _weights_file(path):
    if os.path.isdir(path):
        path = os.path.join(path, 'model.pdparams')
    return path


def load_state_dict(path, what='--model_path'):
    """Read a ``.pdparams`` file (or a checkpoint folder holding ``model.pdparams``)."""
    if not path:
        raise UserError(f"{what} is required")
    path = _weights_file(path)
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    try:
        state = paddle.load(path)
    except Exception as err:  # a corrupt or foreign file
        raise UserError(f"{what} {path} is not a readable Paddle weights file ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise UserError(f"{what} {path} does not hold a state dict")
    return state


def check_state_dict(model, state, path):
    """Raise ``UserError`` unless ``state`` has exactly the model's keys with the same shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and list(state[k].shape) != list(own[k].shape)]
    if mismatched:
        k = mismatched[0]
        raise UserError(f"{path} does not fit the model: {len(mismatched)} shape mismatches, e.g. {k}: "
                        f"file {list(state[k].shape)} vs model {list(own[k].shape)}")
    if missing or unexpected:
        example = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise UserError(f"{path} does not fit the model: {len(missing)} missing and {len(unexpected)} "
                        f"unexpected keys, e.g. {example}")


def load_model_weights(model, path, what='--model_path'):
    """Load weights into ``model`` strictly; a file whose keys or shapes don't fit is a ``UserError``."""
    state = load_state_dict(path, what)
    check_state_dict(model, state, _weights_file(path))
    model.set_state_dict(state)
    return model


def checkpoint_iter(path):
    """The iteration encoded in a checkpoint folder name ``iter_N``."""
    match = re.fullmatch(r'iter_(\d+)', os.path.basename(os.path.normpath(path)))
    if not match:
        raise UserError(f"--resume_model must be an iter_N checkpoint folder, got: {path}")
    return int(match.group(1))


def resume(model, optimizer, path, ema=None):
    """Load model and optimizer state (which holds the lr scheduler's) from ``path``; returns the iteration.

    Args:
        ema (ModelEMA): Takes ``path/ema_model.pdparams`` where the checkpoint has one; otherwise (a checkpoint of
            a run without ``--use_ema``) it restarts from the resumed weights, as PaddleSeg's does on every resume.
    """
    if not os.path.isdir(path):
        raise UserError(f"--resume_model not found: {path}")
    start_iter = checkpoint_iter(path)
    opt_path = os.path.join(path, 'model.pdopt')
    if not os.path.isfile(opt_path):
        raise UserError(f"--resume_model {path} has no model.pdopt")
    load_model_weights(model, path, '--resume_model')
    load_optimizer_state(model, optimizer, paddle.load(opt_path))
    if ema is not None:
        ema_path = os.path.join(path, EMA_FILE)
        if os.path.isfile(ema_path):
            load_model_weights(ema.model, ema_path, '--resume_model')
        else:
            ema.reset(model)
    return start_iter
