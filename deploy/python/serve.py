"""Serve an exported segmentation model over HTTP (FastAPI + uvicorn), with the pre- and postprocessing of
``infer.py`` (imported from this folder: one implementation for both)::

    python deploy/python/serve.py --config output/inference_model/deploy.yaml --port 8866

Standalone like infer.py: needs fastapi, uvicorn, python-multipart and what infer.py needs, not paddle_models.
Endpoints (docs/serving.md has the details and a curl example for each):

* ``POST /semantic-segmentation``: PaddleX 3's semantic-segmentation API, field for field. Request JSON
  ``{"image": base64 of an image file (or an http(s) URL with --allow_url), "targetSize": optional int or [w, h],
  "visualize": optional bool}``; response ``{"logId", "errorCode": 0, "errorMsg": "Success", "result":
  {"labelMap": [class ids, row-major], "size": [h, w], "image": base64 JPEG overlay}}`` (``image`` left out with
  ``"visualize": false``, as PaddleX leaves out None fields). ``targetSize`` as PaddleX's SegPredictor reads it: the
  image is resized before the transforms to fit ``[w, h]`` (an int n: ``[n, n]``) keeping its aspect ratio, each
  side rounded up to a multiple of 32; ``-1`` (or ``[-1, -1]``): no resize. The label map is always at the
  image's own size.
* ``POST /predict``: a multipart upload (field ``file``), answered with the pseudo-color PNG label map of the
  image's size (the PNG infer.py writes).
* ``GET /health`` (200 only after the warm-up run), ``GET /metadata``, ``GET /metrics`` (Prometheus text),
  ``GET /docs``, ``GET /`` (the web page in ``static/``) and ``/static/*``.

Errors are HTTP 4xx/5xx with PaddleX's envelope ``{"logId", "errorCode": <status>, "errorMsg": <one line>}``.

Batching: one inference thread owns the predictor (it never runs in two threads at once). Requests wait in a
bounded queue (``--queue_size``; full: 503 with ``Retry-After``); the thread takes the oldest and, up to
``--max_batch_size`` within ``--batch_timeout_ms``, the queued inputs of the same shape, runs them as one batch
(where deploy.yaml's ``input_shape`` fixes the batch, batches hold at most that many) and answers each.

Limits: a body over ``--max_body_mb`` is refused from its Content-Length or, without one, while it streams in
(413); an image whose header announces more than ``--max_pixels`` pixels is refused before it is decoded (413);
URLs are refused unless ``--allow_url`` (then fetched with a size cap and a timeout). The server writes nothing to
disk (uploads stay in memory; Paddle's OpenVINO cache goes to a temporary folder removed at exit, as infer.py's),
except ``--backend auto``'s choice cached beside deploy.yaml, as infer.py does.

SIGTERM or SIGINT: uvicorn's graceful shutdown (in-flight requests finish, queued ones are run), exit code 0.
Errors at start (bad deploy.yaml, bad flag): one line on stderr, exit 2.
"""
import argparse
import asyncio
import base64
import binascii
import collections
import io
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import infer  # noqa: E402  (this folder's runner: config, predictors, image checks, pre/postprocessing)
import numpy as np  # noqa: E402

UserError = infer.UserError
logger = logging.getLogger('serve')

ENDPOINTS = ('/semantic-segmentation', '/predict', '/health', '/metadata', '/metrics')
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
RETRY_AFTER_S = 1
OPTIONS = {  # create_app's options and their defaults (the command line's flags)
    'backend': None, 'device': None, 'cpu_threads': min(4, os.cpu_count() or 1), 'max_batch_size': 8,
    'batch_timeout_ms': 10.0, 'queue_size': 64, 'max_body_mb': 20.0, 'max_pixels': 40_000_000,
    'allow_url': False, 'url_timeout_s': 10.0, 'print_detail': False, 'enable_mkldnn': None,
    'enable_openvino': None, 'use_trt': False, 'precision': 'fp32', 'min_subgraph_size': 3,
}


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and the one-line ``message`` of the error envelope."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status, self.message, self.headers = int(status), str(message), headers


def envelope(status, message):
    """PaddleX's error body (its ``NoResultResponse``)."""
    return {'logId': str(uuid.uuid4()), 'errorCode': int(status), 'errorMsg': str(message)}


