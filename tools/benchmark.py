"""Parameters, FLOPs, CPU latency and peak memory of a registered model at a given input size, optionally side by
side with PaddleSeg 2.8.0's implementation of the same configuration.

    python tools/benchmark.py --config configs/segnext_t_camvid.yml --size 512 512 --impl both
    python tools/benchmark.py --model SegFormer_B0 --kwargs '{"num_classes": 150}' --size 512 512
    python tools/benchmark.py --model-cfg '{"type": "SegNeXt", "backbone": {"type": "MSCAN_T"}, ...}' --impl both \
        --processes 5
    python tools/benchmark.py --config configs/linknet.yml --measure dynamic,infer_onednn,infer_int8 --peer \
        --peer-python .venv-peer/bin/python
    python tools/benchmark.py --suite --markdown docs/speed.md --peer-python .venv-peer/bin/python

Measurements (batch 1, random input, ``--threads`` CPU threads):

* ``params``: trainable parameters; ``gflops``: ``paddle.flops`` (multiply-accumulates of conv/linear/matmul
  layers as Paddle counts them; layers it does not know count 0 -- "n/a" when it fails).
* ``dynamic_ms``: median latency of a dynamic-graph eval forward under ``paddle.no_grad`` (after one warm-up).
* ``infer_ms`` / ``infer_onednn_ms``: median latency of Paddle Inference on the exported program (our
  ``export_model``, free input size) with oneDNN off / on; "n/a (reason)" where the program does not run.
* ``*_peak_mib``: peak resident memory (``ru_maxrss``) of a fresh subprocess that runs that measurement alone, so
  one measurement's memory never hides another's: the dynamic one builds the model; the inference ones only load
  the program, exported beforehand by another subprocess (so the export and its checks are not counted). It
  includes the framework itself (~450-500 MiB for Paddle 3.3.1) and varies by +-25 MiB from process to process
  (glibc's allocator); ``--processes N`` runs each measurement in N processes and reports the median.
* ``*_tensor_mib``: peak of the memory Paddle's own allocator held for tensors in that process (parameters,
  activations, outputs; ``host_memory_stat_peak_value``). Deterministic, so it shows what a model's graph costs
  without the allocator's noise. Neither figure counts oneDNN's private scratch buffers beyond the RSS they add.
* ``infer_openvino_ms`` (ours): the model exported by ``export_model(fmt='openvino')`` (a legacy program, in a
  process started with ``FLAGS_enable_pir_api=0``; ``export_openvino_s`` is its wall time) and timed in Paddle
  Inference with its OpenVINO engine (FP32; oneDNN on where that export's check passed); "n/a (reason)" where the
  model cannot be exported for it (e.g. SegFormer: not traceable as a legacy program; LinkNet: OpenVINO's output
  is wrong, which the export's check catches).
* ``infer_int8_ms`` (``--config`` only; ours): the same random-weight model saved to a temporary ``.pdparams``,
  quantized by ``tools/quantize.py`` (its command line, ``--calib_images 8`` of the config's ``train_dataset``)
  and timed in Paddle Inference with oneDNN INT8 (``enable_mkldnn_int8``); ``quantize_s`` is that tool's wall time.
* ``export_s``: wall time of the export subprocess (import, build, ``export_model`` with its checks -- what
  ``export.py`` costs), without the saving of the weights for INT8; ``<measurement>_setup_s``: ``create_predictor``
  plus the first (warm-up) run of an inference measurement.
* ``--peer``: the PyTorch reference of the same model (see :func:`peer_for`), random weights, timed in
  ``tools/benchmark_peer.py`` under ``--peer-python`` (an interpreter with torch and the peer's library; it never
  imports Paddle): ``torch_eager_ms`` (``torch.no_grad``, eval) and ``ort_ms`` (``torch.onnx.export`` opset 17,
  ONNX Runtime's CPU provider with ``--threads`` intra-op threads, one inter-op thread). A model without a peer
  gets "-", a peer whose library does not import "n/a (reason)".
* ``onnx_ort_ms`` / ``onnx_openvino_ms`` (ours): the model exported by ``export_model(fmt='onnx')``
  (``export_onnx_s``) and timed in ONNX Runtime (CPU provider, ``--threads`` intra-op threads, one inter-op) and in
  the standalone OpenVINO runtime (reshaped to ``--size``, f32, latency hint, ``--threads`` threads): with
  ``infer_onednn`` the same network in three runtimes.
* ``--suite`` / ``--configs``: the speed table of docs/speed.md over several configs (``SUITE``: ours dynamic, oneDNN FP32,
  OpenVINO FP32 and oneDNN INT8; PaddleSeg's dynamic where PaddleSeg has the model, "-" otherwise; the peers; no
  plain-CPU inference);
  ``--markdown`` writes it with the date, machine, versions and command (docs/speed.md). ``--suite`` then adds the
  same-graph table: ``infer_onednn``, ``onnx_ort`` and ``onnx_openvino`` for every other config in ``configs/``.

``--measure train_step`` (alone; ``--config``, ``--configs``, else ``TRAIN_SUITE``): CPU training speed, the
seconds per iteration of ``train.py --config <config>`` (its own batch, crop and default flags; the median
``batch_cost`` of iterations 3-12 with ``--log_iters 1``) against one eager training step of the PyTorch peer
(forward, cross-entropy, backward, SGD with momentum) at the same batch and crop under ``--peer-python``, both with
``--threads`` threads; printed as the markdown table of docs/speed.md's "CPU training" section.

``--impl ours`` builds the model-config dict through ``core.config.Builder``, as train.py does. ``--impl paddleseg``
builds it from PaddleSeg's own classes (``paddleseg.models.<type>``, ``paddleseg.models.backbones.<type>``); our
registry replaces PaddleSeg's entries in the manager, so this looks the classes up in PaddleSeg's modules directly,
leaving out (with a note on stderr) the arguments PaddleSeg's class does not take and those its size builder fixes
itself (``MixVisionTransformer_B0``'s ``drop_path_rate``). Builder names that exist only here (``SegNeXt_T``) have
no PaddleSeg counterpart: give a config.
"""
import argparse
import ast
import inspect
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from paddle_models.core.cli import main_wrapper  # noqa: E402  (the package first: it preloads zlib before paddle)
from paddle_models.errors import UserError, error_line  # noqa: E402

MEASUREMENTS = ('dynamic', 'infer', 'infer_onednn')  # the default of --measure
# our own ONNX export (export.py --format onnx) in ONNX Runtime and in the standalone OpenVINO runtime
ONNX_MEASUREMENTS = ('onnx_ort', 'onnx_openvino')
INFER_MEASUREMENTS = ('infer', 'infer_onednn', 'infer_openvino', 'infer_int8') + ONNX_MEASUREMENTS
PEER_MEASUREMENTS = ('torch_eager', 'ort')
KNOWN_MEASUREMENTS = MEASUREMENTS + ('infer_openvino', 'infer_int8') + ONNX_MEASUREMENTS
# the same network (our config and export) in three runtimes: the same-graph table of --suite
SAME_GRAPH = ('infer_onednn',) + ONNX_MEASUREMENTS
OURS_ONLY = ('infer_int8', 'infer_openvino') + ONNX_MEASUREMENTS
PEER_TOOL = os.path.join(REPO, 'tools', 'benchmark_peer.py')
CALIB_IMAGES = 8
# --suite: (name in the table, config); 512x512, 2 threads, 3 repeats, 1 process by default
SUITE = (('LinkNet-R18', 'configs/linknet.yml'),
         ('SegFormer-B0', 'configs/segformer_b0_camvid.yml'),
         ('HarDNet', 'configs/hardnet.yml'),
         ('SegNeXt-T', 'configs/segnext_t_camvid.yml'),
         ('DeepLabV3-R50_vd OS8', 'configs/deeplabv3.yml'),
         ('PSPNet-R50_vd OS8', 'configs/pspnet.yml'),
         ('UNet++', 'configs/unet_plusplus.yml'),
         ('FCN-HRNet-W18', 'configs/fcn_hrnet_w18_camvid.yml'))
