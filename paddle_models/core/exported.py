"""Run an exported model (a folder written by ``export.py``) from Python, for ``val.py --inference_model``.

The folder's ``deploy.yaml`` says what it holds: ``backend: paddle_inference`` (also where the key is absent, as in
PaddleSeg's own exports: a ``model.json``/``model.pdmodel`` program with ``model.pdiparams``, FP32 or quantized
INT8), ``backend: onnxruntime`` (``export.py --format onnx``: ``model.onnx``) or ``backend: openvino``
(``export.py --format onnx --backend openvino``: the same ``model.onnx``, run by the standalone OpenVINO runtime,
the ``openvino`` package). An ONNX model runs in either ONNX runtime whatever deploy.yaml names
(``InferenceModel(backend=...)``); a Paddle program only in Paddle Inference. ``backend='auto'`` picks the faster of
the runtimes the files allow, measured once and cached beside the export (:func:`choose_backend`).
``InferenceModel`` runs a preprocessed batch [N, C, H, W] float32 and returns the program's first output as a NumPy
array: int32 class ids [N, H, W] for ``output_op: argmax``, else float32 logits or probabilities [N, C, H, W].

deploy/python/infer.py does the same for image files; it stays standalone (no paddle_models import), so the
reading of deploy.yaml is written again here, with errors naming the ``--inference_model`` folder.

Paddle Inference runs on the CPU with oneDNN where the export's oneDNN check passed (``enable_mkldnn: true``), with
its OpenVINO engine where deploy.yaml asks for it (``enable_openvino: true``, ``export.py --format openvino``), as
infer.py does by default, and on the GPU where Paddle's current device is one. ONNX Runtime uses the
CPUExecutionProvider, plus CUDA where the installed onnxruntime has it and Paddle's device is a GPU. OpenVINO runs
on the CPU in FP32 (:class:`OpenVinoSession`).
"""
import atexit
import json
import os
import shutil
import tempfile
import time

import numpy as np
import paddle
import yaml

from paddle_models.core import logger
from paddle_models.core.visualize import check_classes
from paddle_models.errors import UserError, error_line
from paddle_models.safe_yaml import load_yaml
from paddle_models.utils.compat import memory_optim_supported

DEPLOY_FILE = 'deploy.yaml'
BACKENDS = ('paddle_inference', 'onnxruntime', 'openvino')
ONNX_BACKENDS = ('onnxruntime', 'openvino')  # the runtimes an ONNX export runs in
# the standalone OpenVINO runtime's pip requirement (pyproject.toml's extra ``openvino``), named where it is missing
OPENVINO_REQUIREMENT = 'openvino==2026.4.1'
BACKEND_NAMES = {'paddle_inference': 'Paddle Inference', 'onnxruntime': 'ONNX Runtime', 'openvino': 'OpenVINO'}


