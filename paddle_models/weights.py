"""Loading weight files into models and turning PyTorch-layout state dicts into Paddle's, shared by every
backbone and model (no model-specific code here).

``pretrained:`` may also be an http(s) URL, as in PaddleSeg's configs: ``resolve_pretrained`` maps it to PaddleSeg's
weight cache (``$SEG_HOME/pretrained_model/...``), downloading and unpacking it there once.
"""
import fnmatch
import http.client
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib

import numpy as np
from tqdm import tqdm

from paddle_models.errors import UserError
from paddle_models.safe_load import load_paddle_file


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------------------------
# Pretrained weights named by URL: PaddleSeg's weight cache

ARCHIVE_SUFFIXES = ('.tar.gz', '.tgz', '.tar', '.zip')
_WEIGHTS_FILE = 'model.pdparams'  # what PaddleSeg's archives hold and where its cache keeps their weights
_TIMEOUT_S = 15  # per connect/read, as PaddleSeg's downloader
_CHUNK = 1 << 20


def seg_home():
    """PaddleSeg's home folder: ``$SEG_HOME``, or ``~/.paddleseg`` when it is unset or empty.

    Like PaddleSeg, a ``SEG_HOME`` that names an existing file (not a folder) is ignored with a warning on stderr, so
    both use the same cache.
    """
    home = os.environ.get('SEG_HOME')
    if home and os.path.exists(home) and not os.path.isdir(home):
        print(f"warning: SEG_HOME {home} is a file; using ~/.paddleseg", file=sys.stderr)
        home = None
    return home or os.path.join(os.path.expanduser('~'), '.paddleseg')


def pretrained_cache_path(url):
    """The local file that stands for a weights URL in PaddleSeg's cache (the path PaddleSeg 2.8.0 reads).

    An archive URL (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``) maps to
    ``$SEG_HOME/pretrained_model/<archive name up to its first dot>/model.pdparams``; any other URL to
    ``$SEG_HOME/pretrained_model/<parent folder name>/<file name>``. Names are taken after percent-decoding.

    Args:
        url (str): An http(s) URL.

    Returns:
        str: The cache path (it may not exist yet).

    Raises:
        UserError: The URL has no host, or names no usable file (e.g. it ends in ``/`` or a name is ``..``).
    """
    return _cache_entry(url)[0]


def _cache_entry(url):
    """(cache path, archive suffix or None) of a weights URL; see ``pretrained_cache_path``."""
    parts = urllib.parse.urlsplit(url)
    if not parts.netloc:
        raise UserError(f"pretrained URL has no host: {url}")
    # like PaddleSeg, split host + decoded path at '/' (so a file right under the host is kept in <host>/)
    names = urllib.parse.unquote(parts.netloc + parts.path).split('/')
    suffix = next((s for s in ARCHIVE_SUFFIXES if names[-1].endswith(s)), None)
    if suffix:
        folder, file_name = names[-1].split('.')[0], _WEIGHTS_FILE
    else:
        folder, file_name = (names[-2] if len(names) > 1 else ''), names[-1]
    for name in (folder, file_name):
        if name in ('', '.', '..') or '\\' in name or '\0' in name:
            raise UserError(f"pretrained URL {url} does not name a weights file (PaddleSeg's cache would use "
                            f"{folder!r}/{file_name!r})")
    return os.path.join(seg_home(), 'pretrained_model', folder, file_name), suffix


