"""Run an exported segmentation model (deploy.yaml + program + params) with Paddle Inference, or an ONNX export
(deploy.yaml + model.onnx) with ONNX Runtime or the standalone OpenVINO runtime.

Standalone: needs paddle, numpy, opencv, PyYAML, Pillow and paddleseg (for the preprocessing transforms listed in
deploy.yaml; and onnxruntime or openvino for ONNX exports), not paddle_models. Flags follow PaddleSeg's
``deploy/python/infer.py``::

    python deploy/python/infer.py --config output/deploy.yaml --image_path img.jpg --save_dir output/result

Behaviour worth knowing:

* ``--image_path``: an image file, a folder (searched recursively) or a .txt list (first column of each line,
  relative to the list's folder, as PaddleSeg's lists).
* Results: one pseudo-color PNG per image, named after the image (``<stem>.png``; for a folder, the image's path
  under it is kept; where two images would share a name, the later gets ``<stem>_1.png``, ...), pixel value =
  class id; ``--save_dir`` is created when the first result is written. The prediction is mapped back to the
  original image size through the resize/padding steps recorded by the transforms (nearest neighbour, as
  PaddleSeg's ``reverse_transform``); with transforms that keep the size it is the network output unchanged.
* Classes: the PNG colours are deploy.yaml's ``Deploy.palette`` (an ``[r, g, b]`` per class id, written by
  ``export.py`` from the config's dataset), PaddleSeg's palette
  (``paddleseg.utils.visualize.get_color_map_list``, predict.py's default) for the ids it does not cover or where
  it is absent (PaddleSeg's own exports). Each image gets one log line with the classes present, largest share
  first, named by ``Deploy.class_names`` (``class N`` where absent): ``img.jpg: road 41.2%, sky 30.5%, ...``.
* Backend: ``Deploy.backend`` of deploy.yaml (``export.py`` writes it): ``paddle_inference`` (also when absent, as
  in PaddleSeg's exports), ``onnxruntime`` (``export.py --format onnx``: ``Deploy.model`` is ``model.onnx``, no
  params) or ``openvino`` (``export.py --format onnx --backend openvino``: the same files, for the standalone
  OpenVINO runtime, ``pip install openvino``). ``--backend`` overrides it where the files allow: an ONNX model runs
  in onnxruntime or openvino, a Paddle program in paddle_inference only (anything else is a one-line error).
  ONNX Runtime runs on the CPUExecutionProvider; with ``--device gpu`` on the CUDAExecutionProvider where the
  installed onnxruntime has it (else the CPU, with a warning). OpenVINO runs on the CPU in FP32 (``openvino_settings``;
  one compile per input shape, see ``OpenVinoPredictor``). The oneDNN and TensorRT flags are Paddle Inference's and
  do not apply to them. Pre- and postprocessing are the same for every backend.
* ``--backend auto``: the fastest backend the files allow, measured once (one warm-up and three timed runs of each
  installed one on a random input of deploy.yaml's ``input_shape``, free dimensions 1x3x512x512) and cached beside
  deploy.yaml in ``backend_choice.json`` (the timings, the CPU model and count, threads, device, package versions,
  the model file's size and time, the shape): later runs with the same facts read the choice and measure nothing;
  any change measures again. A folder that cannot be written is logged in one line and the run goes on.
  ``paddle_models.core.exported.InferenceModel(backend='auto')`` reads and writes the same file.
  Programs exported with ``output_op`` softmax or none get an argmax over the channel axis (``--with_argmax`` is
  accepted for compatibility; it is implied).
* oneDNN on CPU: ``--enable_mkldnn`` left out means "on where it is known to work": on when deploy.yaml says the
  export's oneDNN check passed (``Deploy.enable_mkldnn: true``), off otherwise (PaddleSeg's default). An explicit
  ``--enable_mkldnn True`` is overridden, with a warning giving the reason, when deploy.yaml records that oneDNN
  fails on the program; and if a oneDNN run fails anyway, the runner warns and retries without oneDNN. Paddle
  Inference enables oneDNN by default on CPU, so "off" calls ``disable_mkldnn()`` explicitly.
* OpenVINO on CPU: a deploy.yaml with ``Deploy.enable_openvino: true`` (``export.py --format openvino``: a legacy
  program, Paddle 3.x) turns on Paddle Inference's OpenVINO engine in FP32 (``--enable_openvino False`` turns it
  off; oneDNN follows ``--enable_mkldnn`` for the ops OpenVINO leaves to Paddle). A PIR program (model.json) runs
  without it, with a warning: Paddle's engine takes legacy programs only.
* INT8: a deploy.yaml with ``Deploy.precision: int8`` (written by ``tools/quantize.py``) gets oneDNN's INT8
  kernels (``enable_mkldnn_int8()``) whenever oneDNN is on; without oneDNN the quantized program runs in FP32.
* ``--device`` defaults to gpu where Paddle is built with CUDA, else cpu. The GPU and TensorRT settings follow
  PaddleSeg's runner (TensorRT dynamic shapes for the input ``x``: auto-tuned with ``--enable_auto_tune``, else
  1x3x100x100 .. 1x3x2000x3000); they are untested here (no GPU).
* Memory optimisation (``enable_memory_optim``) is used for legacy programs (model.pdmodel) only: Paddle 3.3.1
  cannot create a predictor for a PIR program (model.json) with it.
* ``--benchmark`` runs two warm-up batches first, then prints preprocess, inference and postprocess times, and
  ``--model_name`` (PaddleSeg's flag: a name shown in the benchmark report) as its ``model`` line.
* The program and params files are checked before Paddle Inference reads them: a truncated or corrupt
  ``model.json``/``model.pdmodel``/``model.pdiparams`` is one line naming the file (Paddle's own error is a C++
  message naming neither), as is any other failure to create the predictor from them.
* ``serve.py`` (the HTTP server, docs/serving.md) imports this module: an image's bytes become the network input
  in ``prepare_image`` for both, and the predictor comes from ``setup_backend`` / ``make_predictor``.
* Errors the user must fix (missing config or image, bad deploy.yaml) print one line on stderr and exit 2.
  SIGTERM and SIGINT end the run with ``error: interrupted by SIGTERM`` (or SIGINT) and exit code 143 (130).
"""
import argparse
import atexit
import codecs
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
import zlib  # noqa: F401  (Paddle 2.6.2: the system zlib must load before Paddle's bundled one)

import numpy as np
import yaml

logger = logging.getLogger('infer')
# Paddle's import warns about a missing ccache (a compiler cache for C++ extensions, which this runner never builds)
warnings.filterwarnings('ignore', message='No ccache found')

IMAGE_SUFFIXES = ('.jpeg', '.jpg', '.bmp', '.png', '.tif', '.tiff', '.webp')