class InferenceModel:
    """An exported model loaded from ``model_dir`` (see the module docstring).

    Args:
        model_dir (str): The export folder (holding deploy.yaml).
        threads (int|None): CPU threads. Default: min(10, CPU count).
        what (str): How errors name the folder. Default: '--inference_model'.
        backend (str|None): The runtime: None (deploy.yaml's ``backend``), 'paddle_inference', 'onnxruntime',
            'openvino' (the last two for an ONNX export, the first for a Paddle program) or 'auto' (the fastest of
            those the files allow and this Python has, see :func:`choose_backend`). Default: None.

    Attributes:
        backend (str): 'paddle_inference', 'onnxruntime' or 'openvino': the runtime in use.
        backend_timings (dict|None): With ``backend='auto'``: ms per run of each runtime measured (read from the
            cache file or just measured); None otherwise.
        output_op (str|None): deploy.yaml's ``output_op`` ('argmax', 'softmax', 'none'; None where absent).
        transforms (list): deploy.yaml's preprocessing transforms config.
        model_file (str): The program or ONNX file.
        class_names (list|None): deploy.yaml's ``class_names`` (a name per class id, written by export.py), None
            where absent (PaddleSeg's own and older exports).
        palette (list|None): deploy.yaml's ``palette`` (an [r, g, b] per class id), None where absent.
    """

    def __init__(self, model_dir, threads=None, what='--inference_model', backend=None):
        self.what = what
        self.dir = os.path.abspath(os.fspath(model_dir))
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise UserError(f"{what}: threads must be a positive integer or None, got {threads!r}")
        self.threads = threads or min(10, os.cpu_count() or 1)
        deploy = self._read_deploy()
        self.deploy = deploy
        recorded = deploy.get('backend')
        if recorded is None:
            recorded = 'onnxruntime' if str(deploy.get('model', '')).endswith('.onnx') else 'paddle_inference'
        if recorded not in BACKENDS:
            raise UserError(f"{what}: {self.deploy_path}: Deploy.backend {recorded!r} is not one of "
                            f"{', '.join(BACKENDS)}")
        self.output_op = deploy.get('output_op')
        self.transforms = deploy.get('transforms') or []
        self.fixed_shape = fixed_dims(deploy.get('input_shape'))
        self._resize_logged = False
        self.class_names, self.palette = check_classes(deploy.get('class_names'), deploy.get('palette'),
                                                       where=f"{what}: {self.deploy_path}: ", prefix='Deploy.')
        self.model_file = self._file('model')
        allowed = file_backends(recorded)
        if recorded == 'paddle_inference':
            self.params_file = self._file('params')
        self.backend_timings = None
        if backend is None:
            backend = recorded
        check_backend(backend, allowed, self.model_file, f"{what}: backend")
        if backend == 'auto':
            gpu = paddle.device.get_device().startswith('gpu')
            backend, self._run, self.backend_timings = choose_backend(
                self.dir, self.model_file, allowed, self.threads, 'gpu' if gpu else 'cpu', self._runner,
                auto_shape(deploy.get('input_shape')))
        else:
            self._run = self._runner(backend)
        self.backend = backend

    def _runner(self, backend):
        """A function batch -> first output running the model in ``backend``."""
        if backend == 'onnxruntime':
            session = self._onnx_session()
            name = session.get_inputs()[0].name
            return lambda batch: session.run(None, {name: batch})[0]
        if backend == 'openvino':
            return openvino_session(self.model_file, self.threads, f"{self.what}: {self.model_file}")
        predictor = self._paddle_predictor()

        def run(batch):
            handle = predictor.get_input_handle(predictor.get_input_names()[0])
            handle.reshape(list(batch.shape))
            handle.copy_from_cpu(batch)
            predictor.run()
            return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()

        return run

    @property
    def deploy_path(self):
        return os.path.join(self.dir, DEPLOY_FILE)

    def _read_deploy(self):
        if not os.path.isdir(self.dir):
            raise UserError(f"{self.what}: {self.dir} is not a folder (expected an export folder with "
                            f"{DEPLOY_FILE})")
        if not os.path.isfile(self.deploy_path):
            raise UserError(f"{self.what}: {self.deploy_path} does not exist (not an export folder: export.py "
                            f"writes it)")
        try:
            with open(self.deploy_path, 'r', encoding='utf-8') as f:
                dic = load_yaml(f, self.deploy_path)
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise UserError(f"{self.what}: {self.deploy_path} is not valid YAML: {' '.join(str(err).split())}") \
                from None
        if not isinstance(dic, dict) or not isinstance(dic.get('Deploy'), dict):
            raise UserError(f"{self.what}: {self.deploy_path} has no 'Deploy' section")
        return dic['Deploy']

    def _file(self, key):
        name = self.deploy.get(key)
        if not isinstance(name, str) or not name:
            raise UserError(f"{self.what}: {self.deploy_path}: Deploy.{key} is missing")
        path = os.path.join(self.dir, name)
        if not os.path.isfile(path):
            raise UserError(f"{self.what}: {self.deploy_path}: Deploy.{key} file {path} does not exist")
        return path

    def _onnx_session(self):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError(f"{self.what}: {self.model_file} is an ONNX model, which needs onnxruntime: "
                            f"pip install onnxruntime") from None
        providers = ['CPUExecutionProvider']
        if paddle.device.get_device().startswith('gpu') and \
                'CUDAExecutionProvider' in ort.get_available_providers():
            providers.insert(0, 'CUDAExecutionProvider')
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(self.model_file, options, providers=providers)
        except Exception as err:  # noqa: BLE001  (ONNX Runtime's load errors)
            raise UserError(f"{self.what}: ONNX Runtime cannot load {self.model_file}: {_first_line(err)}") \
                from None

    def _paddle_predictor(self):
        from paddle.inference import Config, create_predictor

        config = Config(self.model_file, self.params_file)
        config.disable_glog_info()
        if memory_optim_supported(self.model_file):
            config.enable_memory_optim()
        if paddle.device.get_device().startswith('gpu'):
            config.enable_use_gpu(100, 0)
        else:
            cpu_config(config, self.threads, onednn=self.deploy.get('enable_mkldnn') is True,
                       int8=int8_setting(self.deploy), openvino=self._openvino())
        try:
            return create_predictor(config)
        except (RuntimeError, ValueError, OSError) as err:
            raise UserError(f"{self.what}: Paddle Inference cannot load {self.model_file} with "
                            f"{self.params_file}: {_first_line(err)}") from None

    def _openvino(self):
        """deploy.yaml's ``enable_openvino`` (``export.py --format openvino``), checked against this Paddle."""
        if self.deploy.get('enable_openvino') is not True:
            return False
        if not openvino_available():
            raise UserError(f"{self.what}: {self.deploy_path} asks for Paddle Inference's OpenVINO engine "
                            f"(enable_openvino: true), which this Paddle {paddle.__version__} does not have "
                            f"(Paddle 3.x CPU builds do)")
        return True

    def __call__(self, batch):
        """The first output for ``batch`` ([N, C, H, W], converted to contiguous float32), at the batch's size.

        An export of a fixed input size (deploy.yaml ``input_shape``) runs on any size: the batch is resized to the
        fixed height and width (``fit_input``, bilinear) and the output back (``restore_size``: nearest for class
        ids, bilinear for scores), logged once; a fixed batch size is met by running chunks of it, the last padded.
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        fixed_n, _, fixed_h, fixed_w = self.fixed_shape
        if batch.ndim != 4:
            return self._run(batch)
        n, _, h, w = batch.shape
        size = (fixed_h or h, fixed_w or w)
        if size != (h, w):
            if not self._resize_logged:
                logger.info(f"{self.what}: the export's input is fixed at {size[0]}x{size[1]} (HxW, deploy.yaml "
                            f"input_shape): inputs of other sizes are resized to it and its output back (first: "
                            f"{h}x{w})")
                self._resize_logged = True
            batch = fit_input(batch, size)
        if fixed_n and fixed_n != n:
            chunks = [batch[i:i + fixed_n] for i in range(0, n, fixed_n)]
            outputs = [self._run(np.concatenate([c] + [c[-1:]] * (fixed_n - len(c))))[:len(c)] for c in chunks]
            out = np.concatenate(outputs)
        else:
            out = self._run(batch)
        return restore_size(out, (h, w)) if size != (h, w) else out


def fixed_dims(input_shape):
    """deploy.yaml's ``input_shape`` as [N, C, H, W] with None for each free dimension (all None where it is absent
    or not four dimensions, as in PaddleSeg's exports of any size)."""
    dims = list(input_shape) if isinstance(input_shape, (list, tuple)) and len(input_shape) == 4 else [None] * 4
    return [d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None for d in dims]


