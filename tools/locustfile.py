"""Locust load test of ``deploy/python/serve.py``: a fixed number of requests, a mix of PaddleX-style JSON requests
(``POST /semantic-segmentation``, base64 image), multipart uploads (``POST /predict``) and bad inputs, each good
answer's label map checked against infer.py's for the same image.

Normally started by ``tools/load_test.py``, which computes the reference label maps and reads the results. By hand::

    LOAD_IMAGES=imgs LOAD_REFERENCE=ref.npz LOAD_REQUESTS=2000 LOAD_RESULTS=out.json \\
        locust -f tools/locustfile.py --headless -u 8 -r 8 -H http://127.0.0.1:8866 --only-summary

Environment:

* ``LOAD_IMAGES`` (required): the folder of the images.
* ``LOAD_REFERENCE`` (required): a ``.npz`` of the reference label maps, one uint8 HxW array per image, keyed by the
  image's file name in ``LOAD_IMAGES`` (the images used are the ones it names).
* ``LOAD_REQUESTS``: the number of requests of the whole run, over all users (default 2000); when the last one has
  answered, Locust quits (Locust 2.47 has no ``--iterations``: a shared budget of request tickets does it).
* ``LOAD_MIX``: shares of the request kinds, ``json=70,predict=15,bad=15`` by default. The sequence of kinds and
  images is drawn once from a fixed seed, so a run's mix is exact and repeatable.
* ``LOAD_RESULTS``: where to write the results (JSON: counts by outcome, latencies, mismatches, wall time).
* ``LOAD_MARK`` / ``LOAD_MARK_AFTER``: a file written when that many requests (default 200) have answered, so that
  the wrapper can read the server's memory at that point.
* ``LOAD_TIMEOUT``: seconds one request may take (default 120).

Outcomes: ``ok`` (200 and the label map equal to the reference), ``mismatch`` (200 with another label map, or
a well-formed answer of the wrong shape), ``intended_4xx`` (a bad input answered with its expected 4xx and a PaddleX
error body), ``busy`` (503, the server's back-pressure), ``unexpected`` (anything else: a bad input accepted or given
another status, a good one refused, a broken connection). Locust counts ``ok`` and ``intended_4xx`` as successes,
everything else as failures, and the process exits 1 where anything but ``ok``/``intended_4xx``/``busy`` occurred.
"""
import base64
import io
import json
import os
import sys
import time

import gevent
import gevent.event
import numpy as np
from locust import HttpUser, constant, events, task
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load_mix import BAD_INPUTS, DEFAULT_MIX, LoadError, bad_request, parse_mix, schedule  # noqa: E402

IMAGE_MIME = {'.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.png': 'image/png', '.bmp': 'image/bmp',
              '.tif': 'image/tiff', '.tiff': 'image/tiff', '.webp': 'image/webp'}


def _int_env(name, default, minimum):
    text = os.environ.get(name, '')
    if not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        raise LoadError(f"{name}: must be an integer, got {text!r}") from None
    if value < minimum:
        raise LoadError(f"{name}: must be >= {minimum}, got {value}")
    return value