SUITE_MEASUREMENTS = {'ours': ('dynamic', 'infer_onednn', 'infer_openvino', 'infer_int8') + ONNX_MEASUREMENTS,
                      'paddleseg': ('dynamic',)}


def _load_model_cfg(args):
    if args.config:
        from paddle_models.core.config import load_config
        if not os.path.isfile(args.config):
            raise UserError(f"--config: {args.config} does not exist")
        cfg = load_config(args.config, require=()).dic  # merges _base_ files, as train.py does
        if not isinstance(cfg.get('model'), dict) or 'type' not in cfg['model']:
            raise UserError(f"--config: {args.config} has no model with a type")
        return cfg['model']
    if args.model_cfg:
        try:
            cfg = json.loads(args.model_cfg)
        except ValueError as err:
            raise UserError(f"--model-cfg: not JSON: {err}") from None
        if not isinstance(cfg, dict) or 'type' not in cfg:
            raise UserError("--model-cfg: must be a JSON object with a type")
        return cfg
    if args.model:
        try:
            kwargs = json.loads(args.kwargs or '{}')
        except ValueError as err:
            raise UserError(f"--kwargs: not JSON: {err}") from None
        if not isinstance(kwargs, dict):
            raise UserError(f"--kwargs: must be a JSON object, got {args.kwargs}")
        return dict(kwargs, type=args.model)
    raise UserError("give --config, --model-cfg or --model")


def _paddleseg_class(name, kind):
    """PaddleSeg 2.8.0's own model or backbone class ``name``, looked up in its modules (our registry replaced its
    entries in the manager)."""
    import paddleseg.models as models
    import paddleseg.models.backbones as backbones
    module = backbones if kind == 'backbone' else models
    if not hasattr(module, name):
        raise UserError(f"PaddleSeg 2.8.0 has no {kind} {name!r} (builders that exist only here have no PaddleSeg "
                        f"counterpart: benchmark a config)")
    return getattr(module, name)


def build(cfg, impl):
    """Instantiate a model-config dict with our components (``core.config.Builder``, as train.py builds) or
    PaddleSeg's (:func:`build_paddleseg`)."""
    if impl == 'paddleseg':
        return build_paddleseg(cfg)
    import types

    import paddle_models  # noqa: F401  (registers our components)
    from paddle_models.core.config import Builder
    return Builder(types.SimpleNamespace(dic={'model': cfg}, path='model config')).model()


def build_paddleseg(cfg):
    """``cfg`` built from PaddleSeg's own classes, for the comparison. ``core.config.Builder`` cannot do this: it
    builds what the manager names, where our classes replaced PaddleSeg's. Keys PaddleSeg's classes do not take are
    left out (:func:`_own_arguments`), and so is ``pretrained``."""
    cfg = dict(cfg)
    cls = _paddleseg_class(cfg.pop('type'), 'model')
    for key, value in list(cfg.items()):
        if isinstance(value, dict) and 'type' in value:
            cfg[key] = _paddleseg_component(value)
    cfg.pop('pretrained', None)
    if isinstance(cfg.get('decoder_cfg'), dict):  # an option only our LightHamHead has
        cfg['decoder_cfg'] = {k: v for k, v in cfg['decoder_cfg'].items() if k != 'inference_bases'}
    return cls(**_own_arguments(cls, cfg))


def paddleseg_has(cfg):
    """Whether PaddleSeg 2.8.0 has the model class of ``cfg`` and the classes of its nested components."""
    try:
        _paddleseg_class(cfg['type'], 'model')
        for value in cfg.values():
            if isinstance(value, dict) and 'type' in value:
                _paddleseg_class(value['type'], 'backbone')
    except UserError:
        return False
    return True


def _own_arguments(cls, cfg):
    """``cfg`` without the keys PaddleSeg's ``cls`` does not take (options only our class has, such as UNet++'s
    ``ds_outputs``), each dropped key reported on stderr so the comparison says what it leaves out."""
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return cfg
    dropped = sorted(k for k in cfg if k not in params)
    if dropped:
        print(f"note: PaddleSeg's {cls.__name__} takes no {', '.join(dropped)}; built without", file=sys.stderr)
    return {k: v for k, v in cfg.items() if k in params}


def _paddleseg_component(cfg):
    """A nested component (a backbone) of PaddleSeg's, without the arguments its size builder fixes itself."""
    cfg = dict(cfg)
    cls = _paddleseg_class(cfg.pop('type'), 'backbone')
    if cfg.get('pretrained') is None:
        cfg.pop('pretrained', None)
    fixed = sorted(_fixed_by_builder(cls) & set(cfg))
    if fixed:
        print(f"note: PaddleSeg's {cls.__name__} fixes {', '.join(fixed)} itself; built without", file=sys.stderr)
    return cls(**{k: v for k, v in cfg.items() if k not in fixed})


def _fixed_by_builder(fn):
    """The keyword arguments a PaddleSeg size builder (a function such as ``MixVisionTransformer_B0(**kwargs)``)
    passes to its class itself: given again they would clash ("got multiple values for keyword argument"). Read
    from the builder's source: the keywords of its calls that also forward ``**kwargs``. Empty for a class."""
    if not inspect.isfunction(fn):
        return set()
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return set()
    return {kw.arg for node in ast.walk(tree) if isinstance(node, ast.Call)
            and any(k.arg is None for k in node.keywords) for kw in node.keywords if kw.arg is not None}


_MIT_B0 = dict(embed_dims=[32, 64, 160, 256], depths=[2, 2, 2, 2], num_heads=[1, 2, 5, 8], mlp_ratios=[4, 4, 4, 4],
               sr_ratios=[8, 4, 2, 1], in_channels=3)
_SMP_ENCODERS = {'ResNet18': 'resnet18', 'ResNet34': 'resnet34'}


