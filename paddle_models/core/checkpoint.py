"""Checkpoints: written atomically (a temporary folder renamed into place), loaded strictly."""
import contextlib
import json
import os
import re
import shutil

import paddle

from paddle_models.core.folders import forget_temp, hidden_name, new_hidden_dir, remove_stale_hidden
from paddle_models.errors import UserError
from paddle_models.safe_load import load_paddle_file
from paddle_models.weights import check_fit


EMA_FILE = 'ema_model.pdparams'


def save_checkpoint(save_dir, name, model, optimizer=None, extra=None, ema=None, model_file='model.pdparams'):
    """Write ``save_dir/name/model.pdparams`` (+ ``model.pdopt``, + ``ema_model.pdparams``, + ``extra`` text files)
    atomically.

    Everything goes into a temporary folder ``.<name>.tmp-<random>`` beside the target first; the folder is renamed
    into place only when complete, so an interrupted save never leaves a half-written checkpoint under ``name``. An
    existing ``name`` is moved aside (``.<name>.old-<random>``) for the rename and put back if the save fails; a save
    that fails removes its temporary folder and raises the ``OSError``. Folders get the mode the user's umask gives
    (files too, as ``open`` creates them).

    Args:
        save_dir (str): The folder that holds the checkpoint folders.
        name (str): The checkpoint folder's name (``iter_N``, ``best_model``, ``ema_best_model``).
        model (nn.Layer): Whose weights go into ``model_file``.
        optimizer: Its state goes into ``model.pdopt`` (for resuming); None leaves it out.
        extra (dict): ``{file name: text}`` written beside the weights (e.g. ``score.txt``, ``train_state.json``).
        ema (ModelEMA): An exponential moving average of the weights, saved as ``ema_model.pdparams`` (PaddleSeg's
            name) so that a resumed run continues the same average.
        model_file (str): File name of ``model``'s weights; PaddleSeg names the best EMA weights
            ``ema_best_model/ema_model.pdparams``.

    Returns:
        str: The checkpoint folder ``save_dir/name``.
    """
    os.makedirs(save_dir, exist_ok=True)
    target = os.path.join(save_dir, name)
    tmp = new_hidden_dir(save_dir, name, 'tmp')
    old = None
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
            old = hidden_name(save_dir, name, 'old')
            os.replace(target, old)
        os.replace(tmp, target)
        forget_temp(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        forget_temp(tmp)
        if old is not None and not os.path.exists(target):
            try:
                os.replace(old, target)  # the previous checkpoint goes back where it was
            except OSError:
                pass  # left as .<name>.old-*: remove_stale_temp_folders puts it back at the next start
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def remove_checkpoint(path):
    """Remove checkpoint folder ``path`` (``--keep_checkpoint_max``) at once from the user's view: it is renamed to
    a hidden ``.<name>.tmp-*`` first, so an interruption during the removal leaves no half-deleted checkpoint under
    its name, only a leftover that ``remove_stale_temp_folders`` removes at the next start."""
    parent, name = os.path.split(path)
    hidden = hidden_name(parent, name, 'tmp')
    try:
        os.replace(path, hidden)
    except OSError:
        hidden = path
    shutil.rmtree(hidden, ignore_errors=True)


# the names our engine saves under, and the probe of check_save_dir: only their hidden folders are ever removed
_HIDDEN_NAMES = r'iter_\d+|best_model|ema_best_model|probe'


def remove_stale_temp_folders(save_dir):
    """Clean up after saves that were killed (SIGKILL, power loss) in ``save_dir``.

    A ``.<name>.tmp-*`` folder is a save that never completed: removed. A ``.<name>.old-*`` folder is a previous
    checkpoint moved aside while a new one took its name: removed when ``<name>`` exists, renamed back to ``<name>``
    when the kill came between the two renames. Only the names ``save_checkpoint`` and ``check_save_dir`` use are
    touched (``folders.remove_stale_hidden``); the caller holds ``save_dir``'s lock.

    Args:
        save_dir (str): The folder a run is about to save into (need not exist).

    Returns:
        (list of removed folder paths, list of restored checkpoint paths)
    """
    return remove_stale_hidden(save_dir, _HIDDEN_NAMES)


def iter_checkpoints(save_dir):
    """The ``iter_N`` checkpoint folders in ``save_dir``, oldest (smallest N) first; [] if it does not exist."""
    if not os.path.isdir(save_dir):
        return []
    found = []
    for entry in os.listdir(save_dir):
        match = re.fullmatch(r'iter_(\d+)', entry)
        if match and os.path.isdir(os.path.join(save_dir, entry)):
            found.append((int(match.group(1)), os.path.join(save_dir, entry)))
    return [path for _, path in sorted(found)]


def _blocking_file(path):
    """The nearest ancestor of ``path`` (or ``path`` itself) that exists and is not a folder; None if none is."""
    path = os.path.abspath(path)
    while True:
        if os.path.exists(path):
            return None if os.path.isdir(path) else path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def check_save_dir(save_dir, need_bytes=0):
    """Make sure checkpoints can be written in ``save_dir`` before training starts.

    ``save_dir`` is created if missing; a probe folder with a small file (written, synced and removed, the way a
    checkpoint is written) shows that it is writable, and ``shutil.disk_usage`` that about ``need_bytes`` are free.

    Args:
        save_dir (str): The run's ``--save_dir``.
        need_bytes (int): About how much one checkpoint takes; 0 skips the free-space check.

    Returns:
        str: The topmost folder created here (``save_dir`` or one of its parents; absolute), None when ``save_dir``
        existed: a run that fails before its first save removes what it created.

    Raises:
        UserError: one line naming ``save_dir`` (and the file in the way, or the free and needed space).
    """
    blocker = _blocking_file(save_dir)
    if blocker == os.path.abspath(save_dir):
        raise UserError(f"--save_dir {save_dir} is a file, not a folder")
    if blocker is not None:
        raise UserError(f"--save_dir {save_dir} cannot be created: {blocker} is a file, not a folder")
    created = None
    missing = os.path.abspath(save_dir)
    while not os.path.isdir(missing):
        created, missing = missing, os.path.dirname(missing)
    try:
        os.makedirs(save_dir, exist_ok=True)
    except OSError as err:
        raise UserError(f"--save_dir {save_dir} cannot be created: {err.strerror or err}") from None
    try:
        _probe_write(save_dir)
        if need_bytes:
            free = shutil.disk_usage(save_dir).free
            if free < need_bytes:
                raise UserError(f"--save_dir {save_dir} has {_megabytes(free)} free but a checkpoint needs about "
                                f"{_megabytes(need_bytes)} (No space left on device)")
    except UserError:
        if created:
            remove_empty_folders(save_dir, created)
        raise
    return created


def _probe_write(save_dir):
    """Write a small file in a probe folder of ``save_dir`` (synced to disk) and remove it; an ``OSError`` becomes a
    ``UserError`` naming ``save_dir``."""
    probe = None
    try:
        probe = new_hidden_dir(save_dir, 'probe', 'tmp')
        with open(os.path.join(probe, 'probe'), 'wb') as f:
            f.write(b'\0' * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise UserError(f"--save_dir {save_dir} is not writable: {err.strerror or err}") from None
    finally:
        if probe is not None:
            shutil.rmtree(probe, ignore_errors=True)
            forget_temp(probe)


def remove_empty_folders(path, top):
    """Remove folder ``path`` and its parents up to ``top`` (absolute) while they are empty: undoes the creation of
    a save_dir by ``check_save_dir`` when a run fails before its first save."""
    path = os.path.abspath(path)
    with contextlib.suppress(OSError):  # not empty (or gone): stop there
        while True:
            os.rmdir(path)
            if path == top or os.path.dirname(path) == path:
                return
            path = os.path.dirname(path)


def _megabytes(size):
    return f"{size / 2 ** 20:.1f} MB"


TRAIN_STATE_FILE = 'train_state.json'


def read_train_state(path):
    """The ``train_state.json`` of checkpoint folder ``path`` as a dict (JSON: no code can run); None when the
    checkpoint has none (an older checkpoint, or PaddleSeg's).

    Raises:
        UserError: the file is not a JSON object (naming it).
    """
    file = os.path.join(path, TRAIN_STATE_FILE)
    if not os.path.isfile(file):
        return None
    try:
        with open(file) as f:
            state = json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(f"--resume_model {file} is not readable JSON ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise UserError(f"--resume_model {file} does not hold a JSON object")
    return state


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
    """Read a ``.pdparams`` file (or a checkpoint folder holding ``model.pdparams``) with
    ``safe_load.load_paddle_file``: no code in the file runs; a truncated, foreign or code-carrying file is a
    one-line ``UserError`` that starts with ``what`` and the path."""
    if not path:
        raise UserError(f"{what} is required")
    path = _weights_file(path)
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    state = load_paddle_file(path, what)
    if not isinstance(state, dict):
        raise UserError(f"{what} {path} does not hold a state dict")
    return state


def load_model_weights(model, path, what='--model_path'):
    """Load weights into ``model`` strictly; a file whose keys or shapes don't fit is a one-line ``UserError``
    (``weights.check_fit``, the comparison every strict load shares)."""
    state = check_fit(load_state_dict(path, what), model.state_dict(), _weights_file(path))
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
    load_optimizer_state(model, optimizer, load_paddle_file(opt_path, '--resume_model'))
    if ema is not None:
        ema_path = os.path.join(path, EMA_FILE)
        if os.path.isfile(ema_path):
            load_model_weights(ema.model, ema_path, '--resume_model')
        else:
            ema.reset(model)
    return start_iter