def resolve_pretrained(path_or_url):
    """The local ``.pdparams`` file for a ``pretrained`` value: a local path unchanged, an http(s) URL through
    PaddleSeg's weight cache.

    A URL whose cache file (``pretrained_cache_path``) exists is used without any network access, so weights
    PaddleSeg downloaded before are reused. Otherwise the URL is downloaded (with a progress bar) into a temporary
    folder beside the cache folders, an archive is unpacked there (refusing members that would land outside it)
    and its ``model.pdparams`` is renamed into place; the cache never holds a partial file, even when the download
    fails or is interrupted, and a concurrent process sees either no file or the whole one.

    Args:
        path_or_url (str | os.PathLike): A local file, or an http(s) URL as in PaddleSeg's configs.

    Returns:
        str: The local path to load.

    Raises:
        UserError: Another URL scheme, or the download or unpacking failed (one line naming the URL, the reason and
            the cache path where the file can be put by hand).
    """
    path = os.fspath(path_or_url)
    scheme = urllib.parse.urlsplit(path).scheme.lower() if isinstance(path, str) else ''
    if scheme not in ('http', 'https'):
        if isinstance(path, str) and '://' in path:
            raise UserError(f"pretrained must be a local .pdparams file or an http(s) URL: {path}")
        return path
    cache, suffix = _cache_entry(path)
    if os.path.isfile(cache):
        return cache
    root = os.path.dirname(os.path.dirname(cache))
    try:
        os.makedirs(root, exist_ok=True)
        work = tempfile.mkdtemp(prefix='.download-', dir=root)
    except OSError as exc:
        raise UserError(f"cannot download pretrained weights {path}: cannot write the cache folder {root}: "
                        f"{_first_line(exc)}; put the file at {cache}") from None
    try:
        download = os.path.join(work, 'download')
        _download(path, download, cache)
        weights = _unpack(path, suffix, download, work, cache) if suffix else download
        _move_into_cache(path, weights, cache)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return cache