def fit_input(batch, size):
    """``batch`` [N, C, H, W] float32 resized to ``size`` (h, w), bilinear (``cv2.INTER_LINEAR``, as
    deploy/python/infer.py's ``fit_input``): the input of an export whose size is fixed."""
    import cv2

    resized = [cv2.resize(np.ascontiguousarray(chw.transpose(1, 2, 0)), (size[1], size[0]),
                          interpolation=cv2.INTER_LINEAR).reshape(size[0], size[1], -1).transpose(2, 0, 1)
               for chw in batch]
    return np.ascontiguousarray(np.stack(resized), dtype=np.float32)


def restore_size(out, size):
    """An export's output at the fitted size mapped back to ``size`` (h, w): class ids [N, H, W] by nearest
    neighbour, scores [N, C, H, W] bilinear (``core.logits.undo_transforms``, as the transforms' own resizes)."""
    from paddle_models.core.logits import undo_transforms

    record = [('resize', (int(size[0]), int(size[1])))]
    if out.ndim == 3:
        return undo_transforms(paddle.to_tensor(out[:, np.newaxis]), record).numpy()[:, 0]
    return undo_transforms(paddle.to_tensor(out), record).numpy()


def file_backends(recorded):
    """The runtimes an export whose deploy.yaml names runtime ``recorded`` can run in: an ONNX model
    (onnxruntime, openvino) in either ONNX runtime, a Paddle program in Paddle Inference only."""
    return ONNX_BACKENDS if recorded in ONNX_BACKENDS else ('paddle_inference',)