class UserError(Exception):
    """Something the user must fix; ``str()`` is the one-line message."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived (``install_signal_handlers``); ``signum`` is which."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = int(signum)


_SIGNALS = {'installed': False, 'stopping': False}


def install_signal_handlers():
    """SIGTERM and SIGINT raise :class:`Interrupted` in the main thread, so that the run ends with one line and exit
    code 128 + the signal number (143, 130) instead of a traceback, or a hang in the handler Paddle installs for
    SIGTERM (glog's, which prints a stack trace from inside the signal and can deadlock in ``malloc``). Called by
    the command line, and again after Paddle is imported (the import installs that handler)."""
    _SIGNALS['installed'] = True
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal)


def _on_signal(signum, frame):
    if _SIGNALS['stopping']:  # already on the way out
        return
    _SIGNALS['stopping'] = True
    raise Interrupted(signum)


def distinct_names(items):
    """``items`` ([(image path, output name)]) with no two output names alike: the first image with a name keeps
    it, each later one gets ``<name>_1``, ``<name>_2``, ... (the first such name no image has; compared
    case-insensitively), so ``a.jpg`` and ``a.png`` give ``a.png`` and ``a_1.png`` (predict.py's rule)."""
    taken = {name.casefold() for _, name in items}
    used, out = set(), []
    for path, name in items:
        unique = name
        if name.casefold() in used:
            number = 1
            while f"{name}_{number}".casefold() in taken:
                number += 1
            unique = f"{name}_{number}"
            taken.add(unique.casefold())
            logger.info("%s: its result is named %s.png (another image has the name %s)", path, unique, name)
        used.add(unique.casefold())
        out.append((path, unique))
    return out


def str2bool(value):
    text = str(value).strip().lower()
    if text in ('true', '1', 'yes', 'y', 'on'):
        return True
    if text in ('false', '0', 'no', 'n', 'off'):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def positive_int(text):
    """argparse type: an integer >= 1 (as ``paddle_models.core.cli.positive_int``; this runner stands alone)."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """Errors are a one-line UserError (``main`` prints it, exit 2), not argparse's usage text: ``--batch_size
    must be a positive integer, got 0`` (as ``paddle_models.core.cli.ArgumentParser``)."""

    def error(self, message):
        head, sep, rest = message.partition(': ')
        if sep and head.startswith('argument ') and rest.startswith('must be '):
            raise UserError(f"{head[len('argument '):].split('/')[-1]} {rest}")
        raise UserError(message)


def parse_args(argv=None):
    parser = ArgumentParser(description='Segment images with an exported model (Paddle Inference, ONNX '
                                                 'Runtime or OpenVINO, as deploy.yaml or --backend says).')
    parser.add_argument('--config', dest='cfg', required=True, help='deploy.yaml written by the export.')
    parser.add_argument('--image_path', required=True,
                        help='An image, a folder of images, or a .txt list of image paths.')
    parser.add_argument('--save_dir', default='./output', help='Folder for the result PNGs. Default: ./output')
    parser.add_argument('--batch_size', type=positive_int, default=1, help='Images per inference run. Default: 1')
    parser.add_argument('--backend', choices=list(BACKENDS) + ['auto'], default=None,
                        help="The runtime, overriding deploy.yaml's backend where the files allow: an ONNX export "
                             "runs in onnxruntime or openvino (the standalone OpenVINO runtime), a Paddle program in "
                             "paddle_inference only; auto: the fastest of those, measured once and cached in "
                             "backend_choice.json beside deploy.yaml. Default: deploy.yaml's backend.")
    parser.add_argument('--device', choices=['cpu', 'gpu'], default=None,
                        help='Default: gpu where Paddle is built with CUDA, else cpu.')
    parser.add_argument('--use_trt', type=str2bool, nargs='?', const=True, default=False,
                        help='Use TensorRT on GPU. Default: False')
    parser.add_argument('--precision', choices=['fp32', 'fp16', 'int8'], default='fp32',
                        help='TensorRT precision. Default: fp32')
    parser.add_argument('--min_subgraph_size', type=positive_int, default=3,
                        help='Smallest subgraph TensorRT takes over. Default: 3')
    parser.add_argument('--enable_auto_tune', type=str2bool, nargs='?', const=True, default=False,
                        help='Collect TensorRT dynamic shapes by running some of the images first. Default: False')
    parser.add_argument('--auto_tuned_shape_file', default='auto_tune_tmp.pbtxt',
                        help='Temporary file for the auto-tuned shapes.')
    parser.add_argument('--cpu_threads', type=positive_int, default=min(10, os.cpu_count() or 1),
                        help='CPU math threads. Default: min(10, CPU count)')
    parser.add_argument('--enable_mkldnn', type=str2bool, nargs='?', const=True, default=None,
                        help='Use oneDNN on CPU. Default: on when deploy.yaml records a passed oneDNN check.')
    parser.add_argument('--enable_openvino', type=str2bool, nargs='?', const=True, default=None,
                        help="Use Paddle Inference's OpenVINO engine on CPU (legacy programs, Paddle 3.x). "
                             "Default: on when deploy.yaml has enable_openvino: true (export.py --format openvino).")
    parser.add_argument('--benchmark', type=str2bool, nargs='?', const=True, default=False,
                        help='Print preprocess/inference/postprocess times. Default: False')
    parser.add_argument('--model_name', default='',
                        help='With --benchmark, the model name the report shows. Default: none')
    parser.add_argument('--with_argmax', action='store_true',
                        help='Accepted for compatibility: logits/probability outputs always get an argmax.')
    parser.add_argument('--print_detail', type=str2bool, nargs='?', const=True, default=False,
                        help="Show Paddle Inference's GLOG output and ONNX Runtime's info log (hundreds of lines "
                             "per model). Default: False (PaddleSeg's default is True: a run here prints our own "
                             "few lines unless asked)")
    return parser.parse_args(argv)


def get_image_list(image_path):
    """[(image path, output name without suffix)] for a file, a folder or a .txt list."""
    if os.path.isdir(image_path):
        items = []
        for root, dirs, files in os.walk(image_path):
            dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
            for name in sorted(files):
                if not name.startswith('.') and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                    path = os.path.join(root, name)
                    items.append((path, os.path.splitext(os.path.relpath(path, image_path))[0]))
        if not items:
            raise UserError(f"--image_path: no images ({', '.join(IMAGE_SUFFIXES)}) in folder {image_path}")
        return items
    if not os.path.isfile(image_path):
        raise UserError(f"--image_path: {image_path} does not exist")
    if os.path.splitext(image_path)[1].lower() in IMAGE_SUFFIXES:
        return [(image_path, os.path.splitext(os.path.basename(image_path))[0])]
    base = os.path.dirname(image_path)
    items = []
    try:
        with open(image_path, 'r', encoding='utf-8') as f:
            lines = f.readlines()
    except UnicodeDecodeError:
        raise UserError(f"--image_path: {image_path} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a "
                        f"text list of images") from None
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        path = fields[0] if os.path.isabs(fields[0]) else os.path.join(base, fields[0])
        if not os.path.isfile(path):
            raise UserError(f"--image_path: {image_path} line {number}: image {path} does not exist")
        items.append((path, os.path.splitext(os.path.basename(path))[0]))
    if not items:
        raise UserError(f"--image_path: list {image_path} names no images")
    return items


BACKENDS = ('paddle_inference', 'onnxruntime', 'openvino')
ONNX_BACKENDS = ('onnxruntime', 'openvino')  # the runtimes an ONNX export runs in
BACKEND_NAMES = {'paddle_inference': 'Paddle Inference', 'onnxruntime': 'ONNX Runtime', 'openvino': 'OpenVINO'}


MAX_YAML_VALUES = 100000  # a deploy.yaml holds a few hundred


def _expanded_size(text):
    """How many values the YAML ``text`` holds with its aliases expanded, counted from the parser's events in one
    pass (an alias adds the size of what its anchor named), so a "billion laughs" file is measured, not expanded.
    (paddle_models.safe_yaml does the same for configs; this script stands alone.)"""
    sizes, stack, total = {}, [], 0
    for event in yaml.parse(text):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            stack.append([event.anchor, 1])
            continue
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, size = stack.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, size = None, sizes.get(event.anchor, 1)
        else:
            continue
        if anchor is not None:
            sizes[anchor] = size
        if stack:
            stack[-1][1] += size
        else:
            total += size
        if total > MAX_YAML_VALUES or (stack and stack[-1][1] > MAX_YAML_VALUES):
            return MAX_YAML_VALUES + 1  # enough said: stop before the counts grow further
    return total


class DeployConfig:
    """deploy.yaml: program and params paths (or the ONNX model), backend, preprocessing, export facts (output op,
    oneDNN check)."""

    def __init__(self, path):
        if not os.path.isfile(path):
            raise UserError(f"--config: {path} does not exist")
        try:
            with codecs.open(path, 'r', 'utf-8') as f:
                text = f.read()
            if _expanded_size(text) > MAX_YAML_VALUES:
                raise UserError(f"--config: {path} expands to more than {MAX_YAML_VALUES} YAML values through its "
                                f"aliases")
            dic = yaml.safe_load(text)
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise UserError(f"--config: {path} is not valid YAML: {' '.join(str(err).split())}") from None
        if not isinstance(dic, dict) or not isinstance(dic.get('Deploy'), dict):
            raise UserError(f"--config: {path} has no 'Deploy' section")
        self.path = path
        self.deploy = dic['Deploy']
        self.dir = os.path.dirname(os.path.abspath(path))
        backend = self.deploy.get('backend')
        if backend is None:
            model = self.deploy.get('model')
            backend = 'onnxruntime' if isinstance(model, str) and model.endswith('.onnx') else 'paddle_inference'
        if backend not in BACKENDS:
            raise UserError(f"--config: {path}: Deploy.backend {backend!r} is not one of {', '.join(BACKENDS)}")
        self.backend = backend
        # the runtimes the files allow: an ONNX model runs in either ONNX runtime, a Paddle program in Paddle's
        self.allowed = ONNX_BACKENDS if backend in ONNX_BACKENDS else ('paddle_inference',)
        for key in ('model', 'params') if backend == 'paddle_inference' else ('model',):
            if not isinstance(self.deploy.get(key), str):
                raise UserError(f"--config: {path}: Deploy.{key} is missing")
            if not os.path.isfile(os.path.join(self.dir, self.deploy[key])):
                raise UserError(f"--config: {path}: Deploy.{key} file {os.path.join(self.dir, self.deploy[key])} "
                                f"does not exist")
        transforms = self.deploy.get('transforms') or []
        if not isinstance(transforms, list) or not all(isinstance(t, dict) and 'type' in t for t in transforms):
            raise UserError(f"--config: {path}: Deploy.transforms must be a list of dicts with a 'type'")
        self.transform_cfgs = transforms
        self.class_names, self.palette = self._classes()
        # the dimensions the export fixes (deploy.yaml input_shape [N, C, H, W]; None where free)
        shape = self.deploy.get('input_shape')
        shape = list(shape) if isinstance(shape, list) and len(shape) == 4 else [None] * 4
        self.fixed_batch, _, self.fixed_h, self.fixed_w = [
            d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None for d in shape]
        self.resize_logged = False

    def _classes(self):
        """``Deploy.class_names`` and ``Deploy.palette`` (each None where absent), checked: a non-empty string per
        class, an [r, g, b] of integers 0..255 per class, as many colours as names where both are given. (The
        checks of ``paddle_models.core.visualize.check_classes``, repeated here: this runner stands alone.)"""
        where = f"--config: {self.path}: Deploy."
        names, palette = self.deploy.get('class_names'), self.deploy.get('palette')
        if names is not None:
            if not isinstance(names, list):
                raise UserError(f"{where}class_names: expected a list of class names, got {names!r}")
            for i, name in enumerate(names):
                if not isinstance(name, str) or not name.strip():
                    raise UserError(f"{where}class_names[{i}]: expected a non-empty string, got {name!r}")
        if palette is not None:
            if not isinstance(palette, list):
                raise UserError(f"{where}palette: expected a list of [r, g, b] colours, got {palette!r}")
            for i, colour in enumerate(palette):
                if not isinstance(colour, list) or len(colour) != 3 or not all(
                        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in colour):
                    raise UserError(f"{where}palette[{i}]: expected [r, g, b] with integers 0..255, got {colour!r}")
        if names is not None and palette is not None and len(names) != len(palette):
            raise UserError(f"{where}palette has {len(palette)} colours but Deploy.class_names has {len(names)} "
                            f"names")
        return names, palette

    def class_name(self, class_id):
        """The name of ``class_id``: deploy.yaml's, else ``class N``."""
        names = self.class_names or []
        return names[class_id] if 0 <= class_id < len(names) else f'class {class_id}'

    @property
    def model(self):
        return os.path.join(self.dir, self.deploy['model'])

    @property
    def params(self):
        return os.path.join(self.dir, self.deploy['params']) if self.deploy.get('params') else None

    @property
    def onednn_known(self):
        """True/False where the export recorded its oneDNN check, None for other exports (e.g. PaddleSeg's)."""
        value = self.deploy.get('enable_mkldnn')
        return value if isinstance(value, bool) else None

    @property
    def onednn_error(self):
        return self.deploy.get('mkldnn_error') or 'deploy.yaml records enable_mkldnn: false'

    def build_transforms(self):
        import paddleseg.transforms as T
        from paddleseg.cvlibs import manager

        known = manager.TRANSFORMS.components_dict
        if any(t['type'] not in known for t in self.transform_cfgs):
            try:  # our own transforms register themselves on import, where the package is installed
                import paddle_models  # noqa: F401
            except ImportError:
                pass
        ops = []
        for i, cfg in enumerate(self.transform_cfgs):
            cfg = dict(cfg)
            name = cfg.pop('type')
            if name not in known:
                raise UserError(f"--config: {self.path}: Deploy.transforms[{i}]: unknown transform {name!r}")
            try:
                ops.append(known[name](**cfg))
            except (TypeError, ValueError) as err:
                raise UserError(f"--config: {self.path}: Deploy.transforms[{i}] ({name}): {err}") from None
        return T.Compose(ops)


# bytes per element of each VarType.Type code a .pdiparams tensor can have (Paddle's framework.proto)
_PARAM_DTYPE_BYTES = {0: 1, 1: 2, 2: 4, 3: 8, 4: 2, 5: 4, 6: 8, 20: 1, 21: 1, 22: 2, 23: 8, 24: 16, 32: 1, 33: 1,
                      36: 2, 37: 4, 38: 8}


def _incomplete_params(path):
    """Whether the ``.pdiparams`` file ``path`` ends inside a tensor or holds a broken tensor header.

    The file is the exported parameters one after another, each as Paddle writes a DenseTensor: uint32 version,
    uint64 LoD level count and per level a uint64 byte count plus that many bytes, uint32 version, int32 size of a
    ``VarType.TensorDesc`` protobuf, the protobuf (data type, dims), then the raw data. Walking the headers finds a
    truncated file without reading the data. A tensor of a data type not listed in ``_PARAM_DTYPE_BYTES`` ends the
    walk (the rest is left to Paddle Inference).
    """
    from paddle.base.proto import framework_pb2

    size = os.path.getsize(path)

    def take(f, count):
        data = f.read(count)
        if len(data) != count:
            raise EOFError
        return data

    try:
        with open(path, 'rb') as f:
            while f.tell() < size:
                take(f, 4)  # version
                for _ in range(int(np.frombuffer(take(f, 8), '<u8')[0])):  # LoD levels
                    level_bytes = int(np.frombuffer(take(f, 8), '<u8')[0])
                    if level_bytes > size - f.tell():
                        return True
                    f.seek(level_bytes, os.SEEK_CUR)
                take(f, 4)  # version
                desc_bytes = int(np.frombuffer(take(f, 4), '<i4')[0])
                if not 0 <= desc_bytes <= size - f.tell():
                    return True
                desc = framework_pb2.VarType.TensorDesc()
                desc.ParseFromString(take(f, desc_bytes))
                if any(d < 0 for d in desc.dims):  # a saved parameter has concrete dims
                    return True
                if desc.data_type not in _PARAM_DTYPE_BYTES:
                    return False
                data_bytes = math.prod(desc.dims) * _PARAM_DTYPE_BYTES[desc.data_type]
                if data_bytes > size - f.tell():
                    return True
                f.seek(data_bytes, os.SEEK_CUR)
    except EOFError:
        return True
    except Exception:  # noqa: BLE001  (protobuf's DecodeError and the like: a broken header)
        return True
    return False


def _incomplete_program(path):
    """Whether the program file ``path`` does not parse: ``model.json`` (PIR) as JSON, ``model.pdmodel`` (legacy)
    as a ``ProgramDesc`` protobuf."""
    if path.endswith('.json'):
        import json

        try:
            with open(path, 'rb') as f:
                json.load(f)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            return True
        return False
    from paddle.base.proto import framework_pb2

    with open(path, 'rb') as f:
        data = f.read()
    try:
        framework_pb2.ProgramDesc().ParseFromString(data)
    except Exception:  # noqa: BLE001  (protobuf's DecodeError)
        return True
    return not data


def check_model_files(cfg):
    """Refuse a truncated or corrupt program or params file before Paddle Inference reads it (its own error is a
    long C++ message that names neither file).

    Args:
        cfg (DeployConfig): Names the program (``model.json`` or ``model.pdmodel``) and ``.pdiparams`` files.

    Raises:
        UserError: One line naming the file that is not complete.
    """
    if _incomplete_program(cfg.model):
        raise UserError(f"{cfg.model}: not a complete Paddle Inference program (truncated or corrupt); export the "
                        f"model again")
    if _incomplete_params(cfg.params):
        raise UserError(f"{cfg.params}: not a complete Paddle Inference params file (truncated or corrupt); export "
                        f"the model again")


def default_palette(num=256):
    """PaddleSeg's palette (``paddleseg.utils.visualize.get_color_map_list``, the package's ``default_palette`` too):
    class i gets the PASCAL VOC colour of label i + 1. Returns a flat [r, g, b, ...] list of ``num`` colours, as
    PIL's ``putpalette`` takes it."""
    from paddleseg.utils.visualize import get_color_map_list

    return list(get_color_map_list(num))


def result_palette(cfg):
    """The pseudo-color PNGs' flat 256-colour palette: deploy.yaml's ``palette`` for the ids it covers,
    ``default_palette``'s colours for the others."""
    flat = default_palette(256)
    for class_id, colour in enumerate((cfg.palette or [])[:256]):
        flat[3 * class_id:3 * class_id + 3] = colour
    return flat


def pseudo_color_image(label, palette):
    """The pseudo-color PNG of an (H, W) label map: a palette-mode PIL image whose pixel values are the class ids,
    coloured by ``palette`` (flat, ``result_palette``). (The package's ``core/visualize.py: pseudo_color_image``
    does the same; this runner stands alone.)"""
    from PIL import Image

    if label.size and (label.min() < 0 or label.max() > 255):
        raise RuntimeError(f"class ids {label.min()}..{label.max()} do not fit a palette PNG")
    image = Image.fromarray(label.astype(np.uint8), mode='P')
    image.putpalette(palette)
    return image


def color_overlay(image_bgr, label, palette, alpha=0.5):
    """The BGR image blended with each pixel's class colour from ``palette`` (flat RGB, 256 colours), ``alpha`` the
    colours' opacity: uint8 BGR. An image of another size than ``label`` (undecodable) gives the colours on black.
    (The package's ``core/visualize.py: color_overlay`` works on RGB; this runner stands alone.)"""
    if image_bgr is None or image_bgr.shape[:2] != label.shape:
        image_bgr = np.zeros(label.shape + (3,), np.uint8)
    colours = np.asarray(palette, np.uint8).reshape(-1, 3)[:, ::-1]  # RGB -> BGR
    blend = image_bgr.astype(np.float32) * (1 - alpha) + colours[np.clip(label, 0, 255)].astype(np.float32) * alpha
    return blend.round().astype(np.uint8)


def class_shares(label, cfg):
    """The classes present in ``label`` by name with their share of its pixels, largest first:
    ``road 41.2%, sky 30.5%``."""
    counts = np.bincount(label.ravel().astype(np.int64), minlength=1)  # ids are 0..255 (pseudo_color_image checks)
    ids = np.flatnonzero(counts)
    order = ids[np.argsort(-counts[ids], kind='stable')]
    total = max(int(label.size), 1)
    return ', '.join(f"{cfg.class_name(int(i))} {100.0 * counts[i] / total:.1f}%" for i in order)


def nearest_resize(label, size):
    """Nearest-neighbour resize of a 2-D map as Paddle's nearest kernel (source = floor(dst * in / out))."""
    out_h, out_w = int(size[0]), int(size[1])
    rows = _nearest_index(label.shape[0], out_h)
    cols = _nearest_index(label.shape[1], out_w)
    return label[rows[:, None], cols[None, :]]


def _nearest_index(in_len, out_len):
    ratio = np.float32(in_len) / np.float32(out_len) if out_len > 1 else np.float32(0)
    index = np.floor(np.arange(out_len, dtype=np.float32) * ratio).astype(np.int64)
    return np.minimum(index, in_len - 1)


def reverse_transform(label, trans_info):
    """Undo the recorded resize/padding steps on a 2-D label map, last step first."""
    for item in reversed(trans_info):
        kind = item[0][0] if isinstance(item[0], (list, tuple)) else item[0]
        h, w = int(item[1][0]), int(item[1][1])
        if kind == 'resize':
            label = nearest_resize(label, (h, w))
        elif kind == 'padding':
            label = label[:h, :w]
        else:
            raise UserError(f"cannot map the result back: unknown transform record {kind!r}")
    return label


class Predictor:
    """Paddle Inference predictor configured from the flags and deploy.yaml, plus pre/postprocessing."""

    def __init__(self, args, cfg, tuned=False):
        self.args = args
        self.tuned = tuned
        self.cfg = cfg
        self.transforms = cfg.build_transforms()
        self.use_onednn = args.device == 'cpu' and self._decide_onednn()
        self.use_openvino = args.device == 'cpu' and self._decide_openvino()
        self.predictor = self._create(self.use_onednn)

    def _decide_onednn(self):
        known = self.cfg.onednn_known
        if self.args.enable_mkldnn is False:
            logger.info("oneDNN: off (--enable_mkldnn False)")
            return False
        if known is False:
            level = logging.WARNING if self.args.enable_mkldnn else logging.INFO
            logger.log(level, "oneDNN: off, the export found that it fails on this program: %s",
                       self.cfg.onednn_error)
            return False
        if self.args.enable_mkldnn is None and known is None:
            logger.info("oneDNN: off (deploy.yaml records no oneDNN check; pass --enable_mkldnn True to try it)")
            return False
        logger.info("oneDNN: on (%s)", '--enable_mkldnn True' if self.args.enable_mkldnn
                    else 'deploy.yaml records a passed oneDNN check')
        return True

    def _decide_openvino(self):
        import paddle
        from paddle.inference import Config

        wanted = self.args.enable_openvino
        if wanted is None:
            wanted = self.cfg.deploy.get('enable_openvino') is True
        if not wanted:
            return False
        if not hasattr(Config, 'enable_openvino_engine'):
            raise UserError(f"--config: {self.cfg.path} asks for Paddle Inference's OpenVINO engine, which this "
                            f"Paddle {paddle.__version__} does not have (Paddle 3.x CPU builds do)")
        if self.cfg.model.endswith('.json'):
            logger.warning("OpenVINO: off (its engine takes legacy programs only, not %s: export with --format "
                           "openvino)", os.path.basename(self.cfg.model))
            return False
        logger.info("OpenVINO: on (%s)", '--enable_openvino True' if self.args.enable_openvino
                    else 'deploy.yaml records enable_openvino: true')
        return True

    def _config(self, use_onednn):
        from paddle.inference import Config

        config = Config(self.cfg.model, self.cfg.params)
        if not self.args.print_detail:
            config.disable_glog_info()
        if not self.cfg.model.endswith('.json'):
            # Paddle 3.3.1 fails on PIR programs (model.json) with memory optimisation: "Not find predictor_id 0
            # and pass_name memory_optimize_pass" at create_predictor; legacy programs take it fine
            config.enable_memory_optim()
        config.switch_ir_optim(True)
        if self.args.device == 'cpu':
            # the same CPU settings as paddle_models.core.exported.cpu_config (val.py, tools/benchmark.py),
            # repeated here because this script stays standalone
            config.disable_gpu()
            if use_onednn:
                config.set_mkldnn_cache_capacity(10)  # cache primitives for up to 10 input shapes
                config.enable_mkldnn()
                if self.cfg.deploy.get('precision') == 'int8':  # a tools/quantize.py export: INT8 oneDNN kernels
                    # for the op types it recorded (pool2d stays FP32: see paddle_models.core.exported)
                    ops = (self.cfg.deploy.get('quantization') or {}).get('int8_ops')
                    logger.info("oneDNN INT8: on (deploy.yaml records precision: int8)")
                    config.enable_mkldnn_int8(set(ops) if ops else set())
            else:
                config.disable_mkldnn()  # on by default in Paddle Inference
            config.set_cpu_math_library_num_threads(self.args.cpu_threads)
            if self.use_openvino:  # FP32: OpenVINO's own default on CPUs with AMX/AVX512-BF16 would be bf16
                from paddle.inference import PrecisionType

                # its compiled-model cache goes to a temporary folder removed at exit (unset, Paddle writes
                # __cache__/ into the working directory)
                cache = tempfile.mkdtemp(prefix='infer-openvino-')
                atexit.register(shutil.rmtree, cache, True)
                config.set_optim_cache_dir(cache)
                config.enable_openvino_engine(PrecisionType.Float32)
        else:
            self._gpu_config(config)
        return config

    def _gpu_config(self, config):
        from paddle.inference import PrecisionType

        config.enable_use_gpu(100, 0)
        precision = {'fp32': PrecisionType.Float32, 'fp16': PrecisionType.Half,
                     'int8': PrecisionType.Int8}[self.args.precision]
        if not self.args.use_trt:
            if self.args.precision != 'fp32':
                logger.warning("--precision %s applies to TensorRT only (--use_trt True); running fp32",
                               self.args.precision)
            return
        logger.info("TensorRT: on, precision %s", self.args.precision)
        config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=1,
                                      min_subgraph_size=self.args.min_subgraph_size, precision_mode=precision,
                                      use_static=False, use_calib_mode=False)
        if self.tuned and os.path.isfile(self.args.auto_tuned_shape_file):
            logger.info("TensorRT: dynamic shapes from %s", self.args.auto_tuned_shape_file)
            config.enable_tuned_tensorrt_dynamic_shape(self.args.auto_tuned_shape_file, True)
        else:
            logger.info("TensorRT: dynamic shapes 1x3x100x100 .. 1x3x2000x3000 (opt 1x3x512x1024)")
            config.set_trt_dynamic_shape_info({'x': [1, 3, 100, 100]}, {'x': [1, 3, 2000, 3000]},
                                              {'x': [1, 3, 512, 1024]})

    def _create(self, use_onednn):
        from paddle.inference import create_predictor

        try:
            return create_predictor(self._config(use_onednn))
        except (RuntimeError, ValueError, OSError) as err:  # Paddle's C++ errors: a program/params it cannot load
            reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
            raise UserError(f"Paddle Inference cannot load {self.cfg.model} with {self.cfg.params}: {reason}") \
                from None

    def preprocess(self, path):
        return preprocess(self.transforms, path, self.cfg)

    def infer(self, batch):
        try:
            return self._run(batch)
        except Exception as err:  # noqa: BLE001
            if not self.use_onednn:
                raise
            reason = ' '.join(str(err).split())[-300:]
            logger.warning("oneDNN run failed (%s); running without oneDNN from now on", reason)
            self.use_onednn = False
            self.predictor = self._create(False)
            return self._run(batch)

    def _run(self, batch):
        handle = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        handle.reshape(list(batch.shape))
        handle.copy_from_cpu(batch)
        self.predictor.run()
        return self.predictor.get_output_handle(self.predictor.get_output_names()[0]).copy_to_cpu()

    @staticmethod
    def postprocess(output):
        """[N, H, W] class ids from an argmax output or from logits/probabilities [N, C, H, W]."""
        if output.ndim == 4:
            output = np.argmax(output, axis=1)
        if output.ndim != 3:
            raise RuntimeError(f"unexpected model output shape {list(output.shape)}; expected [N, H, W] or "
                               f"[N, C, H, W]")
        return output


class OnnxPredictor:
    """ONNX Runtime session on the export's ``model.onnx``, with the same pre/postprocessing as ``Predictor``."""

    use_onednn = False

    def __init__(self, args, cfg):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError(f"--config: {cfg.path} names an ONNX model, which needs onnxruntime: "
                            f"pip install onnxruntime") from None
        self.args = args
        self.cfg = cfg
        self.transforms = cfg.build_transforms()
        providers = ['CPUExecutionProvider']
        if args.device == 'gpu':
            if 'CUDAExecutionProvider' in ort.get_available_providers():
                providers.insert(0, 'CUDAExecutionProvider')
            else:
                logger.warning("--device gpu: this onnxruntime has no CUDAExecutionProvider (install "
                               "onnxruntime-gpu); running on the CPU")
        warn_paddle_flags(args)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.cpu_threads
        options.log_severity_level = 1 if args.print_detail else 3
        try:
            self.session = ort.InferenceSession(cfg.model, options, providers=providers)
        except Exception as err:  # noqa: BLE001  (ONNX Runtime's load errors: a truncated or foreign file)
            reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
            raise UserError(f"{cfg.model}: ONNX Runtime cannot load it ({reason}); export the model again") \
                from None
        self.input_name = self.session.get_inputs()[0].name
        logger.info("ONNX Runtime: providers %s", ', '.join(self.session.get_providers()))

    def preprocess(self, path):
        return preprocess(self.transforms, path, self.cfg)

    def infer(self, batch):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    postprocess = staticmethod(Predictor.postprocess)


def warn_paddle_flags(args):
    """Warn about Paddle Inference's flags given for an ONNX model (they do not apply to its runtimes)."""
    for flag, value in (('--use_trt', args.use_trt), ('--enable_mkldnn', args.enable_mkldnn),
                        ('--enable_openvino', args.enable_openvino)):
        if value:
            logger.warning("%s applies to Paddle Inference only; ignored for the ONNX model", flag)


def openvino_settings(threads):
    """The standalone OpenVINO runtime's CPU compile settings (as ``paddle_models.core.exported``'s, repeated: this
    runner stands alone): ``threads`` inference threads, the LATENCY hint (one request at a time) and FP32 (left to
    itself, OpenVINO runs bf16 or fp16 on CPUs that have them, which changes the results)."""
    return {'INFERENCE_NUM_THREADS': int(threads), 'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_PRECISION_HINT': 'f32'}


class OpenVinoPredictor:
    """The standalone OpenVINO runtime (``openvino`` package) on the export's ``model.onnx``, compiled for the CPU
    with :func:`openvino_settings`, with the same pre/postprocessing as ``Predictor``.

    A model with a fixed input shape is compiled once. A free-size model is compiled for each input shape it meets
    (its input reshaped to that shape), up to ``MAX_SHAPES`` shapes; later new shapes share one compile that keeps
    the dimensions dynamic. Why: on a stream of same-size images the static-shape compile ran faster than the
    dynamic one on every model measured (most on SegFormer-B0, least on HarDNet), and a compile costs a fraction of
    a second once per shape; the bound keeps a stream of ever-new sizes from compiling at every image.
    """

    use_onednn = False
    MAX_SHAPES = 10

    def __init__(self, args, cfg):
        try:
            import openvino
        except ImportError:
            raise UserError(f"--config: {cfg.path}: backend openvino needs the openvino package, which is not "
                            f"installed: pip install openvino") from None
        self.args = args
        self.cfg = cfg
        self.transforms = cfg.build_transforms()
        if args.device == 'gpu':
            logger.warning("--device gpu: OpenVINO runs on the CPU here")
        warn_paddle_flags(args)
        self.core = openvino.Core()
        self.partial_shape = openvino.PartialShape
        try:
            self.model = self.core.read_model(cfg.model)
        except Exception as err:  # noqa: BLE001  (OpenVINO's load errors: a truncated or foreign file)
            reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
            raise UserError(f"{cfg.model}: OpenVINO cannot load it ({reason}); export the model again") from None
        self.settings = openvino_settings(args.cpu_threads)
        self.static = self.model.inputs[0].get_partial_shape().is_static
        self.requests = {}  # input shape (None: the one compile with dynamic dimensions) -> infer request
        logger.info("OpenVINO %s: CPU, %d thread(s), FP32", openvino.get_version().split('-')[0], args.cpu_threads)

    def preprocess(self, path):
        return preprocess(self.transforms, path, self.cfg)

    def _request(self, shape):
        if self.static or (shape not in self.requests and len(self.requests) >= self.MAX_SHAPES):
            shape = None
        if shape not in self.requests:
            model = self.model
            if shape is not None:
                model = model.clone()
                model.reshape({model.inputs[0]: self.partial_shape(list(shape))})
            self.requests[shape] = self.core.compile_model(model, 'CPU', self.settings).create_infer_request()
        return self.requests[shape]

    def infer(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self._request(tuple(batch.shape)).infer({0: batch})[0]

    postprocess = staticmethod(Predictor.postprocess)


# --backend auto: measured once per machine, versions and model; the same file and record as
# paddle_models.core.exported.choose_backend (InferenceModel(backend='auto') reads what this runner wrote)
CHOICE_FILE = 'backend_choice.json'
AUTO_HW = 512  # the measurement's height and width where deploy.yaml's input_shape leaves them free
AUTO_ROUNDS = 3  # timed runs per backend after one warm-up run each, interleaved; the median counts


def auto_shape(input_shape):
    """deploy.yaml's ``input_shape`` with its free dimensions set to batch 1, 3 channels, 512 x 512."""
    dims = list(input_shape) if isinstance(input_shape, (list, tuple)) and len(input_shape) == 4 else [None] * 4
    default = (1, 3, AUTO_HW, AUTO_HW)
    return [int(d) if isinstance(d, int) and not isinstance(d, bool) and d > 0 else default[i]
            for i, d in enumerate(dims)]


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``; elsewhere ``platform.processor()`` or the machine type)."""
    import platform

    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown'


def backend_version(backend):
    """The installed version of ``backend``'s package, None where it is missing."""
    try:
        if backend == 'paddle_inference':
            import paddle

            return paddle.__version__
        if backend == 'onnxruntime':
            import onnxruntime

            return onnxruntime.__version__
        import openvino

        return openvino.get_version()
    except ImportError:
        return None


def choice_key(model_file, threads, device, versions, shape):
    """What a cached choice holds for (CPU model and count, threads, device, versions, model file, input shape)."""
    stat = os.stat(model_file)
    return {'cpu': cpu_model(), 'cpu_count': os.cpu_count(), 'threads': int(threads), 'device': device,
            'versions': dict(versions), 'model': os.path.basename(model_file), 'model_bytes': stat.st_size,
            'model_mtime_ns': stat.st_mtime_ns, 'input_shape': [int(d) for d in shape]}


def read_choice(path, key, installed):
    """(cached record, None) where ``path`` holds a choice for ``key`` among ``installed``, else (None, why not)."""
    import json

    if not os.path.exists(path):
        return None, 'not measured yet'
    try:
        with open(path, encoding='utf-8') as f:
            record = json.load(f)
    except (OSError, ValueError) as err:
        return None, f"{os.path.basename(path)} is unreadable ({' '.join(str(err).split())[:200]})"
    if not isinstance(record, dict) or record.get('choice') not in installed or \
            not isinstance(record.get('timings_ms'), dict):
        return None, f"{os.path.basename(path)} holds no valid choice"
    cached = record.get('key')
    if cached != key:
        changed = sorted(k for k in key if not isinstance(cached, dict) or cached.get(k) != key[k])
        return None, f"measured for another {', '.join(changed)}"
    return record, None


def write_choice(path, record):
    """Write ``record`` to ``path`` atomically; None, or why it could not be written."""
    import json

    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=os.path.dirname(path))
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the choice from other users of the export
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(record, f, indent=2)
            f.write('\n')
        os.replace(tmp, path)
        return None
    except OSError as err:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        return err.strerror or str(err)


