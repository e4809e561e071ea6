"""Run an exported model (a folder written by ``export.py``) from Python, for ``val.py --inference_model``.

The folder's ``deploy.yaml`` says what it holds: ``backend: paddle_inference`` (also where the key is absent, as in
PaddleSeg's own exports: a ``model.json``/``model.pdmodel`` program with ``model.pdiparams``, FP32 or quantized
INT8) or ``backend: onnxruntime`` (``export.py --format onnx``: ``model.onnx``). ``InferenceModel`` runs either on a
preprocessed batch [N, C, H, W] float32 and returns the program's first output as a NumPy array: int32 class ids
[N, H, W] for ``output_op: argmax``, else float32 logits or probabilities [N, C, H, W].

deploy/python/infer.py does the same for image files; it stays standalone (no paddle_models import), so the
reading of deploy.yaml is written again here, with errors naming the ``--inference_model`` folder.

Paddle Inference runs on the CPU with oneDNN where the export's oneDNN check passed (``enable_mkldnn: true``), with
its OpenVINO engine where deploy.yaml asks for it (``enable_openvino: true``, ``export.py --format openvino``), as
infer.py does by default, and on the GPU where Paddle's current device is one. ONNX Runtime uses the
CPUExecutionProvider, plus CUDA where the installed onnxruntime has it and Paddle's device is a GPU.
"""
import atexit
import os
import shutil
import tempfile

import numpy as np
import paddle
import yaml

from paddle_models.core.visualize import check_classes
from paddle_models.errors import UserError

DEPLOY_FILE = 'deploy.yaml'
BACKENDS = ('paddle_inference', 'onnxruntime')


class InferenceModel:
    """An exported model loaded from ``model_dir`` (see the module docstring).

    Args:
        model_dir (str): The export folder (holding deploy.yaml).
        threads (int|None): CPU threads. Default: min(10, CPU count).
        what (str): How errors name the folder. Default: '--inference_model'.

    Attributes:
        backend (str): 'paddle_inference' or 'onnxruntime'.
        output_op (str|None): deploy.yaml's ``output_op`` ('argmax', 'softmax', 'none'; None where absent).
        transforms (list): deploy.yaml's preprocessing transforms config.
        model_file (str): The program or ONNX file.
        class_names (list|None): deploy.yaml's ``class_names`` (a name per class id, written by export.py), None
            where absent (PaddleSeg's own and older exports).
        palette (list|None): deploy.yaml's ``palette`` (an [r, g, b] per class id), None where absent.
    """

    def __init__(self, model_dir, threads=None, what='--inference_model'):
        self.what = what
        self.dir = os.path.abspath(os.fspath(model_dir))
        self.threads = threads or min(10, os.cpu_count() or 1)
        deploy = self._read_deploy()
        self.deploy = deploy
        backend = deploy.get('backend')
        if backend is None:
            backend = 'onnxruntime' if str(deploy.get('model', '')).endswith('.onnx') else 'paddle_inference'
        if backend not in BACKENDS:
            raise UserError(f"{what}: {self.deploy_path}: Deploy.backend {backend!r} is not one of "
                            f"{', '.join(BACKENDS)}")
        self.backend = backend
        self.output_op = deploy.get('output_op')
        self.transforms = deploy.get('transforms') or []
        self.class_names, self.palette = check_classes(deploy.get('class_names'), deploy.get('palette'),
                                                       where=f"{what}: {self.deploy_path}: ", prefix='Deploy.')
        self.model_file = self._file('model')
        if backend == 'onnxruntime':
            self._session = self._onnx_session()
            self._input = self._session.get_inputs()[0].name
        else:
            self.params_file = self._file('params')
            self._predictor = self._paddle_predictor()

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
                dic = yaml.safe_load(f)
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
        if not self.model_file.endswith('.json'):
            config.enable_memory_optim()  # Paddle 3.3.1 refuses it for PIR programs (see infer.py)
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
        """The first output for ``batch`` ([N, C, H, W], converted to contiguous float32)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.backend == 'onnxruntime':
            return self._session.run(None, {self._input: batch})[0]
        predictor = self._predictor
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(list(batch.shape))
        handle.copy_from_cpu(batch)
        predictor.run()
        return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


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
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)[:400]
