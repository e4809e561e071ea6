"""Convert a foreign checkpoint (PyTorch, safetensors) into a Paddle ``.pdparams`` file for one of our models.

    python tools/convert_weights.py --arch VAN_B0 --format official --input van_b0.pth.tar --output van_b0.pdparams
    python tools/convert_weights.py --arch ResNeXt50_32x4d --format torchvision --input resnext50_32x4d.pth \
        --output resnext50_32x4d.pdparams
    python tools/convert_weights.py --arch MaxViT_T --format timm --input model.safetensors --output maxvit_t.pdparams

How it works (so that any model family can plug in its own checkpoints):

* ``--arch`` names a registered backbone or model (``paddleseg.cvlibs.manager`` BACKBONES, then MODELS).
* The key map is a function ``fn(state, arch) -> (new_state, build_kwargs)`` registered beside the architecture
  with ``@paddle_models.registry.register_converter(format, *arch_names)``; ``--format`` picks it from the table
  ``paddle_models.registry.CONVERTERS`` (``--help`` lists every architecture and its formats). ``state`` maps the
  checkpoint's keys to numpy arrays; ``new_state`` maps our parameter names to numpy arrays in Paddle's layout;
  ``build_kwargs`` are the constructor arguments the checkpoint implies (e.g. ``{'num_classes': 1000}``). A format
  exists because it is registered, not because of a function's name, so renaming a function cannot drop one.
* The checkpoint is read without executing pickled code: ``.safetensors`` with the ``safetensors`` numpy API (no
  PyTorch needed); ``.pth``/``.pt``/``.bin``/``.ckpt``/``.tar`` with ``torch.load(..., weights_only=True)``, whose
  refusal of a pickled global (code the file would run) is one line naming the file and the global. A dict
  wrapping the weights under ``state_dict``/``model``/``module`` is unwrapped and a ``module.`` prefix (from
  DistributedDataParallel) is removed.
* The converted tensors must fit the architecture built with ``build_kwargs`` exactly: every key present, no extra
  key, every shape equal. Anything else stops the conversion with one line naming the key (and both shapes).
* The output is written atomically (a temporary file renamed into place).

Load the result with the model's ``pretrained`` argument (a backbone ignores the classifier keys), e.g. in a config::

    backbone:
      type: VAN_B0
      pretrained: pretrained/van_b0.pdparams
"""
import argparse
import difflib
import os
import re
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import paddle_models  # noqa: E402,F401  (registers every component and converter; first: it preloads zlib and
#                                           silences paddle's import warnings)

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from paddle_models.core.cli import main_wrapper  # noqa: E402
from paddle_models.errors import UserError, error_line  # noqa: E402
from paddle_models.registry import CONVERTERS  # noqa: E402
from paddle_models.weights import check_fit  # noqa: E402
from paddleseg.cvlibs import manager  # noqa: E402

TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.ckpt', '.tar')
WRAPPER_KEYS = ('state_dict', 'model', 'module', 'model_state_dict')


def find_arch(name):
    """The registered backbone or model called ``name``."""
    for component_manager in (manager.BACKBONES, manager.MODELS):
        if name in component_manager.components_dict:
            return component_manager.components_dict[name]
    known = list(manager.BACKBONES.components_dict) + list(manager.MODELS.components_dict)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ''
    raise UserError(f"--arch: unknown architecture {name!r}{hint}")


def key_maps(arch):
    """{format: key-map function} registered for ``arch`` (a registered name, or the component itself)."""
    name = arch if isinstance(arch, str) else arch.__name__
    return dict(CONVERTERS.get(name, {}))


def find_key_map(arch, fmt):
    """The registered component called ``arch`` and its ``fmt`` key map; a one-line UserError naming the formats
    ``arch`` has otherwise."""
    component = find_arch(arch)
    maps = key_maps(arch)
    if fmt not in maps:
        sizes = sorted(name for name, formats in CONVERTERS.items() if name.startswith(arch + '_') and fmt in formats)
        if sizes:  # a family name (SegFormer): the checkpoint fits one size of it, which the user names
            raise UserError(f"--arch: {arch} is a model family; name its size, one of {', '.join(sizes)} "
                            f"(the {fmt!r} checkpoint must match it)")
        offered = ', '.join(sorted(maps)) or 'none; see --help for the architectures that have converters'
        raise UserError(f"--format: {arch} has no {fmt!r} key map (formats for {arch}: {offered})")
    return component, maps[fmt]


def converters_listing():
    """One line per architecture with converters, ``VAN_B0: hf, official``, sorted by name (for ``--help``)."""
    return '\n'.join(f"  {arch}: {', '.join(sorted(formats))}" for arch, formats in sorted(CONVERTERS.items())
                     if formats)


def _to_numpy(value, key, path):
    if isinstance(value, np.ndarray):
        array = value
    elif hasattr(value, 'detach'):  # a torch tensor
        tensor = value.detach().cpu()
        if str(tensor.dtype) in ('torch.bfloat16', 'torch.float16'):
            tensor = tensor.float()
        array = tensor.numpy()
    else:
        raise UserError(f"--input: {path}: {key} holds a {type(value).__name__}, not a tensor")
    if array.dtype.kind == 'f' and array.dtype != np.float32:
        array = array.astype('float32')
    return array


