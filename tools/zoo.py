"""The model zoo: measure every model config in configs/ and write docs/model_zoo.md and docs/zoo.png.

    python tools/zoo.py                         # every config (tens of minutes on 2 CPU cores)
    python tools/zoo.py --models HarDNet        # one model again; the others' results are kept
    python tools/zoo.py --pretrained            # the trained-checkpoint section (PaddleSeg's published weights)

For each config (models one at a time):

* **Speed and memory** at ``--size`` (512x512), batch 1, ``--threads`` CPU threads, through
  ``tools/benchmark.py``'s functions (each measurement in a fresh process): parameters, GFLOPs (``paddle.flops``),
  median latency of the dynamic graph and of Paddle Inference with oneDNN on the exported program, and the peak
  memory of each (the process's peak RSS, framework included, and the peak of the memory Paddle's allocator held
  for tensors).
* **Accuracy**: CamVid-mini val mIoU after a fixed short CPU training budget, the same for every model: ``--iters``
  iterations at batch ``--batch-size``, random crops of ``--crop`` pixels from images rescaled by 0.75-1.5
  (``--scale`` shrinks images first), flips and colour jitter, from scratch (no pretrained weights), seed 0, then
  evaluated on the 101 val images at their size (x ``--scale``). Each config keeps its own model, optimizer,
  learning-rate schedule and loss; warm-up is capped at a fifth of the iterations. Configs written for another
  dataset (``quickstart.yml``) are trained on CamVid-mini the same way, with the model's ``num_classes`` set to 11.
  Training runs ``train.py`` in a subprocess with ``--threads`` threads.

Results are kept in ``--results`` (docs/zoo_results.json), one entry per config with the settings it was measured
with; a run for some models replaces their entries and keeps the others, then the table and the plot are written
again from all entries. A model whose build, export or training fails gets "n/a (reason)" and the run goes on.

``--pretrained`` measures the published trained checkpoints of ``paddle_models.list_pretrained()`` instead (no
training, no download: latency does not depend on the weights' values, so each is the same architecture with random
weights, built from the packaged config): the trainable parameters (counted under ``paddle.LazyGuard``, nothing
allocated) and the oneDNN latency of ``tools/benchmark.py --measure infer_onednn`` run as a command, one fresh
process per checkpoint (512x512, batch 1, 2 threads, median of 3 by default), stopped with its workers after
``--timeout`` seconds. Its results go to ``--pretrained-results`` (docs/pretrained_results.json, merged the same way)
and its section, "Trained checkpoints (PaddleSeg's published weights)", to the end of docs/model_zoo.md, whose CamVid
part is left as it is (and a CamVid run keeps that section). ``--models`` then picks checkpoints by name, alias or
model type (``SegFormer``).
"""
import argparse
import copy
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
for path in (REPO, TOOLS):
    if path not in sys.path:
        sys.path.insert(0, path)

import benchmark  # noqa: E402  (tools/benchmark.py; imports the package, which preloads zlib before paddle)
from paddle_models.core.cli import main_wrapper  # noqa: E402
from paddle_models.errors import UserError, error_line  # noqa: E402

CAMVID_CLASSES = 11
MEASUREMENTS = ('dynamic', 'infer_onednn')
# the budget of docs/model_zoo.md: what fits about half an hour for all 16 configs on a shared 2-core machine
DEFAULTS = dict(iters=30, batch_size=2, crop=[112, 88], scale=0.5, size=[512, 512], threads=1, repeats=1)
# --pretrained: the published checkpoints' latency (batch 1); MscaleOCRNet's first oneDNN run alone takes minutes
PRETRAINED_DEFAULTS = dict(size=[512, 512], threads=2, repeats=3, timeout=900)
PRETRAINED_HEADING = "## Trained checkpoints (PaddleSeg's published weights)"
BENCHMARK_TOOL = os.path.join(TOOLS, 'benchmark.py')


def _display_name(model_cfg):
    """A short name for a model section: its type, the backbone or wrapped model's type in brackets, and the
    output stride where the backbone sets one (``DeepLabV3 (ResNet50_vd, OS8)``)."""
    name = model_cfg.get('type', '?')
    inner = model_cfg.get('backbone') or model_cfg.get('model')
    details = []
    if isinstance(inner, dict) and inner.get('type'):
        details.append(str(inner['type']))
        if inner.get('output_stride'):
            details.append(f"OS{inner['output_stride']}")
    return f"{name} ({', '.join(details)})" if details else name


def list_configs(configs_dir):
    """{stem: path} of the YAML configs in ``configs_dir``, sorted by stem."""
    if not os.path.isdir(configs_dir):
        raise UserError(f"--configs-dir: {configs_dir} is not a folder")
    found = {os.path.splitext(f)[0]: os.path.join(configs_dir, f) for f in sorted(os.listdir(configs_dir))
             if f.endswith(('.yml', '.yaml'))}
    if not found:
        raise UserError(f"--configs-dir: {configs_dir} has no .yml configs")
    return found


