"""Where the time goes: one network (our config, random weights) profiled kernel by kernel in Paddle Inference with
oneDNN, ONNX Runtime and the standalone OpenVINO runtime, side by side.

    python tools/profile_runtimes.py --configs configs/segformer_b0_camvid.yml configs/hardnet.yml \
        --markdown docs/speed_profiles.md

For each config: ``export.py``'s Paddle program (``export_model``, logits out, free input size) and its ONNX model
(``fmt='onnx'``) are written to a scratch folder; then each runtime runs in a fresh process on one random
``--size`` input, ``--threads`` threads, ``--runs`` runs (the first ones warm up; the last one is profiled):

* Paddle Inference (oneDNN): oneDNN's own verbose log (``ONEDNN_VERBOSE=1``) gives every primitive the last run
  executed with its implementation, shapes and time; they are summed by primitive kind and implementation (e.g.
  ``reorder jit:uni``: layout conversions; ``... ref:any``: oneDNN's slow reference kernels). "outside oneDNN" is
  the run's wall time (the median of the runs after the first in another process without the log, whose printing
  would count) less those primitives: Paddle's own CPU kernels (argmax, shape arithmetic, slices) and the
  executor's work per op.
* ONNX Runtime: its profiler (``enable_profiling``), the last run's node times summed by op type; "outside
  kernels" is the run's time less those.
* OpenVINO: its per-layer performance counters (``PERF_COUNT``), summed by layer type.

Profiling costs a little in each runtime; compare shares rather than totals, and see docs/speed.md for
latencies. The Markdown report lists the largest entries per runtime and, for Paddle, the
largest single primitives with their shapes.
"""
import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import paddle_models  # noqa: E402,F401  (first: preloads zlib before paddle, registers every component)
from paddle_models.core.cli import main_wrapper  # noqa: E402
from paddle_models.errors import UserError, error_line  # noqa: E402

RUNTIMES = ('paddle_onednn', 'onnxruntime', 'openvino')
TOP = 12  # entries per runtime in the report
MARK = '=== paddle_models profile run'


def export(config, folder, size):
    """Export ``config``'s model (random weights) as a Paddle program and as ONNX into ``folder``."""
    import paddle

    from paddle_models.core.config import Builder, load_config
    from paddle_models.core.export import export_model

    paddle.set_device('cpu')
    paddle.seed(0)
    model = Builder(load_config(config, None, require=('model',))).model()
    model.eval()
    export_model(model, os.path.join(folder, 'paddle'), output_op='none')
    export_model(model, os.path.join(folder, 'onnx'), output_op='none', fmt='onnx')


def _input(size):
    import numpy as np
    return np.random.RandomState(0).randn(1, 3, size[0], size[1]).astype('float32')


def run_paddle(folder, size, threads, runs):
    """Paddle Inference with oneDNN (``core.exported.cpu_config``); prints a marker line before each run so the
    parent can cut oneDNN's verbose log at the last one, and the runs' wall times."""
    import paddle

    from paddle_models.core.exported import cpu_config
    program = os.path.join(folder, 'paddle', 'model.json')
    if not os.path.isfile(program):
        program = os.path.join(folder, 'paddle', 'model.pdmodel')
    config = cpu_config(paddle.inference.Config(program, os.path.join(folder, 'paddle', 'model.pdiparams')),
                        threads, onednn=True)
    config.disable_glog_info()
    predictor = paddle.inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    x = _input(size)
    times = []
    for i in range(runs):
        print(f'{MARK} {i}', flush=True)
        start = time.perf_counter()
        handle.copy_from_cpu(x)
        predictor.run()
        predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
        times.append((time.perf_counter() - start) * 1000)
    print(f'{MARK} end', flush=True)
    print('PROFILE ' + json.dumps({'run_ms': times}), flush=True)