def peer_for(cfg):
    """The PyTorch reference of a model config as a peer spec for ``tools/benchmark_peer.py`` (``kind``, its
    arguments, ``name`` and ``note`` for the table), or None where there is none. Matched on the model type and the
    backbone type (or the builder name), with the config's ``num_classes``:

    * SegFormer + MixVisionTransformer(_B0), or SegFormer_B0: transformers' SegformerForSemanticSegmentation with
      the same stage sizes, heads, reduction ratios and decoder width (``embedding_dim``), upsampled to the input.
    * LinkNet + ResNet18/ResNet34: segmentation_models_pytorch's Linknet with that encoder.
    * DeepLabV3 + ResNet50_vd/ResNet50 at output stride 8: torchvision's deeplabv3_resnet50 (plain ResNet-50 stem,
      no multi-grid; ASPP rates 12, 24, 36 with a 1x1 and an image-pooling branch, as ours; a 3x3 conv before its
      classifier, which ours does not have).
    """
    model_type = cfg.get('type')
    backbone = cfg.get('backbone') if isinstance(cfg.get('backbone'), dict) else {}
    backbone_type = backbone.get('type')
    classes = cfg.get('num_classes')
    if not isinstance(classes, int):
        return None
    if model_type == 'SegFormer_B0' or (model_type == 'SegFormer'
                                        and backbone_type in ('MixVisionTransformer', 'MixVisionTransformer_B0')):
        mit = dict(_MIT_B0)
        source = cfg if model_type == 'SegFormer_B0' else backbone
        if backbone_type != 'MixVisionTransformer_B0':  # the B0 builders fix the sizes; the class takes them
            mit.update({k: list(source[k]) if isinstance(source[k], (list, tuple)) else source[k]
                        for k in mit if k in source})
        config = dict(num_channels=mit['in_channels'], num_encoder_blocks=4, depths=mit['depths'],
                      sr_ratios=mit['sr_ratios'], hidden_sizes=mit['embed_dims'], patch_sizes=[7, 3, 3, 3],
                      strides=[4, 2, 2, 2], num_attention_heads=mit['num_heads'], mlp_ratios=mit['mlp_ratios'],
                      decoder_hidden_size=cfg.get('embedding_dim', 256), num_labels=classes)
        return {'kind': 'segformer', 'config': config,
                'name': 'transformers SegformerForSemanticSegmentation',
                'note': 'its 1/4-resolution logits upsampled to the input (bilinear), as ours'}
    if model_type == 'LinkNet' and backbone_type in _SMP_ENCODERS:
        return {'kind': 'linknet', 'encoder': _SMP_ENCODERS[backbone_type], 'classes': classes,
                'name': f"segmentation_models_pytorch Linknet({_SMP_ENCODERS[backbone_type]!r})", 'note': ''}
    if (model_type == 'DeepLabV3' and backbone_type in ('ResNet50_vd', 'ResNet50')
            and backbone.get('output_stride', 8) == 8):
        return {'kind': 'deeplabv3_resnet50', 'classes': classes, 'name': 'torchvision deeplabv3_resnet50',
                'note': ('plain ResNet-50 without multi-grid (ours: ResNet50_vd with its deep stem, multi-grid '
                         '1, 2, 4); ' if backbone_type == 'ResNet50_vd' else '')
                        + 'one more 3x3 conv after the ASPP'}
    return None


def _median_ms(fn, repeats, warmup=True):
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _peaks():
    """This process's peak resident memory and the peak of the memory Paddle's allocator held for tensors (MiB)."""
    out = {'peak_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        from paddle.base import core
        out['tensor_mib'] = core.host_memory_stat_peak_value('Allocated', 0) / 2 ** 20
    except (ImportError, AttributeError):  # a Paddle without host memory statistics
        pass
    return out


def worker(spec):
    """One measurement in this (fresh) process; prints a JSON line."""
    import numpy as np
    import paddle

    paddle.set_device('cpu')
    paddle.seed(0)
    model = build(spec['cfg'], spec['impl'])
    model.eval()
    h, w = spec['size']
    x = np.random.RandomState(0).randn(1, 3, h, w).astype('float32')
    out = {}
    if spec['what'] == 'dynamic':
        out['params'] = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
        tensor = paddle.to_tensor(x)

        def run():
            with paddle.no_grad():
                model(tensor)[0].numpy()
        out['ms'] = _median_ms(run, spec['repeats'])
        out.update(_peaks())
        try:
            import contextlib
            import io
            from paddle_models.layers.conv_mlp import unsliced
            with contextlib.redirect_stdout(io.StringIO()), unsliced():  # paddle.flops counts layer calls
                out['gflops'] = paddle.flops(model, [1, 3, h, w], print_detail=False) / 1e9
        except Exception as err:  # noqa: BLE001
            out['gflops'] = f"n/a ({type(err).__name__})"
    elif spec['what'] in EXPORTS:
        from paddle_models.core.export import export_model
        info = export_model(model, spec['dir'], output_op='none', fmt=EXPORTS[spec['what']])
        out = {k: info.get(k) for k in ('model', 'params', 'onednn', 'onednn_error')}
        if spec.get('weights'):  # the random weights, for infer_int8's quantization (not part of export_s)
            start = time.perf_counter()
            paddle.save(model.state_dict(), spec['weights'])
            out['save_s'] = time.perf_counter() - start
    print('BENCHMARK ' + json.dumps(out))


# the export each measurement kind writes (worker's ``what``) -> export_model's ``fmt``
EXPORTS = {'export': 'paddle', 'export_openvino': 'openvino', 'export_onnx': 'onnx'}


def onnx_runner(model, what, threads):
    """A function running ``model.onnx`` on a float32 [N, C, H, W] array as the runners do: ONNX Runtime
    (``what='onnx_ort'``: ``core.export.onnx_session``, the CPU provider with ``threads`` intra-op threads) or the
    standalone OpenVINO runtime (``'onnx_openvino'``: ``core.exported.OpenVinoSession``, compiled for the input's
    shape with ``threads`` threads, the latency hint and f32 precision, so it computes what the others compute)."""
    if what == 'onnx_ort':
        from paddle_models.core.export import onnx_session

        session = onnx_session(model, threads)
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    from paddle_models.core.exported import OpenVinoSession

    return OpenVinoSession(model, threads, model)


def infer_worker(spec):
    """Paddle Inference on an exported program, or ONNX Runtime / OpenVINO on an exported ``model.onnx``, in a
    process that only loads it (its peak memory is inference's, not the export's); prints a JSON line."""
    import numpy as np
    import paddle

    exported = spec['exported']
    h, w = spec['size']
    x = np.random.RandomState(0).randn(1, 3, h, w).astype('float32')
    if spec['what'] in ONNX_MEASUREMENTS:
        start = time.perf_counter()
        runner = onnx_runner(exported['model'], spec['what'], spec['threads'])
        runner(x)  # the warm-up
        setup_s = time.perf_counter() - start
        out = {'ms': _median_ms(lambda: runner(x), spec['repeats'], warmup=False), 'setup_s': setup_s,
               'peak_mib': _peaks()['peak_mib']}  # Paddle's tensor statistics do not see these runtimes
        print('BENCHMARK ' + json.dumps(out))
        return
    if spec['what'] == 'infer_onednn' and not exported['onednn']:
        print('BENCHMARK ' + json.dumps({'ms': f"n/a (oneDNN: {exported['onednn_error']})"[:100]}))
        return
    start = time.perf_counter()  # setup_s: Config, create_predictor and the first run
    config = paddle.inference.Config(exported['model'], exported['params'])
    from paddle_models.core.exported import cpu_config  # the settings infer.py and val.py use
    cpu_config(config, spec['threads'], onednn=spec['what'] in ('infer_onednn', 'infer_int8') or
               (spec['what'] == 'infer_openvino' and exported['onednn']),
               int8=exported.get('int8', True) if spec['what'] == 'infer_int8' else False,
               openvino=spec['what'] == 'infer_openvino')
    config.disable_glog_info()
    predictor = paddle.inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])

    def run():
        handle.reshape(x.shape)
        handle.copy_from_cpu(x)
        predictor.run()
        predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    run()  # the warm-up
    setup_s = time.perf_counter() - start
    out = {'ms': _median_ms(run, spec['repeats'], warmup=False), 'setup_s': setup_s}
    out.update(_peaks())
    print('BENCHMARK ' + json.dumps(out))