def timings_text(timings):
    return ', '.join(f"{b} {t:.1f} ms" if isinstance(t, (int, float)) else f"{b} failed" for b, t in timings.items())


def choose_backend(args, cfg, make_predictor):
    """``--backend auto``: (backend, its predictor), the fastest of the backends the files allow that are
    installed, from ``backend_choice.json`` beside deploy.yaml where it holds a choice for this machine, versions
    and model, else measured now and written there (see the module docstring)."""
    candidates = cfg.allowed
    if len(candidates) == 1:
        logger.info("backend auto: %s (the only backend for %s)", candidates[0], os.path.basename(cfg.model))
        return candidates[0], make_predictor(candidates[0])
    versions = {b: backend_version(b) for b in candidates}
    installed = [b for b in candidates if versions[b] is not None]
    if not installed:
        raise UserError(f"--backend auto: none of {', '.join(candidates)} is installed: pip install "
                        f"{' or '.join(candidates)}")
    if len(installed) == 1:
        logger.info("backend auto: %s (the only one of %s installed; nothing to measure)", installed[0],
                    ', '.join(candidates))
        return installed[0], make_predictor(installed[0])
    path = os.path.join(cfg.dir, CHOICE_FILE)
    shape = auto_shape(cfg.deploy.get('input_shape'))
    key = choice_key(cfg.model, args.cpu_threads, args.device, {b: versions[b] for b in installed}, shape)
    record, why = read_choice(path, key, installed)
    if record is not None:
        logger.info("backend auto: %s (cached in %s: %s)", record['choice'], path, timings_text(record['timings_ms']))
        return record['choice'], make_predictor(record['choice'])

    logger.info("backend auto: measuring %s on a %s input (%s)", ', '.join(installed), 'x'.join(map(str, shape)),
                why)
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    predictors, errors = {}, {}
    for backend in installed:
        try:
            predictor = make_predictor(backend)
            predictor.infer(data)  # warm-up: compiles, allocates
            predictors[backend] = predictor
        except Exception as err:  # noqa: BLE001  (a backend that cannot run this model is left out)
            errors[backend] = next((line.strip() for line in str(err).splitlines() if line.strip()),
                                   type(err).__name__)[:300]
            logger.warning("backend auto: %s cannot run %s (%s); left out", backend, cfg.model, errors[backend])
    if not predictors:
        raise UserError(f"--backend auto: no backend runs {cfg.model}: "
                        f"{'; '.join(f'{b}: {e}' for b, e in errors.items())}")
    times = {backend: [] for backend in predictors}
    for _ in range(AUTO_ROUNDS):
        for backend, predictor in predictors.items():
            start = time.perf_counter()
            predictor.infer(data)
            times[backend].append(1000.0 * (time.perf_counter() - start))
    timings = {b: round(float(np.median(times[b])), 3) if b in times else None for b in installed}
    choice = min(times, key=lambda b: timings[b])
    record = {'choice': choice, 'timings_ms': timings, 'errors': errors, 'key': key,
              'measured': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'rounds': AUTO_ROUNDS}
    problem = write_choice(path, record)
    if problem is None:
        logger.info("backend auto: %s (%s); cached in %s", choice, timings_text(timings), path)
    else:
        logger.warning("backend auto: %s (%s); could not write the cache %s (%s): the next run measures again",
                       choice, timings_text(timings), path, problem)
    return choice, predictors[choice]