def check_backend(backend, allowed, model_file, where):
    """A one-line UserError (prefixed ``where``) unless ``backend`` is 'auto' or one of the runtimes ``allowed``
    for ``model_file`` (see :func:`file_backends`)."""
    if backend == 'auto' or backend in allowed:
        return
    if backend not in BACKENDS:
        raise UserError(f"{where}: unknown value {backend!r}; expected one of {', '.join(BACKENDS)}, auto")
    if allowed == ONNX_BACKENDS:
        raise UserError(f"{where} {backend} cannot run {model_file}: an ONNX model runs in onnxruntime or "
                        f"openvino")
    raise UserError(f"{where} {backend} cannot run {model_file}: a Paddle program runs in paddle_inference only "
                    f"(export.py --format onnx writes a model for onnxruntime and openvino)")


# The op types tools/quantize.py's programs run in oneDNN INT8: Paddle's quantizable set without ``pool2d`` and the
# matmuls. With pool2d in INT8 a trained FC-HarDNet-70 lost 1.7 mIoU points on camvid_mini val (0.4054 against FP32
# 0.4220; without it 0.4248) at the same speed, and PSPNet's INT8 program failed in pool2d under oneDNN INT8. With
# matmuls in INT8, oneDNN's quantize pass stopped on SegFormer's exported decoder ("Matmul inputs should have the same
# attribute of signed/unsigned": a non-negative interpolation matrix times signed features); its attention's matmuls
# in INT8 (quantize.py's ops plus matmul_v2) did not run faster and agreed with FP32 on 80% of an image's pixels.
ONEDNN_INT8_OPS = ('conv2d', 'depthwise_conv2d', 'fused_conv2d', 'concat', 'elementwise_add', 'elementwise_mul',
                   'elementwise_sub', 'fc', 'nearest_interp', 'nearest_interp_v2', 'reshape2', 'transpose2', 'slice',
                   'split')


def int8_setting(deploy):
    """``cpu_config``'s ``int8`` for an export's ``Deploy`` record: False where it is not INT8 (``precision``), else
    the op types tools/quantize.py recorded (``quantization.int8_ops``), or True (Paddle's default set) for an INT8
    export that records none."""
    if deploy.get('precision') != 'int8':
        return False
    ops = (deploy.get('quantization') or {}).get('int8_ops')
    return list(ops) if ops else True