def _result(result):
    """The ``BENCHMARK {json}`` line of a finished worker, or its last stderr line as an "n/a (...)" cell."""
    for line in result.stdout.splitlines()[::-1]:
        if line.startswith('BENCHMARK '):
            return json.loads(line[len('BENCHMARK '):])
    reason = error_line(result.stderr)
    return {'ms': f"n/a ({reason[len('error: '):] if reason.startswith('error: ') else reason}"[:125] + ')'}


def _env(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), CPU_NUM=str(threads), GLOG_minloglevel='2')


def _run_worker(spec, threads):
    env = _env(threads)
    if spec['what'] == 'export_openvino':  # a legacy program (paddle_models.core.legacy)
        env['FLAGS_enable_pir_api'] = '0'
    result = subprocess.run([sys.executable, os.path.abspath(__file__), '--_worker', json.dumps(spec)],
                            capture_output=True, text=True, env=env, cwd=REPO)
    return _result(result)


def run_peer(spec, threads, python):
    """One peer measurement (``tools/benchmark_peer.py``) in a fresh ``python`` process."""
    try:
        result = subprocess.run([python, PEER_TOOL, json.dumps(spec)], capture_output=True, text=True,
                                env=_env(threads), cwd=REPO)
    except OSError as err:
        return {'ms': f"n/a (peer python {python}: {err.strerror})"}
    return _result(result)


def peer_versions(python):
    """torch / onnxruntime / ... versions in the peer interpreter ({} where it does not run)."""
    try:
        result = subprocess.run([python, PEER_TOOL, '--versions'], capture_output=True, text=True, cwd=REPO)
    except OSError:
        return {}
    out = _result(result)
    return {} if 'ms' in out else out


def measure(cfg, impl, what, size, repeats, threads, exported=None, directory=None, weights=None):
    """One measurement in a fresh subprocess. ``what='export'`` writes the program into ``directory`` (and the
    random weights into ``weights`` when given) and adds ``export_s``; inference measurements run on ``exported``
    (the export's or the quantization's result) in a process that only loads the program."""
    spec = dict(cfg=cfg, impl=impl, what=what, size=list(size), repeats=repeats, threads=threads, dir=directory)
    if what in INFER_MEASUREMENTS:
        if 'model' not in exported:
            return {'ms': exported.get('ms', 'n/a (export failed)')}
        spec['exported'] = exported
        return _run_worker(spec, threads)
    if what in EXPORTS:
        spec['weights'] = weights
        start = time.perf_counter()
        out = _run_worker(spec, threads)
        if 'model' in out:
            out['export_s'] = time.perf_counter() - start - out.pop('save_s', 0.0)
        return out
    return _run_worker(spec, threads)


