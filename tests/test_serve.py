"""The HTTP server deploy/python/serve.py: PaddleX-compatible answers equal to infer.py's, the other endpoints,
bad inputs (exact status and message, and the server keeps serving), dynamic batching, back-pressure, nothing
written to disk, SIGTERM, start errors, and pm.serve.

One tiny HarDNet export and one serve.py subprocess are shared by the module; batching, the full queue, URLs and
the fixed-batch export run in an in-process app (httpx's ASGI transport) whose predictor a test can hold back, so
that the batches formed are deterministic.
"""
import asyncio
import base64
import functools
import http.server
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

try:
    import httpx
except ImportError:  # the Paddle 2.6 smoke environment, which collects this module but runs none of it
    httpx = None

from serving_helpers import CLASS_NAMES, INFER, PALETTE, REPO, SERVE, Server, make_tiny_export

sys.path.insert(0, os.path.join(REPO, 'deploy', 'python'))
import serve  # noqa: E402  (deploy/python/serve.py, for the in-process app)

MAX_BODY_MB = 1
MAX_PIXELS = 1_000_000
W, H = 64, 48  # a non-square test image: width 64, height 48


def _image(seed, w=W, h=H):
    """A smooth random colour image (so that the tiny model predicts several classes)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@pytest.fixture(scope='module')
def export(tmp_path_factory):
    return make_tiny_export(tmp_path_factory.mktemp('serve_export'))


@pytest.fixture(scope='module')
def images(tmp_path_factory, export):
    """Test images and infer.py's label maps for them (one infer.py run): {name: (file bytes, label map)}.
    ``target32`` is the PNG image resized as targetSize 32 resizes it (to 32x32) for the server."""
    folder = tmp_path_factory.mktemp('serve_images')
    files = {}
    for name, seed in (('a', 1), ('b', 2), ('c', 3)):
        cv2.imwrite(str(folder / f'{name}.png'), _image(seed))
    cv2.imwrite(str(folder / 'j.jpg'), _image(4))
    w, h = serve.resize_for_target(W, H, (32, 32))
    assert (w, h) == (32, 32)  # scale 0.5 -> 32x24, rounded up to multiples of 32
    cv2.imwrite(str(folder / 'target32.png'), cv2.resize(cv2.imread(str(folder / 'a.png')), (w, h),
                                                          interpolation=cv2.INTER_LINEAR))
    out = tmp_path_factory.mktemp('serve_infer_out')
    proc = subprocess.run([sys.executable, INFER, '--config', export, '--image_path', str(folder), '--save_dir',
                           str(out), '--print_detail', 'False', '--cpu_threads', '1'],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for path in sorted(folder.iterdir()):
        label = np.array(Image.open(out / (path.stem + '.png')))
        files[path.stem] = (path.read_bytes(), label)
    assert len(np.unique(files['a'][1])) > 1  # a non-trivial prediction
    files['infer_png'] = ((out / 'a.png').read_bytes(), None)
    return files


@pytest.fixture(scope='module')
def cwd(tmp_path_factory):
    return tmp_path_factory.mktemp('serve_cwd')


@pytest.fixture(scope='module')
def server(export, cwd):
    listing = sorted(os.listdir(os.path.dirname(export)))
    with Server(export, '--max_body_mb', MAX_BODY_MB, '--max_pixels', MAX_PIXELS, cwd=str(cwd)) as srv:
        srv.export_listing = listing
        yield srv


def _b64(data):
    return base64.b64encode(data).decode('ascii')


def _post_json(server, payload, **kwargs):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return httpx.post(server.url + '/semantic-segmentation', content=body,
                      headers={'Content-Type': 'application/json'}, timeout=60, **kwargs)


def _label_map(response):
    assert response.status_code == 200, response.text
    body = response.json()
    assert body['errorCode'] == 0 and body['errorMsg'] == 'Success'
    uuid.UUID(body['logId'])
    h, w = body['result']['size']
    return np.array(body['result']['labelMap'], np.int64).reshape(h, w)


def _assert_error(response, status, message=None, startswith=None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {'logId', 'errorCode', 'errorMsg'} and body['errorCode'] == status
    uuid.UUID(body['logId'])
    assert '\n' not in body['errorMsg']
    if message is not None:
        assert body['errorMsg'] == message
    if startswith is not None:
        assert body['errorMsg'].startswith(startswith), body['errorMsg']
    return body['errorMsg']


# -- the PaddleX API and the other endpoints -----------------------------------------------------------------------

@pytest.mark.parametrize('name', ['a', 'j'])
def test_paddlex_request_matches_infer(server, images, name):
    data, expected = images[name]
    response = _post_json(server, {'image': _b64(data), 'visualize': False})
    label = _label_map(response)
    assert response.json()['result']['size'] == [H, W]  # [h, w], as PaddleX
    assert 'image' not in response.json()['result']  # PaddleX leaves out a None image
    np.testing.assert_array_equal(label, expected)


def test_visualize_returns_a_jpeg_overlay(server, images):
    data, expected = images['a']
    result = _post_json(server, {'image': _b64(data)}).json()['result']  # visualize defaults to on, as PaddleX
    np.testing.assert_array_equal(np.array(result['labelMap']).reshape(H, W), expected)
    jpeg = base64.b64decode(result['image'])
    assert jpeg[:3] == b'\xff\xd8\xff'
    overlay = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == (H, W, 3)
    # half image, half class colour (up to JPEG's loss)
    colours = np.array(PALETTE)[expected][..., ::-1]
    blend = 0.5 * cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) + 0.5 * colours
    assert np.abs(overlay.astype(np.float64) - blend).mean() < 8


def test_target_size_as_paddlex(server, images):
    """targetSize 32: the image is resized to 32x32 (PaddleX's keep-ratio fit, sides rounded up to 32) before the
    transforms and the prediction mapped back to 48x64; [-1, -1] and -1 mean no resize."""
    import infer

    data, plain = images['a']
    expected = infer.nearest_resize(images['target32'][1], (H, W))
    for target in (32, [32, 32]):
        response = _post_json(server, {'image': _b64(data), 'targetSize': target, 'visualize': False})
        assert response.json()['result']['size'] == [H, W]
        np.testing.assert_array_equal(_label_map(response), expected)
    for target in (-1, [-1, -1]):
        response = _post_json(server, {'image': _b64(data), 'targetSize': target, 'visualize': False})
        np.testing.assert_array_equal(_label_map(response), plain)


def test_predict_png_equals_infer(server, images):
    data, expected = images['a']
    response = httpx.post(server.url + '/predict', files={'file': ('a.png', data, 'image/png')}, timeout=60)
    assert response.status_code == 200 and response.headers['content-type'] == 'image/png'
    png = Image.open(io.BytesIO(response.content))
    reference = Image.open(io.BytesIO(images['infer_png'][0]))
    assert png.mode == 'P' and png.size == (W, H)
    np.testing.assert_array_equal(np.array(png), expected)
    assert png.getpalette() == reference.getpalette()


def test_health_metadata_docs(server, export):
    response = httpx.get(server.url + '/health', timeout=60)
    assert response.status_code == 200 and response.json() == {'status': 'ok'}
    meta = httpx.get(server.url + '/metadata', timeout=60).json()
    assert meta['modelName'] == 'inference_model' and meta['backend'] == 'paddle_inference'
    assert meta['inputShape'] == [None, 3, None, None] and meta['maxBatchSize'] == 8
    deploy = yaml.safe_load(open(export))['Deploy']
    assert meta['classes'] == [{'id': i, 'name': n, 'color': c}
                               for i, (n, c) in enumerate(zip(deploy['class_names'], deploy['palette']))]
    assert [c['name'] for c in meta['classes']] == CLASS_NAMES[:5]
    docs = httpx.get(server.url + '/docs', timeout=60)
    assert docs.status_code == 200 and 'swagger' in docs.text.lower()
    schema = httpx.get(server.url + '/openapi.json', timeout=60).json()
    assert {'/semantic-segmentation', '/predict', '/health', '/metadata', '/metrics'} <= set(schema['paths'])
    index = httpx.get(server.url + '/', timeout=60)
    assert index.status_code == 200 and 'text/html' in index.headers['content-type']
    assert httpx.get(server.url + '/static/index.html', timeout=60).status_code == 200
    _assert_error(httpx.get(server.url + '/no-such-endpoint', timeout=60), 404, 'Not Found')


# -- bad inputs: a 4xx naming the problem, then a good request still works ----------------------------------------

def _bomb_png(width=30000, height=30000):
    """A complete, tiny PNG whose IHDR announces ``width`` x ``height`` (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 1000)) + \
        chunk(b'IEND', b'')