class Plan:
    """What the run sends and what it expects, read once from the environment (``Plan.load``), and its tally."""

    def __init__(self, folder, reference, requests, mix, mark=None, mark_after=200, results=None, timeout=120):
        self.images = []  # (file name, bytes, base64 text, mime, reference HxW uint8)
        with np.load(reference) as refs:
            names = sorted(refs.files)
            if not names:
                raise LoadError(f"LOAD_REFERENCE: {reference} holds no label maps")
            for name in names:
                path = os.path.join(folder, name)
                try:
                    with open(path, 'rb') as f:
                        data = f.read()
                except OSError as err:
                    raise LoadError(f"LOAD_IMAGES: cannot read {path} ({err.strerror or err}), which "
                                    f"LOAD_REFERENCE names") from None
                mime = IMAGE_MIME.get(os.path.splitext(name)[1].lower(), 'application/octet-stream')
                self.images.append((name, data, base64.b64encode(data).decode('ascii'), mime,
                                    np.asarray(refs[name], dtype=np.uint8)))
        self.requests = requests
        self.order = schedule(requests, mix, len(self.images))
        self.bad = {name: bad_request(name) for name, *_ in BAD_INPUTS}
        self.mark, self.mark_after, self.results, self.timeout = mark, mark_after, results, timeout
        self.issued = self.answered = 0
        self.first_start = self.last_end = None
        self.done = gevent.event.Event()
        self.quitting = False
        self.counts = dict.fromkeys(('ok', 'mismatch', 'intended_4xx', 'busy', 'unexpected'), 0)
        self.by_name = {}
        self.latencies = {'good': [], 'bad': []}  # ms, of every answered request
        self.examples = {'mismatch': [], 'unexpected': []}

    @classmethod
    def load(cls):
        folder, reference = os.environ.get('LOAD_IMAGES'), os.environ.get('LOAD_REFERENCE')
        if not folder:
            raise LoadError("LOAD_IMAGES: set it to the folder of the images")
        if not reference:
            raise LoadError("LOAD_REFERENCE: set it to the .npz of the reference label maps (tools/load_test.py "
                            "writes it with deploy/python/infer.py)")
        if not os.path.isfile(reference):
            raise LoadError(f"LOAD_REFERENCE: {reference} does not exist")
        return cls(folder, reference, _int_env('LOAD_REQUESTS', 2000, 1),
                   parse_mix(os.environ.get('LOAD_MIX') or DEFAULT_MIX), os.environ.get('LOAD_MARK') or None,
                   _int_env('LOAD_MARK_AFTER', 200, 1), os.environ.get('LOAD_RESULTS') or None,
                   _int_env('LOAD_TIMEOUT', 120, 1))

    def ticket(self):
        """The next request of the run (kind, index), or None once all are issued."""
        if self.issued >= self.requests:
            return None
        self.issued += 1
        if self.first_start is None:
            self.first_start = time.perf_counter()
        return self.order[self.issued - 1]

    def record(self, name, outcome, group, latency_ms, detail=None):
        self.counts[outcome] += 1
        self.by_name.setdefault(name, dict.fromkeys(self.counts, 0))[outcome] += 1
        self.latencies[group].append(latency_ms)
        if detail and len(self.examples.get(outcome, ())) < 10:
            self.examples[outcome].append(f"{name}: {detail}")
        self.answered += 1
        self.last_end = time.perf_counter()
        if self.mark and self.answered == self.mark_after:
            with open(self.mark, 'w') as f:
                f.write(f"{self.answered}\n")
        if self.answered == self.requests:
            self.done.set()

    def summary(self):
        wall = (self.last_end - self.first_start) if self.answered else 0.0
        return {'requests': self.requests, 'answered': self.answered, 'wall_s': wall,
                'throughput_rps': self.answered / wall if wall > 0 else None, 'counts': self.counts,
                'by_name': self.by_name, 'latency_ms': self.latencies, 'examples': self.examples}


PLAN = None


@events.init.add_listener
def _on_init(environment, **_):
    global PLAN
    try:
        PLAN = Plan.load()
    except LoadError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


@events.test_stop.add_listener
def _on_test_stop(environment, **_):
    if PLAN is None:
        return
    summary = PLAN.summary()
    counts = summary['counts']
    environment.process_exit_code = 1 if counts['mismatch'] or counts['unexpected'] or \
        PLAN.answered < PLAN.requests else 0
    if PLAN.results:
        with open(PLAN.results, 'w') as f:
            json.dump(summary, f)


def _one_line(text, limit=300):
    text = ' '.join(str(text).split())
    return text if len(text) <= limit else text[:limit] + '...'


def check_label_map(result, reference):
    """Why the ``result`` of a 200 answer differs from the reference HxW label map, or None."""
    if not isinstance(result, dict):
        return f"result is {type(result).__name__}, not an object"
    h, w = reference.shape
    if result.get('size') != [h, w]:
        return f"size {result.get('size')!r}, expected [{h}, {w}]"
    label_map = result.get('labelMap')
    if not isinstance(label_map, list) or len(label_map) != h * w:
        return f"labelMap of {len(label_map) if isinstance(label_map, list) else type(label_map).__name__} " \
               f"values, expected {h * w}"
    got = np.asarray(label_map)
    if got.dtype.kind not in 'iu':
        return f"labelMap holds {got.dtype} values, not integers"
    differ = int(np.count_nonzero(got.reshape(h, w) != reference))
    return f"labelMap differs from infer.py's in {differ} of {h * w} pixels" if differ else None


def check_overlay(result):
    """Why ``result.image`` is neither null nor a base64 JPEG, or None."""
    image = result.get('image')
    if image is None:
        return None
    try:
        data = base64.b64decode(image, validate=True)
    except (ValueError, TypeError):
        return "result.image is not base64"
    return None if data[:3] == b'\xff\xd8\xff' else "result.image is not a JPEG"