def cpu_config(config, threads, onednn, int8=False, openvino=False):
    """Set up a Paddle Inference ``config`` for the CPU: ``threads`` math threads, oneDNN on (with its primitive
    cache bounded to 10 input shapes, so a run over images of many sizes does not keep every shape's primitives)
    or explicitly off (Paddle Inference turns it on by default), oneDNN's INT8 kernels for a tools/quantize.py
    export: ``int8`` True (Paddle's default op types) or a list of op types (:data:`ONEDNN_INT8_OPS`, see
    :func:`int8_setting`), and Paddle Inference's OpenVINO engine in FP32 for an ``export.py --format openvino``
    export (``openvino``; legacy programs only, see ``paddle_models.core.legacy``; the ops it does not take keep
    running on oneDNN or the plain kernels). The one place these settings live: ``InferenceModel``, export's
    checks and tools/benchmark.py's inference measurements use it; deploy/python/infer.py, standalone, repeats the
    same lines.

    Returns:
        The same ``config``.
    """
    config.disable_gpu()
    if onednn:
        config.set_mkldnn_cache_capacity(10)
        config.enable_mkldnn()
        if int8:
            config.enable_mkldnn_int8(set(int8) if isinstance(int8, (list, tuple, set)) else set())
    else:
        config.disable_mkldnn()
    config.set_cpu_math_library_num_threads(threads)
    if openvino:
        from paddle.inference import PrecisionType

        config.set_optim_cache_dir(openvino_cache_dir())
        config.enable_openvino_engine(PrecisionType.Float32)
    return config


_OPENVINO_CACHE = []


def openvino_cache_dir():
    """This process's folder for the OpenVINO engine's compiled-model cache: a temporary folder removed at exit.
    Paddle's engine always caches, and with no ``set_optim_cache_dir`` it writes ``__cache__/`` (tens of MB per
    model) into the working directory, outside any folder the user named."""
    if not _OPENVINO_CACHE:
        _OPENVINO_CACHE.append(tempfile.mkdtemp(prefix='paddle_models-openvino-'))
        atexit.register(remove_openvino_cache)
    return _OPENVINO_CACHE[0]


def remove_openvino_cache():
    """Remove :func:`openvino_cache_dir`'s folder (at exit; ``core.cli``'s immediate exit calls it too)."""
    while _OPENVINO_CACHE:
        shutil.rmtree(_OPENVINO_CACHE.pop(), ignore_errors=True)


def openvino_available():
    """Whether this Paddle Inference has the OpenVINO engine (Paddle 3.x CPU builds; Paddle 2.6 has none)."""
    from paddle.inference import Config

    return hasattr(Config, 'enable_openvino_engine')


def _first_line(err):
    return error_line(err, 'first', type(err).__name__)[:400]


def openvino_settings(threads):
    """The standalone OpenVINO runtime's CPU compile settings (deploy/python/infer.py repeats them): ``threads``
    inference threads, the LATENCY hint (one request at a time, as the runners make them) and FP32 precision (left
    to itself, OpenVINO runs bf16 or fp16 on CPUs that have them, which changes the results)."""
    return {'INFERENCE_NUM_THREADS': int(threads), 'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_PRECISION_HINT': 'f32'}


