"""Time ``export.py`` and ``deploy/python/infer.py``'s start-up for the configs in configs/.

    python tools/export_speed.py                                   # every config in configs/
    python tools/export_speed.py --configs configs/hardnet.yml configs/mscale_ocrnet_hrnet_w48_camvid.yml
    python tools/export_speed.py --markdown                        # a markdown table (docs/deployment.md)

For each config, in fresh subprocesses (so nothing is cached between them):

1. ``export.py --config C --save_dir <tmp>`` (initial weights, default options: a free input size, argmax,
   Paddle Inference program with its oneDNN check): the wall time of the whole command, Python start and model
   building included.
2. ``deploy/python/infer.py --config <tmp>/deploy.yaml --image_path <one image>`` with ``--cpu_threads``
   (default 2): the wall time of the whole command until it exits after its first (only) image. That is the
   set-up a user waits for before the first result: Python and Paddle imports, reading deploy.yaml, creating the
   predictor (oneDNN as deploy.yaml says), the first run (Paddle Inference's slowest, it analyses the program)
   and writing the PNG. Nothing is subtracted. The image is the first of the camvid_mini val images where the
   shared data is present, else a random 480x360 RGB image written to the scratch folder.

The table also gives the number of ops in the saved program (PIR ``model.json``: operations, parameters not
counted; '-' for a legacy ``model.pdmodel``), since Paddle Inference's first run grows faster than linearly with
it. Timing on a loaded machine varies; run it on a quiet one. A failing command is reported in the table (with the
last line of its stderr) and the script exits 1.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT = os.path.join(REPO, 'export.py')
INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')


class _Error(Exception):
    pass


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Time export.py and infer.py's set-up per config.")
    parser.add_argument('--configs', nargs='+', default=None,
                        help='Config files (default: every configs/*.yml).')
    parser.add_argument('--markdown', action='store_true', help='Print a markdown table (default: plain text).')
    parser.add_argument('--cpu_threads', type=int, default=2, help="infer.py's --cpu_threads. Default: 2")
    parser.add_argument('--image', default=None, help='Image for infer.py (default: see the module docstring).')
    parser.add_argument('--timeout', type=float, default=1800, help='Seconds per command before it counts as '
                                                                    'failed. Default: 1800')
    return parser.parse_args(argv)


def count_ops(save_dir):
    """Operations in the saved PIR program (``model.json``), or None for a legacy program."""
    path = os.path.join(save_dir, 'model.json')
    if not os.path.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        program = json.load(f)
    count, stack = 0, [program.get('program', program)]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get('#'), str) and 'I' in node and 'O' in node:  # an op (parameters have no 'I')
                count += 1
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def _image(scratch):
    found = sorted(glob.glob(os.path.join(REPO, '..', 'shared', 'data', 'camvid_mini', 'images', 'val', '*.png')))
    if found:
        return found[0]
    import numpy as np
    from PIL import Image

    path = os.path.join(scratch, 'random.png')
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (360, 480, 3), dtype=np.uint8)).save(path)
    return path


def _timed(cmd, timeout):
    start = time.perf_counter()
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise _Error(f"timed out after {timeout:.0f} s") from None
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise _Error(lines[-1][:200] if lines else f"exit code {result.returncode}")
    return seconds


def measure(config, image, scratch, cpu_threads, timeout):
    """{'export_s', 'infer_setup_s', 'ops', 'onednn', 'error'} for one config."""
    row = {'config': os.path.relpath(os.path.abspath(config), REPO), 'export_s': None, 'infer_setup_s': None,
           'ops': None, 'onednn': None, 'error': None}
    save_dir = os.path.join(scratch, 'model')
    shutil.rmtree(save_dir, ignore_errors=True)
    try:
        row['export_s'] = _timed([sys.executable, EXPORT, '--config', config, '--save_dir', save_dir], timeout)
        row['ops'] = count_ops(save_dir)
        import yaml

        with open(os.path.join(save_dir, 'deploy.yaml'), encoding='utf-8') as f:
            row['onednn'] = bool(yaml.safe_load(f)['Deploy'].get('enable_mkldnn'))
        row['infer_setup_s'] = _timed([sys.executable, INFER, '--config', os.path.join(save_dir, 'deploy.yaml'),
                                       '--image_path', image, '--save_dir', os.path.join(scratch, 'out'),
                                       '--device', 'cpu', '--cpu_threads', str(cpu_threads),
                                       '--print_detail', 'False'], timeout)
    except _Error as err:
        row['error'] = str(err)
    return row


def _cell(value, fmt='{:.1f}'):
    return '-' if value is None else fmt.format(value)


def table(rows, markdown):
    head = ['config', 'ops in the program', 'export s', 'infer setup s', 'oneDNN']
    body = [[row['config'], _cell(row['ops'], '{:,}'), _cell(row['export_s']), _cell(row['infer_setup_s']),
             '-' if row['onednn'] is None else ('yes' if row['onednn'] else 'no')] +
            ([f"FAILED: {row['error']}"] if row['error'] else []) for row in rows]
    if markdown:
        lines = ['| ' + ' | '.join(head) + ' |', '|' + '|'.join(['---'] + ['---:'] * 3 + [':---:']) + '|']
        return '\n'.join(lines + ['| ' + ' | '.join(r[:5]) + ' |' + (f" {r[5]}" if len(r) > 5 else '')
                                  for r in body])
    widths = [max(len(head[i]), *(len(r[i]) for r in body)) for i in range(5)]
    out = ['  '.join(h.ljust(w) for h, w in zip(head, widths))]
    out += ['  '.join(c.ljust(w) for c, w in zip(r[:5], widths)) + ('  ' + r[5] if len(r) > 5 else '')
            for r in body]
    return '\n'.join(out)


def main(argv=None):
    args = parse_args(argv)
    configs = args.configs or sorted(glob.glob(os.path.join(REPO, 'configs', '*.yml')))
    missing = [c for c in configs if not os.path.isfile(c)]
    if missing:
        print(f"error: --configs: no such file: {missing[0]}", file=sys.stderr)
        return 2
    scratch = tempfile.mkdtemp(prefix='export_speed-')
    try:
        image = args.image or _image(scratch)
        rows = []
        for config in configs:
            row = measure(config, image, scratch, args.cpu_threads, args.timeout)
            rows.append(row)
            print(f"{row['config']}: export {_cell(row['export_s'])} s, infer setup {_cell(row['infer_setup_s'])} s"
                  + (f" ({row['error']})" if row['error'] else ''), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(table(rows, args.markdown))
    return 1 if any(row['error'] for row in rows) else 0


if __name__ == '__main__':
    sys.exit(main())
