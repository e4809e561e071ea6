"""Load and fault tests of deploy/python/serve.py (issue 23 item 6): tools/load_test.py's 2000-request Locust run
(no unexpected answer, every label map equal to infer.py's, RSS flat), SIGTERM draining the requests in flight,
clients that disconnect mid-request, and the locustfile's bad inputs getting their intended 4xx.

Everything runs on 127.0.0.1 with a tiny HarDNet export and small images; the reference label maps are
deploy/python/infer.py's for the same files.
"""
import base64
import io
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from serving_helpers import Server, make_tiny_export

from tools import load_test
from tools.load_mix import BAD_INPUTS, parse_mix, schedule

SIZES = {'small.jpg': (64, 48), 'portrait.png': (48, 64), 'wide.jpg': (96, 72)}  # name: (w, h)
DRAIN_IMAGE = ('drain.jpg', (640, 480))  # large enough that a few of them keep the server busy for a while
SERVER_FLAGS = ('--cpu_threads', '1')


def _write_images(folder):
    rng = np.random.default_rng(23)
    for name, (w, h) in dict(SIZES, **dict([DRAIN_IMAGE])).items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return sorted(list(SIZES) + [DRAIN_IMAGE[0]])


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """(deploy.yaml, image folder, reference .npz, {name: infer.py's label map}) of a tiny export."""
    root = tmp_path_factory.mktemp('serve_load')
    deploy_yaml = make_tiny_export(str(root / 'export'))
    images = root / 'images'
    images.mkdir()
    names = _write_images(images)
    work = root / 'reference'
    work.mkdir()
    npz, maps = load_test.reference_maps(sys.executable, deploy_yaml, str(images), names, str(work),
                                         SERVER_FLAGS)
    return deploy_yaml, images, npz, maps


@pytest.fixture(scope='module')
def module_server(setup):
    with Server(setup[0], *SERVER_FLAGS) as srv:
        yield srv


@pytest.fixture
def server(module_server):
    """The module's server (default batching), started again where a test (the SIGTERM one) has stopped it."""
    if module_server.proc.poll() is not None:
        module_server.start()
    return module_server


def _post_json(url, image_bytes, timeout=120):
    """POST /semantic-segmentation; returns (status, decoded JSON body)."""
    body = json.dumps({'image': base64.b64encode(image_bytes).decode('ascii'), 'visualize': False}).encode()
    request = urllib.request.Request(url + '/semantic-segmentation', data=body,
                                     headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _post_file(url, name, image_bytes, timeout=120):
    """POST /predict (multipart field ``file``); returns (status, the PNG decoded to an array)."""
    boundary = 'load-test-boundary'
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f'Content-Type: application/octet-stream\r\n\r\n').encode() + image_bytes + \
        f'\r\n--{boundary}--\r\n'.encode()
    request = urllib.request.Request(url + '/predict', data=body,
                                     headers={'Content-Type': f'multipart/form-data; boundary={boundary}'})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return resp.status, np.asarray(Image.open(io.BytesIO(resp.read())))


def _label_map(body):
    h, w = body['result']['size']
    return np.asarray(body['result']['labelMap']).reshape(h, w)


def _assert_serves_correct_masks(srv, images, maps):
    """Every small image through both endpoints gives infer.py's label map."""
    for name in SIZES:
        data = (images / name).read_bytes()
        status, body = _post_json(srv.url, data)
        assert status == 200 and body['errorCode'] == 0, body
        np.testing.assert_array_equal(_label_map(body), maps[name])
        status, png = _post_file(srv.url, name, data)
        assert status == 200
        np.testing.assert_array_equal(png, maps[name])


def test_schedule_follows_the_mix_exactly():
    order = schedule(1000, parse_mix('json=70,predict=15,bad=15'), 3)
    kinds = [kind for kind, _ in order]
    assert (kinds.count('json'), kinds.count('predict'), kinds.count('bad')) == (700, 150, 150)
    bad = [index for kind, index in order if kind == 'bad']
    assert bad[:2 * len(BAD_INPUTS)] == list(range(len(BAD_INPUTS))) * 2  # every bad input in turn
    assert schedule(1000, parse_mix('json=70,predict=15,bad=15'), 3) == order  # repeatable