def resolve_backend(args, cfg):
    """``--backend`` (or deploy.yaml's backend where it is not given), checked against what the files allow; 'auto'
    stays 'auto'."""
    backend = args.backend or cfg.backend
    if backend == 'auto' or backend in cfg.allowed:
        return backend
    if cfg.allowed == ONNX_BACKENDS:
        raise UserError(f"--backend {backend}: {cfg.model} is an ONNX model, which runs in onnxruntime or openvino")
    raise UserError(f"--backend {backend}: {cfg.model} is a Paddle program, which runs in paddle_inference only "
                    f"(export.py --format onnx writes a model for onnxruntime and openvino)")


def incomplete_image(data):
    """Why the image file ``data`` (bytes) is truncated or corrupt, or None: a JPEG must reach its end-of-image
    marker, a PNG its IEND chunk (with matching CRCs on the critical chunks), an uncompressed BMP must hold the rows
    its header announces. OpenCV decodes a truncated JPEG into a partly grey image with only a libjpeg warning, so
    this is checked before decoding. (The same rules as ``paddle_models.image_io``, kept here because this runner
    does not need paddle_models; tests/test_tools_bad_inputs.py checks that both agree.)"""
    import struct
    import zlib

    n = len(data)
    if data[:3] == b'\xff\xd8\xff':  # JPEG: follow the markers to EOI (0xFFD9)
        array, scan_ends, pos = np.frombuffer(data, np.uint8), None, 2
        while True:
            pos = data.find(b'\xff', pos)
            while 0 <= pos < n and data[pos] == 0xFF:
                pos += 1
            if pos < 0 or pos >= n:
                return "truncated JPEG file (it ends before its end-of-image marker)"
            marker, pos = data[pos], pos + 1
            if marker == 0xD9:
                return None
            if marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD8:
                continue
            if pos + 2 > n or pos + ((data[pos] << 8) | data[pos + 1]) > n:
                return "truncated JPEG file (it ends inside a marker segment)"
            if (data[pos] << 8) | data[pos + 1] < 2:
                return f"corrupt JPEG file (marker 0x{marker:02X} at byte {pos - 2} has length " \
                       f"{(data[pos] << 8) | data[pos + 1]})"
            pos += (data[pos] << 8) | data[pos + 1]
            if marker == 0xDA:  # entropy-coded data runs to a 0xFF not followed by 0x00, 0xFF or RST0-7
                if scan_ends is None:
                    ff = np.flatnonzero(array[:-1] == 0xFF)
                    after = array[ff + 1]
                    scan_ends = ff[(after != 0) & (after != 0xFF) & ((after < 0xD0) | (after > 0xD7))]
                index = int(np.searchsorted(scan_ends, pos))
                if index == len(scan_ends):
                    return "truncated JPEG file (it ends inside the image data, before its end-of-image marker)"
                pos = int(scan_ends[index])
    if data[:8] == b'\x89PNG\r\n\x1a\n':  # PNG: follow the chunks to IEND
        pos = 8
        while True:
            if pos + 8 > n:
                return "truncated PNG file (it ends before its IEND chunk)"
            length, kind = struct.unpack('>I4s', data[pos:pos + 8])
            end, name = pos + 12 + length, kind.decode('latin-1')
            if end > n:
                return f"truncated PNG file (it ends inside chunk {name})"
            if kind[:1].isupper() and zlib.crc32(memoryview(data)[pos + 4:end - 4]) != \
                    struct.unpack('>I', data[end - 4:end])[0]:
                return f"corrupt PNG file (chunk {name} at byte {pos} fails its CRC check)"
            if kind == b'IEND':
                return None
            pos = end
    if data[:2] == b'BM':  # uncompressed BMP: the rows the header announces
        if n < 26 or (n < 34 and struct.unpack('<I', data[14:18])[0] >= 40):
            return "truncated BMP file (it ends inside its header)"
        offset, header_size = struct.unpack('<II', data[10:18])
        if header_size == 12:
            width, height, _, bits = struct.unpack('<HHHH', data[18:26])
            compression = 0
        elif header_size >= 40:
            width, height, _, bits, compression = struct.unpack('<iiHHI', data[18:34])
        else:
            return None
        needed = offset + (width * bits + 31) // 32 * 4 * abs(height)
        if compression in (0, 3, 6) and width > 0 and bits in (1, 2, 4, 8, 16, 24, 32) and n < needed:
            return f"truncated BMP file (it holds {n} of the {needed} bytes its header announces)"
    return None