class OpenVinoSession:
    """An ONNX model (``export.py --format onnx``) in the standalone OpenVINO runtime (the ``openvino`` package) on
    the CPU: ``session(batch)`` returns the model's first output as a NumPy array. Compile settings:
    :func:`openvino_settings`.

    Input shapes: a model whose input shape is fixed is compiled once. A model with free dimensions is compiled for
    each input shape it is given (its input reshaped to that shape first), up to :attr:`MAX_SHAPES` shapes; later
    new shapes run in one compile that keeps the dimensions dynamic. Why: on a stream of same-size images a compile
    for the static shape ran faster than the dynamic-shape compile on every model measured (most on SegFormer-B0,
    whose attention and layer norms OpenVINO plans for known sizes, least on HarDNet's convolutions), and a compile
    costs a fraction of a second, paid once per shape; the bound keeps a stream of ever-new sizes from compiling at
    every image (the same bound as oneDNN's primitive cache in :func:`cpu_config`).

    Args:
        path (str): The ONNX file.
        threads (int): CPU inference threads.
        where (str): How errors name the model (a UserError prefix).

    Raises:
        UserError: openvino is not installed, or it cannot read the file.
    """

    MAX_SHAPES = 10

    def __init__(self, path, threads, where):
        try:
            import openvino
        except ImportError:
            raise UserError(f"{where}: OpenVINO needs the openvino package, which is not installed: "
                            f"pip install {OPENVINO_REQUIREMENT}") from None
        self._core = openvino.Core()
        self._partial_shape = openvino.PartialShape
        try:
            self._model = self._core.read_model(path)
        except Exception as err:  # noqa: BLE001  (OpenVINO's C++ errors: a truncated or foreign file)
            raise UserError(f"{where}: OpenVINO cannot load it: {_first_line(err)}") from None
        self._settings = openvino_settings(threads)
        self._requests = {}  # input shape (tuple, or None for the dynamic compile) -> infer request
        self.static = self._model.inputs[0].get_partial_shape().is_static

    def _request(self, shape):
        if self.static:
            shape = None
        elif shape not in self._requests and len(self._requests) >= self.MAX_SHAPES:
            shape = None  # the compile with free dimensions, for every shape beyond the first MAX_SHAPES
        request = self._requests.get(shape)
        if request is None:
            model = self._model
            if shape is not None:
                model = model.clone()
                model.reshape({model.inputs[0]: self._partial_shape(list(shape))})
            request = self._core.compile_model(model, 'CPU', self._settings).create_infer_request()
            self._requests[shape] = request
        return request

    def __call__(self, batch):
        """The first output for ``batch`` (a contiguous float32 [N, C, H, W] array)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self._request(tuple(batch.shape)).infer({0: batch})[0]


def openvino_session(path, threads, where):
    """:class:`OpenVinoSession` on ``path``."""
    return OpenVinoSession(path, threads, where)


# --- backend='auto': the fastest runtime the export's files allow, measured once per machine and versions ---

CHOICE_FILE = 'backend_choice.json'  # beside deploy.yaml; deploy/python/infer.py reads and writes the same file
AUTO_HW = 512  # the measurement's height and width where deploy.yaml's input_shape leaves them free
AUTO_ROUNDS = 3  # timed runs per runtime (after one warm-up run each), interleaved; the median counts


def auto_shape(input_shape):
    """The measurement input's shape: deploy.yaml's ``input_shape`` where its dimensions are fixed, else batch 1,
    3 channels, :data:`AUTO_HW` x :data:`AUTO_HW`."""
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
    """The installed version of ``backend``'s package (paddle, onnxruntime, openvino), None where it is missing."""
    try:
        if backend == 'paddle_inference':
            return paddle.__version__
        if backend == 'onnxruntime':
            import onnxruntime

            return onnxruntime.__version__
        import openvino

        return openvino.get_version()
    except ImportError:
        return None


def choice_key(model_file, threads, device, versions, shape):
    """What a cached choice holds for: the machine (CPU model, CPU count), the threads and device, the runtimes'
    versions, the model file (name, size, modification time) and the measured input shape. Any change measures
    again."""
    stat = os.stat(model_file)
    return {'cpu': cpu_model(), 'cpu_count': os.cpu_count(), 'threads': int(threads), 'device': device,
            'versions': dict(versions), 'model': os.path.basename(model_file), 'model_bytes': stat.st_size,
            'model_mtime_ns': stat.st_mtime_ns, 'input_shape': [int(d) for d in shape]}


def _read_choice(path, key, installed):
    """(cached record, None) where ``path`` holds a choice for ``key`` among ``installed``, else (None, why not)."""
    if not os.path.exists(path):
        return None, 'not measured yet'
    try:
        with open(path, encoding='utf-8') as f:
            record = json.load(f)
    except (OSError, ValueError) as err:
        return None, f"{os.path.basename(path)} is unreadable ({_first_line(err)})"
    if not isinstance(record, dict) or record.get('choice') not in installed or \
            not isinstance(record.get('timings_ms'), dict):
        return None, f"{os.path.basename(path)} holds no valid choice"
    cached = record.get('key')
    if cached != key:
        changed = sorted(k for k in key if not isinstance(cached, dict) or cached.get(k) != key[k])
        return None, f"measured for another {', '.join(changed)}"
    return record, None


def _write_choice(path, record):
    """Write ``record`` to ``path`` atomically; None, or why it could not be written."""
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


