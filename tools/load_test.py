"""Load test of ``deploy/python/serve.py``: start the server on 127.0.0.1, run ``tools/locustfile.py`` headless
against it for a fixed number of requests, and report throughput, latency percentiles, outcomes, label-map
mismatches against infer.py and the server's memory::

    python tools/load_test.py --config output/inference_model/deploy.yaml --images imgs --requests 2000 --users 8 \\
        [--compare_infer] [--json] [--server_flags --max_batch_size 8 --cpu_threads 2]

Steps: (1) the reference label maps: ``deploy/python/infer.py`` runs once over the images (with the server's
``--backend``, ``--device``, ``--cpu_threads`` and ``--enable_mkldnn`` where given) and its PNGs are read back;
(2) with ``--compare_infer``, infer.py's single-process throughput on the same images (``--benchmark``, batch 1,
the images repeated to ``--infer_images``: preprocess + inference + postprocess time, start-up excluded);
(3) the server starts on a free port and is waited for until ``GET /health`` answers 200; (4) Locust runs as a
subprocess (it monkey-patches the standard library with gevent, so it stays out of this process) while a thread
reads the server's resident memory (``VmRSS`` of /proc, the server and its child processes summed) every 50 ms,
and once more when the locustfile marks ``--warmup_requests`` answered; (5) the server gets SIGTERM and its exit
code is reported.

The run fails (exit 1) on any unexpected answer (a good request refused, a bad input not given its 4xx, a broken
connection), any label map unlike infer.py's, RSS after the run more than 10% above RSS after the warm-up requests,
a server that does not exit 0 on SIGTERM, or a Locust that does not finish. 503s (the server's back-pressure) are
counted but allowed. ``--images`` left out: a few generated noise images of four sizes. Errors in the flags or
files: one line, exit 2. Needs locust, numpy and Pillow here; the server needs what serve.py needs.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from load_mix import LoadError, parse_mix  # noqa: E402
from paddle_models.core.cli import ArgumentParser, positive_int  # noqa: E402  (the tools' one-line flag errors)
from paddle_models.errors import UserError  # noqa: E402
SERVE = os.path.join(REPO, 'deploy', 'python', 'serve.py')
INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')
LOCUSTFILE = os.path.join(REPO, 'tools', 'locustfile.py')
IMAGE_SUFFIXES = ('.jpeg', '.jpg', '.bmp', '.png', '.tif', '.tiff', '.webp')
GENERATED_SIZES = ((64, 48), (96, 72), (48, 64), (128, 96))  # (w, h) of the images made without --images
SHARED_FLAGS = ('--backend', '--device', '--cpu_threads', '--enable_mkldnn')  # serve.py's flags infer.py shares
RSS_GROWTH_LIMIT = 0.10


class LoadTestError(Exception):
    """Something the user must fix, or a step that failed; ``str()`` is the one-line message."""


def parse_args(argv=None):
    parser = ArgumentParser(description='Load-test deploy/python/serve.py with Locust and check every answer.')
    parser.add_argument('--config', required=True, help='deploy.yaml of the export to serve.')
    parser.add_argument('--images', default=None,
                        help='Folder of the images to send (its top level). Default: a few generated images.')
    parser.add_argument('--requests', type=positive_int, default=2000, help='Requests in all. Default: 2000')
    parser.add_argument('--users', type=positive_int, default=8, help='Concurrent Locust users. Default: 8')
    parser.add_argument('--mix', default='json=70,predict=15,bad=15',
                        help='Shares of JSON requests, /predict uploads and bad inputs. Default: '
                             'json=70,predict=15,bad=15')
    parser.add_argument('--warmup_requests', type=positive_int, default=200,
                        help='RSS after this many answers is the base of the memory check. Default: 200')
    parser.add_argument('--compare_infer', action='store_true',
                        help="Also measure infer.py's single-process throughput on the same images.")
    parser.add_argument('--infer_images', type=positive_int, default=200,
                        help='Images infer.py runs for --compare_infer (the images repeated). Default: 200')
    parser.add_argument('--start_timeout', type=positive_int, default=180,
                        help='Seconds the server may take to become healthy. Default: 180')
    parser.add_argument('--timeout', type=positive_int, default=900,
                        help='Seconds the Locust run may take. Default: 900')
    parser.add_argument('--python', default=sys.executable,
                        help='Python that runs serve.py, infer.py and Locust. Default: this one')
    parser.add_argument('--json', action='store_true', help='Print the report as JSON.')
    parser.add_argument('--work_dir', default=None,
                        help="Keep the run's files here (server.log, locust.log, the reference PNGs, results.json) "
                             "instead of a temporary folder.")
    parser.add_argument('--server_flags', nargs=argparse.REMAINDER, default=[],
                        help='Everything after it goes to serve.py (e.g. --max_batch_size 8 --cpu_threads 2).')
    args = parser.parse_args(argv)
    if not os.path.isfile(args.config):
        raise LoadTestError(f"--config: {args.config} does not exist")
    if args.images is not None and not os.path.isdir(args.images):
        raise LoadTestError(f"--images: {args.images} is not a folder")
    try:
        parse_mix(args.mix, '--mix')
    except LoadError as err:
        raise LoadTestError(str(err)) from None
    if args.warmup_requests >= args.requests:
        raise LoadTestError(f"--warmup_requests ({args.warmup_requests}) must be below --requests "
                            f"({args.requests})")
    for flag in ('--host', '--port'):
        if any(f == flag or f.startswith(flag + '=') for f in args.server_flags):
            raise LoadTestError(f"--server_flags: {flag} is chosen by the load test (127.0.0.1, a free port)")
    return args


def list_images(folder):
    """The image files at the top level of ``folder``, sorted; their stems must differ (infer.py names its
    results by stem)."""
    names = sorted(n for n in os.listdir(folder)
                   if not n.startswith('.') and os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES
                   and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise LoadTestError(f"--images: no images ({', '.join(IMAGE_SUFFIXES)}) in folder {folder}")
    stems = {}
    for name in names:
        other = stems.setdefault(os.path.splitext(name)[0].casefold(), name)
        if other != name:
            raise LoadTestError(f"--images: {other} and {name} share a name; infer.py's results would collide")
    return names


def generate_images(folder):
    """Noise images of ``GENERATED_SIZES`` in ``folder`` (JPEG and PNG alternately); returns their names."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i, (w, h) in enumerate(GENERATED_SIZES):
        name = f"noise_{w}x{h}.{'jpg' if i % 2 == 0 else 'png'}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(os.path.join(folder, name))
        names.append(name)
    return names