def quantize_int8(config_path, weights, save_dir, threads):
    """``tools/quantize.py`` on ``weights`` (its command line, ``--calib_images 8``): the INT8 program's paths
    and ``quantize_s``, or ``{'ms': 'n/a (reason)'}``."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'quantize.py'), '--config', config_path,
                             '--model_path', weights, '--save_dir', save_dir, '--calib_images', str(CALIB_IMAGES)],
                            capture_output=True, text=True, cwd=REPO,
                            env=dict(_env(threads), FLAGS_enable_pir_api='0'))
    program = os.path.join(save_dir, 'model.pdmodel')
    if result.returncode != 0 or not os.path.isfile(program):
        reason = error_line(result.stderr, default=f"exit code {result.returncode}")
        reason = reason[len('error: '):] if reason.startswith('error: ') else reason
        reason = re.sub(r' \(at /\S+\)$', '', reason.replace(f"{config_path}: ", '', 1))  # Paddle's C++ location
        return {'ms': f"n/a (INT8: {reason})"[:200]}
    import yaml

    from paddle_models.core.exported import int8_setting
    with open(os.path.join(save_dir, 'deploy.yaml'), encoding='utf-8') as f:
        int8 = int8_setting(yaml.safe_load(f)['Deploy'])  # the INT8 op types infer.py runs it with
    return {'model': program, 'params': os.path.join(save_dir, 'model.pdiparams'), 'onednn': True, 'int8': int8,
            'quantize_s': time.perf_counter() - start}


def _record(samples, what, res):
    for key in ('ms', 'peak_mib') + (() if what in ONNX_MEASUREMENTS else ('tensor_mib',)):
        samples.setdefault(f'{what}_{key}', []).append(res.get(key))
    if what in INFER_MEASUREMENTS or what == 'ort':
        samples.setdefault(f'{what}_setup_s', []).append(res.get('setup_s'))


def benchmark(cfg, impls, size, repeats=3, threads=2, measurements=MEASUREMENTS, processes=1, config_path=None,
              peer_python=None, impl_measurements=None):
    """{impl: {'params', 'gflops', '<measurement>_ms', '<measurement>_peak_mib', ...}} for each implementation,
    plus a ``'pytorch'`` row (the peer's ``torch_eager_*`` and ``ort_*``) when ``peer_python`` is given.

    Each measurement runs in ``processes`` fresh processes, the implementations taking turns (ours, PaddleSeg's,
    ours, ...) so that a slow spell of the machine hits both; a cell is the median over those processes of each
    process's median latency / its peak memory. ``impl_measurements`` ({impl: measurements}) overrides
    ``measurements`` per implementation; ``infer_openvino`` and ``infer_int8`` are measured for ours only, and
    ``infer_int8`` needs ``config_path``.
    """
    wanted = {impl: tuple(m for m in (impl_measurements or {}).get(impl, measurements)
                          if m not in OURS_ONLY or impl == 'ours') for impl in impls}
    order = [m for m in KNOWN_MEASUREMENTS if any(m in wanted[impl] for impl in impls)]
    rows = {impl: {} for impl in impls}
    samples = {impl: {} for impl in impls}
    peer = peer_for(cfg) if peer_python else None
    if peer_python:
        rows['pytorch'] = {'peer': peer['name'] if peer else '-', 'peer_note': peer['note'] if peer else ''}
        samples['pytorch'] = {}
    with tempfile.TemporaryDirectory() as tmp:
        exported = {}
        for impl in impls:
            if any(m in INFER_MEASUREMENTS for m in wanted[impl]):
                os.makedirs(os.path.join(tmp, impl))
                weights = os.path.join(tmp, 'random.pdparams') if 'infer_int8' in wanted[impl] else None
                exported[impl] = measure(cfg, impl, 'export', size, repeats, threads,
                                         directory=os.path.join(tmp, impl), weights=weights)
                if 'export_s' in exported[impl]:
                    rows[impl]['export_s'] = exported[impl]['export_s']
        openvino = None
        if 'infer_openvino' in order:
            os.makedirs(os.path.join(tmp, 'openvino'))
            openvino = measure(cfg, 'ours', 'export_openvino', size, repeats, threads,
                               directory=os.path.join(tmp, 'openvino'))
            if 'export_s' in openvino:
                rows['ours']['export_openvino_s'] = openvino.pop('export_s')
        onnx_export = None
        if any(m in ONNX_MEASUREMENTS for m in order):
            onnx_export = measure(cfg, 'ours', 'export_onnx', size, repeats, threads,
                                  directory=os.path.join(tmp, 'onnx'))
            if 'export_s' in onnx_export:
                rows['ours']['export_onnx_s'] = onnx_export.pop('export_s')
        int8 = None
        if 'infer_int8' in order:
            if not config_path:
                int8 = {'ms': 'n/a (INT8 needs --config: its train_dataset gives the calibration images)'}
            elif 'model' not in exported['ours']:
                int8 = {'ms': exported['ours'].get('ms', 'n/a (export failed)')}
            else:
                int8 = quantize_int8(config_path, os.path.join(tmp, 'random.pdparams'), os.path.join(tmp, 'int8'),
                                     threads)
                if 'quantize_s' in int8:
                    rows['ours']['quantize_s'] = int8['quantize_s']
        onnx = os.path.join(tmp, 'peer.onnx')
        for _ in range(processes):
            for what in order:
                for impl in impls:
                    if what not in wanted[impl]:
                        continue
                    res = measure(cfg, impl, what, size, repeats, threads,
                                  {'infer_int8': int8, 'infer_openvino': openvino, 'onnx_ort': onnx_export,
                                   'onnx_openvino': onnx_export}.get(what, exported.get(impl)))
                    rows[impl].update({k: v for k, v in res.items() if k in ('params', 'gflops')})
                    _record(samples[impl], what, res)
            if peer:
                spec = dict(peer=peer, size=list(size), repeats=repeats, threads=threads)
                eager = run_peer(dict(spec, what='torch_eager', onnx=None if os.path.exists(onnx) else onnx),
                                 threads, peer_python)
                if 'params' in eager:
                    rows['pytorch']['params'] = eager['params']
                _record(samples['pytorch'], 'torch_eager', eager)
                if os.path.exists(onnx):
                    ort = run_peer(dict(spec, what='ort', onnx=onnx), threads, peer_python)
                elif isinstance(eager['ms'], str):
                    ort = {'ms': eager['ms']}
                else:
                    ort = {'ms': f"n/a (ONNX export: {eager.get('onnx_error', 'no file written')})"}
                _record(samples['pytorch'], 'ort', ort)
    for impl in samples:
        rows[impl]['samples'] = samples[impl]  # per process, for the JSON file
        for key, values in samples[impl].items():
            numbers_only = [v for v in values if isinstance(v, (int, float))]
            if len(numbers_only) == len(values):
                rows[impl][key] = statistics.median(numbers_only)
            else:  # a failed run: report its reason
                rows[impl][key] = next(v for v in values if not isinstance(v, (int, float)))
    return rows


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return '-' if value is None else str(value)


def format_table(name, size, table, measurements=MEASUREMENTS):
    """The results of one model as a markdown table, one row per implementation (and the peer's)."""
    measured = [m for m in KNOWN_MEASUREMENTS if m in measurements]
    if 'pytorch' in table:
        measured += list(PEER_MEASUREMENTS)
    cols = ['params', 'gflops']
    for m in measured:
        cols += [f'{m}_ms', f'{m}_peak_mib'] + ([f'{m}_tensor_mib'] if m not in PEER_MEASUREMENTS + ONNX_MEASUREMENTS
                                                else [])
        cols += [f'{m}_setup_s'] if m in INFER_MEASUREMENTS or m == 'ort' else []
    cols += [c for c in ('export_s', 'export_openvino_s', 'quantize_s') if any(c in row for row in table.values())]
    lines = [f"| model | impl | {' | '.join(cols)} |", '|' + '---|' * (len(cols) + 2)]
    for impl, row in table.items():
        lines.append(f"| {name} {size[0]}x{size[1]} | {impl} | " + ' | '.join(_fmt(row.get(c)) for c in cols) + ' |')
    return '\n'.join(lines)


SPEED_COLUMNS = ('model', 'ours oneDNN FP32 ms', 'ours ONNX: ONNX Runtime ms', 'ours ONNX: OpenVINO ms',
                 'ours OpenVINO engine FP32 ms', 'ours oneDNN INT8 ms', 'ours dynamic ms',
                 'PaddleSeg dynamic ms', 'ratio ours oneDNN / PaddleSeg dynamic', 'PyTorch eager ms', 'ONNX Runtime ms',
                 'export s',
                 'setup s')


def _cell(value, width=100):
    """A table cell: a number, or a reason cut to ``width`` characters (the JSON file keeps it whole)."""
    text = _fmt(value)
    if len(text) > width:
        text = text[:width - 4] + '...' + (')' if text.startswith('n/a (') else '')
    return text.replace('|', '\\|')


def speed_row(name, table):
    """One line of the speed table (``SPEED_COLUMNS``) from :func:`benchmark`'s result."""
    ours, theirs, peer = table.get('ours', {}), table.get('paddleseg', {}), table.get('pytorch', {})
    fast, slow = ours.get('infer_onednn_ms'), theirs.get('dynamic_ms')
    ratio = (f"{fast / slow:.2f}" if isinstance(fast, (int, float)) and isinstance(slow, (int, float)) and slow > 0
             else None)
    cells = (name, ours.get('infer_onednn_ms'), ours.get('onnx_ort_ms'), ours.get('onnx_openvino_ms'),
             ours.get('infer_openvino_ms'), ours.get('infer_int8_ms'),
             ours.get('dynamic_ms'), theirs.get('dynamic_ms'), ratio, peer.get('torch_eager_ms'), peer.get('ort_ms'),
             ours.get('export_s'), ours.get('infer_onednn_setup_s'))
    return '| ' + ' | '.join(_cell(c) for c in cells) + ' |'


SAME_GRAPH_COLUMNS = ('config', 'Paddle Inference oneDNN ms', 'ONNX Runtime ms', 'OpenVINO ms', 'Paddle / best other')


def same_graph_ratio(row):
    """Paddle Inference's latency over the better of ONNX Runtime and OpenVINO on the same network (None where
    any of them has no number)."""
    paddle_ms = row.get('infer_onednn_ms')
    others = [row.get(k) for k in ('onnx_ort_ms', 'onnx_openvino_ms')]
    others = [v for v in others if isinstance(v, (int, float))]
    if not isinstance(paddle_ms, (int, float)) or not others:
        return None
    return paddle_ms / min(others)


def same_graph_row(config, table):
    """One line of the same-graph table (``SAME_GRAPH_COLUMNS``)."""
    ours = table.get('ours', {})
    ratio = same_graph_ratio(ours)
    cells = (f"`{config}`", ours.get('infer_onednn_ms'), ours.get('onnx_ort_ms'), ours.get('onnx_openvino_ms'),
             None if ratio is None else f"{ratio:.2f}")
    return '| ' + ' | '.join(_cell(c) for c in cells) + ' |'


def cpu_model():
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def _version(dist):
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def format_speed_doc(results, size, threads, repeats, processes, command, versions):
    """The speed page (docs/speed.md): what was measured where and how, the table, and notes on the peers.

    ``results``: [(name, config, table)]; ``versions``: {package: version}."""
    import datetime
    lines = ['# CPU speed', '',
             f"Generated by `{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.", '',
             f"Machine: {cpu_model()}, {os.cpu_count()} logical cores; {threads} threads per measurement "
             f"(Paddle's math library / oneDNN, PyTorch intra-op, ONNX Runtime intra-op with 1 inter-op thread).",
             'Versions: ' + ', '.join(f"{k} {v}" for k, v in versions.items() if v) + '.', '',
             f"Input {size[0]}x{size[1]}, batch 1, random weights and input; each cell is the median of {repeats} "
             f"runs after a warm-up, in a fresh process"
             + (f" (median over {processes} processes)" if processes > 1 else '') + '.', '',
             '| ' + ' | '.join(SPEED_COLUMNS) + ' |', '|' + '---|' * len(SPEED_COLUMNS)]
    lines += [speed_row(name, table) for name, _, table in results if name is not None]
    lines += ['', '* ours oneDNN FP32 / INT8: Paddle Inference with oneDNN on the program exported by `export.py`; '
                  "OpenVINO FP32: Paddle Inference with its OpenVINO engine on the program of `export.py --format "
                  "openvino` (a legacy program; oneDNN for the ops OpenVINO leaves to Paddle); "
                  f"INT8 is `tools/quantize.py` (post-training, {CALIB_IMAGES} calibration images of the config's "
                  'train_dataset) run with `enable_mkldnn_int8`.',
              '* ours ONNX: the same network exported by `export.py --format onnx`, run by ONNX Runtime (CPU '
              'provider) and by the standalone OpenVINO runtime (`openvino`, f32, latency hint).',
              '* dynamic: the dynamic-graph eval forward under `paddle.no_grad` (ours, and PaddleSeg 2.8.0\'s class '
              'of the same config).',
              '* ratio: ours oneDNN FP32 / PaddleSeg dynamic (lower is faster).',
              '* PyTorch eager / ONNX Runtime: the PyTorch reference of the same architecture and class count '
              '(`torch.no_grad`; `torch.onnx.export` opset 17 on the CPU execution provider); "-" where there is none.',
              '* export s: wall time of exporting the model in a fresh process (import, build, trace, save, check '
              '-- what `export.py` costs); setup s: `create_predictor` plus the first run of the oneDNN FP32 program.',
              '* "n/a (reason)": that measurement did not run.']
    notes = [(name, table['pytorch']) for name, _, table in results
             if table.get('pytorch', {}).get('peer', '-') != '-']
    if notes:
        lines += ['', 'PyTorch references:']
        lines += [f"* {name}: {row['peer']}" + (f" -- {row['peer_note']}" if row.get('peer_note') else '')
                  for name, row in notes]
    lines += ['', 'Configs: ' + ', '.join(f"{name} `{config}`" for name, config, _ in results if name) + '.', '']
    same = format_same_graph(results)
    return '\n'.join(lines + ([same] if same else []))


SAME_GRAPH_HEADING = '## The same network in three runtimes'


def format_same_graph(results, generated=None):
    """The same-graph section of the speed page (Markdown, ending in a newline), or '' where no result has the
    ONNX measurements; ``generated`` (a line saying which command made it, when) heads it where given."""
    same = [(config, table) for _, config, table in results if 'onnx_ort_ms' in table.get('ours', {})]
    if not same:
        return ''
    lines = [SAME_GRAPH_HEADING, ''] + ([generated, ''] if generated else [])
    lines += ['Each config in `configs/`, random weights: our `export.py` program in Paddle Inference with oneDNN, '
              'and our `export.py --format onnx` model in ONNX Runtime (CPU provider) and in the standalone '
              'OpenVINO runtime (`openvino`, f32, latency hint). "Paddle / best other": Paddle Inference over the '
              'better of the two (<= 1.00: Paddle Inference is at least as fast). Where Paddle Inference is slower, '
              '[speed_profiles.md](speed_profiles.md) has per-kernel profiles (`tools/profile_runtimes.py`) and '
              '[speed_analysis.md](speed_analysis.md) what they show.', '',
              '| ' + ' | '.join(SAME_GRAPH_COLUMNS) + ' |', '|' + '---|' * len(SAME_GRAPH_COLUMNS)]
    lines += [same_graph_row(config, table) for config, table in same]
    return '\n'.join(lines + ['']) + '\n'


def replace_same_graph(page, section):
    """``page`` (the speed page's text, '' for none) with its same-graph section (the last one) replaced by
    ``section``, or ``section`` appended."""
    start = page.find(SAME_GRAPH_HEADING)
    head = page if start < 0 else page[:start]
    return (head.rstrip('\n') + '\n\n' if head.strip() else '') + section


def _speed_page_parts(text):
    """(generated head, hand-written ``## `` sections, same-graph section) of a speed page's text."""
    same = text.find(SAME_GRAPH_HEADING)
    body, tail = (text, '') if same < 0 else (text[:same], text[same:])
    first = body.find('\n## ')
    return (body, '', tail) if first < 0 else (body[:first + 1], body[first + 1:], tail)


def merge_speed_page(page, doc):
    """The speed page after a ``--suite --markdown`` run: ``doc``'s generated head (title, machine, the suite table
    and its notes) and its same-graph section (``page``'s own where ``doc`` has none) around ``page``'s hand-written
    ``## `` sections, which are kept as they are."""
    head, _, tail = _speed_page_parts(doc)
    _, middle, old_tail = _speed_page_parts(page or '')
    parts = [head.rstrip('\n'), middle.rstrip('\n'), (tail or old_tail).rstrip('\n')]
    return '\n\n'.join(part for part in parts if part.strip()) + '\n'


def same_graph_main(args, command):
    """``--same-graph``: the three same-graph measurements of every config (or ``--configs``), printed; with
    ``--markdown`` the page's same-graph section is replaced (the rest of the page kept)."""
    import datetime
    if args.suite or args.config or args.model or args.model_cfg:
        raise UserError("--same-graph: give no --suite, --config, --model or --model-cfg beside it")
    configs = args.configs or _all_configs()
    missing = [c for c in configs if not os.path.isfile(c)]
    if missing:
        raise UserError(f"--configs: {missing[0]} does not exist")
    results = []
    for i, config in enumerate(configs):
        print(f"[{i + 1}/{len(configs)}] {config}", file=sys.stderr, flush=True)
        args.config = config
        table = benchmark(_load_model_cfg(args), ['ours'], args.size, args.repeats, args.threads, SAME_GRAPH,
                          args.processes, config_path=config)
        results.append((None, config, table))
        print(same_graph_row(config, table), file=sys.stderr, flush=True)
    versions = ', '.join(f"{k} {v}" for k in ('paddlepaddle', 'onnxruntime', 'openvino', 'paddle2onnx')
                         if (v := _version(k)))
    generated = (f"Generated by `{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: "
                 f"{cpu_model()}, {os.cpu_count()} logical cores, {args.threads} threads; input {args.size[0]}x"
                 f"{args.size[1]}, batch 1; each cell the median of {args.repeats} runs after a warm-up in a fresh "
                 f"process" + (f" (median over {args.processes} processes)" if args.processes > 1 else '')
                 + f"; {versions}.")
    section = format_same_graph(results, generated)
    print(section)
    if args.markdown:
        page = ''
        if os.path.isfile(args.markdown):
            with open(args.markdown, encoding='utf-8') as f:
                page = f.read()
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
        with open(args.markdown, 'w', encoding='utf-8') as f:
            f.write(replace_same_graph(page, section))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'size': args.size, 'results': [{'config': config, 'results': table}
                                                      for _, config, table in results]}, f, indent=2)