@pytest.mark.parametrize('argv, message', [
    (['--requests', '100', '--warmup_requests', '100'], '--warmup_requests (100) must be below --requests (100)'),
    (['--server_flags', '--port', '80'], '--server_flags: --port is chosen by the load test'),
    (['--users', '0'], '--users must be a positive integer, got 0'),
    (['--mix', 'json=1,upload=2'], "--mix: expected kind=weight with kinds json, predict, bad, got 'upload=2'"),
])
def test_load_test_flag_errors_are_one_line(tmp_path, capsys, argv, message):
    (tmp_path / 'deploy.yaml').write_text('Deploy: {}\n')
    assert load_test.main(['--config', str(tmp_path / 'deploy.yaml'), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count('\n') == 1, err


def test_load_test_2000_requests_8_users(setup, capsys):
    """The wrapper's own run: 2000 requests (JSON, /predict, bad inputs) from 8 users, generated images of four
    sizes; no unexpected answer, every label map equal to infer.py's, RSS after the run within 10% of RSS after
    the first 200 answers, serve.py exits 0 on SIGTERM."""
    code = load_test.main(['--config', setup[0], '--requests', '2000', '--users', '8', '--json',
                           '--server_flags', *SERVER_FLAGS])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report['failures']
    counts = report['counts']
    assert report['answered'] == 2000
    assert counts['unexpected'] == 0 and counts['mismatch'] == 0, report['examples']
    assert counts['intended_4xx'] == 300 and counts['ok'] + counts['busy'] == 1700
    assert report['rss_mib']['growth'] <= 0.10
    assert report['server_exit_code_on_sigterm'] == 0
    assert report['latency_ms']['good']['p99'] is not None


def test_locust_bad_inputs_get_their_intended_4xx(setup, server, tmp_path):
    deploy_yaml, images, npz, _ = setup
    per_input = 4
    results = tmp_path / 'results.json'
    env = dict(os.environ, LOAD_IMAGES=str(images), LOAD_REFERENCE=npz, LOAD_MIX='bad=1',
               LOAD_REQUESTS=str(per_input * len(BAD_INPUTS)), LOAD_RESULTS=str(results))
    code = load_test.run_locust(sys.executable, server.url, 4, 120, env, str(tmp_path), str(tmp_path / 'locust.log'))
    summary = json.loads(results.read_text())
    assert summary['examples']['unexpected'] == []
    assert code == 0
    assert summary['counts']['intended_4xx'] == per_input * len(BAD_INPUTS)
    assert {name: row['intended_4xx'] for name, row in summary['by_name'].items()} == \
        {name: per_input for name, *_ in BAD_INPUTS}


def _raw(port, head, body, part):
    """Send ``head`` and the first ``part`` bytes of ``body`` on a new connection, then close it unread."""
    with socket.create_connection(('127.0.0.1', port), timeout=30) as sock:
        sock.sendall(head + body[:part])


def _json_request(port, image_bytes):
    body = json.dumps({'image': base64.b64encode(image_bytes).decode('ascii')}).encode()
    head = (f'POST /semantic-segmentation HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n'
            f'Content-Length: {len(body)}\r\n\r\n').encode()
    return head, body


def _upload_request(port, name, image_bytes):
    boundary = 'load-test-boundary'
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f'Content-Type: image/jpeg\r\n\r\n').encode() + image_bytes + f'\r\n--{boundary}--\r\n'.encode()
    head = (f'POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n'
            f'Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n').encode()
    return head, body


def test_clients_disconnecting_mid_request_do_not_break_the_next_ones(setup, server):
    deploy_yaml, images, _, maps = setup
    port = int(server.url.rsplit(':', 1)[1])
    data = (images / 'wide.jpg').read_bytes()
    for head, body in (_json_request(port, data), _upload_request(port, 'wide.jpg', data)):
        for _ in range(2):
            _raw(port, head, body, len(body) // 2)  # half the body, then gone
            _assert_serves_correct_masks(server, images, maps)
            _raw(port, head, body, len(body))  # the whole request, gone before the answer
            _assert_serves_correct_masks(server, images, maps)
    with urllib.request.urlopen(server.url + '/health', timeout=30) as resp:
        assert resp.status == 200
    assert server.proc.poll() is None
    assert 'Traceback' not in server.log()
    assert server.log().count('the client disconnected before sending the whole request') == 4


def _queued(srv):
    """serve_queue_length + serve_running_batch_size from GET /metrics: inputs the server holds now."""
    with urllib.request.urlopen(srv.url + '/metrics', timeout=30) as resp:
        text = resp.read().decode()
    values = dict(line.split() for line in text.splitlines()
                  if line.startswith(('serve_queue_length ', 'serve_running_batch_size ')))
    return int(float(values['serve_queue_length'])) + int(float(values['serve_running_batch_size']))


def test_sigterm_drains_requests_in_flight_and_exits_0(setup, server):
    """Six requests held by the server (queued or in the running batch) when SIGTERM comes all get their 200 and
    infer.py's label map, and serve.py exits 0. (It stops the module's server; the fixture restarts it.)"""
    _, images, _, maps = setup
    name = DRAIN_IMAGE[0]
    data = (images / name).read_bytes()
    answers = {}

    def client(i):
        answer = _post_json(server.url, data)
        answers[i] = answer + (time.monotonic(),)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    while _queued(server) < 4 and not answers and time.monotonic() < deadline:  # wait until they are in
        time.sleep(0.005)
    signalled = time.monotonic()
    code = server.stop(signal.SIGTERM)
    for thread in threads:
        thread.join(120)
    assert code == 0, server.log()[-2000:]
    assert sorted(answers) == list(range(6))
    # the premise: requests were still being served when the signal came (else nothing was drained)
    assert sum(done > signalled for _, _, done in answers.values()) >= 3
    for status, body, _ in answers.values():
        assert status == 200 and body['errorCode'] == 0, body
        np.testing.assert_array_equal(_label_map(body), maps[name])