def _unwrap(obj, path):
    while isinstance(obj, dict):
        inner = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)]
        if not inner:
            break
        obj = obj[inner[0]]
    if not isinstance(obj, dict):
        raise UserError(f"--input: {path} holds a {type(obj).__name__}, not a dict of tensors")
    return obj


def read_checkpoint(path):
    """The tensors of a ``.safetensors`` or PyTorch checkpoint as {key: numpy array}, without running pickled code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"--input: {path} does not exist")
    if path.endswith('.safetensors'):
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise UserError(f"--input: reading {path} needs the safetensors package (pip install safetensors)") \
                from None
        try:
            raw = load_file(path)
        except Exception as err:  # noqa: BLE001  (a corrupt file)
            raise UserError(f"--input: {path} is not a readable safetensors file ({_first_line(err)})") from None
    elif path.endswith(TORCH_SUFFIXES):
        try:
            import torch
        except ImportError:
            raise UserError(f"--input: reading {path} needs PyTorch (pip install torch), or give a .safetensors "
                            f"file") from None
        try:
            raw = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as err:  # noqa: BLE001  (corrupt, or pickled objects weights_only refuses)
            raise _torch_load_error(path, err) from None
    else:
        raise UserError(f"--input: {path}: unknown checkpoint type; expected .safetensors or one of "
                        f"{', '.join(TORCH_SUFFIXES)}")
    raw = _unwrap(raw, path)
    state = {}
    for key, value in raw.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        state[key] = _to_numpy(value, key, path)
    if not state:
        raise UserError(f"--input: {path} holds no tensors")
    return state


# torch's weights_only refusal names the global as "GLOBAL posix.system" (wording varies between versions)
_TORCH_GLOBAL = re.compile(r'\bGLOBAL ([A-Za-z_][\w.]*)')
# lines of torch's weights_only message that explain the option rather than the file
_TORCH_BOILERPLATE = ('Weights only load failed', 'Check the documentation', 'Please file an issue',
                      'Re-running `torch.load`', 'In PyTorch 2.6')


def _torch_load_error(path, err):
    """The one-line UserError for a checkpoint ``torch.load(weights_only=True)`` failed on: the global it refused
    (code the file would have run), else the first line of torch's message that is about the file."""
    text = str(err)
    refused = _TORCH_GLOBAL.search(text)
    if refused:
        return UserError(f"--input: {path}: refusing to load: it references {refused.group(1)}, which a weights file "
                         f"never holds (loading it could run code)")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    about_file = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)]
    reason = about_file[0] if about_file else _first_line(err)
    return UserError(f"--input: {path} cannot be read with torch.load(weights_only=True) ({reason})")


def _first_line(err):
    return error_line(err, 'first', type(err).__name__)


def convert(arch, fmt, input_path, output_path):
    """Convert ``input_path`` (format ``fmt``) for architecture ``arch`` and write ``output_path``.

    Returns:
        dict: ``arch``, ``format``, ``kwargs`` (the constructor arguments the weights fit), ``tensors`` (count),
        ``output`` (the written path).
    """
    output_path = os.fspath(output_path)
    if not output_path.endswith('.pdparams'):
        raise UserError(f"--output: {output_path} must end in .pdparams")
    component, key_map = find_key_map(arch, fmt)
    state = read_checkpoint(input_path)
    converted, kwargs = key_map(state, arch)
    with paddle.LazyGuard():  # shapes only: no initialisation
        model = component(**kwargs)
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    check_fit(converted, expected, os.fspath(input_path), arch)

    out_dir = os.path.dirname(os.path.abspath(output_path))
    try:
        os.makedirs(out_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.convert-', suffix='.pdparams', dir=out_dir)
        os.close(fd)
    except OSError as err:
        raise UserError(f"--output: cannot write in {out_dir}: {err.strerror or err}") from None
    try:
        paddle.save({k: paddle.to_tensor(np.ascontiguousarray(converted[k])) for k in expected}, tmp)
        os.replace(tmp, output_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return {'arch': arch, 'format': fmt, 'kwargs': kwargs, 'tensors': len(expected), 'output': output_path}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Convert a PyTorch/safetensors checkpoint into .pdparams for one of the registered backbones or "
                    "models.",
        epilog=f"architectures and their checkpoint formats (--arch: --format):\n{converters_listing() or '  none'}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', required=True, help='Registered name, e.g. VAN_B0, ResNeXt50_32x4d, MaxViT_T.')
    parser.add_argument('--format', required=True, dest='fmt',
                        help="Checkpoint layout registered for the arch (e.g. official, hf, torchvision, timm; "
                             "listed below).")
    parser.add_argument('--input', required=True, help='The checkpoint (.safetensors, .pth, .pt, .bin, .ckpt).')
    parser.add_argument('--output', required=True, help='The .pdparams file to write.')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    info = convert(args.arch, args.fmt, args.input, args.output)
    kwargs = ', '.join(f'{k}={v!r}' for k, v in info['kwargs'].items())
    print(f"wrote {info['output']}: {info['tensors']} tensors for {info['arch']}({kwargs}) from {args.input} "
          f"({info['format']} layout)")


if __name__ == '__main__':
    main_wrapper(main)