# --measure train_step: train.py against the PyTorch peer's eager training step (issue 24), at each config's own
# batch and crop; the configs of the comparison where no --config/--configs is given
TRAIN_SUITE = (('LinkNet-R18', 'configs/linknet.yml'),
               ('SegFormer-B0', 'configs/segformer_b0_camvid.yml'),
               ('HarDNet', 'configs/hardnet.yml'),
               ('DeepLabV3-R50_vd OS8', 'configs/deeplabv3.yml'),
               ('UNet++', 'configs/unet_plusplus.yml'))
TRAIN_ITERS = 12  # train.py runs this many iterations; its figure is the median batch_cost of iterations 3-12
PEER_TRAIN_STEPS = 10  # the peer's figure: the median of this many steps after two warm-up steps
_BATCH_COST = re.compile(r'iter: (\d+)/\d+, loss: [^,]+, lr: [^,]+, batch_cost: ([0-9.]+)')


def train_batch_and_crop(cfg):
    """(batch size, [H, W] of the training crop) of a merged config: ``RandomPaddingCrop``'s ``crop_size`` [W, H]
    in ``train_dataset``'s transforms; None for the crop where there is none."""
    crop = None
    for transform in (cfg.get('train_dataset') or {}).get('transforms') or []:
        if isinstance(transform, dict) and transform.get('type') == 'RandomPaddingCrop':
            size = transform.get('crop_size', 512)
            width, height = (size, size) if isinstance(size, int) else size
            crop = [int(height), int(width)]
    return int(cfg.get('batch_size', 1)), crop