def _bomb_jpeg():
    """A small complete JPEG whose start-of-frame marker announces 30000 x 30000."""
    data = bytearray(cv2.imencode('.jpg', np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    sof = data.find(b'\xff\xc0')
    data[sof + 5:sof + 9] = (30000).to_bytes(2, 'big') * 2
    return bytes(data)


@pytest.mark.parametrize('ext', ['.png', '.jpg', '.bmp', '.webp', '.tiff'])
def test_image_size_from_the_header(ext):
    """infer.image_size reads (width, height) from the header alone; None for bytes of no image format."""
    import infer

    data = cv2.imencode(ext, _image(0, 37, 21))[1].tobytes()
    assert infer.image_size(data) == (37, 21)
    assert infer.image_size(b'hello, this is not an image') is None


def _bomb_jpeg_with_junk():
    """``_bomb_jpeg`` with two stray bytes before its frame header (libjpeg skips them, with a warning)."""
    data = _bomb_jpeg()
    sof = data.find(b'\xff\xc0')
    return data[:sof] + b'\0\0' + data[sof:]


def _gif():
    out = io.BytesIO()
    Image.new('RGB', (5, 4)).save(out, format='GIF')  # Pillow reads it; OpenCV 4.6 has no GIF decoder
    return out.getvalue()


BOMB = "the image is 30000x30000 (width x height) = 900000000 pixels, more than the 1000000 allowed (--max_pixels)"
BAD_JSON = [
    ('empty body', b'', 400, "the request body is empty; expected JSON {\"image\": <base64 image>}"),
    ('not JSON', b'{"image": ', 422, None),
    ('not an object', b'[1, 2]', 422, "the request body must be a JSON object with an 'image' field, got list"),
    ('no image', {'img': 'x'}, 422, "the request has no 'image' field (base64 of an image file)"),
    ('image not a string', {'image': 3}, 422, "'image' must be a string (base64 of an image file), got int"),
    ('bad base64', {'image': 'abc$'}, 400, None),
    ('empty image', {'image': ''}, 400, "'image' is empty"),
    ('not an image', {'image': _b64(b'hello, this is not an image')}, 400,
     "'image' is not an image of a format whose header gives its size (PNG, JPEG, BMP, WebP, TIFF, ...)"),
    ('png bomb', {'image': _b64(_bomb_png())}, 413, f"'image': {BOMB}"),
    ('jpeg bomb', {'image': _b64(_bomb_jpeg())}, 413, f"'image': {BOMB}"),
    ('jpeg bomb with junk', {'image': _b64(_bomb_jpeg_with_junk())}, 413, f"'image': {BOMB}"),
    ('gif', {'image': _b64(_gif())}, 400, "'image' is not an image OpenCV decodes"),
    ('targetSize string', {'image': 'x', 'targetSize': 'big'}, 422,
     'targetSize must be an integer or [width, height] of integers, got "big"'),
    ('targetSize three', {'image': 'x', 'targetSize': [1, 2, 3]}, 422,
     'targetSize must be an integer or [width, height] of integers, got [1, 2, 3]'),
    ('targetSize zero', {'image': 'x', 'targetSize': [0, 32]}, 422,
     'targetSize must be -1 or positive (at most 100000), got [0, 32]'),
    ('visualize', {'image': 'x', 'visualize': 'yes'}, 422, "'visualize' must be true, false or null, got \"yes\""),
    ('url off', {'image': 'http://127.0.0.1:1/a.png'}, 400,
     "'image' is a URL, which this server does not fetch (start it with --allow_url); send the image as base64"),
]


@pytest.mark.parametrize('case, payload, status, message', BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_bad_json_requests(server, images, case, payload, status, message):
    message = _assert_error(_post_json(server, payload), status, message)
    if case == 'not JSON':
        assert message.startswith('the request body is not valid JSON (')
    if case == 'bad base64':
        assert message.startswith("'image' is not valid base64 (")
    np.testing.assert_array_equal(_label_map(_post_json(server, {'image': _b64(images['a'][0])})), images['a'][1])


def test_truncated_images(server, images):
    import infer

    for name, suffix in (('a', 'PNG'), ('j', 'JPEG')):
        data = images[name][0][:len(images[name][0]) // 2]
        problem = infer.incomplete_image(data)
        assert problem.startswith(f'truncated {suffix} file')
        _assert_error(_post_json(server, {'image': _b64(data)}), 400, f"'image': {problem}")
        response = httpx.post(server.url + '/predict', files={'file': ('x', data)}, timeout=60)
        _assert_error(response, 400, f"the uploaded file: {problem}")
    np.testing.assert_array_equal(_label_map(_post_json(server, {'image': _b64(images['a'][0])})), images['a'][1])


def test_bad_uploads(server, images):
    url = server.url + '/predict'
    _assert_error(httpx.post(url, files={'file': ('x.txt', b'not an image')}, timeout=60), 400,
                  "the uploaded file is not an image of a format whose header gives its size (PNG, JPEG, BMP, WebP, "
                  "TIFF, ...)")
    _assert_error(httpx.post(url, files={'image': ('a.png', images['a'][0])}, timeout=60), 400,
                  "the multipart upload has no field named 'file' (fields: 'image')")
    _assert_error(httpx.post(url, content=images['a'][0], headers={'Content-Type': 'image/png'}, timeout=60), 400,
                  "expected a multipart/form-data upload with the image in a field named 'file'")
    _assert_error(httpx.post(url, content=b'', timeout=60), 400,
                  "the request body is empty; expected a multipart/form-data upload with the image in a field named "
                  "'file'")
    _assert_error(httpx.post(url, files={'file': ('bomb.png', _bomb_png())}, timeout=60), 413,
                  f"the uploaded file: {BOMB}")
    response = httpx.post(url, files={'file': ('a.png', images['a'][0])}, timeout=60)
    np.testing.assert_array_equal(np.array(Image.open(io.BytesIO(response.content))), images['a'][1])


def _raw_post(port, headers, chunks=()):
    """POST /semantic-segmentation over a plain socket: ``headers`` (lines), then ``chunks`` of a chunked body
    (never its final chunk); returns (status code, error message) of the reply, read as it comes."""
    with socket.create_connection(('127.0.0.1', port), timeout=30) as sock:
        sock.sendall(('POST /semantic-segmentation HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
                      ''.join(h + '\r\n' for h in headers) + '\r\n').encode())
        for chunk in chunks:
            sock.sendall(b'%x\r\n' % len(chunk) + chunk + b'\r\n')
        reply = b''
        while True:
            head, _, body = reply.partition(b'\r\n\r\n')
            length = [int(line.split(b':')[1]) for line in head.split(b'\r\n')
                      if line.lower().startswith(b'content-length:')]
            if length and len(body) >= length[0]:
                break
            try:
                data = sock.recv(65536)
            except ConnectionResetError:  # the server closed with the rest of the body unread
                break
            if not data:
                break
            reply += data
    return int(head.split()[1]), json.loads(body)['errorMsg']


def test_body_over_limit_by_content_length(server, images):
    """A Content-Length over the limit is refused before the body is sent."""
    limit = MAX_BODY_MB * 1024 * 1024
    status, message = _raw_post(server.port, [f'Content-Length: {limit + 1000}'])
    assert (status, message) == (413, f"the request body is {limit + 1000} bytes, more than the {limit} allowed "
                                      f"(--max_body_mb)")
    np.testing.assert_array_equal(_label_map(_post_json(server, {'image': _b64(images['a'][0])})), images['a'][1])


def test_body_over_limit_while_streaming(server, images):
    """A chunked body (no Content-Length) is cut off at the limit: 413 before the body is complete."""
    limit = MAX_BODY_MB * 1024 * 1024
    chunks = [b'A' * 65536] * (limit // 65536 + 1)  # just over the limit, and the body never ends
    status, message = _raw_post(server.port, ['Transfer-Encoding: chunked'], chunks)
    assert (status, message) == (413, f"the request body is more than the {limit} bytes allowed (--max_body_mb)")
    np.testing.assert_array_equal(_label_map(_post_json(server, {'image': _b64(images['a'][0])})), images['a'][1])


def test_metrics_after_requests(server, images):
    _post_json(server, {'image': _b64(images['a'][0]), 'visualize': False})
    _post_json(server, {'img': 'x'})
    text = httpx.get(server.url + '/metrics', timeout=60).text
    lines = dict(line.rsplit(' ', 1) for line in text.splitlines() if line and not line.startswith('#'))
    assert int(lines['serve_requests_total{endpoint="/semantic-segmentation",status="200"}']) >= 1
    assert int(lines['serve_requests_total{endpoint="/semantic-segmentation",status="422"}']) >= 1
    count = int(lines['serve_request_duration_seconds_count{endpoint="/semantic-segmentation"}'])
    assert count == int(lines['serve_request_duration_seconds_bucket{endpoint="/semantic-segmentation",le="+Inf"}'])
    assert count >= sum(int(v) for k, v in lines.items()
                        if k.startswith('serve_requests_total{endpoint="/semantic-segmentation"'))
    assert int(lines['serve_batch_size_count']) >= 1 and int(lines['serve_batch_size_bucket{le="1"}']) >= 1
    assert lines['serve_queue_length'] == '0'
    assert '# TYPE serve_request_duration_seconds histogram' in text and '# TYPE serve_queue_length gauge' in text


# -- in-process app: batching, back-pressure, URLs, a fixed batch ---------------------------------------------------

class _Held:
    """Holds the app's predictor runs back until ``release()``; counts the runs started."""

    def __init__(self, service):
        self.gate, self.started, self.service = threading.Event(), 0, service
        self.infer = service.predictor.infer
        service.predictor.infer = self._infer

    def _infer(self, batch):
        self.started += 1
        self.gate.wait(60)
        return self.infer(batch)

    def release(self):
        self.gate.set()


def _started(config, **options):
    app = serve.create_app(config, **dict({'cpu_threads': 1}, **options))
    service = app.state.service
    service.batcher.start()
    deadline = time.monotonic() + 60
    while not service.batcher.ready and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.batcher.ready
    return app, service


@pytest.fixture(scope='module')
def shared_app(export):
    """One in-process app on the module's export (creating a predictor takes a while on a busy machine)."""
    app, service = _started(export)
    yield app, service
    service.batcher.stop(30)


@pytest.fixture
def make_app(shared_app, export):
    """``make_app(config, **options)``: the shared app (``config`` the module's export) with these options set on
    it and fresh metrics, or a new app for another config; the predictor as it was afterwards."""
    apps = []

    def make(config, **options):
        if config == export:
            app, service = shared_app
        else:
            app, service = _started(config, **options)
            apps.append(service)
        opts = dict(serve.OPTIONS, **options)
        batcher = service.batcher
        batcher.max_batch = service.cfg.fixed_batch or opts['max_batch_size']
        batcher.queue_size, batcher.timeout_s = opts['queue_size'], opts['batch_timeout_ms'] / 1000.0
        service.allow_url, service.max_body = opts['allow_url'], int(opts['max_body_mb'] * 1024 * 1024)
        service.options['url_timeout_s'] = opts['url_timeout_s']
        service.metrics = batcher.metrics = serve.Metrics()
        apps.append(service)
        return app, service

    yield make
    for service in apps:
        service.predictor.__dict__.pop('infer', None)  # _Held's and the tests' wrappers
        if service is not shared_app[1]:
            service.batcher.stop(30)


async def _until(predicate):
    deadline = time.monotonic() + 60
    while not predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


def _client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url='http://serve', timeout=60)


def _metric(text, key):
    return next(int(float(line.rsplit(' ', 1)[1])) for line in text.splitlines() if line.startswith(key + ' '))


def _queued_behind_a_held_run(app, service, held, first, queued, then=None):
    """POST ``first`` (image bytes) to /semantic-segmentation and hold its run (``held``: a ``_Held``); POST each of
    ``queued`` once it runs, wait until the batcher queues them all, release. Returns the responses in order and the
    answer to GET ``then`` (None without) asked afterwards."""
    async def scenario():
        async with _client(app) as client:
            def post(data):
                return client.post('/semantic-segmentation', json={'image': _b64(data), 'visualize': False})

            running = asyncio.create_task(post(first))
            await _until(lambda: held.started == 1)
            rest = [asyncio.create_task(post(data)) for data in queued]
            await _until(lambda: service.batcher.queue_length == len(queued))
            held.release()
            responses = [await task for task in [running] + rest]
            return responses, (await client.get(then) if then else None)

    return asyncio.run(scenario())


def test_batching_same_results_as_one_by_one(make_app, export, images):
    """A held first run, three requests queued behind it: they run as one batch of 3, with the label maps one by
    one gives (and infer.py gives)."""
    app, service = make_app(export, max_batch_size=4, batch_timeout_ms=0)
    held = _Held(service)
    responses, answer = _queued_behind_a_held_run(app, service, held, images['a'][0],
                                                  [images[n][0] for n in 'abc'], then='/metrics')
    metrics = answer.text
    for response, name in zip(responses, 'aabc'):
        np.testing.assert_array_equal(_label_map(response), images[name][1])
    assert held.started == 2  # the first alone, then the three together
    assert _metric(metrics, 'serve_batch_size_count') == 2  # runs (the warm-up is not counted): 1, then 3
    assert _metric(metrics, 'serve_batch_size_bucket{le="1"}') == 1
    assert _metric(metrics, 'serve_batch_size_bucket{le="2"}') == 1
    assert _metric(metrics, 'serve_batch_size_bucket{le="4"}') == 2
    assert _metric(metrics, 'serve_batch_size_sum') == 4


def test_batches_hold_one_shape(make_app, export, images):
    """Queued inputs of two sizes: each batch holds one size."""
    app, service = make_app(export, max_batch_size=8, batch_timeout_ms=0)
    held = _Held(service)
    small = cv2.imencode('.png', _image(1, 32, 32))[1].tobytes()
    sizes = []
    infer_held = service.predictor.infer

    def record(batch):
        sizes.append(tuple(batch.shape))
        return infer_held(batch)

    service.predictor.infer = record
    responses, _ = _queued_behind_a_held_run(app, service, held, images['a'][0],
                                             [images['b'][0], small, images['c'][0], small])
    assert [r.status_code for r in responses] == [200] * 5
    assert sorted(sizes) == sorted([(1, 3, H, W), (2, 3, H, W), (2, 3, 32, 32)])
    np.testing.assert_array_equal(_label_map(responses[3]), images['c'][1])


def test_full_queue_is_503_with_retry_after(make_app, export, images):
    app, service = make_app(export, max_batch_size=1, queue_size=1, batch_timeout_ms=0)
    held = _Held(service)

    async def scenario():
        async with _client(app) as client:
            def post():
                return client.post('/semantic-segmentation', json={'image': _b64(images['a'][0]),
                                                                    'visualize': False})

            running = asyncio.create_task(post())
            await _until(lambda: held.started == 1)
            queued = asyncio.create_task(post())
            await _until(lambda: service.batcher.queue_length == 1)
            refused = await post()
            held.release()
            return refused, await running, await queued, (await client.get('/metrics')).text

    refused, running, queued, metrics = asyncio.run(scenario())
    _assert_error(refused, 503, "the server is busy: 1 requests are queued (the most --queue_size allows); retry "
                                "later")
    assert refused.headers['retry-after'] == '1'
    np.testing.assert_array_equal(_label_map(running), images['a'][1])
    np.testing.assert_array_equal(_label_map(queued), images['a'][1])
    assert _metric(metrics, 'serve_requests_total{endpoint="/semantic-segmentation",status="503"}') == 1


def test_fixed_batch_export_runs_batches_of_one(make_app, export, images, tmp_path):
    """deploy.yaml's input_shape fixes the batch at 1: queued requests run one by one."""
    folder = tmp_path / 'fixed'
    shutil.copytree(os.path.dirname(export), folder)
    deploy = yaml.safe_load((folder / 'deploy.yaml').read_text())
    deploy['Deploy']['input_shape'] = [1, 3, None, None]
    (folder / 'deploy.yaml').write_text(yaml.safe_dump(deploy))
    app, service = make_app(str(folder / 'deploy.yaml'), max_batch_size=8, batch_timeout_ms=0)
    held = _Held(service)
    responses, answer = _queued_behind_a_held_run(app, service, held, images['a'][0], [images[n][0] for n in 'bc'],
                                                  then='/metadata')
    meta = answer.json()
    for response, name in zip(responses, 'abc'):
        np.testing.assert_array_equal(_label_map(response), images[name][1])
    assert held.started == 3 and meta['maxBatchSize'] == 1 and meta['inputShape'] == [1, 3, None, None]


@pytest.fixture
def file_server(tmp_path):
    (tmp_path / 'big.bin').write_bytes(b'\0' * 40000)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


def test_allow_url_fetches_with_limits(make_app, export, images, file_server):
    folder, base = file_server
    (folder / 'a.png').write_bytes(images['a'][0])
    app, _ = make_app(export, allow_url=True, max_body_mb=0.03, url_timeout_s=5)
    limit = int(0.03 * 1024 * 1024)

    async def scenario():
        async with _client(app) as client:
            def post(url):
                return client.post('/semantic-segmentation', json={'image': url, 'visualize': False})

            return [await post(base + '/a.png'), await post(base + '/missing.png'), await post(base + '/big.bin'),
                    await post('http://127.0.0.1:1/a.png')]

    good, missing, big, refused = asyncio.run(scenario())
    np.testing.assert_array_equal(_label_map(good), images['a'][1])
    _assert_error(missing, 400, f"cannot fetch image URL {base}/missing.png: HTTP 404 File not found")
    _assert_error(big, 413, f"image URL {base}/big.bin: 40000 bytes, more than the {limit} allowed (--max_body_mb)")
    _assert_error(refused, 400, startswith="cannot fetch image URL http://127.0.0.1:1/a.png: ")


# -- start errors, pm.serve ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('args, message', [
    (['--config', 'missing/deploy.yaml'], "error: --config: missing/deploy.yaml does not exist"),
    (['--config', 'x.yaml', '--max_batch_size', '0'], "error: --max_batch_size must be a positive integer, got 0"),
    (['--config', 'x.yaml', '--max_body_mb', '-1'], "error: --max_body_mb must be a positive number, got -1"),
])
def test_start_errors_are_one_line(tmp_path, args, message):
    proc = subprocess.run([sys.executable, SERVE] + args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == message and 'Traceback' not in proc.stderr


def test_pm_serve(export, monkeypatch, tmp_path):
    import uvicorn

    import paddle_models as pm
    from paddle_models.errors import UserError

    with pytest.raises(UserError) as err:
        pm.serve(str(tmp_path / 'none' / 'deploy.yaml'))
    assert str(err.value) == f"--config: {tmp_path / 'none' / 'deploy.yaml'} does not exist"
    with pytest.raises(UserError) as err:
        pm.serve(export, max_batch=4)
    assert str(err.value).startswith("serve(): unknown keyword argument 'max_batch' (did you mean max_batch_size")
    seen = {}

    def fake_run(app, **kwargs):
        seen['app'], seen['kwargs'] = app, kwargs

    # a package installed without the repository has no deploy/python/serve.py beside it
    from paddle_models import api

    with monkeypatch.context() as patch:
        patch.setattr(api, '__file__', str(tmp_path / 'site-packages' / 'paddle_models' / 'api.py'))
        with pytest.raises(UserError) as err:
            pm.serve(export)
    assert str(err.value) == (
        f"serve(): {tmp_path / 'site-packages' / 'deploy' / 'python' / 'serve.py'} not found: the server ships with "
        f"the repository (deploy/python/serve.py), not with the installed package; run it from a checkout of the "
        f"repository")
    monkeypatch.setattr(uvicorn, 'run', fake_run)
    assert pm.serve(export, port=9999, max_batch_size=2, allow_url=True, cpu_threads=1) == 0
    service = seen['app'].state.service
    assert seen['kwargs']['port'] == 9999 and seen['kwargs']['host'] == '127.0.0.1'
    assert service.max_batch == 2 and service.allow_url is True


# -- last: the module's server stops on SIGTERM with 0, having written nothing ----------------------------------------

def test_sigterm_exits_0_and_nothing_written(server, cwd, export):
    assert server.stop(signal.SIGTERM) == 0
    assert 'Traceback' not in server.log()
    assert os.listdir(cwd) == []
    assert sorted(os.listdir(os.path.dirname(export))) == server.export_listing