def fit_input(chw, trans_info, cfg, path):
    """The network input resized to the export's fixed height and width (deploy.yaml ``input_shape``), bilinear,
    with a ``('resize', (h, w))`` record added to ``trans_info`` so that ``reverse_transform`` maps the prediction
    back to this size (nearest); unchanged where the export's size is free or already met. Logged once.
    (``paddle_models.core.exported.fit_input`` does the same for ``InferenceModel``; this runner stands alone.)"""
    import cv2

    h, w = chw.shape[1:]
    size = (cfg.fixed_h or h, cfg.fixed_w or w)
    if size == (h, w):
        return chw, trans_info
    if not cfg.resize_logged:
        logger.info("the export's input is fixed at %sx%s (HxW, deploy.yaml input_shape): inputs of other sizes are "
                    "resized to it and the predictions back (first: %s, %dx%d)", size[0], size[1], path, h, w)
        cfg.resize_logged = True
    hwc = cv2.resize(np.ascontiguousarray(chw.transpose(1, 2, 0)), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    chw = np.ascontiguousarray(hwc.reshape(size[0], size[1], -1).transpose(2, 0, 1))
    return chw, list(trans_info) + [('resize', (h, w))]


def stack_batch(inputs, cfg):
    """``inputs`` stacked into a batch, padded with copies of the last one to the export's fixed batch size
    (deploy.yaml ``input_shape``; the padded outputs are dropped by the caller's ``zip``)."""
    inputs = list(inputs)
    if cfg.fixed_batch:
        inputs += [inputs[-1]] * (cfg.fixed_batch - len(inputs))
    return np.stack(inputs)


class ImageError(UserError):
    """Image bytes that cannot be used; ``str()`` names the problem without naming a file (the caller adds the
    file or the request). ``kind``: 'incomplete' (truncated or corrupt), 'too_large' (more pixels than allowed),
    'unknown' (with a pixel limit: no header ``image_size`` reads) or 'undecodable' (OpenCV could not decode bytes
    that passed the checks)."""

    def __init__(self, message, kind):
        super().__init__(message)
        self.kind = kind


def image_size(data):
    """(width, height) of the image file ``data`` (bytes) read from its header alone, before anything is decoded
    (so that a small file announcing a huge image is refused before the decoder allocates it): a PNG's IHDR, a
    JPEG's SOF marker, a BMP's info header; other formats through Pillow, which reads their headers lazily. None
    where the bytes are no image format these know."""
    import io
    import struct

    n = len(data)
    if data[:8] == b'\x89PNG\r\n\x1a\n':
        if n >= 24 and data[12:16] == b'IHDR':
            return struct.unpack('>II', data[16:24])
        return None
    if data[:3] == b'\xff\xd8\xff':  # JPEG: walk the marker segments to the first start-of-frame
        pos = 2
        while pos + 4 <= n:
            if data[pos] != 0xFF:  # bytes between segments, which libjpeg would skip: left to Pillow below
                break
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
                pos += 2
                continue
            length = (data[pos + 2] << 8) | data[pos + 3]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                if pos + 9 > n:
                    return None
                height, width = struct.unpack('>HH', data[pos + 5:pos + 9])
                return width, height
            if marker in (0xD9, 0xDA) or length < 2:  # end of image or scan data before any frame header
                return None
            pos += 2 + length
    if data[:2] == b'BM' and n >= 26:
        header_size = struct.unpack('<I', data[14:18])[0]
        if header_size == 12:
            return struct.unpack('<HH', data[18:22])
        if header_size >= 40 and n >= 26:
            width, height = struct.unpack('<ii', data[18:26])
            return abs(width), abs(height)
        return None
    from PIL import Image

    with _PIL_LIMIT_LOCK:  # Pillow's own bomb check would raise before giving the size: off while reading it
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(io.BytesIO(data)) as image:  # lazy: reads the header only
                return image.size
        except Exception:  # noqa: BLE001  (UnidentifiedImageError, a broken header)
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = limit


_PIL_LIMIT_LOCK = threading.Lock()


def prepare_image(data, transforms, cfg=None, source='image', target_size=None, max_pixels=None):
    """The network input for one image file's bytes: CHW float32 and the transforms' shape record.

    The one preprocessing path of this runner and of ``serve.py``: the bytes are checked to be complete
    (``incomplete_image``), their header's size against ``max_pixels`` (where given; before decoding, and bytes
    whose size ``image_size`` cannot read are refused then), decoded as
    Compose reads an image (OpenCV with the transforms' read flag), resized to ``target_size`` where given (serve.py's
    ``targetSize``: (width, height), bilinear, recorded so that ``reverse_transform`` maps the prediction back to
    the image's size), run through the deploy.yaml transforms and, with ``cfg`` (DeployConfig), fitted to the
    export's fixed input size (``fit_input``; ``source`` names the image in its log line).

    Raises:
        ImageError: One line naming the problem (truncated, too many pixels, not decodable).
    """
    import cv2

    problem = incomplete_image(data)
    if problem:
        raise ImageError(problem, 'incomplete')
    if max_pixels is not None:
        size = image_size(data)
        if size is None:  # without a size read from the header the decoder could allocate anything
            raise ImageError("not an image of a format whose header gives its size (PNG, JPEG, BMP, WebP, TIFF, "
                             "...)", 'unknown')
        if size[0] * size[1] > max_pixels:
            raise ImageError(f"the image is {size[0]}x{size[1]} (width x height) = {size[0] * size[1]} pixels, "
                             f"more than the {max_pixels} allowed", 'too_large')
    image = cv2.imdecode(np.frombuffer(data, np.uint8), transforms.read_flag) if data else None
    if image is None:
        raise ImageError("not an image OpenCV can decode", 'undecodable')
    trans_info = []
    if target_size is not None and tuple(target_size) != (image.shape[1], image.shape[0]):
        trans_info.append(('resize', image.shape[:2]))
        image = cv2.resize(image, (int(target_size[0]), int(target_size[1])), interpolation=cv2.INTER_LINEAR)
    data = transforms({'img': image.astype('float32')})
    chw = np.ascontiguousarray(data['img'], dtype=np.float32)
    trans_info = trans_info + list(data.get('trans_info', []))
    return (chw, trans_info) if cfg is None else fit_input(chw, trans_info, cfg, source)


def preprocess(transforms, path, cfg=None):
    """CHW float32 input and the transforms' shape record for the image file ``path`` (``prepare_image`` on its
    bytes); a one-line UserError naming the file where it cannot be read or used."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        raise UserError(f"--image_path: cannot read image {path} ({err.strerror or err})") from None
    try:
        return prepare_image(data, transforms, cfg, source=path)
    except ImageError as err:
        if err.kind == 'undecodable':
            raise UserError(f"--image_path: cannot read image {path}") from None
        raise UserError(f"--image_path: cannot read image {path}: {err}") from None


def save_result(label, save_dir, name, palette):
    """Write ``label``'s pseudo-color PNG as ``save_dir/<name>.png``; returns the path."""
    path = os.path.join(save_dir, name + '.png')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pseudo_color_image(label, palette).save(path)
    return path


def use_auto_tune(args):
    from paddle.inference import Config

    return args.device == 'gpu' and args.use_trt and args.enable_auto_tune and \
        hasattr(Config, 'collect_shape_range_info') and hasattr(Config, 'enable_tuned_tensorrt_dynamic_shape')


def auto_tune(args, cfg, items, num=10):
    """Run up to ``num`` images with shape collection on, for TensorRT's dynamic shapes."""
    from paddle.inference import Config, create_predictor

    logger.info("TensorRT: collecting dynamic shapes from %d image(s)", min(num, len(items)))
    config = Config(cfg.model, cfg.params)
    config.enable_use_gpu(100, 0)
    if not args.print_detail:
        config.disable_glog_info()
    config.collect_shape_range_info(args.auto_tuned_shape_file)
    predictor = create_predictor(config)
    transforms = cfg.build_transforms()
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    for path, _ in items[:num]:
        data = preprocess(transforms, path, cfg)[0][np.newaxis]
        handle.reshape(list(data.shape))
        handle.copy_from_cpu(data)
        try:
            predictor.run()
        except Exception as err:  # noqa: BLE001  (as PaddleSeg: give up tuning, use the manual shapes)
            logger.warning("TensorRT shape collection failed (often out of GPU memory): %s", err)
            if os.path.exists(args.auto_tuned_shape_file):
                os.remove(args.auto_tuned_shape_file)
            return


def batches(items, predictor, batch_size, timer):
    """Preprocessed batches of up to ``batch_size`` images; consecutive images of one input shape share a batch."""
    pending = []
    for path, name in items:
        start = time.perf_counter()
        data, info = predictor.preprocess(path)
        timer['preprocess'] += time.perf_counter() - start
        if pending and (len(pending) == batch_size or pending[0][0].shape != data.shape):
            yield pending
            pending = []
        pending.append((data, info, path, name))
    if pending:
        yield pending


def setup_backend(args, cfg):
    """The backend to run ``cfg``'s model in (``resolve_backend``; 'auto' stays 'auto'), with ``args.device`` set
    where it was not given; for a Paddle program, Paddle is imported (the signal handlers installed again where the
    command line installed them) and the program and params files are checked. Shared with serve.py."""
    backend = resolve_backend(args, cfg)
    if cfg.allowed == ONNX_BACKENDS:
        if args.device is None:
            cuda = False
            if backend in ('onnxruntime', 'auto'):
                try:
                    import onnxruntime as ort
                    cuda = 'CUDAExecutionProvider' in ort.get_available_providers()
                except ImportError:
                    pass
            args.device = 'gpu' if cuda else 'cpu'
        logger.info("device: %s; ONNX model %s", args.device, cfg.model)
        return backend

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # Paddle 3 warns about ccache on import
        import paddle
    if _SIGNALS['installed']:
        install_signal_handlers()  # again: importing Paddle replaced the SIGTERM handler
    check_model_files(cfg)

    if args.device is None:
        args.device = 'gpu' if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0 else 'cpu'
    elif args.device == 'gpu' and not paddle.is_compiled_with_cuda():
        raise UserError("--device gpu: this Paddle is built without CUDA; use --device cpu")
    logger.info("device: %s; program %s", args.device, cfg.model)
    return backend


def make_predictor(args, cfg, backend, tuned=False):
    """(backend, predictor) for ``backend`` as ``setup_backend`` returned it: 'auto' is chosen by
    ``choose_backend`` (measured once, cached beside deploy.yaml). Shared with serve.py."""
    def build(name):
        if name == 'onnxruntime':
            return OnnxPredictor(args, cfg)
        if name == 'openvino':
            return OpenVinoPredictor(args, cfg)
        return Predictor(args, cfg, tuned)

    if backend == 'auto':
        return choose_backend(args, cfg, build)
    return backend, build(backend)


def run(args):
    cfg = DeployConfig(args.cfg)
    items = distinct_names(get_image_list(args.image_path))
    backend = setup_backend(args, cfg)
    tuned = cfg.allowed != ONNX_BACKENDS and use_auto_tune(args)
    if tuned:
        auto_tune(args, cfg, items)
    try:
        backend, predictor = make_predictor(args, cfg, backend, tuned)
        return _predict_all(args, cfg, items, backend, predictor)
    finally:
        if tuned and os.path.exists(args.auto_tuned_shape_file):
            os.remove(args.auto_tuned_shape_file)


def _predict_all(args, cfg, items, backend, predictor):
    palette = result_palette(cfg)
    timer = {'preprocess': 0.0, 'inference': 0.0, 'postprocess': 0.0}
    batch_size = args.batch_size
    if cfg.fixed_batch and cfg.fixed_batch != batch_size:
        logger.info("the export's batch size is fixed at %d (deploy.yaml input_shape): batches of %d, not "
                    "--batch_size %d", cfg.fixed_batch, cfg.fixed_batch, batch_size)
        batch_size = cfg.fixed_batch

    if args.benchmark:  # warm-up runs, not timed
        warm, _ = predictor.preprocess(items[0][0])
        for _ in range(2):
            predictor.infer(stack_batch([warm] * min(batch_size, len(items)), cfg))

    runs = 0
    for batch in batches(items, predictor, batch_size, timer):
        start = time.perf_counter()
        output = predictor.infer(stack_batch([b[0] for b in batch], cfg))
        timer['inference'] += time.perf_counter() - start
        runs += 1
        start = time.perf_counter()
        labels = predictor.postprocess(output)
        for label, (_, info, path, name) in zip(labels, batch):
            label = reverse_transform(label, info)
            save_result(label, args.save_dir, name, palette)
            logger.info("%s: %s", path, class_shares(label, cfg))
        timer['postprocess'] += time.perf_counter() - start
    logger.info("saved %d result(s) in %s", len(items), args.save_dir)

    if args.benchmark:
        n = len(items)
        engine = BACKEND_NAMES[backend] if backend in ONNX_BACKENDS else \
            f"oneDNN {'on' if predictor.use_onednn else 'off'}"
        print(f"benchmark: {n} image(s), {runs} run(s) of batch size <= {batch_size}, device {args.device}, "
              f"{engine}, {args.cpu_threads} CPU thread(s)")
        if args.model_name:
            print(f"  model      : {args.model_name}")
        print(f"  preprocess : {1000 * timer['preprocess'] / n:9.2f} ms/image  (total {timer['preprocess']:.3f} s)")
        print(f"  inference  : {1000 * timer['inference'] / n:9.2f} ms/image  (total {timer['inference']:.3f} s)")
        print(f"  postprocess: {1000 * timer['postprocess'] / n:9.2f} ms/image  (total {timer['postprocess']:.3f} s)")
    return 0


def log_to_stderr(*names):
    """Send the loggers ``names`` to stderr at INFO and above as ``<time> <LEVEL> <name>: message``, each with its own
    handler and level, set once (importing Paddle 2.6 resets the root logger to WARNING). Used by ``main`` and by
    serve.py. (``paddle_models.core.cli.log_to_stderr`` is the same; this runner stands alone.)"""
    for name in names:
        log = logging.getLogger(name)
        if not log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            log.propagate = False


def main(argv=None):
    try:
        args = parse_args(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log_to_stderr(logger.name)
    try:
        return run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or a signal under install_signal_handlers
        signum = getattr(err, 'signum', signal.SIGINT)
        print(f"error: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum


if __name__ == '__main__':
    install_signal_handlers()
    sys.exit(main())