def load_model_section(path):
    """The config's ``model`` section with ``_base_`` files merged (``paddle_models.core.config.load_config``)."""
    import paddle_models  # noqa: F401  (registers every component, so the config's types are checked)
    from paddle_models.core.config import load_config
    return load_config(path, require=('model',)).dic


def select(configs, names):
    """The config stems that ``names`` pick: a name equal to a config's file stem (any case) picks that config;
    otherwise it picks every config whose model type is that name (``HarDNet``). None picks all."""
    if not names:
        return list(configs)
    chosen = []
    lowered = {stem.lower(): stem for stem in configs}
    for name in names:
        if name.lower() in lowered:
            matches = [lowered[name.lower()]]
        else:
            matches = [stem for stem, path in configs.items()
                       if str(load_model_section(path)['model'].get('type', '')).lower() == name.lower()]
        if not matches:
            raise UserError(f"--models: {name!r} is neither a config in {os.path.dirname(next(iter(configs.values())))}"
                            f" nor the model type of one (configs: {', '.join(configs)})")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def _normalize_transform(dic):
    """The ``Normalize`` transform of the config's val (else train) pipeline, so that each model keeps the input
    statistics it was configured with (ImageNet mean/std for MaxViT); default ``Normalize`` (0.5/0.5)."""
    for key in ('val_dataset', 'train_dataset'):
        for transform in (dic.get(key) or {}).get('transforms') or []:
            if isinstance(transform, dict) and transform.get('type') == 'Normalize':
                return copy.deepcopy(transform)
    return {'type': 'Normalize'}


def camvid_model(model_cfg):
    """A copy of the model section with ``num_classes`` 11 (CamVid's), at the top and in the wrapped model
    (``MultiScaleAttention``'s ``model``) where that has one."""
    model_cfg = copy.deepcopy(model_cfg)
    model_cfg['num_classes'] = CAMVID_CLASSES
    if isinstance(model_cfg.get('model'), dict) and 'num_classes' in model_cfg['model']:
        model_cfg['model']['num_classes'] = CAMVID_CLASSES
    return model_cfg