class Metrics:
    """Counters and histograms for ``GET /metrics``, written as Prometheus text by hand (no client library)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = collections.Counter()  # (endpoint, status) -> count
        self.latency = {}  # endpoint -> [bucket counts..., sum, count]
        self.batches = [0] * len(BATCH_BUCKETS) + [0.0, 0]

    @staticmethod
    def _observe(row, buckets, value):
        for i, bound in enumerate(buckets):
            if value <= bound:
                row[i] += 1
        row[-2] += value
        row[-1] += 1

    def request(self, endpoint, status, seconds):
        with self.lock:
            self.requests[(endpoint, int(status))] += 1
            row = self.latency.setdefault(endpoint, [0] * len(LATENCY_BUCKETS) + [0.0, 0])
            self._observe(row, LATENCY_BUCKETS, seconds)

    def batch(self, size):
        with self.lock:
            self._observe(self.batches, BATCH_BUCKETS, size)

    def render(self, queue_length, running):
        def histogram(name, labels, buckets, row):
            sep = ',' if labels else ''
            lines = [f'{name}_bucket{{{labels}{sep}le="{b}"}} {row[i]}' for i, b in enumerate(buckets)]
            lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {row[-1]}')
            suffix = f'{{{labels}}}' if labels else ''
            return lines + [f'{name}_sum{suffix} {row[-2]:.6f}', f'{name}_count{suffix} {row[-1]}']

        with self.lock:
            out = ['# HELP serve_requests_total HTTP requests answered, by endpoint and status code.',
                   '# TYPE serve_requests_total counter']
            out += [f'serve_requests_total{{endpoint="{e}",status="{s}"}} {n}'
                    for (e, s), n in sorted(self.requests.items())]
            out += ['# HELP serve_request_duration_seconds Time from request to response, by endpoint.',
                    '# TYPE serve_request_duration_seconds histogram']
            for endpoint, row in sorted(self.latency.items()):
                out += histogram('serve_request_duration_seconds', f'endpoint="{endpoint}"', LATENCY_BUCKETS, row)
            out += ['# HELP serve_batch_size Images per predictor run.', '# TYPE serve_batch_size histogram']
            out += histogram('serve_batch_size', '', BATCH_BUCKETS, self.batches)
        out += ['# HELP serve_queue_length Inputs waiting for the predictor.', '# TYPE serve_queue_length gauge',
                f'serve_queue_length {queue_length}',
                '# HELP serve_running_batch_size Inputs in the predictor run now (0: idle).',
                '# TYPE serve_running_batch_size gauge', f'serve_running_batch_size {running}']
        return '\n'.join(out) + '\n'


class _Job:
    __slots__ = ('chw', 'loop', 'future')

    def __init__(self, chw, loop, future):
        self.chw, self.loop, self.future = chw, loop, future

    def done(self, label, error):
        def settle():
            if self.future.done():  # the client went away (the request's task was cancelled)
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(label)

        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the event loop has closed
            pass


class Batcher:
    """The one thread that owns the predictor: it runs the warm-up, then batches of queued inputs (see the module
    docstring); ``submit`` is called from the event loop."""

    def __init__(self, predictor, cfg, max_batch, timeout_s, queue_size, metrics, warm_up):
        self.predictor, self.cfg, self.metrics, self.warm_up = predictor, cfg, metrics, warm_up
        self.max_batch, self.timeout_s, self.queue_size = int(max_batch), float(timeout_s), int(queue_size)
        self.cond = threading.Condition()
        self.pending = collections.deque()
        self.running = 0
        self.stopping = False
        self.ready = False
        self.failure = None
        self.thread = threading.Thread(target=self._main, name='predictor', daemon=True)

    def start(self):
        self.thread.start()

    def stop(self, timeout=None):
        """Run what is queued, then end the thread."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout)

    @property
    def queue_length(self):
        return len(self.pending)

    def submit(self, chw, loop):
        """Queue ``chw``; returns the future of its [H, W] label map (the network output's size)."""
        future = loop.create_future()
        with self.cond:
            if self.stopping:
                raise RequestError(503, "the server is shutting down", {'Retry-After': str(RETRY_AFTER_S)})
            if len(self.pending) >= self.queue_size:
                raise RequestError(503, f"the server is busy: {len(self.pending)} requests are queued (the most "
                                        f"--queue_size allows); retry later", {'Retry-After': str(RETRY_AFTER_S)})
            self.pending.append(_Job(chw, loop, future))
            self.cond.notify_all()
        return future

    def _main(self):
        try:
            self.warm_up()
            self.ready = True
            logger.info("warm-up run done: ready")
        except Exception as err:  # noqa: BLE001
            self.failure = ' '.join(str(err).split())[:300] or type(err).__name__
            logger.error("the warm-up run failed: %s", self.failure)
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                if self.failure is not None:
                    raise RuntimeError(f"the model failed its warm-up run: {self.failure}")
                output = self.predictor.infer(infer.stack_batch([job.chw for job in batch], self.cfg))
                labels = self.predictor.postprocess(output)
                results = [(np.asarray(labels[i]), None) for i in range(len(batch))]
                self.metrics.batch(len(batch))
            except Exception as err:  # noqa: BLE001  (answered as a 500 to each request of the batch)
                logger.exception("predictor run failed")
                results = [(None, err)] * len(batch)
            with self.cond:
                self.running = 0
            for job, (label, error) in zip(batch, results):
                job.done(label, error)

    def _take(self):
        """The next batch: the oldest queued input and, up to max_batch within the timeout, the queued inputs of
        its shape; None when stopping with nothing queued."""
        with self.cond:
            while not self.pending and not self.stopping:
                self.cond.wait()
            if not self.pending:
                return None
            batch = [self.pending.popleft()]
            shape = batch[0].chw.shape
            deadline = time.monotonic() + self.timeout_s
            while len(batch) < self.max_batch:
                for job in [j for j in self.pending if j.chw.shape == shape][:self.max_batch - len(batch)]:
                    self.pending.remove(job)
                    batch.append(job)
                remaining = deadline - time.monotonic()
                if len(batch) >= self.max_batch or remaining <= 0 or self.stopping:
                    break
                self.cond.wait(remaining)
            self.running = len(batch)
            return batch