def _download(url, target, cache):
    """Write the body of ``url`` to ``target`` with a tqdm progress bar, checking its size against Content-Length.

    Args:
        url (str): The http(s) URL.
        target (str): The file to write (inside the temporary folder).
        cache (str): The cache path, named in error messages.
    """
    def failure(reason):
        return UserError(f"cannot download pretrained weights {url}: {reason}; put the file at {cache}")

    print(f"downloading {url} -> {cache}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, open(target, 'wb') as out:
            length = response.headers.get('Content-Length')
            expected = int(length) if length and length.strip().isdigit() else None
            received = 0
            with tqdm(total=expected, unit='B', unit_scale=True, unit_divisor=1024,
                      desc=os.path.basename(urllib.parse.urlsplit(url).path)) as bar:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:  # before URLError, its base class
        exc.close()
        raise failure(f"HTTP Error {exc.code}: {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise failure(_first_line(exc.reason) if isinstance(exc.reason, BaseException) else exc.reason) from None
    except (http.client.HTTPException, OSError, ValueError) as exc:  # timeouts, resets, malformed URLs, disk full
        raise failure(_first_line(exc) if str(exc).strip() else type(exc).__name__) from None
    if expected is not None and received != expected:
        raise failure(f"the transfer stopped after {received} of {expected} bytes")


def _plain_member_name(name):
    """True when an archive member name is relative and has no ``..`` component (backslashes count as separators,
    a drive letter as absolute)."""
    name = name.replace('\\', '/')
    if name.startswith('/') or (len(name) > 1 and name[1] == ':'):
        return False
    return '..' not in name.split('/')


def _stays_inside(base, target):
    """True when ``target`` (a link target), taken relative to the archive folder ``base`` (``''`` = its top),
    names a place inside the archive folder (lexically: ``..`` may climb, but not above the top)."""
    target = target.replace('\\', '/')
    if target.startswith('/') or (len(target) > 1 and target[1] == ':'):
        return False
    depth = 0
    for part in (base.replace('\\', '/') + '/' + target).split('/'):
        if part == '..':
            depth -= 1
            if depth < 0:
                return False
        elif part not in ('', '.'):
            depth += 1
    return True


def _choose_weights(url, names, cache):
    """The member holding the weights: the shallowest one named ``model.pdparams`` (top level or in a folder).

    Args:
        url (str): The archive's URL, for messages.
        names (list[str]): The regular-file (or link) member names.
        cache (str): The cache path, for messages.
    """
    found = [n for n in dict.fromkeys(names) if n.replace('\\', '/').rstrip('/').split('/')[-1] == _WEIGHTS_FILE]
    if not found:
        raise UserError(f"pretrained weights archive {url} holds no {_WEIGHTS_FILE}; put the file at {cache}")
    depth = min(n.strip('/').count('/') for n in found)
    shallowest = [n for n in found if n.strip('/').count('/') == depth]
    if len(shallowest) > 1:
        raise UserError(f"pretrained weights archive {url} holds several {_WEIGHTS_FILE} ({', '.join(shallowest)}); "
                        f"put the one to use at {cache}")
    return shallowest[0]


def _refuse(url, member, why):
    return UserError(f"refusing pretrained weights archive {url}: member {member!r} {why}")


def _unpack(url, suffix, archive, work, cache):
    """Check every member of a downloaded ``.tar.gz/.tgz/.tar/.zip`` and copy its ``model.pdparams`` out.

    The whole archive is refused when any member is absolute, has a ``..`` component, or is a link pointing
    outside the archive; only the weights file itself is written (no other member touches the disk).

    Args:
        url (str): The archive's URL, for messages.
        suffix (str): One of ``ARCHIVE_SUFFIXES`` (from the URL), which says the format.
        archive (str): The downloaded file.
        work (str): The temporary folder to write ``model.pdparams`` into.
        cache (str): The cache path, for messages.

    Returns:
        str: The unpacked weights file inside ``work``.
    """
    target = os.path.join(work, _WEIGHTS_FILE)
    try:
        if suffix == '.zip':
            with zipfile.ZipFile(archive) as zf:
                files = []
                for info in zf.infolist():
                    if not _plain_member_name(info.filename):
                        raise _refuse(url, info.filename, "has an absolute path or '..'")
                    if stat.S_ISLNK(info.external_attr >> 16):
                        link = zf.read(info).decode('utf-8', 'replace')
                        if not _stays_inside(os.path.dirname(info.filename.rstrip('/')), link):
                            raise _refuse(url, info.filename, f"is a symlink pointing outside the archive ({link})")
                    elif not info.is_dir():
                        files.append(info.filename)
                with zf.open(_choose_weights(url, files, cache)) as src, open(target, 'wb') as out:
                    shutil.copyfileobj(src, out, _CHUNK)
        else:
            with tarfile.open(archive, 'r:*') as tar:
                members = tar.getmembers()
                for member in members:
                    if not _plain_member_name(member.name):
                        raise _refuse(url, member.name, "has an absolute path or '..'")
                    if member.issym() and not _stays_inside(os.path.dirname(member.name), member.linkname):
                        raise _refuse(url, member.name, f"is a symlink pointing outside the archive "
                                                        f"({member.linkname})")
                    if member.islnk() and not _stays_inside('', member.linkname):
                        raise _refuse(url, member.name, f"is a hard link pointing outside the archive "
                                                        f"({member.linkname})")
                name = _choose_weights(url, [m.name for m in members if m.isfile() or m.issym() or m.islnk()],
                                       cache)
                src = tar.extractfile(name)  # follows a link inside the archive
                if src is None:
                    raise UserError(f"pretrained weights archive {url}: {name} is not a file; put the file at {cache}")
                with src, open(target, 'wb') as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    except (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, OSError, KeyError,
            RuntimeError) as exc:  # corrupt, truncated, encrypted or unsupported, dangling link, disk full
        reason = _first_line(exc) if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot unpack pretrained weights {url}: {reason}; put the file at {cache}") from None
    return target


def _move_into_cache(url, weights, cache):
    """Rename the complete ``weights`` file to ``cache`` (atomic: same filesystem), creating its folder; a folder
    this call created is removed again (if still empty) when the rename fails."""
    folder = os.path.dirname(cache)
    created = not os.path.isdir(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        os.replace(weights, cache)
    except OSError as exc:
        if created:
            try:
                os.rmdir(folder)
            except OSError:
                pass
        raise UserError(f"cannot store pretrained weights {url} at {cache}: {_first_line(exc)}") from None


# ----------------------------------------------------------------------------------------------------------------
# Loading weight files strictly: one loader, one comparison

_PADDLE_SAVE_MARKER = 'StructuredToParameterName@@'  # bookkeeping entry of paddle.save, not a parameter


def _shape(value):
    """The shape of a tensor or array as a list; a shape given as a list or tuple is returned as a list."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return list(getattr(value, 'shape', []))


def _listed(keys, limit=3):
    return ', '.join(keys[:limit]) + (', ...' if len(keys) > limit else '')


def _keys(count):
    return f"{count} key{'' if count == 1 else 's'}"


def check_fit(state, expected, source, target='the model', ignore_prefixes=()):
    """Raise a one-line ``UserError`` unless ``state`` holds exactly the keys of ``expected`` with the same shapes.

    The one comparison behind every strict load (pretrained weights, ``--model_path``/``--resume_model``, and the
    converted checkpoints of ``tools/convert_weights.py``), so a file that does not fit reads the same everywhere:
    ``<source> does not fit <target>: <what differs>``. Shape mismatches are reported first (a wrong
    ``num_classes`` is the usual cause), then the keys missing from the file and those the model does not have.

    Args:
        state (dict): The file's tensors or arrays by key.
        expected (dict): The model's tensors (e.g. ``model.state_dict()``) or shapes (lists) by key.
        source (str): What the file is, for the message (e.g. ``"HarDNet: pretrained weights /p.pdparams"``).
        target (str): What it should fit (``'the model'``, or an architecture name).
        ignore_prefixes (tuple[str]): Keys of the file that start with one of these and that ``expected`` lacks
            (an ImageNet classifier) are not an error.

    Returns:
        dict: ``state`` without the ignored keys (and without ``paddle.save``'s bookkeeping entry).
    """
    state = {k: v for k, v in state.items()
             if k != _PADDLE_SAVE_MARKER and (k in expected or not k.startswith(tuple(ignore_prefixes)))}
    mismatched = [k for k in expected if k in state and _shape(state[k]) != _shape(expected[k])]
    if mismatched:
        key = mismatched[0]
        detail = (f"{key} has shape {_shape(state[key])} in the file but {_shape(expected[key])} in the model")
        if len(mismatched) > 1:
            detail = f"{len(mismatched)} shape mismatches, e.g. {detail}"
        raise UserError(f"{source} does not fit {target}: {detail}")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"{_keys(len(missing))} missing from the file ({_listed(missing)})")
    if unexpected:
        problems.append(f"{_keys(len(unexpected))} not in the model ({_listed(unexpected)})")
    if problems:
        raise UserError(f"{source} does not fit {target}: " + '; '.join(problems))
    return state


def _absolute_note(path):
    """`` (absolute: /cwd/rel/path)`` for a relative path, so that a missing file is found whatever the folder the
    user ran from; nothing for an absolute one."""
    return '' if os.path.isabs(path) else f" (absolute: {os.path.abspath(path)})"


def load_weights(model, path_or_url, skip_prefixes=()):
    """Load a ``.pdparams`` file (local, or an http(s) URL resolved by ``resolve_pretrained``) into ``model``,
    requiring exactly the model's keys with their shapes (``check_fit``).

    Every backbone and model loads its ``pretrained`` argument through here.

    Args:
        model (nn.Layer): The backbone or model to fill.
        path_or_url (str | os.PathLike): The ``.pdparams`` file or its URL.
        skip_prefixes (tuple[str]): Key prefixes of parts the file may have and the model not (the ImageNet
            classifier of a backbone file): such keys are ignored, any other difference is an error.

    Raises:
        UserError: The file is missing, unreadable or cannot be downloaded, is not a complete ``paddle.save`` file
            or holds anything else (read by ``safe_load.load_paddle_file``: no code in it runs), or does not fit
            (one line naming the model, the file and the key).
    """
    path = resolve_pretrained(path_or_url)
    name = type(model).__name__
    state = _read_weights(name, path)
    state = check_fit(state, model.state_dict(), f"{name}: pretrained weights {path}", ignore_prefixes=skip_prefixes)
    model.set_state_dict(state)


def _read_weights(name, path):
    """The state dict of a local ``.pdparams`` file, read without running code in it (``name``: the model, for
    messages)."""
    if not os.path.isfile(path):
        raise UserError(f"{name}: pretrained weights not found: {path}{_absolute_note(path)}")
    state = load_paddle_file(path, what=f"{name}: cannot read pretrained weights")
    if not isinstance(state, dict):
        raise UserError(f"{name}: pretrained weights {path} hold a {type(state).__name__}, not a dict of parameters")
    return state


def class_params(model):
    """The fnmatch patterns of ``model``'s parameters whose shapes follow its number of classes: the classifier
    layers of its heads and auxiliary heads, which each model class declares as ``CLASS_PARAMS``."""
    return tuple(getattr(model, 'CLASS_PARAMS', ()))


def _other_class_count(in_file, in_model):
    """True when two classifier tensors differ in their class count only: the first axis (the output channels of a
    conv weight or bias); any other difference (the input channels) is an architecture mismatch."""
    a, b = _shape(in_file), _shape(in_model)
    return len(a) == len(b) >= 1 and a[0] != b[0] and a[1:] == b[1:]


def load_model_pretrained(model, pretrained, skip_prefixes=()):
    """Load a whole model's ``pretrained`` weights, allowing another number of classes (fine-tuning).

    ``pretrained`` is a local ``.pdparams`` file, an http(s) URL (PaddleSeg's weight cache) or the name of a
    published checkpoint (``paddle_models.pretrained``; a local file of that name wins). Every parameter must be in
    the file with the model's shape, as ``load_weights`` requires, except the classifier layers the model declares
    (``CLASS_PARAMS``): where their shapes differ in the class count only (a 19-class Cityscapes checkpoint into an
    11-class model) they keep their initial values and one log line names them with both shapes. Any other difference is a one-line
    ``UserError`` naming the key. PaddleSeg's trainer skips every mismatch silently; this skips only the classifiers,
    so a checkpoint of another architecture (B1 weights into a B0 model) is still refused.

    Args:
        model (nn.Layer): The model, built with its own ``num_classes``.
        pretrained (str | os.PathLike): The weights: file, URL or checkpoint name.

    Returns:
        list[str]: The class-dependent keys left as initialised (empty when the class counts agree).
    """
    from paddle_models.core import logger
    from paddle_models.pretrained import get_pretrained, is_pretrained_name

    value = os.fspath(pretrained)
    if is_pretrained_name(value) and not os.path.exists(value):
        value = get_pretrained(value)['url']
    path = resolve_pretrained(value)
    name = type(model).__name__
    state = _read_weights(name, path)
    expected = model.state_dict()
    patterns = class_params(model)
    skipped = {k: _shape(state[k]) for k in expected if k in state and _other_class_count(state[k], expected[k])
               and any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    state = check_fit({k: v for k, v in state.items() if k not in skipped},
                      {k: v for k, v in expected.items() if k not in skipped}, f"{name}: pretrained weights {path}",
                      ignore_prefixes=skip_prefixes)
    with warnings.catch_warnings():  # Paddle warns about each key it is not given: the skipped ones, on purpose
        warnings.simplefilter('ignore')
        model.set_state_dict(state)
    if skipped:
        shapes = ', '.join(f"{k} {file_shape} in the file, {_shape(expected[k])} in the model"
                           for k, file_shape in skipped.items())
        logger.info(f"{name}: pretrained weights {path}: {_keys(len(skipped))} of the classifier left as "
                    f"initialised (another number of classes): {shapes}")
    return list(skipped)


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