def training_config(dic, dataset_root, iters, batch_size, crop, scale):
    """The config dict to train and evaluate under the zoo's fixed budget (see the module docstring).

    Args:
        dic (dict): The config, ``_base_`` merged.
        dataset_root (str): CamVid-mini's folder.
        iters, batch_size (int), crop ([w, h]), scale (float): The budget.
    """
    dic = copy.deepcopy(dic)
    normalize = _normalize_transform(dic)
    low, high = 0.75 * scale, 1.5 * scale
    train_transforms = [
        {'type': 'ResizeStepScaling', 'min_scale_factor': low, 'max_scale_factor': high,
         'scale_step_size': 0.25 * scale},
        {'type': 'RandomPaddingCrop', 'crop_size': list(crop)},
        {'type': 'RandomHorizontalFlip'},
        {'type': 'RandomDistort', 'brightness_range': 0.4, 'contrast_range': 0.4, 'saturation_range': 0.4},
        normalize,
    ]
    val_transforms = [normalize]
    if scale != 1:  # the val images are 240x180; the prediction is resized back to the label's size
        val_transforms = [{'type': 'Resize', 'target_size': [round(240 * scale), round(180 * scale)]}, normalize]
    dic['train_dataset'] = {'type': 'CamVid', 'dataset_root': dataset_root, 'mode': 'train',
                            'transforms': train_transforms}
    dic['val_dataset'] = {'type': 'CamVid', 'dataset_root': dataset_root, 'mode': 'val',
                          'transforms': val_transforms}
    dic['batch_size'] = batch_size
    dic['iters'] = iters
    dic['model'] = camvid_model(dic['model'])
    scheduler = dic.get('lr_scheduler') or {}
    if scheduler.get('warmup_iters'):
        scheduler['warmup_iters'] = min(int(scheduler['warmup_iters']), max(iters // 5, 1))
    dic.pop('test_config', None)
    return dic


def train_and_evaluate(dic, dataset_root, iters, batch_size, crop, scale, threads, work_dir):
    """Train under the zoo's budget in a ``train.py`` subprocess and return the val mIoU and the time it took.

    Returns:
        dict: ``miou`` (float, or "n/a (reason)"), ``seconds`` (wall time of training + evaluation).
    """
    import yaml
    config = os.path.join(work_dir, 'zoo.yml')
    with open(config, 'w') as f:
        yaml.safe_dump(training_config(dic, dataset_root, iters, batch_size, crop, scale), f, sort_keys=False)
    save_dir = os.path.join(work_dir, 'run')
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), CPU_NUM=str(threads), GLOG_minloglevel='2')
    start = time.time()
    result = subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), '--config', config, '--do_eval',
                             '--save_interval', str(iters), '--log_iters', str(max(iters // 4, 1)), '--seed', '0',
                             '--device', 'cpu', '--save_dir', save_dir],
                            capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.time() - start
    score = os.path.join(save_dir, 'best_model', 'score.txt')
    if result.returncode != 0 or not os.path.isfile(score):
        return {'miou': f"n/a ({error_line(result.stderr or result.stdout)[:160]})", 'seconds': seconds}
    match = re.search(r'miou: ([0-9.]+)', open(score).read())
    return {'miou': float(match.group(1)) if match else 'n/a (no mIoU in score.txt)', 'seconds': seconds}


def measure_model(stem, path, args, work_dir):
    """One zoo entry: speed/memory (``benchmark.benchmark``) and accuracy under the fixed budget."""
    dic = load_model_section(path)
    model_cfg = copy.deepcopy(dic['model'])
    entry = {'config': os.path.relpath(path, REPO), 'name': _display_name(model_cfg)}
    today = datetime.date.today().isoformat()
    if not args.skip_benchmark:
        bench_cfg = camvid_model(model_cfg)  # 11 classes, as trained
        table = benchmark.benchmark(bench_cfg, ['ours'], args.size, args.repeats, args.threads, MEASUREMENTS)
        row = table['ours']
        row.pop('samples', None)
        entry['benchmark'] = dict(row, size=list(args.size), threads=args.threads, repeats=args.repeats,
                                  measured=today)
    if not args.skip_training:
        trained = train_and_evaluate(dic, args.dataset_root, args.iters, args.batch_size, args.crop, args.scale,
                                     args.threads, work_dir)
        entry['training'] = dict(trained, iters=args.iters, batch_size=args.batch_size, crop=list(args.crop),
                                 scale=args.scale, threads=args.threads, measured=today)
    return entry


# --- results, table and plot ------------------------------------------------------------------------------------

def load_results(path, option='--results'):
    """The results file's ``{'models': {stem: entry}}``; an absent file gives none. ``option`` names the file in
    the error."""
    if not os.path.isfile(path):
        return {'models': {}}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(f"{option}: {path} is not a readable JSON file ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get('models'), dict):
        raise UserError(f"{option}: {path} has no 'models' mapping")
    return data


def _write_atomically(path, write):
    """Write ``path`` through a temporary file beside it, renamed into place (no half-written file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private; the result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _cell(value, digits=1):
    if isinstance(value, bool) or value is None:
        return '–'
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return str(value).replace('|', '/')


def _setting(entry):
    """The budget an entry's accuracy was measured with, as text, or '' without training."""
    t = entry.get('training')
    if not t:
        return ''
    return f"{t['iters']} iters x batch {t['batch_size']}, crop {t['crop'][0]}x{t['crop'][1]}, scale {t['scale']}"


def _speed_setting(entry):
    b = entry.get('benchmark')
    if not b:
        return ''
    return f"{b['size'][0]}x{b['size'][1]}, {b['threads']} thread(s), median of {b['repeats']}"


def _latency(entry):
    """(ms, which) for the plot: Paddle Inference with oneDNN where it ran, else the dynamic graph."""
    b = entry.get('benchmark') or {}
    if _number(b.get('infer_onednn_ms')) is not None:
        return b['infer_onednn_ms'], 'onednn'
    if _number(b.get('dynamic_ms')) is not None:
        return b['dynamic_ms'], 'dynamic'
    return None, None


def format_table(models, md_dir):
    """The markdown table of ``models`` ({stem: entry}), fastest (oneDNN) first, config links relative to
    ``md_dir``; a row measured with other settings than the most common ones is marked and its settings listed
    under the table."""
    speed_common = _most_common([_speed_setting(e) for e in models.values()])
    train_common = _most_common([_setting(e) for e in models.values()])
    header = ('| model | config | params (M) | GFLOPs | dynamic ms | oneDNN ms | dynamic peak RSS MiB | '
              'dynamic tensor MiB | oneDNN peak RSS MiB | CamVid-mini val mIoU | train + eval s |')
    lines = [header, '|---' * 11 + '|']
    notes = []
    order = sorted(models, key=lambda s: (_latency(models[s])[0] is None, _latency(models[s])[0] or 0, s))
    for stem in order:
        entry = models[stem]
        b = entry.get('benchmark') or {}
        t = entry.get('training') or {}
        marks = ''
        if b and _speed_setting(entry) != speed_common:
            notes.append(f"{stem}: speed measured at {_speed_setting(entry)}")
            marks += '*'
        if t and _setting(entry) != train_common:
            notes.append(f"{stem}: trained {_setting(entry)}")
            marks += '†'
        params = _number(b.get('params'))
        lines.append('| ' + ' | '.join([
            entry.get('name', stem) + marks,
            f"[`{entry['config']}`]({os.path.relpath(os.path.join(REPO, entry['config']), md_dir)})",
            _cell(params / 1e6 if params is not None else b.get('params'), 2),
            _cell(b.get('gflops'), 2 if (_number(b.get('gflops')) or 10) < 10 else 1),
            _cell(b.get('dynamic_ms'), 0),
            _cell(b.get('infer_onednn_ms'), 0),
            _cell(b.get('dynamic_peak_mib'), 0),
            _cell(b.get('dynamic_tensor_mib'), 0),
            _cell(b.get('infer_onednn_peak_mib'), 0),
            _cell(t.get('miou'), 3),
            _cell(t.get('seconds'), 0),
        ]) + ' |')
    return '\n'.join(lines), speed_common, train_common, notes


def _most_common(values):
    values = [v for v in values if v]
    return max(sorted(set(values)), key=values.count) if values else ''


def write_markdown(path, models, plot_path, results_path, command):
    """``path``: how the figures were measured, the plot and the table (``format_table``)."""
    table, speed, budget, notes = format_table(models, os.path.dirname(os.path.abspath(path)))
    plot = os.path.relpath(plot_path, os.path.dirname(os.path.abspath(path)))
    results = os.path.relpath(os.path.abspath(results_path), os.path.dirname(os.path.abspath(path)))
    text = f"""# Model zoo

Generated by `tools/zoo.py` from [`{os.path.basename(results_path)}`]({results}); do not edit by hand. To measure
again (all configs; add `--models HarDNet` for one, whose row is replaced and the others kept):

<!-- not-tested: long (benchmark of every config) -->
```bash
{command}
```

![CamVid-mini val mIoU against CPU latency]({plot})

**Speed and memory** at {speed}, batch 1, random input, 11 classes, Paddle {_paddle_version()}:
*dynamic* is the dynamic graph under `paddle.no_grad`; *oneDNN* is Paddle Inference with oneDNN on the program
`export.py` writes. *Peak RSS* is the measuring process's peak resident memory (Paddle itself included, about
450-500 MiB); *tensor MiB* is the peak of the memory Paddle's allocator held for tensors (parameters, activations,
output). GFLOPs are `paddle.flops` (multiply-accumulates of the layers it knows; "n/a" where it fails). Each figure
comes from a fresh process (`tools/benchmark.py`). The timings are few runs on a shared 2-core machine on which
other jobs ran at the same time: small differences between models are noise.

**Accuracy** is the CamVid-mini val mIoU (101 images, 11 classes) after the same short CPU training for every
model, from scratch (no pretrained weights), seed 0: {budget} (the 240x180 images are scaled by that factor, then
randomly by 0.75-1.5, cropped, flipped and colour-jittered), then evaluated on the val images at the same scale with
the prediction resized to the label's size. Each config keeps its own model, optimizer, learning-rate schedule and
loss (warm-up capped at a fifth of the iterations). This budget is far too short for any model to converge, and it
favours models that learn fast from scratch: the column compares what a few CPU minutes give, not what the models
reach with PaddleSeg's schedules (tens of thousands of iterations from ImageNet weights). *train + eval s* is the
wall time of that run.

{table}
"""
    if notes:
        text += '\nMeasured with other settings than the rest: ' + '; '.join(notes) + '.\n'
    kept = _split_markdown(path)[1]  # the trained-checkpoint section (``--pretrained``) stays as it is
    if kept:
        text += '\n' + kept
    _write_atomically(path, lambda tmp: open(tmp, 'w').write(text))


def _split_markdown(path):
    """(the part before the trained-checkpoint section, that section from its heading to the end) of the markdown
    file ``path``; ('', '') for an absent file."""
    if not os.path.isfile(path):
        return '', ''
    with open(path, encoding='utf-8') as f:
        text = f.read()
    match = re.search('^' + re.escape(PRETRAINED_HEADING) + '$', text, flags=re.M)
    return (text[:match.start()], text[match.start():]) if match else (text, '')


def _paddle_version():
    try:
        import paddle
        return paddle.__version__
    except ImportError:
        return '?'


def _labels(models):
    """{stem: plot label}: the model's name, with the config's stem where two configs share a name."""
    names = [entry.get('name', stem) for stem, entry in models.items()]
    return {stem: entry.get('name', stem) + (f" [{stem}]" if names.count(entry.get('name', stem)) > 1 else '')
            for stem, entry in models.items()}


def _place_labels(ax, points):
    """Annotate ``points`` [(x, y, text)] beside their markers, each label moved to the first of a few positions
    around its point where it overlaps no label placed before (estimated boxes in display pixels)."""
    fig = ax.figure
    fig.canvas.draw()
    placed = []
    for x, y, text in sorted(points, key=lambda p: (p[0], p[1])):
        px, py = ax.transData.transform((x, y))
        width, height = 5.5 * len(text), 11
        for dx, dy in ((6, 4), (6, -14), (-width - 6, 4), (-width - 6, -14), (6, 16), (6, -26), (-width / 2, 18)):
            box = (px + dx, py + dy, px + dx + width, py + dy + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(text, (x, y), textcoords='offset points', xytext=(dx * 72 / fig.dpi, dy * 72 / fig.dpi),
                    fontsize=8)


def write_plot(path, models):
    """Scatter plot of mIoU against latency (log scale), one labelled point per model; the marker's area grows
    with the parameter count."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6.5))
    labels = _labels(models)
    points = []
    for stem in sorted(models):
        entry = models[stem]
        ms, which = _latency(entry)
        miou = _number((entry.get('training') or {}).get('miou'))
        if ms is None or miou is None:
            continue
        params = _number((entry.get('benchmark') or {}).get('params')) or 1e6
        ax.scatter([ms], [miou], s=20 + params / 1e6 * 6, alpha=0.6,
                   marker='o' if which == 'onednn' else 's', edgecolors='black', linewidths=0.5)
        points.append((ms, miou, labels[stem]))
    ax.set_xscale('log')
    ax.margins(x=0.08, y=0.08)
    ax.set_xlabel('CPU latency at 512x512, ms (log scale): Paddle Inference + oneDNN (circles), '
                  'dynamic graph where oneDNN fails (squares)', fontsize=9)
    ax.set_ylabel('CamVid-mini val mIoU after the fixed short training budget')
    ax.set_title('paddle_models zoo: accuracy against CPU latency (marker area ~ parameters)')
    ax.grid(True, which='both', alpha=0.3)
    _place_labels(ax, points)
    if not points:
        ax.text(0.5, 0.5, 'no model has both a latency and an mIoU yet', transform=ax.transAxes, ha='center')
    fig.tight_layout()
    _write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format='png'))
    plt.close(fig)


# --- the published trained checkpoints (--pretrained) -------------------------------------------------------------

def select_checkpoints(names):
    """The registry entries (``paddle_models.list_pretrained()``) that ``names`` pick: a checkpoint's name or alias
    picks it, else a model type (any case) picks every checkpoint of that type. None picks all, in the registry's
    order."""
    import paddle_models as pm
    entries = pm.list_pretrained()
    if not names:
        return entries
    chosen = []
    for name in names:
        matches = ([e for e in entries if name in (e['name'], e['alias'])]
                   or [e for e in entries if e['model'].lower() == name.lower()])
        if not matches:
            raise UserError(f"--models: {name!r} is neither the name or alias of a trained checkpoint nor the model "
                            f"type of one (python -m paddle_models.tools.list_pretrained lists them)")
        chosen += [e for e in matches if e['name'] not in {c['name'] for c in chosen}]
    return chosen


def count_params(name):
    """The trainable parameters of checkpoint ``name``'s architecture (its packaged config), built under
    ``paddle.LazyGuard``: only the shapes, no memory for the weights and no download."""
    import numpy as np
    import paddle

    import paddle_models as pm
    with paddle.LazyGuard():
        model = pm.build_model(name)
    return sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)


def _kill_session(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # every process of the session has ended already
        pass
    proc.communicate()


def measure_checkpoint(entry, size, threads, repeats, timeout, work_dir, tool=BENCHMARK_TOOL):
    """The oneDNN latency of a checkpoint's architecture (random weights): ``tool`` (tools/benchmark.py) on its
    packaged config with ``--measure infer_onednn``, as a command in a session of its own, so that a run past
    ``timeout`` seconds is stopped together with the export and inference workers it started.

    Returns:
        dict: ``infer_onednn_ms`` (float, or "n/a (reason)": the export or the oneDNN run failed, or the time ran
        out); where it ran, ``infer_onednn_peak_mib`` and ``infer_onednn_tensor_mib`` (that process's memory),
        ``infer_onednn_setup_s`` (predictor creation and the first run) and ``export_s``; ``seconds``, the wall time
        of the whole command.
    """
    out_json = os.path.join(work_dir, 'benchmark.json')
    command = [sys.executable, tool, '--config', entry['config'], '--measure', 'infer_onednn', '--size',
               str(size[0]), str(size[1]), '--threads', str(threads), '--repeats', str(repeats), '--json', out_json]
    start = time.time()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc)
        return {'infer_onednn_ms': f"n/a (did not finish within {timeout:g} s)", 'seconds': time.time() - start}
    except BaseException:  # Ctrl-C: the processes of the other session do not receive it
        _kill_session(proc)
        raise
    seconds = time.time() - start
    if proc.returncode != 0 or not os.path.isfile(out_json):
        reason = error_line(stderr or stdout)
        reason = reason[len('error: '):] if reason.startswith('error: ') else reason
        return {'infer_onednn_ms': f"n/a ({reason[:160]})", 'seconds': seconds}
    with open(out_json) as f:
        row = json.load(f)['results']['ours']
    kept = ('infer_onednn_ms', 'infer_onednn_peak_mib', 'infer_onednn_tensor_mib', 'infer_onednn_setup_s', 'export_s')
    return dict({key: row[key] for key in kept if key in row}, seconds=seconds)


def _checkpoint_setting(measured):
    b = measured.get('benchmark')
    if not b:
        return ''
    threads = f"{b['threads']} thread" + ('s' if b['threads'] != 1 else '')
    return f"{b['size'][0]}x{b['size'][1]}, {threads}, median of {b['repeats']}"


def format_pretrained_table(measured):
    """The markdown table of the trained checkpoints: one row per registry entry, in the registry's order, with the
    figures of ``measured`` ({name: entry}; "–" where a checkpoint has none). A row measured with other settings
    than the most common ones is marked with * and its settings listed.

    Returns:
        tuple: (table, the most common settings, [notes on other settings])
    """
    import paddle_models as pm
    common = _most_common([_checkpoint_setting(m) for m in measured.values()])
    lines = ['| checkpoint (alias / PaddleSeg config name) | dataset | classes | published val mIoU % | params (M) | '
             'oneDNN ms | use it |', '|---' * 7 + '|']
    notes = []
    for entry in pm.list_pretrained():
        m = measured.get(entry['name']) or {}
        b = m.get('benchmark') or {}
        mark = ''
        if b and _checkpoint_setting(m) != common:
            notes.append(f"{entry['alias']}: measured at {_checkpoint_setting(m)}")
            mark = '*'
        link = re.search(r'https?://\S+', entry['source'])
        miou = f"{entry['miou'] * 100:.2f}"
        params = _number(m.get('params'))
        lines.append('| ' + ' | '.join([
            f"`{entry['alias']}`{mark} / `{entry['name']}`",
            entry['dataset'],
            str(entry['num_classes']),
            f"[{miou}]({link.group(0)})" if link else miou,
            _cell(params / 1e6 if params is not None else m.get('params'), 2),
            _cell(b.get('infer_onednn_ms'), 0),
            f"`--model {entry['alias']}`",
        ]) + ' |')
    return '\n'.join(lines), common, notes


def pretrained_section(measured, md_dir, results_path, command):
    """The trained-checkpoint section of docs/model_zoo.md: how to measure it again, what the columns are, and
    :func:`format_pretrained_table`'s table."""
    table, setting, notes = format_pretrained_table(measured)
    results = os.path.relpath(os.path.abspath(results_path), md_dir)
    benchmarks = [m['benchmark'] for m in measured.values() if m.get('benchmark')]
    dates = sorted({b['measured'] for b in benchmarks if b.get('measured')})
    when = (f", measured {dates[0]}" + (f" to {dates[-1]}" if len(dates) > 1 else '')) if dates else ''
    timeouts = sorted({b['timeout'] for b in benchmarks if _number(b.get('timeout'))})
    limit = f"{timeouts[-1]:g} s" if timeouts else '`--timeout` seconds'
    text = f"""{PRETRAINED_HEADING}

Generated by `tools/zoo.py --pretrained` from [`{os.path.basename(results_path)}`]({results}); do not edit by
hand. To measure again (add `--models segformer_b0_cityscapes`, or a model type such as `--models SegFormer`, for
some; their rows are replaced and the others kept):

<!-- not-tested: network (downloads the checkpoints), long (benchmark) -->
```bash
{command}
```

The {len(table.splitlines()) - 2} checkpoints that PaddleSeg 2.8.0 publishes for this zoo's architectures
(`paddle_models.list_pretrained()`; `python -m paddle_models.tools.list_pretrained`). Each is used by its alias or
its full name: `--model <alias>` in `predict.py`, `val.py` and `export.py` in place of `--config` and
`--model_path`, `pm.build_model('<alias>', pretrained=True)` in Python, and `--opts model.pretrained=<name>` to
fine-tune from it. The weights are downloaded once into PaddleSeg's cache.

* *published val mIoU*: PaddleSeg's single-scale validation mIoU of the checkpoint as its model README gives it
  (linked; Cityscapes val or Pascal VOC 2012 val). These are PaddleSeg's figures: the machine that measured this
  table has no network access to download the checkpoints, so we have not evaluated them ourselves.
* *params*: the trainable parameters of the architecture, counted from the model that the packaged config builds
  (`paddle.LazyGuard`: shapes only).
* *oneDNN ms*: our CPU latency at {setting or '?'}, batch 1{when}, Paddle {_paddle_version()}: the program that
  `export.py` writes, run in Paddle Inference with oneDNN (`tools/benchmark.py --measure infer_onednn`, one fresh
  process per checkpoint, after a warm-up run). It is measured on **random weights of the same architecture** (the
  values of the weights do not change the time) and at **512x512**: the Pascal VOC checkpoints' evaluation size
  (their val images are padded to it), but not the Cityscapes ones' (PaddleSeg evaluates them on the full
  2048x1024 images, eight times the pixels; the 1024x512 or 1024x1024 in their names is the training crop), whose
  latency at their own size is several times the figure here. MscaleOCRNet runs its three default scales (0.5, 1
  and 2, so HRNet-W48 also sees a 1024x1024 input): its export and first Paddle Inference runs take minutes; a
  measurement that did not finish within {limit} says so. "n/a (reason)": the export or the oneDNN run failed;
  the export checks the oneDNN program's output against a plain CPU run of the same program, here on the random
  weights (MscaleOCRNet's random-weight logits reach about 1e10 -- measured at 128x128 -- and its check fails;
  whether it passes with the trained weights could not be tried without them). Other jobs ran on the shared 2-core machine at the same time:
  small differences between models are noise (a Cityscapes checkpoint and the Pascal VOC one of the same
  architecture differ only in 19 or 21 output classes).

{table}
"""
    if any(not (measured.get(name) or {}).get('benchmark') for name in _registry_names()):
        text += '\n"–": not measured yet.\n'
    if notes:
        text += '\nMeasured with other settings than the rest: ' + '; '.join(notes) + '.\n'
    return text


def _registry_names():
    import paddle_models as pm
    return [entry['name'] for entry in pm.list_pretrained()]


def write_pretrained_section(path, measured, results_path, command):
    """Replace (or append) the trained-checkpoint section of the markdown file ``path``; the part before it (the
    CamVid zoo) is kept as it is. A file that does not exist yet gets a title and the section."""
    head = _split_markdown(path)[0].rstrip('\n') or '# Model zoo'
    section = pretrained_section(measured, os.path.dirname(os.path.abspath(path)), results_path, command)
    text = head + '\n\n' + section
    _write_atomically(path, lambda tmp: open(tmp, 'w', encoding='utf-8').write(text))


def run_pretrained(args, argv):
    """``--pretrained``: measure the chosen checkpoints (unless ``--skip-benchmark``), merge them into
    ``--pretrained-results`` and write the section of ``--md``."""
    chosen = select_checkpoints(args.models)
    results = load_results(args.pretrained_results, '--pretrained-results')
    today = datetime.date.today().isoformat()
    for number, entry in enumerate([] if args.skip_benchmark else chosen, 1):
        print(f"[zoo] {number}/{len(chosen)} {entry['name']} ...", flush=True)
        try:
            params = count_params(entry['name'])
        except Exception as err:  # noqa: BLE001  (recorded in the cell; the run goes on)
            params = f"n/a ({error_line(f'{type(err).__name__}: {err}')[:160]})"
        with tempfile.TemporaryDirectory(prefix='zoo-') as work_dir:
            bench = measure_checkpoint(entry, args.size, args.threads, args.repeats, args.timeout, work_dir)
        results['models'][entry['name']] = {
            'alias': entry['alias'], 'config': os.path.relpath(entry['config'], REPO), 'params': params,
            'benchmark': dict(bench, size=list(args.size), threads=args.threads, repeats=args.repeats,
                              timeout=args.timeout, measured=today)}
        _write_atomically(args.pretrained_results,
                          lambda tmp: json.dump(results, open(tmp, 'w'), indent=1, sort_keys=True))
        print(f"[zoo] {entry['alias']}: params {params}, oneDNN {_cell(bench['infer_onednn_ms'], 0)} ms "
              f"({bench['seconds']:.0f} s)", flush=True)
    write_pretrained_section(args.md, results['models'], args.pretrained_results, _command(_rerun_argv(argv)))
    print(f"[zoo] wrote the trained-checkpoint section of {args.md}"
          + ('' if args.skip_benchmark else f" and {args.pretrained_results}"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=None, metavar='NAME',
                        help='configs to measure: file stems (hardnet, segformer_b0_camvid) or model types '
                             '(HarDNet). Default: every config.')
    parser.add_argument('--configs-dir', default=os.path.join(REPO, 'configs'))
    parser.add_argument('--dataset-root', default=os.path.normpath(os.path.join(REPO, '..', 'shared', 'data',
                                                                                 'camvid_mini')),
                        help="CamVid-mini's folder (default: ../shared/data/camvid_mini beside the repository)")
    parser.add_argument('--iters', type=int, default=DEFAULTS['iters'], help='training iterations per model')
    parser.add_argument('--batch-size', type=int, default=DEFAULTS['batch_size'])
    parser.add_argument('--crop', type=int, nargs=2, default=DEFAULTS['crop'], metavar=('W', 'H'),
                        help='training crop (after --scale)')
    parser.add_argument('--scale', type=float, default=DEFAULTS['scale'],
                        help='image scale for training and evaluation (CamVid-mini is 240x180; 0.5 trains and '
                             'evaluates at about 120x90, four times cheaper)')
    parser.add_argument('--size', type=int, nargs=2, default=DEFAULTS['size'], metavar=('H', 'W'),
                        help='input size of the speed and memory measurements')
    parser.add_argument('--threads', type=int, default=None,
                        help=f"CPU threads for everything (default {DEFAULTS['threads']}; "
                             f"{PRETRAINED_DEFAULTS['threads']} with --pretrained)")
    parser.add_argument('--repeats', type=int, default=None,
                        help=f"timed runs per latency (default {DEFAULTS['repeats']}; "
                             f"{PRETRAINED_DEFAULTS['repeats']} with --pretrained)")
    parser.add_argument('--pretrained', action='store_true',
                        help="measure PaddleSeg's published trained checkpoints (paddle_models.list_pretrained()) "
                             "instead: params and oneDNN latency, no training; --models picks them by name, alias "
                             "or model type")
    parser.add_argument('--timeout', type=float, default=PRETRAINED_DEFAULTS['timeout'],
                        help='--pretrained: seconds for one checkpoint (export and oneDNN runs) before it is '
                             'stopped and recorded as not finished')
    parser.add_argument('--pretrained-results', default=os.path.join(REPO, 'docs', 'pretrained_results.json'))
    parser.add_argument('--results', default=os.path.join(REPO, 'docs', 'zoo_results.json'))
    parser.add_argument('--md', default=os.path.join(REPO, 'docs', 'model_zoo.md'))
    parser.add_argument('--plot', default=os.path.join(REPO, 'docs', 'zoo.png'))
    parser.add_argument('--skip-benchmark', action='store_true', help='keep the stored speed/memory figures')
    parser.add_argument('--skip-training', action='store_true', help='keep the stored mIoU')
    args = parser.parse_args(argv)
    defaults = PRETRAINED_DEFAULTS if args.pretrained else DEFAULTS
    for name in ('threads', 'repeats'):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    return args


def _command(argv):
    shown = ['python', 'tools/zoo.py'] + [a if re.fullmatch(r'[\w./=:,+-]+', a) else repr(a) for a in argv]
    return ' '.join(shown)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    for name in ('iters', 'batch_size', 'threads', 'repeats'):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if min(args.crop) < 1 or min(args.size) < 1 or args.scale <= 0:
        raise UserError(f"--crop, --size and --scale must be positive, got {args.crop}, {args.size}, {args.scale}")
    if args.pretrained:
        if args.timeout <= 0:
            raise UserError(f"--timeout must be positive, got {args.timeout:g}")
        run_pretrained(args, argv)
        return
    if not args.skip_training and not os.path.isfile(os.path.join(args.dataset_root, 'val.txt')):
        raise UserError(f"--dataset-root: CamVid-mini not found at {args.dataset_root} (no val.txt)")
    configs = list_configs(args.configs_dir)
    chosen = select(configs, args.models)
    results = load_results(args.results)
    for number, stem in enumerate(chosen, 1):
        print(f"[zoo] {number}/{len(chosen)} {stem} ...", flush=True)
        start = time.time()
        old = results['models'].get(stem, {})
        with tempfile.TemporaryDirectory(prefix='zoo-') as work_dir:
            entry = measure_model(stem, configs[stem], args, work_dir)
        for kept in ('benchmark', 'training'):  # what was skipped keeps its stored figures
            if kept not in entry and kept in old:
                entry[kept] = old[kept]
        results['models'][stem] = entry
        _write_atomically(args.results, lambda tmp: json.dump(results, open(tmp, 'w'), indent=1, sort_keys=True))
        b, t = entry.get('benchmark', {}), entry.get('training', {})
        print(f"[zoo] {stem}: params {b.get('params')}, dynamic {_cell(b.get('dynamic_ms'), 0)} ms, oneDNN "
              f"{_cell(b.get('infer_onednn_ms'), 0)} ms, mIoU {_cell(t.get('miou'), 3)} "
              f"({time.time() - start:.0f} s)", flush=True)
    models = {stem: entry for stem, entry in results['models'].items() if stem in configs}
    write_plot(args.plot, models)
    write_markdown(args.md, models, args.plot, args.results, _command(_rerun_argv(argv)))
    print(f"[zoo] wrote {args.md}, {args.plot} and {args.results}")


def _rerun_argv(argv):
    """``argv`` without ``--models`` and its names and without ``--skip-*``: the command that measures every
    config with the same settings."""
    out, skipping = [], False
    for item in argv:
        if item in ('--skip-benchmark', '--skip-training'):
            continue
        if item == '--models':
            skipping = True
            continue
        if skipping and not item.startswith('--'):
            continue
        skipping = False
        out.append(item)
    return out


if __name__ == '__main__':
    main_wrapper(main)