def parse_target_size(value):
    """PaddleX's ``targetSize``: None, an int n (= [n, n]) or [w, h] of ints; -1 / [-1, -1]: no resize. Returns
    None or (w, h)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if not (isinstance(value, list) and len(value) == 2 and
            all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise RequestError(422, f"targetSize must be an integer or [width, height] of integers, got "
                                f"{json.dumps(value)[:100]}")
    if value == [-1, -1]:
        return None
    if not all(0 < v <= 100000 for v in value):
        raise RequestError(422, f"targetSize must be -1 or positive (at most 100000), got {json.dumps(value)}")
    return tuple(value)


def resize_for_target(width, height, target):
    """The (w, h) PaddleX's SegPredictor resizes an image of ``width`` x ``height`` to for ``targetSize``
    ``target``: scaled to fit keeping its aspect ratio, each side rounded up to a multiple of 32."""
    scale = min(max(target) / max(width, height), min(target) / min(width, height))
    return tuple(int(math.ceil(round(v * scale) / 32) * 32) or 32 for v in (width, height))


class Service:
    """The model behind the endpoints: deploy.yaml, the predictor and its batcher, the limits, the metrics."""

    def __init__(self, config_path, options):
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise UserError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
        opts = dict(OPTIONS, **options)
        for key in ('cpu_threads', 'max_batch_size', 'queue_size', 'max_pixels', 'min_subgraph_size'):
            value = opts[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"--{key} must be a positive integer, got {value!r}")
        for key in ('max_body_mb', 'url_timeout_s'):
            if not isinstance(opts[key], (int, float)) or isinstance(opts[key], bool) or not opts[key] > 0:
                raise UserError(f"--{key} must be a positive number, got {opts[key]!r}")
        if not isinstance(opts['batch_timeout_ms'], (int, float)) or not opts['batch_timeout_ms'] >= 0:
            raise UserError(f"--batch_timeout_ms must be a number >= 0, got {opts['batch_timeout_ms']!r}")
        if opts['backend'] not in (None, 'auto') + infer.BACKENDS:
            raise UserError(f"--backend must be one of {', '.join(infer.BACKENDS + ('auto',))}, got "
                            f"{opts['backend']!r}")
        if opts['device'] not in (None, 'cpu', 'gpu'):
            raise UserError(f"--device must be cpu or gpu, got {opts['device']!r}")
        self.options = opts
        self.cfg = infer.DeployConfig(config_path)
        self.max_body = int(opts['max_body_mb'] * 1024 * 1024)
        self.max_pixels = opts['max_pixels']
        self.allow_url = bool(opts['allow_url'])
        self.metrics = Metrics()
        args = argparse.Namespace(
            cfg=config_path, backend=opts['backend'], device=opts['device'], cpu_threads=opts['cpu_threads'],
            enable_mkldnn=opts['enable_mkldnn'], enable_openvino=opts['enable_openvino'],
            print_detail=opts['print_detail'], use_trt=opts['use_trt'], precision=opts['precision'],
            min_subgraph_size=opts['min_subgraph_size'], enable_auto_tune=False,
            auto_tuned_shape_file=None, batch_size=1)
        # importing Paddle installs glog's SIGTERM handler: keep the handlers there were before (uvicorn's, or
        # main's), so that SIGTERM stays a graceful shutdown
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            backend = infer.setup_backend(args, self.cfg)
            self.backend, self.predictor = infer.make_predictor(args, self.cfg, backend)
        finally:
            for signum, handler in handlers.items():
                if handler is not None:
                    signal.signal(signum, handler)
        self.device = args.device
        self.transforms = self.predictor.transforms
        self.palette = infer.result_palette(self.cfg)
        self.max_batch = self.cfg.fixed_batch or opts['max_batch_size']
        if self.cfg.fixed_batch and self.cfg.fixed_batch != opts['max_batch_size']:
            logger.info("the export's batch size is fixed at %d (deploy.yaml input_shape): batches of up to %d, "
                        "not --max_batch_size %d", self.cfg.fixed_batch, self.cfg.fixed_batch,
                        opts['max_batch_size'])
        self.batcher = Batcher(self.predictor, self.cfg, self.max_batch, opts['batch_timeout_ms'] / 1000.0,
                               opts['queue_size'], self.metrics, self._warm_up)

    def _warm_up(self):
        import cv2

        h, w = self.cfg.fixed_h or 64, self.cfg.fixed_w or 64
        png = cv2.imencode('.png', np.full((h, w, 3), 128, np.uint8))[1].tobytes()
        chw, _ = infer.prepare_image(png, self.transforms, self.cfg, source='the warm-up image')
        self.predictor.postprocess(self.predictor.infer(infer.stack_batch([chw], self.cfg)))

    def metadata(self):
        shape = self.cfg.deploy.get('input_shape')
        shape = [d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None
                 for d in (shape if isinstance(shape, list) and len(shape) == 4 else [None] * 4)]
        count = len(self.cfg.class_names or self.cfg.palette or [])
        classes = [{'id': i, 'name': self.cfg.class_name(i), 'color': list(self.palette[3 * i:3 * i + 3])}
                   for i in range(count)]
        name = self.cfg.deploy.get('model_name')
        return {'modelName': name if isinstance(name, str) and name else os.path.basename(self.cfg.dir),
                'backend': self.backend, 'inputShape': shape, 'maxBatchSize': self.max_batch, 'classes': classes}

    # -- the request path: bytes -> label map of the image's size ------------------------------------------------

    def _prepare(self, data, target, source):
        """``infer.prepare_image`` with the server's limits; ``target``: PaddleX's targetSize (w, h) or None."""
        if not data:
            raise RequestError(400, f"{source} is empty")
        if target is not None:
            size = infer.image_size(data)
            ok = size is not None and 0 < size[0] * size[1] <= self.max_pixels
            target = resize_for_target(size[0], size[1], target) if ok else None
        try:
            return infer.prepare_image(data, self.transforms, self.cfg, source=source, target_size=target,
                                       max_pixels=self.max_pixels)
        except infer.ImageError as err:
            if err.kind == 'unknown':
                raise RequestError(400, f"{source} is {err}") from None
            if err.kind == 'undecodable':
                raise RequestError(400, f"{source} is not an image OpenCV decodes") from None
            if err.kind == 'too_large':
                raise RequestError(413, f"{source}: {err} (--max_pixels)") from None
            raise RequestError(400, f"{source}: {err}") from None

    async def segment(self, data, target=None, source='the image'):
        """The [H, W] label map of the image file ``data`` at its own size, and the decoded image's size."""
        from starlette.concurrency import run_in_threadpool

        chw, info = await run_in_threadpool(self._prepare, data, target, source)
        future = self.batcher.submit(chw, asyncio.get_running_loop())
        label = await future
        return await run_in_threadpool(infer.reverse_transform, label, info)

    def png(self, label):
        """The label map's pseudo-color PNG (infer.py's), as bytes."""
        out = io.BytesIO()
        infer.pseudo_color_image(label, self.palette).save(out, format='PNG')
        return out.getvalue()

    def overlay_jpeg(self, data, label):
        """The image blended half and half with its label map's class colours (infer.py's ``color_overlay``), as a
        JPEG (PaddleX's ``image``)."""
        import cv2

        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        overlay = infer.color_overlay(image, label, self.palette, alpha=0.5)
        return cv2.imencode('.jpg', overlay, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()

    def fetch(self, url):
        """The bytes at an http(s) ``url`` (--allow_url): at most the body limit, within --url_timeout_s in all,
        redirects followed to http(s) URLs only, no proxy."""
        import urllib.error
        import urllib.request

        class HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, req, fp, code, msg, headers, newurl):
                if not newurl.lower().startswith(('http://', 'https://')):
                    raise urllib.error.URLError(f"redirected to {newurl}, not an http(s) URL")
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        timeout = self.options['url_timeout_s']
        deadline = time.monotonic() + timeout
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), HttpOnlyRedirects)
        try:
            with opener.open(urllib.request.Request(url, headers={'User-Agent': 'paddle-models-serve'}),
                             timeout=timeout) as response:
                length = response.headers.get('Content-Length')
                if length is not None and length.isdigit() and int(length) > self.max_body:
                    raise RequestError(413, f"image URL {url}: {int(length)} bytes, more than the "
                                            f"{self.max_body} allowed (--max_body_mb)")
                chunks, total = [], 0
                while True:
                    chunk = response.read(65536)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > self.max_body:
                        raise RequestError(413, f"image URL {url}: more than the {self.max_body} bytes allowed "
                                                f"(--max_body_mb)")
                    if time.monotonic() > deadline:
                        raise RequestError(400, f"cannot fetch image URL {url}: not complete within {timeout:g} s "
                                                f"(--url_timeout_s)")
                    chunks.append(chunk)
                return b''.join(chunks)
        except urllib.error.HTTPError as err:
            raise RequestError(400, f"cannot fetch image URL {url}: HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, 'reason', None) or err
            raise RequestError(400, f"cannot fetch image URL {url}: {' '.join(str(reason).split())}") from None


class _BodyLimit:
    """ASGI middleware: refuses a body over the limit from its Content-Length, or while it streams in (the
    endpoint's read stops at the limit), with 413 and the error envelope; times and counts the API requests."""

    def __init__(self, app, service):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path = scope.get('path', '')
        state = {'status': 500, 'started': False}

        async def send_status(message):
            if message['type'] == 'http.response.start':
                state['status'], state['started'] = message['status'], True
            await send(message)

        limit = self.service.max_body
        length = dict(scope.get('headers') or []).get(b'content-length')
        try:
            if length is not None and length.strip().isdigit() and int(length) > limit:
                return await self._refuse(send_status, f"the request body is {int(length)} bytes, more than the "
                                                       f"{limit} allowed (--max_body_mb)")
            received = 0

            async def limited_receive():
                nonlocal received
                message = await receive()
                if message['type'] == 'http.request':
                    received += len(message.get('body', b''))
                    if received > limit:
                        raise _TooLarge(f"the request body is more than the {limit} bytes allowed (--max_body_mb)")
                return message

            from starlette.requests import ClientDisconnect

            try:
                await self.app(scope, limited_receive, send_status)
            except _TooLarge as err:
                if not state['started']:
                    await self._refuse(send_status, str(err))
            except ClientDisconnect:  # the client left before sending the whole body: no one to answer, no error
                state['status'] = 499  # nginx's "client closed request", for /metrics
                logger.info("%s: the client disconnected before sending the whole request", path)
        finally:
            if path in ENDPOINTS:
                self.service.metrics.request(path, state['status'], time.perf_counter() - start)

    @staticmethod
    async def _refuse(send, message):
        body = json.dumps(envelope(413, message)).encode()
        await send({'type': 'http.response.start', 'status': 413,
                    'headers': [(b'content-type', b'application/json'), (b'content-length', str(len(body)).encode()),
                                (b'connection', b'close')]})
        await send({'type': 'http.response.body', 'body': body})


class _TooLarge(Exception):
    pass


def _one_line(errors):
    """FastAPI's validation errors as one line: ``body.image: Field required``."""
    parts = []
    for err in errors:
        where = '.'.join(str(p) for p in err.get('loc', ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get('msg', 'invalid')))
    return '; '.join(parts) or 'invalid request'


def _multipart_file(body, content_type):
    """The content of the part named ``file`` of a multipart/form-data ``body``, parsed in memory (Starlette's
    form parser would spool large files to disk)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, params = parse_options_header(content_type)
    if kind != b'multipart/form-data' or not params.get(b'boundary'):
        raise RequestError(400, "expected a multipart/form-data upload with the image in a field named 'file'")
    parts, current = [], {}

    def on_part_begin():
        current.clear()
        current.update(headers={}, field=b'', value=b'', data=[])

    def on_header_field(data, start, end):
        current['field'] += data[start:end]

    def on_header_value(data, start, end):
        current['value'] += data[start:end]

    def on_header_end():
        current['headers'][current['field'].lower()] = current['value']
        current['field'], current['value'] = b'', b''

    def on_part_data(data, start, end):
        current['data'].append(data[start:end])

    def on_part_end():
        _, disposition = parse_options_header(current['headers'].get(b'content-disposition', b''))
        parts.append((disposition.get(b'name', b'').decode('latin-1'), b''.join(current['data'])))

    parser = MultipartParser(params[b'boundary'], {
        'on_part_begin': on_part_begin, 'on_header_field': on_header_field, 'on_header_value': on_header_value,
        'on_header_end': on_header_end, 'on_part_data': on_part_data, 'on_part_end': on_part_end})
    try:
        parser.write(body)
        parser.finalize()
    except Exception as err:  # noqa: BLE001  (python-multipart's MultipartParseError and the like)
        raise RequestError(400, f"malformed multipart/form-data body: {' '.join(str(err).split())[:200]}") \
            from None
    for name, data in parts:
        if name == 'file':
            return data
    names = ', '.join(repr(n) for n, _ in parts) or 'none'
    raise RequestError(400, f"the multipart upload has no field named 'file' (fields: {names})")


def create_app(config_path, **options):
    """The FastAPI app serving the export ``config_path`` (deploy.yaml); ``options`` as the command line's flags
    (``OPTIONS``: max_batch_size, batch_timeout_ms, queue_size, max_body_mb, max_pixels, allow_url, backend,
    device, cpu_threads, ...). The predictor is created here; its warm-up runs when the app starts (lifespan), in
    the inference thread, and ``GET /health`` answers 200 once it is done. ``app.state.service`` is the
    :class:`Service`.

    Raises:
        UserError: A bad deploy.yaml, model file or option (one line).
    """
    import contextlib

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel
    from starlette.exceptions import HTTPException

    service = Service(config_path, options)
    static = os.path.join(HERE, 'static')

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.batcher.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, service.batcher.stop)

    app = FastAPI(title='paddle_models segmentation server', lifespan=lifespan,
                  description='Semantic segmentation with an exported model (PaddleX-compatible API).')
    app.state.service = service

    @app.exception_handler(RequestError)
    async def _request_error(request, exc):
        return JSONResponse(envelope(exc.status, exc.message), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc):
        return JSONResponse(envelope(exc.status_code, exc.detail), status_code=exc.status_code,
                            headers=getattr(exc, 'headers', None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        return JSONResponse(envelope(422, _one_line(exc.errors())), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request, exc):
        logger.error("unhandled error on %s: %s", request.url.path, ' '.join(str(exc).split())[:300])
        return JSONResponse(envelope(500, 'Internal server error'), status_code=500)

    class InferRequest(BaseModel):  # for the docs; the endpoint checks the body itself (one-line errors)
        image: str
        targetSize: int | list[int] | None = None
        visualize: bool | None = None

    class InferResult(BaseModel):
        labelMap: list[int]
        size: list[int]
        image: str | None = None

    class InferResponse(BaseModel):
        logId: str
        errorCode: int = 0
        errorMsg: str = 'Success'
        result: InferResult

    class ErrorResponse(BaseModel):
        logId: str
        errorCode: int
        errorMsg: str

    errors = {code: {'model': ErrorResponse} for code in (400, 413, 422, 500, 503)}

    @app.post('/semantic-segmentation', operation_id='infer', response_model=InferResponse, responses=errors,
              openapi_extra={'requestBody': {'required': True, 'content': {
                  'application/json': {'schema': InferRequest.model_json_schema()}}}})
    async def semantic_segmentation(request: Request):
        """PaddleX 3's semantic-segmentation endpoint: base64 image (or URL with --allow_url) in, label map out."""
        body = await request.body()
        if not body:
            raise RequestError(400, "the request body is empty; expected JSON {\"image\": <base64 image>}")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise RequestError(422, f"the request body is not valid JSON ({' '.join(str(err).split())[:150]})") \
                from None
        if not isinstance(payload, dict):
            raise RequestError(422, f"the request body must be a JSON object with an 'image' field, got "
                                    f"{type(payload).__name__}")
        image = payload.get('image')
        if image is None:
            raise RequestError(422, "the request has no 'image' field (base64 of an image file)")
        if not isinstance(image, str):
            raise RequestError(422, f"'image' must be a string (base64 of an image file), got "
                                    f"{type(image).__name__}")
        target = parse_target_size(payload.get('targetSize'))
        visualize = payload.get('visualize')
        if visualize is not None and not isinstance(visualize, bool):
            raise RequestError(422, f"'visualize' must be true, false or null, got {json.dumps(visualize)[:50]}")
        if image.startswith(('http://', 'https://')):
            if not service.allow_url:
                raise RequestError(400, "'image' is a URL, which this server does not fetch (start it with "
                                        "--allow_url); send the image as base64")
            data = await asyncio.get_running_loop().run_in_executor(None, service.fetch, image)
            source = f"the image at {image}"
        else:
            text = image.split(',', 1)[1] if image.startswith('data:') and ',' in image else image
            try:
                data = base64.b64decode(''.join(text.split()), validate=True)
            except (binascii.Error, ValueError) as err:
                raise RequestError(400, f"'image' is not valid base64 ({err})") from None
            source = "'image'"
        label = await service.segment(data, target, source)
        result = {'labelMap': label.astype(np.int64).ravel().tolist(), 'size': [int(label.shape[0]),
                                                                                 int(label.shape[1])]}
        if visualize is not False:
            result['image'] = base64.b64encode(service.overlay_jpeg(data, label)).decode('ascii')
        return JSONResponse({'logId': str(uuid.uuid4()), 'errorCode': 0, 'errorMsg': 'Success',
                             'result': result})

    png_answer = {'content': {'image/png': {}}, 'description': 'The pseudo-color PNG label map.'}

    @app.post('/predict', responses={**errors, 200: png_answer},
              response_class=Response,
              openapi_extra={'requestBody': {'required': True, 'content': {'multipart/form-data': {'schema': {
                  'type': 'object', 'required': ['file'],
                  'properties': {'file': {'type': 'string', 'format': 'binary'}}}}}}})
    async def predict(request: Request):
        """A multipart upload (field ``file``) in, the pseudo-color PNG label map (pixel = class id) out."""
        body = await request.body()
        if not body:
            raise RequestError(400, "the request body is empty; expected a multipart/form-data upload with the "
                                    "image in a field named 'file'")
        data = _multipart_file(body, request.headers.get('content-type', ''))
        label = await service.segment(data, None, "the uploaded file")
        return Response(service.png(label), media_type='image/png')

    @app.get('/health')
    async def health():
        """200 once the warm-up run is done, 503 before (or where it failed)."""
        if service.batcher.ready:
            return {'status': 'ok'}
        if service.batcher.failure:
            raise RequestError(503, f"the model failed its warm-up run: {service.batcher.failure}")
        raise RequestError(503, "warming up", {'Retry-After': str(RETRY_AFTER_S)})

    @app.get('/metadata')
    async def metadata():
        """Model name, backend, input shape ([N, C, H, W], null where free), batch size, classes."""
        return service.metadata()

    @app.get('/metrics', response_class=Response)
    async def metrics():
        """Prometheus text: requests by endpoint and status, latency and batch-size histograms, queue length."""
        text = service.metrics.render(service.batcher.queue_length, service.batcher.running)
        return Response(text, media_type='text/plain; version=0.0.4; charset=utf-8')

    @app.get('/', include_in_schema=False)
    async def index():
        return FileResponse(os.path.join(static, 'index.html'))

    app.mount('/static', StaticFiles(directory=static), name='static')
    app.add_middleware(_BodyLimit, service=service)
    return app


def build_parser():
    parser = infer.ArgumentParser(description='Serve an exported segmentation model over HTTP (PaddleX-compatible '
                                              'API, a web page, dynamic batching).')
    parser.add_argument('--config', required=True, help='deploy.yaml written by the export.')
    parser.add_argument('--host', default='127.0.0.1', help='Address to listen on. Default: 127.0.0.1')
    parser.add_argument('--port', type=int, default=8866, help='Port. Default: 8866')
    parser.add_argument('--workers', type=infer.positive_int, default=1,
                        help='Server processes, each with its own predictor. Default: 1')
    parser.add_argument('--max_batch_size', type=infer.positive_int, default=OPTIONS['max_batch_size'],
                        help='Most images per predictor run. Default: 8')
    parser.add_argument('--batch_timeout_ms', type=_non_negative, default=OPTIONS['batch_timeout_ms'],
                        help='How long a batch waits for more inputs. Default: 10')
    parser.add_argument('--queue_size', type=infer.positive_int, default=OPTIONS['queue_size'],
                        help='Most inputs waiting for the predictor; more get 503. Default: 64')
    parser.add_argument('--max_body_mb', type=_positive_float, default=OPTIONS['max_body_mb'],
                        help='Largest request body (and fetched URL) in MiB. Default: 20')
    parser.add_argument('--max_pixels', type=infer.positive_int, default=OPTIONS['max_pixels'],
                        help='Largest image, width x height, read from its header. Default: 40000000')
    parser.add_argument('--allow_url', action='store_true',
                        help="Fetch 'image' fields that are http(s) URLs. Default: off")
    parser.add_argument('--url_timeout_s', type=_positive_float, default=OPTIONS['url_timeout_s'],
                        help='Timeout of a URL fetch in seconds. Default: 10')
    parser.add_argument('--backend', choices=list(infer.BACKENDS) + ['auto'], default=None,
                        help="As infer.py's --backend. Default: deploy.yaml's backend.")
    parser.add_argument('--device', choices=['cpu', 'gpu'], default=None,
                        help='Default: gpu where available, else cpu.')
    parser.add_argument('--cpu_threads', type=infer.positive_int, default=OPTIONS['cpu_threads'],
                        help='CPU math threads of the predictor. Default: min(4, CPU count)')
    parser.add_argument('--enable_mkldnn', type=infer.str2bool, nargs='?', const=True, default=None,
                        help="As infer.py's. Default: on when deploy.yaml records a passed oneDNN check.")
    parser.add_argument('--enable_openvino', type=infer.str2bool, nargs='?', const=True, default=None,
                        help="As infer.py's (Paddle Inference's OpenVINO engine).")
    parser.add_argument('--print_detail', type=infer.str2bool, nargs='?', const=True, default=False,
                        help="Show Paddle Inference's GLOG output. Default: False")
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _options(args):
    return {key: getattr(args, key) for key in OPTIONS if hasattr(args, key)}


def app_from_env():
    """The app for uvicorn's worker processes (--workers N): config and options from the environment."""
    infer.log_to_stderr('serve', 'infer')
    spec = json.loads(os.environ['PADDLE_MODELS_SERVE'])
    return create_app(spec['config'], **spec['options'])


def run(argv=None):
    """Start the server from command-line arguments and serve until SIGTERM/SIGINT (graceful: in-flight
    requests finish); returns 0. Used by ``main`` and ``paddle_models.serve``.

    Raises:
        UserError: A bad flag, deploy.yaml or model file, or a port it cannot listen on (one line).
    """
    args = parse_args(argv)
    infer.log_to_stderr('serve', 'infer')
    import uvicorn

    if args.workers > 1:
        infer.DeployConfig(args.config)  # a bad deploy.yaml: one line here, not once per worker
        os.environ['PADDLE_MODELS_SERVE'] = json.dumps({'config': os.path.abspath(args.config),
                                                        'options': _options(args)})
        app, kwargs = 'serve:app_from_env', {'factory': True, 'workers': args.workers, 'app_dir': HERE}
    else:
        app, kwargs = create_app(args.config, **_options(args)), {}
    signals, previous = [], {}
    if threading.current_thread() is threading.main_thread():
        # uvicorn handles SIGTERM/SIGINT while it runs (graceful shutdown), then raises the signal again with the
        # handlers it found: these note it, so that the process ends with 0 rather than being killed by it
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda s, f: signals.append(s))
    logger.info("serving %s on http://%s:%d", args.config, args.host, args.port)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level='warning', timeout_graceful_shutdown=30,
                    **kwargs)
    except SystemExit as err:  # uvicorn exits 1 where it cannot listen (its own log line says why)
        if err.code not in (0, None):
            raise UserError(f"cannot serve on {args.host}:{args.port} (uvicorn's ERROR line above says why)") from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    if signals:
        logger.info("stopped by %s", signal.Signals(signals[0]).name)
    return 0


def main(argv=None):
    """The command line: ``run``, with a start error as one line on stderr and exit code 2."""
    try:
        return run(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == '__main__':
    sys.exit(main())