def shared_flags(server_flags):
    """The flags of ``server_flags`` that infer.py takes too, so that the references run the same engine."""
    out, i = [], 0
    while i < len(server_flags):
        flag = server_flags[i]
        name = flag.split('=', 1)[0]
        if name in SHARED_FLAGS:
            if '=' in flag:
                out.append(flag)
            else:
                out.append(flag)
                if i + 1 < len(server_flags) and not server_flags[i + 1].startswith('--'):
                    out.append(server_flags[i + 1])
                    i += 1
        i += 1
    return out


def run_infer(python, config, image_list, save_dir, flags, timeout=900):
    """Run infer.py over ``image_list``; returns its stdout; a failure is a LoadTestError with its last line."""
    command = [python, INFER, '--config', config, '--image_path', image_list, '--save_dir', save_dir,
               '--print_detail', 'False', *flags]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LoadTestError(f"infer.py did not finish within {timeout} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise LoadTestError(f"infer.py failed (exit {done.returncode}): {lines[-1] if lines else 'no output'}")
    return done.stdout


def reference_maps(python, config, folder, names, work, flags=()):
    """infer.py's label maps of the images ``names`` in ``folder`` (run with ``python`` and the infer.py
    ``flags``), saved as ``work/reference.npz`` (uint8 HxW per file name); returns (its path, {name: map})."""
    from PIL import Image

    image_list = os.path.join(work, 'images.txt')
    with open(image_list, 'w') as f:
        f.writelines(os.path.abspath(os.path.join(folder, n)) + '\n' for n in names)
    save_dir = os.path.join(work, 'reference')
    run_infer(python, config, image_list, save_dir, list(flags))
    maps = {}
    for name in names:
        with Image.open(os.path.join(save_dir, os.path.splitext(name)[0] + '.png')) as png:
            maps[name] = np.asarray(png, dtype=np.uint8)
    path = os.path.join(work, 'reference.npz')
    np.savez(path, **maps)
    return path, maps


def infer_throughput(args, folder, names, work):
    """infer.py's single-process images/s on the images repeated to ``--infer_images`` (batch 1, its
    ``--benchmark`` times: preprocess + inference + postprocess, start-up and warm-up excluded)."""
    image_list = os.path.join(work, 'bench.txt')
    with open(image_list, 'w') as f:
        f.writelines(os.path.abspath(os.path.join(folder, names[i % len(names)])) + '\n'
                     for i in range(args.infer_images))
    out = run_infer(args.python, args.config, image_list, os.path.join(work, 'bench'),
                    shared_flags(args.server_flags) + ['--benchmark', 'True'])
    total = 0.0
    for line in out.splitlines():
        if line.strip().startswith(('preprocess', 'inference', 'postprocess')) and '(total ' in line:
            total += float(line.rsplit('(total ', 1)[1].split()[0])
    if total <= 0:
        raise LoadTestError("infer.py --benchmark printed no times")
    return {'images': args.infer_images, 'seconds': total, 'images_per_s': args.infer_images / total}


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def process_tree(pid):
    """``pid`` and its descendants (from /proc/*/stat's parent ids)."""
    parents = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    stat = f.read()
            except OSError:
                continue
            parents.setdefault(int(stat.rsplit(')', 1)[1].split()[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(parents.get(p, ()))
    return tree


def status_kib(pid, field):
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM), or 0 where the process is gone."""
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mib(pid):
    """Resident memory of ``pid`` and its child processes (uvicorn workers), MiB."""
    return sum(status_kib(p, 'VmRSS') for p in process_tree(pid)) / 1024


class RssSampler(threading.Thread):
    """Reads the server tree's RSS every ``interval`` s: the peak, and the value when ``mark`` (a file the
    locustfile writes after the warm-up requests) appears."""

    def __init__(self, pid, mark, interval=0.05):
        super().__init__(daemon=True)
        self.pid, self.mark, self.interval = pid, mark, interval
        self.peak = 0.0
        self.at_mark = None
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            rss = tree_rss_mib(self.pid)
            self.peak = max(self.peak, rss)
            self.samples += 1
            if self.at_mark is None and os.path.exists(self.mark):
                self.at_mark = rss
            self._stop_event.wait(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join()


def wait_healthy(proc, url, timeout, log_path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LoadTestError(f"serve.py exited with code {proc.returncode} before it was ready: "
                                f"{last_line(log_path)}")
        try:
            with urllib.request.urlopen(url + '/health', timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise LoadTestError(f"serve.py did not become healthy within {timeout} s: {last_line(log_path)}")


def last_line(path):
    try:
        with open(path, errors='replace') as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return 'no log'
    return lines[-1] if lines else 'no output'


def percentiles(values):
    if not values:
        return {'p50': None, 'p95': None, 'p99': None}
    p50, p95, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95, 99])
    return {'p50': float(p50), 'p95': float(p95), 'p99': float(p99)}


def stop_server(proc, timeout=60):
    """SIGTERM, then the exit code (None where it had to be killed after ``timeout`` s)."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def run_locust(python, url, users, timeout, env, work, log_path):
    """Run tools/locustfile.py headless against ``url`` with ``users`` users (all started at once) and the
    ``LOAD_*`` settings in ``env``; returns Locust's exit code (None where it ran past ``timeout`` s + 60)."""
    with open(log_path, 'wb') as log:
        locust = subprocess.Popen([python, '-m', 'locust', '-f', LOCUSTFILE, '--headless', '-u', str(users),
                                   '-r', str(users), '-H', url, '-t', f'{timeout}s', '--only-summary',
                                   '--loglevel', 'WARNING'], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
        try:
            return locust.wait(timeout + 60)
        except subprocess.TimeoutExpired:
            locust.kill()
            locust.wait()
            return None


def run_load(args, work):
    """The whole load test in the folder ``work``; returns the report (a dict)."""
    phases, clock = {}, time.monotonic()
    folder = args.images
    if folder is None:
        folder = os.path.join(work, 'images')
        names = generate_images(folder)
    else:
        names = list_images(folder)
    reference, maps = reference_maps(args.python, args.config, folder, names, work,
                                     shared_flags(args.server_flags))
    report = {'config': os.path.abspath(args.config), 'requests': args.requests, 'users': args.users,
              'mix': args.mix, 'warmup_requests': args.warmup_requests, 'server_flags': list(args.server_flags),
              'images': {n: [int(m.shape[1]), int(m.shape[0])] for n, m in maps.items()}, 'phases_s': phases}
    phases['reference'], clock = time.monotonic() - clock, time.monotonic()
    if args.compare_infer:
        report['infer'] = infer_throughput(args, folder, names, work)
        phases['compare_infer'], clock = time.monotonic() - clock, time.monotonic()

    port = free_port()
    url = f'http://127.0.0.1:{port}'
    server_log = os.path.join(work, 'server.log')
    with open(server_log, 'wb') as log:
        server = subprocess.Popen([args.python, SERVE, '--config', args.config, '--host', '127.0.0.1',
                                   '--port', str(port), *args.server_flags], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(server, url, args.start_timeout, server_log)
        phases['server_start'], clock = time.monotonic() - clock, time.monotonic()
        report['rss_mib'] = {'after_start': tree_rss_mib(server.pid)}
        mark, results = os.path.join(work, 'warm.mark'), os.path.join(work, 'results.json')
        env = dict(os.environ, LOAD_IMAGES=os.path.abspath(folder), LOAD_REFERENCE=reference,
                   LOAD_REQUESTS=str(args.requests), LOAD_MIX=args.mix, LOAD_RESULTS=results, LOAD_MARK=mark,
                   LOAD_MARK_AFTER=str(args.warmup_requests))
        locust_log = os.path.join(work, 'locust.log')
        sampler = RssSampler(server.pid, mark)
        sampler.start()
        locust_code = run_locust(args.python, url, args.users, args.timeout, env, work, locust_log)
        sampler.stop()
        phases['locust'], clock = time.monotonic() - clock, time.monotonic()
        rss_end = tree_rss_mib(server.pid)
        peak_kib = max(status_kib(p, 'VmHWM') for p in process_tree(server.pid))
    finally:
        exit_code = stop_server(server)
        phases['server_stop'] = time.monotonic() - clock
    report['server_exit_code_on_sigterm'] = exit_code
    report['locust_exit_code'] = locust_code
    if not os.path.exists(results):
        raise LoadTestError(f"Locust wrote no results (exit {locust_code}): {last_line(locust_log)}")
    with open(results) as f:
        outcome = json.load(f)
    latency = outcome.pop('latency_ms')
    report.update(outcome)
    report['latency_ms'] = {'good': percentiles(latency['good']), 'bad': percentiles(latency['bad']),
                            'all': percentiles(latency['good'] + latency['bad'])}
    at_mark = sampler.at_mark
    growth = None if not at_mark else (rss_end - at_mark) / at_mark
    report['rss_mib'].update({'peak': max(sampler.peak, peak_kib / 1024), 'after_warmup': at_mark,
                              'after_run': rss_end, 'growth': growth, 'samples': sampler.samples})
    counts = outcome['counts']
    wall = outcome['wall_s']
    report['images_per_s'] = (counts['ok'] + counts['mismatch']) / wall if wall > 0 else None
    failures = []
    if counts['unexpected']:
        failures.append(f"{counts['unexpected']} unexpected answer(s)")
    if counts['mismatch']:
        failures.append(f"{counts['mismatch']} label map(s) unlike infer.py's")
    if outcome['answered'] < args.requests:
        failures.append(f"only {outcome['answered']} of {args.requests} requests answered")
    if growth is None:
        failures.append(f"no RSS reading after {args.warmup_requests} requests")
    elif growth > RSS_GROWTH_LIMIT:
        failures.append(f"RSS grew {100 * growth:.1f}% after the first {args.warmup_requests} requests "
                        f"(limit {100 * RSS_GROWTH_LIMIT:.0f}%)")
    if exit_code != 0:
        failures.append(f"serve.py exited with {exit_code} on SIGTERM, not 0")
    if locust_code not in (0, 1):
        failures.append(f"Locust exited with {locust_code}: {last_line(locust_log)}")
    report['failures'] = failures
    report['passed'] = not failures
    return report


def _ms(value):
    return '-' if value is None else f"{value:.1f}"


def format_report(report):
    counts, rss, lat = report['counts'], report['rss_mib'], report['latency_ms']
    sizes = sorted({f"{w}x{h}" for w, h in report['images'].values()})
    lines = [f"load test: {report['requests']} requests, {report['users']} users, mix {report['mix']}, "
             f"{len(report['images'])} image(s) ({', '.join(sizes)}), server flags: "
             f"{' '.join(report['server_flags']) or '(none)'}",
             f"  throughput : {report['throughput_rps']:.1f} requests/s ({report['answered']} answered in "
             f"{report['wall_s']:.1f} s); {report['images_per_s']:.1f} images/s segmented"
             if report['throughput_rps'] else "  throughput : -",
             f"  latency ms : good requests p50 {_ms(lat['good']['p50'])}  p95 {_ms(lat['good']['p95'])}  "
             f"p99 {_ms(lat['good']['p99'])}; bad inputs p50 {_ms(lat['bad']['p50'])}  "
             f"p99 {_ms(lat['bad']['p99'])}",
             f"  outcomes   : ok {counts['ok']}, intended 4xx {counts['intended_4xx']}, 503 {counts['busy']}, "
             f"unexpected {counts['unexpected']}, label-map mismatches {counts['mismatch']}",
             f"  server RSS : peak {rss['peak']:.1f} MiB; after start {rss['after_start']:.1f}; after "
             f"{report['warmup_requests']} requests {_ms(rss['after_warmup'])}; after the run "
             f"{rss['after_run']:.1f}" + ('' if rss['growth'] is None else
                                           f" ({100 * rss['growth']:+.1f}%, limit +10%)"),
             f"  SIGTERM    : serve.py exit code {report['server_exit_code_on_sigterm']}",
             "  phases s   : " + ', '.join(f"{k} {v:.1f}" for k, v in report['phases_s'].items())]
    if 'infer' in report:
        infer = report['infer']
        lines.append(f"  infer.py   : {infer['images_per_s']:.1f} images/s single process, batch 1 "
                     f"({infer['images']} images in {infer['seconds']:.1f} s, start-up excluded)")
    for kind, examples in report['examples'].items():
        for example in examples:
            lines.append(f"  {kind}: {example}")
    lines.append('result: PASS' if report['passed'] else 'result: FAIL (' + '; '.join(report['failures']) + ')')
    return '\n'.join(lines)


def main(argv=None):
    try:
        args = parse_args(argv)
        if args.work_dir:
            os.makedirs(args.work_dir, exist_ok=True)
            report = run_load(args, args.work_dir)
        else:
            with tempfile.TemporaryDirectory(prefix='load_test_') as work:
                report = run_load(args, work)
    except (LoadTestError, UserError) as err:  # UserError: a flag refused by the parser
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0 if report['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