def check_png(content, reference):
    """Why the PNG ``content`` of a /predict answer differs from the reference HxW label map, or None."""
    try:
        image = Image.open(io.BytesIO(content))
        image.load()
    except Exception as err:  # noqa: BLE001  (any decoding failure is the finding)
        return f"the answer is not a PNG ({_one_line(err, 100)})"
    if image.mode not in ('P', 'L'):
        return f"PNG mode {image.mode}, expected P (palette)"
    got = np.asarray(image)
    if got.shape != reference.shape:
        return f"PNG of {got.shape[1]}x{got.shape[0]}, expected {reference.shape[1]}x{reference.shape[0]}"
    differ = int(np.count_nonzero(got != reference))
    return f"label map differs from infer.py's in {differ} of {reference.size} pixels" if differ else None


def check_error_body(response, status, expected):
    """Why a bad input's answer is not the intended 4xx with PaddleX's error envelope, or None."""
    if response.status_code != status:
        return f"status {response.status_code}, expected {status} ({_one_line(response.text, 200)})"
    try:
        body = response.json()
    except ValueError:
        return f"status {status} but the body is not JSON ({_one_line(response.text, 200)})"
    if not isinstance(body, dict) or body.get('errorCode') != status or not isinstance(body.get('logId'), str):
        return f"status {status} but the body is not PaddleX's error envelope: {_one_line(body, 200)}"
    message = body.get('errorMsg')
    if not isinstance(message, str) or not message.strip() or '\n' in message:
        return f"errorMsg is not one line of text: {message!r}"
    if message != expected:
        return f"errorMsg {message!r}, expected {expected!r}"
    return None


class SegmentationUser(HttpUser):
    """One closed-loop client: takes the run's next request, sends it, checks the answer, at once again."""

    wait_time = constant(0)

    @task
    def next_request(self):
        plan = PLAN
        ticket = plan.ticket()
        if ticket is None:  # the budget is spent: wait until the others have their answers, then quit
            plan.done.wait()
            if not plan.quitting:
                plan.quitting = True
                gevent.spawn(self.environment.runner.quit)
            gevent.sleep(3600)
            return
        kind, index = ticket
        if kind == 'bad':
            self._bad(plan, *BAD_INPUTS[index])
        else:
            self._good(plan, kind, *plan.images[index])

    def _good(self, plan, kind, name, data, b64, mime, reference):
        if kind == 'json':
            endpoint, label = '/semantic-segmentation', f"json {reference.shape[1]}x{reference.shape[0]}"
            # every 10th request leaves visualize out (the server's default), the rest ask for no overlay
            body = {'image': b64} if plan.issued % 10 == 0 else {'image': b64, 'visualize': False}
            kwargs = {'json': body}
        else:
            endpoint, label = '/predict', f"predict {reference.shape[1]}x{reference.shape[0]}"
            kwargs = {'files': {'file': (name, data, mime)}}
        start = time.perf_counter()
        with self.client.post(endpoint, name=label, catch_response=True, timeout=plan.timeout, **kwargs) as resp:
            latency = 1000 * (time.perf_counter() - start)
            if resp.status_code == 200:
                if kind == 'json':
                    try:
                        body = resp.json()
                    except ValueError:
                        body = None
                    if not isinstance(body, dict) or body.get('errorCode') != 0:
                        problem, outcome = f"200 but not a success envelope: {_one_line(resp.text, 200)}", \
                            'unexpected'
                    else:
                        problem = check_label_map(body.get('result'), reference) or \
                            check_overlay(body['result'])
                        outcome = 'mismatch'
                else:
                    problem, outcome = check_png(resp.content, reference), 'mismatch'
                    if not problem and not resp.headers.get('content-type', '').startswith('image/png'):
                        problem = f"content-type {resp.headers.get('content-type')!r}, expected image/png"
            elif resp.status_code == 503:
                problem, outcome = "503 (queue full)", 'busy'
            else:
                problem, outcome = f"status {resp.status_code or 'none'}: " \
                                   f"{_one_line(resp.text or resp.error, 200)}", 'unexpected'
            if problem:
                resp.failure(f"{name}: {problem}")
                plan.record(label, outcome, 'good', latency, f"{name}: {problem}")
            else:
                resp.success()
                plan.record(label, 'ok', 'good', latency)

    def _bad(self, plan, label, endpoint, status, expected):
        start = time.perf_counter()
        with self.client.post(endpoint, name=label, catch_response=True, timeout=plan.timeout,
                              **plan.bad[label]) as resp:
            latency = 1000 * (time.perf_counter() - start)
            if resp.status_code == 503:
                resp.failure("503 (queue full)")
                plan.record(label, 'busy', 'bad', latency, "503 (queue full)")
                return
            problem = check_error_body(resp, status, expected) if resp.status_code else \
                f"no answer ({_one_line(resp.error, 200)})"
            if problem:
                resp.failure(problem)
                plan.record(label, 'unexpected', 'bad', latency, problem)
            else:
                resp.success()
                plan.record(label, 'intended_4xx', 'bad', latency)
