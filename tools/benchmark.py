"""Parameters, FLOPs, CPU latency and peak memory of a registered model at a given input size, optionally side by
side with PaddleSeg 2.8.0's implementation of the same configuration.

    python tools/benchmark.py --config configs/segnext_t_camvid.yml --size 512 512 --impl both
    python tools/benchmark.py --model SegFormer_B0 --kwargs '{"num_classes": 150}' --size 512 512
    python tools/benchmark.py --model-cfg '{"type": "SegNeXt", "backbone": {"type": "MSCAN_T"}, ...}' --impl both \
        --processes 5

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

``--impl paddleseg`` builds the same model-config dict from PaddleSeg's own classes (``paddleseg.models.<type>``,
``paddleseg.models.backbones.<type>``); our registry replaces PaddleSeg's entries in the manager, so this looks the
classes up in PaddleSeg's modules directly. Builder names that exist only here (``SegNeXt_T``) have no PaddleSeg
counterpart: give a config.
"""
import argparse
import inspect
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from paddle_models.core.cli import main_wrapper  # noqa: E402  (the package first: it preloads zlib before paddle)
from paddle_models.errors import UserError  # noqa: E402

MEASUREMENTS = ('dynamic', 'infer', 'infer_onednn')


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


def _resolve(impl, name, kind):
    if impl == 'ours':
        import paddle_models  # noqa: F401  (registers our components)
        from paddleseg.cvlibs import manager
        # a nested component is a backbone, or a model that a wrapper takes (MultiScaleAttention's ``model``)
        for component_manager in ((manager.BACKBONES, manager.MODELS) if kind == 'backbone'
                                  else (manager.MODELS, manager.BACKBONES)):
            if name in component_manager.components_dict:
                return component_manager.components_dict[name]
        raise UserError(f"unknown {kind} type {name!r}")
    import paddleseg.models as models
    import paddleseg.models.backbones as backbones
    module = backbones if kind == 'backbone' else models
    if not hasattr(module, name):
        raise UserError(f"PaddleSeg 2.8.0 has no {kind} {name!r} (builders that exist only here have no PaddleSeg "
                        f"counterpart: benchmark a config)")
    return getattr(module, name)


def build(cfg, impl):
    """Instantiate a model-config dict with our components or PaddleSeg's."""
    cfg = dict(cfg)
    cls = _resolve(impl, cfg.pop('type'), 'model')
    for key, value in list(cfg.items()):
        if isinstance(value, dict) and 'type' in value:
            cfg[key] = build_component(value, impl)
    if impl == 'paddleseg':
        cfg.pop('pretrained', None)
        if isinstance(cfg.get('decoder_cfg'), dict):  # an option only our LightHamHead has
            cfg['decoder_cfg'] = {k: v for k, v in cfg['decoder_cfg'].items() if k != 'inference_bases'}
        cfg = _own_arguments(cls, cfg)
    return cls(**cfg)


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


def build_component(cfg, impl):
    cfg = dict(cfg)
    cls = _resolve(impl, cfg.pop('type'), 'backbone')
    if impl == 'paddleseg' and cfg.get('pretrained') is None:
        cfg.pop('pretrained', None)
    while True:
        try:
            return cls(**cfg)
        except TypeError as err:  # PaddleSeg's size builders fix some arguments (MiT: drop_path_rate)
            m = re.search(r"multiple values for keyword argument '(\w+)'", str(err))
            if impl != 'paddleseg' or not m or m[1] not in cfg:
                raise
            cfg.pop(m[1])


def _median_ms(fn, repeats):
    fn()  # warm-up
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
    elif spec['what'] == 'export':
        from paddle_models.core.export import export_model
        info = export_model(model, spec['dir'], output_op='none')
        out = {k: info[k] for k in ('model', 'params', 'onednn', 'onednn_error')}
    print('BENCHMARK ' + json.dumps(out))


def infer_worker(spec):
    """Paddle Inference on an exported program, in a process that only loads it (its peak memory is inference's,
    not the export's); prints a JSON line."""
    import numpy as np
    import paddle

    exported = spec['exported']
    h, w = spec['size']
    x = np.random.RandomState(0).randn(1, 3, h, w).astype('float32')
    if spec['what'] == 'infer_onednn' and not exported['onednn']:
        print('BENCHMARK ' + json.dumps({'ms': f"n/a (oneDNN: {exported['onednn_error']})"[:100]}))
        return
    config = paddle.inference.Config(exported['model'], exported['params'])
    config.set_cpu_math_library_num_threads(spec['threads'])
    if spec['what'] == 'infer_onednn':
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    config.disable_glog_info()
    predictor = paddle.inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])

    def run():
        handle.reshape(x.shape)
        handle.copy_from_cpu(x)
        predictor.run()
        predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    out = {'ms': _median_ms(run, spec['repeats'])}
    out.update(_peaks())
    print('BENCHMARK ' + json.dumps(out))