def ours_train_step(config, threads):
    """Seconds per iteration of ``train.py --config config`` (its own batch, crop and flags; ``threads`` CPU
    threads): the median ``batch_cost`` of iterations 3 to ``TRAIN_ITERS`` with ``--log_iters 1``, in a fresh
    process writing into a temporary folder; "n/a (reason)" where the run fails."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, os.path.join(REPO, 'train.py'), '--config', config, '--iters', str(TRAIN_ITERS),
                   '--log_iters', '1', '--save_interval', str(TRAIN_ITERS), '--save_dir', os.path.join(tmp, 'out')]
        result = subprocess.run(command, capture_output=True, text=True, env=_env(threads), cwd=REPO)
    if result.returncode != 0:
        return f"n/a ({error_line(result.stderr) or 'train.py exited with ' + str(result.returncode)})"
    costs = {int(i): float(cost) for i, cost in _BATCH_COST.findall(result.stdout + result.stderr)}
    wanted = [costs[i] for i in range(3, TRAIN_ITERS + 1) if i in costs]
    if len(wanted) < TRAIN_ITERS - 2:
        return "n/a (train.py logged no batch_cost for iterations 3-%d)" % TRAIN_ITERS
    return statistics.median(wanted)


def peer_train_step(cfg, threads, python):
    """(seconds per eager training step of the config's PyTorch peer at the config's batch and crop, the peer's
    name and the size it ran), or ('-', '', None) where the model has none. LinkNet's peer (smp) needs sides that
    are multiples of 32: the crop is rounded up."""
    model = cfg.get('model') or {}
    peer = peer_for(model)
    if peer is None:
        return '-', '', None
    batch, crop = train_batch_and_crop(cfg)
    size = crop or [512, 512]
    if peer['kind'] == 'linknet':
        size = [-(-side // 32) * 32 for side in size]
    spec = {'what': 'train_step', 'peer': {k: v for k, v in peer.items() if k not in ('name', 'note')},
            'classes': model['num_classes'], 'batch': batch, 'size': size, 'steps': PEER_TRAIN_STEPS,
            'threads': threads}
    out = run_peer(spec, threads, python)
    return out.get('s', out.get('ms')), peer['name'], size


def train_step_main(args, command):
    """``--measure train_step``: for each config (``--config``, ``--configs``, else ``TRAIN_SUITE``), train.py's
    seconds per iteration and the PyTorch peer's eager step at the same batch and crop, measured one after the
    other in fresh processes; prints a markdown table (and writes ``--json``)."""
    import datetime
    if args.model or args.model_cfg or args.markdown or args.suite:
        raise UserError("--measure train_step: give --config or --configs (no --model, --model-cfg, --suite or "
                        "--markdown: the table is printed)")
    names = {config: name for name, config in TRAIN_SUITE}
    configs = [args.config] if args.config else (args.configs or [config for _, config in TRAIN_SUITE])
    missing = [c for c in configs if not os.path.isfile(c)]
    if missing:
        raise UserError(f"--config: {missing[0]} does not exist")
    from paddle_models.core.config import load_config
    python = _peer_python(args)
    rows = []
    for i, config in enumerate(configs):
        cfg = load_config(config, require=()).dic
        name = names.get(config, config)
        print(f"[{i + 1}/{len(configs)}] {name} ({config})", file=sys.stderr, flush=True)
        ours = ours_train_step(config, args.threads)
        peer, peer_name, peer_size = peer_train_step(cfg, args.threads, python)
        batch, crop = train_batch_and_crop(cfg)
        rows.append({'name': name, 'config': config, 'batch': batch, 'crop': crop, 'ours_s': ours, 'peer_s': peer,
                     'peer': peer_name, 'peer_size': peer_size})
        print(train_step_row(rows[-1]), file=sys.stderr, flush=True)
    versions = {'paddlepaddle': _version('paddlepaddle')}
    versions.update(peer_versions(python))
    print(f"Generated by `{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: "
          f"{cpu_model()}, {os.cpu_count()} logical cores, {args.threads} threads; "
          + ', '.join(f"{k} {v}" for k, v in versions.items() if v) + '.\n')
    print('| config | batch, crop (HxW) | train.py s/iter | PyTorch eager s/step | ratio | peer |')
    print('|---|---|---|---|---|---|')
    for row in rows:
        print(train_step_row(row))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'threads': args.threads, 'results': rows}, f, indent=2)


def train_step_row(row):
    """One markdown row of the train_step table; the ratio is ours over the peer's (<= 1.00: ours is as fast)."""
    def cell(value):
        return f"{value:.2f}" if isinstance(value, float) else str(value)
    ratio = (f"{row['ours_s'] / row['peer_s']:.2f}" if isinstance(row['ours_s'], float)
             and isinstance(row['peer_s'], float) else '-')
    crop = 'x'.join(map(str, row['crop'])) if row['crop'] else 'full image'
    peer = row['peer'] + (f" at {row['peer_size'][0]}x{row['peer_size'][1]}"
                          if row['peer_size'] and row['peer_size'] != row['crop'] else '')
    return (f"| `{row['config']}` | {row['batch']}, {crop} | {cell(row['ours_s'])} | {cell(row['peer_s'])} | "
            f"{ratio} | {peer or '-'} |")