def choose_backend(folder, model_file, candidates, threads, device, make_runner, shape, log=None):
    """The fastest runtime for the export in ``folder``: (backend, its runner, ms per run of each runtime or None).

    ``candidates`` are the runtimes the files allow (:func:`file_backends`); those whose package is installed are
    timed once on a random input of ``shape`` (one warm-up run each, then :data:`AUTO_ROUNDS` interleaved rounds,
    the median counts), and the choice is written to ``folder/backend_choice.json`` with the timings and
    :func:`choice_key` (CPU model and count, threads, device, versions, model file, shape). A later call with the
    same key reuses it without measuring; a changed key measures again. A folder that cannot be written is logged
    in one line (the next run measures again). With one runtime installed there is nothing to measure.

    Args:
        make_runner (callable): backend -> a function batch -> output (raising UserError where the runtime
            cannot load the model).
        log (module|logging.Logger|None): Where the choice is logged (``info``/``warning`` of one message).
            Default: ``paddle_models.core.logger``.

    Raises:
        UserError: None of the candidates is installed, or every one fails on the model.
    """
    if log is None:
        from paddle_models.core import logger as log
    if len(candidates) == 1:
        log.info(f"backend auto: {candidates[0]} (the only runtime for {os.path.basename(model_file)})")
        return candidates[0], make_runner(candidates[0]), None
    versions = {b: backend_version(b) for b in candidates}
    installed = [b for b in candidates if versions[b] is not None]
    if not installed:
        raise UserError(f"backend auto: none of {', '.join(candidates)} is installed: pip install "
                        f"{' or '.join(candidates)}")
    if len(installed) == 1:
        log.info(f"backend auto: {installed[0]} (the only one of {', '.join(candidates)} installed; nothing to "
                 f"measure)")
        return installed[0], make_runner(installed[0]), None
    path = os.path.join(folder, CHOICE_FILE)
    key = choice_key(model_file, threads, device, {b: versions[b] for b in installed}, shape)
    record, why = _read_choice(path, key, installed)
    if record is not None:
        choice = record['choice']
        log.info(f"backend auto: {choice} (cached in {path}: {_timings_text(record['timings_ms'])})")
        return choice, make_runner(choice), record['timings_ms']

    log.info(f"backend auto: measuring {', '.join(installed)} on a {'x'.join(map(str, shape))} input ({why})")
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    runners, errors = {}, {}
    for backend in installed:
        try:
            runner = make_runner(backend)
            runner(data)  # warm-up: compiles, allocates
            runners[backend] = runner
        except Exception as err:  # noqa: BLE001  (a runtime that cannot run this model is left out)
            errors[backend] = _first_line(err)
            log.warning(f"backend auto: {backend} cannot run {model_file} ({errors[backend]}); left out")
    if not runners:
        raise UserError(f"backend auto: no runtime runs {model_file}: "
                        f"{'; '.join(f'{b}: {e}' for b, e in errors.items())}")
    times = {backend: [] for backend in runners}
    for _ in range(AUTO_ROUNDS):
        for backend, runner in runners.items():
            start = time.perf_counter()
            runner(data)
            times[backend].append(1000.0 * (time.perf_counter() - start))
    timings = {b: round(float(np.median(times[b])), 3) if b in times else None for b in installed}
    choice = min(times, key=lambda b: timings[b])
    record = {'choice': choice, 'timings_ms': timings, 'errors': errors, 'key': key,
              'measured': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'rounds': AUTO_ROUNDS}
    problem = _write_choice(path, record)
    if problem is None:
        log.info(f"backend auto: {choice} ({_timings_text(timings)}); cached in {path}")
    else:
        log.warning(f"backend auto: {choice} ({_timings_text(timings)}); could not write the cache {path} "
                    f"({problem}): the next run measures again")
    return choice, runners[choice], timings


def _timings_text(timings):
    return ', '.join(f"{b} {t:.1f} ms" if isinstance(t, (int, float)) else f"{b} failed"
                     for b, t in timings.items())