def _run_worker(spec, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), CPU_NUM=str(threads), GLOG_minloglevel='2')
    result = subprocess.run([sys.executable, os.path.abspath(__file__), '--_worker', json.dumps(spec)],
                            capture_output=True, text=True, env=env, cwd=REPO)
    for line in result.stdout.splitlines()[::-1]:
        if line.startswith('BENCHMARK '):
            return json.loads(line[len('BENCHMARK '):])
    error = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return {'ms': f"n/a ({(error[-1] if error else 'no output')[:120]})"}


def measure(cfg, impl, what, size, repeats, threads, exported=None, directory=None):
    """One measurement in a fresh subprocess. ``what='export'`` writes the program into ``directory``; inference
    measurements run on ``exported`` (the export's result) in a process that only loads the program."""
    spec = dict(cfg=cfg, impl=impl, what=what, size=list(size), repeats=repeats, threads=threads, dir=directory)
    if what in ('infer', 'infer_onednn'):
        if 'model' not in exported:
            return {'ms': exported.get('ms', 'n/a (export failed)')}
        spec['exported'] = exported
    return _run_worker(spec, threads)


def benchmark(cfg, impls, size, repeats=3, threads=2, measurements=MEASUREMENTS, processes=1):
    """{impl: {'params', 'gflops', '<measurement>_ms', '<measurement>_peak_mib'}} for each implementation.

    Each measurement runs in ``processes`` fresh processes, the implementations taking turns (ours, PaddleSeg's,
    ours, ...) so that a slow spell of the machine hits both; a cell is the median over those processes of each
    process's median latency / its peak memory.
    """
    rows = {impl: {} for impl in impls}
    samples = {impl: {} for impl in impls}
    with tempfile.TemporaryDirectory() as tmp:
        exported = {}
        if any(m != 'dynamic' for m in measurements):
            for impl in impls:
                os.makedirs(os.path.join(tmp, impl))
                exported[impl] = measure(cfg, impl, 'export', size, repeats, threads,
                                         directory=os.path.join(tmp, impl))
        for _ in range(processes):
            for what in measurements:
                for impl in impls:
                    res = measure(cfg, impl, what, size, repeats, threads, exported.get(impl))
                    rows[impl].update({k: v for k, v in res.items() if k in ('params', 'gflops')})
                    for key in ('ms', 'peak_mib', 'tensor_mib'):
                        samples[impl].setdefault(f'{what}_{key}', []).append(res.get(key))
    for impl in impls:
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
    cols = ['params', 'gflops'] + [f'{m}_{k}' for m in measurements for k in ('ms', 'peak_mib', 'tensor_mib')]
    lines = [f"| model | impl | {' | '.join(cols)} |", '|' + '---|' * (len(cols) + 2)]
    for impl, row in table.items():
        lines.append(f"| {name} {size[0]}x{size[1]} | {impl} | " + ' | '.join(_fmt(row.get(c)) for c in cols) + ' |')
    return '\n'.join(lines)


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
                        help=f"comma-separated subset of {', '.join(MEASUREMENTS)}")
    parser.add_argument('--json', help='also write the results to this JSON file')
    parser.add_argument('--_worker', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        spec = json.loads(args._worker)
        (infer_worker if 'exported' in spec else worker)(spec)
        return
    measurements = [m for m in args.measure.split(',') if m]
    bad = [m for m in measurements if m not in MEASUREMENTS]
    if bad:
        raise UserError(f"--measure: unknown measurement {bad[0]!r} (known: {', '.join(MEASUREMENTS)})")
    if args.repeats < 1 or min(args.size) < 1 or args.threads < 1 or args.processes < 1:
        raise UserError(f"--repeats, --size, --threads and --processes must be positive, got {args.repeats}, "
                        f"{args.size}, {args.threads}, {args.processes}")
    cfg = _load_model_cfg(args)
    impls = ['ours', 'paddleseg'] if args.impl == 'both' else [args.impl]
    table = benchmark(cfg, impls, args.size, args.repeats, args.threads, measurements, args.processes)
    name = cfg['type'] + (f"+{cfg['backbone']['type']}" if isinstance(cfg.get('backbone'), dict) else '')
    print(format_table(name, args.size, table, measurements))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'model': cfg, 'size': args.size, 'results': table}, f, indent=2)


if __name__ == '__main__':
    main_wrapper(main)