def _all_configs():
    """Every config in the repository's ``configs/`` (relative paths, sorted)."""
    folder = os.path.join(REPO, 'configs')
    return sorted(f"configs/{name}" for name in os.listdir(folder) if name.endswith(('.yml', '.yaml')))


def _display_name(cfg):
    return cfg['type'] + (f"+{cfg['backbone']['type']}" if isinstance(cfg.get('backbone'), dict) else '')


def _peer_python(args):
    python = args.peer_python or os.environ.get('PADDLE_MODELS_PEER_PYTHON') or sys.executable
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        source = '--peer-python' if args.peer_python else 'PADDLE_MODELS_PEER_PYTHON'
        raise UserError(f"{source}: {python} is not an executable file")
    return python


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', help='a YAML config (its model section is benchmarked)')
    parser.add_argument('--model', help='a registered model or builder name, with --kwargs')
    parser.add_argument('--kwargs', help='JSON constructor arguments for --model')
    parser.add_argument('--model-cfg', help='a JSON model section (type + arguments, nested backbone)')
    parser.add_argument('--size', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'))
    parser.add_argument('--impl', choices=['ours', 'paddleseg', 'both'], default='ours')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--processes', type=int, default=1,
                        help='fresh processes per measurement (implementations alternate); cells are medians')
    parser.add_argument('--measure', default=','.join(MEASUREMENTS),
                        help=f"comma-separated subset of {', '.join(KNOWN_MEASUREMENTS)} (infer_int8: --config "
                             f"only); or train_step alone: train.py against the PyTorch peer's training step")
    parser.add_argument('--peer', action='store_true',
                        help='also time the PyTorch reference of the model (eager and ONNX Runtime)')
    parser.add_argument('--peer-python',
                        help='interpreter with torch and the peer libraries (default: $PADDLE_MODELS_PEER_PYTHON, '
                             'else this one)')
    parser.add_argument('--suite', action='store_true',
                        help='the speed table of docs/speed.md: ' + ', '.join(c for _, c in SUITE) + ' (ours: dynamic, '
                             'oneDNN FP32 and INT8; PaddleSeg: dynamic; the peers)')
    parser.add_argument('--configs', nargs='+', help='like --suite, over these configs')
    parser.add_argument('--same-graph', action='store_true',
                        help='only the same-graph table (Paddle Inference oneDNN, our ONNX in ONNX Runtime and '
                             'OpenVINO) over every config in configs/ (or --configs); with --markdown it replaces '
                             'that section of the page and keeps the rest')
    parser.add_argument('--markdown', help='write the speed page (table, date, machine, versions) to this file')
    parser.add_argument('--json', help='also write the results to this JSON file')
    parser.add_argument('--_worker', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        spec = json.loads(args._worker)
        (infer_worker if 'exported' in spec else worker)(spec)
        return
    measurements = [m for m in args.measure.split(',') if m]
    command = 'python tools/benchmark.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    bad = [m for m in measurements if m not in KNOWN_MEASUREMENTS + ('train_step',)]
    if bad:
        raise UserError(f"--measure: unknown measurement {bad[0]!r} (known: {', '.join(KNOWN_MEASUREMENTS)}, "
                        f"train_step)")
    if args.repeats < 1 or min(args.size) < 1 or args.threads < 1 or args.processes < 1:
        raise UserError(f"--repeats, --size, --threads and --processes must be positive, got {args.repeats}, "
                        f"{args.size}, {args.threads}, {args.processes}")
    if 'train_step' in measurements:
        if measurements != ['train_step']:
            raise UserError("--measure train_step is measured alone (train.py and the PyTorch peer's training step)")
        train_step_main(args, command)
        return
    if args.same_graph:
        same_graph_main(args, command)
        return
    if args.suite or args.configs:
        if args.config or args.model or args.model_cfg:
            raise UserError("--suite/--configs: give no --config, --model or --model-cfg beside them")
        names = {config: name for name, config in SUITE}
        configs = args.configs or [config for _, config in SUITE]
        missing = [c for c in configs if not os.path.isfile(c)]
        if missing:
            raise UserError(f"--configs: {missing[0]} does not exist")
        peer_python = _peer_python(args)
        models = []
        for config in configs:
            args.config = config
            models.append((config, _load_model_cfg(args)))
        if args.suite:  # then the same-graph table over every other config in configs/
            models += [(config, None) for config in _all_configs() if config not in configs]
        results = []
        for i, (config, cfg) in enumerate(models):
            if cfg is None:  # same-graph only: Paddle Inference, ONNX Runtime and OpenVINO on our exports
                print(f"[{i + 1}/{len(models)}] {config} (same graph)", file=sys.stderr, flush=True)
                args.config = config
                table = benchmark(_load_model_cfg(args), ['ours'], args.size, args.repeats, args.threads,
                                  SAME_GRAPH, args.processes, config_path=config)
                results.append((None, config, table))
                print(same_graph_row(config, table), file=sys.stderr, flush=True)
                continue
            name = names.get(config, _display_name(cfg))
            print(f"[{i + 1}/{len(models)}] {name} ({config})", file=sys.stderr, flush=True)
            impls = ['ours', 'paddleseg'] if paddleseg_has(cfg) else ['ours']  # LinkNet: none ("-")
            table = benchmark(cfg, impls, args.size, args.repeats, args.threads,
                              KNOWN_MEASUREMENTS, args.processes, config_path=config, peer_python=peer_python,
                              impl_measurements=SUITE_MEASUREMENTS)
            results.append((name, config, table))
            print(speed_row(name, table), file=sys.stderr, flush=True)
    else:
        if 'infer_int8' in measurements and not args.config:
            raise UserError("--measure infer_int8 needs --config (its train_dataset gives the calibration images)")
        peer_python = _peer_python(args) if args.peer else None
        cfg = _load_model_cfg(args)
        impls = ['ours', 'paddleseg'] if args.impl == 'both' else [args.impl]
        table = benchmark(cfg, impls, args.size, args.repeats, args.threads, measurements, args.processes,
                          config_path=args.config, peer_python=peer_python)
        print(format_table(_display_name(cfg), args.size, table, measurements))
        results = [(_display_name(cfg), args.config or '-', table)]
    if args.suite or args.configs or args.markdown:
        versions = {'paddlepaddle': _version('paddlepaddle'), 'paddleseg': _version('paddleseg')}
        if peer_python:
            versions.update(peer_versions(peer_python))
        doc = format_speed_doc(results, args.size, args.threads, args.repeats, args.processes, command, versions)
        if args.suite or args.configs:
            print('\n'.join(line for line in doc.splitlines() if line.startswith('|')))
        if args.markdown:  # the page's hand-written sections are kept (merge_speed_page)
            page = ''
            if os.path.isfile(args.markdown):
                with open(args.markdown, encoding='utf-8') as f:
                    page = f.read()
            os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
            with open(args.markdown, 'w', encoding='utf-8') as f:
                f.write(merge_speed_page(page, doc))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'size': args.size, 'results': [{'name': name, 'config': config, 'results': table}
                                                      for name, config, table in results]}
                      if args.suite or args.configs else {'model': cfg, 'size': args.size, 'results': table},
                      f, indent=2)


if __name__ == '__main__':
    main_wrapper(main)