def run_onnxruntime(folder, size, threads, runs):
    """ONNX Runtime with its profiler; the last run's node times by op type."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(folder, 'ort_profile')
    session = ort.InferenceSession(os.path.join(folder, 'onnx', 'model.onnx'), options,
                                   providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    x = _input(size)
    for _ in range(runs):
        session.run(None, {name: x})
    with open(session.end_profiling(), encoding='utf-8') as f:
        events = json.load(f)
    last = [e for e in events if e.get('name') == 'model_run'][-1]
    first, end = last['ts'], last['ts'] + last['dur']
    kinds = collections.Counter()
    count = collections.Counter()
    for event in events:
        if (event.get('cat') == 'Node' and event['name'].endswith('_kernel_time')
                and first <= event['ts'] <= end):
            op = event['args'].get('op_name', '?')
            kinds[op] += event['dur'] / 1000
            count[op] += 1
    print('PROFILE ' + json.dumps({'run_ms': last['dur'] / 1000,
                                   'kinds': [[k, v, count[k]] for k, v in kinds.most_common()]}), flush=True)


def run_openvino(folder, size, threads, runs):
    """The standalone OpenVINO runtime (the runners' settings) with per-layer performance counters."""
    import openvino

    from paddle_models.core.exported import openvino_settings
    core = openvino.Core()
    model = core.read_model(os.path.join(folder, 'onnx', 'model.onnx'))
    model.reshape([1, 3, size[0], size[1]])
    compiled = core.compile_model(model, 'CPU', dict(openvino_settings(threads), PERF_COUNT=True))
    request = compiled.create_infer_request()
    x = _input(size)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        request.infer({0: x})
        times.append((time.perf_counter() - start) * 1000)
    kinds = collections.Counter()
    count = collections.Counter()
    for info in request.get_profiling_info():
        if info.real_time.total_seconds() > 0:
            key = f"{info.node_type} {info.exec_type}"
            kinds[key] += info.real_time.total_seconds() * 1000
            count[key] += 1
    print('PROFILE ' + json.dumps({'run_ms': times[-1],
                                   'kinds': [[k, v, count[k]] for k, v in kinds.most_common()]}), flush=True)


def _worker(spec):
    {'export': lambda: export(spec['config'], spec['folder'], spec['size']),
     'paddle_onednn': lambda: run_paddle(spec['folder'], spec['size'], spec['threads'], spec['runs']),
     'onnxruntime': lambda: run_onnxruntime(spec['folder'], spec['size'], spec['threads'], spec['runs']),
     'openvino': lambda: run_openvino(spec['folder'], spec['size'], spec['threads'], spec['runs'])}[spec['what']]()


def _spawn(spec, env=None):
    result = subprocess.run([sys.executable, os.path.abspath(__file__), '--_worker', json.dumps(spec)],
                            capture_output=True, text=True, cwd=REPO,
                            env=dict(os.environ, OMP_NUM_THREADS=str(spec.get('threads', 1)), GLOG_minloglevel='2',
                                     **(env or {})))
    if result.returncode != 0:
        raise UserError(f"{spec.get('config', '')}: {spec['what']} failed: {error_line(result.stderr)}")
    return result.stdout


def onednn_primitives(log):
    """The primitives oneDNN's verbose ``log`` shows for the last profiled run (after the last run marker):
    ``[(ms, kind, implementation, shapes)]``."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(MARK)]
    if len(starts) < 2:
        return []
    out = []
    for line in lines[starts[-2] + 1:starts[-1]]:
        if not line.startswith('onednn_verbose') or ',primitive,exec,' not in line:
            continue
        fields = line.split(',')
        # onednn_verbose,v1,primitive,exec,cpu,<kind>,<impl>,<prop>,<mds>,<attrs>,<aux>,<problem>,<ms>
        out.append((float(fields[-1]), fields[5], fields[6], fields[-2]))
    return out


def _summary(items):
    kinds = collections.Counter()
    count = collections.Counter()
    for ms, kind, impl, _ in items:
        kinds[f"{kind} {impl}"] += ms
        count[f"{kind} {impl}"] += 1
    return [[k, v, count[k]] for k, v in kinds.most_common()]


def profile(config, size, threads, runs):
    """{'paddle_onednn': {...}, 'onnxruntime': {...}, 'openvino': {...}} for one config."""
    with tempfile.TemporaryDirectory(prefix='paddle_models-profile-') as folder:
        base = dict(config=config, folder=folder, size=list(size), threads=threads, runs=runs)
        _spawn(dict(base, what='export'))
        out = {}
        plain = _spawn(dict(base, what='paddle_onednn'))  # the run's time without verbose logging
        timed = json.loads(next(line for line in plain.splitlines() if line.startswith('PROFILE '))[8:])
        run_ms = statistics.median(timed['run_ms'][1:])
        log = _spawn(dict(base, what='paddle_onednn'), env={'ONEDNN_VERBOSE': '1'})
        prims = onednn_primitives(log)
        inside = sum(p[0] for p in prims)
        out['paddle_onednn'] = {'run_ms': run_ms, 'kinds': _summary(prims) + [['outside oneDNN (Paddle kernels, '
                                                                               'executor)', run_ms - inside, 0]],
                                'largest': sorted(prims, reverse=True)[:TOP]}
        for runtime in ('onnxruntime', 'openvino'):
            text = _spawn(dict(base, what=runtime))
            out[runtime] = json.loads(next(line for line in text.splitlines() if line.startswith('PROFILE '))[8:])
        ort = out['onnxruntime']
        ort['kinds'].append(['outside kernels', ort['run_ms'] - sum(k[1] for k in ort['kinds']), 0])
        for runtime in RUNTIMES:
            out[runtime]['kinds'].sort(key=lambda k: -k[1])
        return out


# Where each runtime's time goes, in four parts that compare across runtimes: the kernels that compute (convolutions,
# matrix products, norms, activations, pooling, resizing ...), the copies that only move data (layout reorders,
# transposes, reshapes that copy), concatenations, and the time outside any profiled kernel (Paddle: its own CPU
# kernels and the executor's per-op work; ONNX Runtime / OpenVINO: the rest of the run).
PARTS = ('compute', 'copies', 'concat', 'outside')
_COPY_OPS = {'paddle_onednn': ('reorder',),
             'onnxruntime': ('Transpose', 'ReorderInput', 'ReorderOutput', 'Reshape', 'Flatten', 'Squeeze',
                             'Unsqueeze', 'Identity', 'Expand'),
             'openvino': ('Reorder', 'Transpose', 'Reshape', 'Squeeze', 'Unsqueeze', 'Broadcast')}
_CONCAT_OPS = {'paddle_onednn': ('concat',), 'onnxruntime': ('Concat',), 'openvino': ('Concat',)}


def parts(runtime, result):
    """``{part: ms}`` of one runtime's profile (``PARTS``; the ``kinds`` rows of ``profile``). For ONNX Runtime
    and OpenVINO, "outside" is the profiled run's time less its kernels (never below 0)."""
    out = dict.fromkeys(PARTS, 0.0)
    for name, ms, _ in result['kinds']:
        op = name.split(' ')[0]
        if name.startswith('outside'):
            out['outside'] += ms
        elif op in _COPY_OPS[runtime]:
            out['copies'] += ms
        elif op in _CONCAT_OPS[runtime]:
            out['concat'] += ms
        else:
            out['compute'] += ms
    if runtime == 'openvino':
        out['outside'] = max(result['run_ms'] - sum(out.values()), 0.0)
    return out


def gap_row(config, result):
    """One row of the summary: Paddle Inference against the faster other runtime, and the difference of each part
    (Paddle's less the other's), which add up to the gap."""
    best = min(('onnxruntime', 'openvino'), key=lambda r: result[r]['run_ms'])
    paddle, other = parts('paddle_onednn', result['paddle_onednn']), parts(best, result[best])
    run_ms, best_ms = result['paddle_onednn']['run_ms'], result[best]['run_ms']
    diffs = {part: paddle[part] - other[part] for part in PARTS}
    return {'config': config, 'paddle_ms': run_ms, 'best': best, 'best_ms': best_ms, 'gap_ms': run_ms - best_ms,
            'paddle': paddle, 'other': other, 'diff': diffs}


def format_summary(rows):
    """The summary table over configs (``gap_row``s)."""
    lines = ['| config | Paddle ms | faster other | its ms | Paddle / other | compute: Paddle - other ms | '
             'copies: Paddle - other ms | concat: Paddle - other ms | outside kernels: Paddle - other ms |',
             '|---|---|---|---|---|---|---|---|---|']
    for row in rows:
        d, p, o = row['diff'], row['paddle'], row['other']
        cells = [f"`{row['config']}`", f"{row['paddle_ms']:.1f}", row['best'], f"{row['best_ms']:.1f}",
                 f"{row['paddle_ms'] / row['best_ms']:.2f}"]
        cells += [f"{d[part]:+.1f} ({p[part]:.1f} - {o[part]:.1f})" for part in PARTS]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def format_profile(config, result):
    """One config's section of the report."""
    lines = [f"## `{config}`", '',
             'Run time (ms; Paddle Inference without the log): ' + ', '.join(f"{r} {result[r]['run_ms']:.1f}" for r in RUNTIMES)
             + '.', '']
    header = ' | '.join(f"{r} | ms | n" for r in RUNTIMES)
    lines += [f"| {header} |", '|' + '---|' * (3 * len(RUNTIMES))]
    for i in range(TOP):
        cells = []
        for runtime in RUNTIMES:
            kinds = result[runtime]['kinds']
            if i < len(kinds):
                name, ms, n = kinds[i]
                cells += [name, f"{ms:.1f}", str(n) if n else '']
            else:
                cells += ['', '', '']
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', 'Largest single oneDNN primitives in Paddle Inference:', '',
              '| ms | primitive | implementation | shapes |', '|---|---|---|---|']
    lines += [f"| {ms:.2f} | {kind} | {impl} | {shape} |" for ms, kind, impl, shape in result['paddle_onednn']['largest']]
    return '\n'.join(lines + [''])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--configs', nargs='+', default=['configs/segformer_b0_camvid.yml'])
    parser.add_argument('--size', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--runs', type=int, default=4, help='runs per runtime; the last one is profiled (>= 2)')
    parser.add_argument('--markdown', help='write the report to this file')
    parser.add_argument('--json', help='write the summary rows (per config: times and parts) to this file')
    parser.add_argument('--_worker', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        _worker(json.loads(args._worker))
        return
    if args.runs < 2 or args.threads < 1 or min(args.size) < 1:
        raise UserError(f"--runs must be at least 2 and --threads, --size positive, got {args.runs}, "
                        f"{args.threads}, {args.size}")
    missing = [c for c in args.configs if not os.path.isfile(c)]
    if missing:
        raise UserError(f"--configs: {missing[0]} does not exist")
    sections, rows = [], []
    for config in args.configs:
        print(f"profiling {config}", file=sys.stderr, flush=True)
        result = profile(config, args.size, args.threads, args.runs)
        sections.append(format_profile(config, result))
        rows.append(gap_row(config, result))
        print(sections[-1], flush=True)
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(rows, f, indent=1)
    if args.markdown:
        command = 'python tools/profile_runtimes.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
        head = ['# Where the time goes: per-kernel profiles', '',
                f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; "
                f"{args.size[0]}x{args.size[1]}, batch 1, {args.threads} threads, random weights. "
                'See `tools/profile_runtimes.py` for what each row counts.', '',
                '## Summary: where Paddle Inference loses against the faster other runtime', '',
                "Each run's time in four parts (`tools/profile_runtimes.py: PARTS`): kernels that compute; copies "
                'that only move data (Paddle: oneDNN reorders, i.e. layout conversions and the reshapes and '
                'transposes its oneDNN kernels copy; ONNX Runtime / OpenVINO: Transpose, Reorder, Reshape nodes); '
                "concatenations; and the time outside profiled kernels (Paddle: its own CPU kernels and the "
                "executor's per-op work). Each cell is Paddle's part less the other's (Paddle's, the other's); the "
                'four add up to the gap, up to profiling overhead.', '',
                format_summary(rows), '']
        with open(args.markdown, 'w', encoding='utf-8') as f:
            f.write('\n'.join(head) + '\n' + '\n'.join(sections))


if __name__ == '__main__':
    main_wrapper(main)
