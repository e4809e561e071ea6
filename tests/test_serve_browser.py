"""The serving web page (deploy/python/static, served by deploy/python/serve.py at ``/``) in a real browser.

Debian's headless Chromium (/usr/bin/chromium) driven by Playwright's sync API uploads images to a server running a
tiny random HarDNet export: through the file input, by a drop on the drop zone, and a file that is not an image.
The page must show the overlay at the image's size, a legend naming exactly the classes present in the server's own
label map for that image (with their colours from /metadata and their pixel shares), the latency, the model, and
the server's error message. Where Chromium or Playwright is missing the tests skip, and fail under CI=true (.ci/run
installs both).
"""
import base64
import io
import json
import os
import re
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from serving_helpers import Server, make_tiny_export

CHROMIUM = '/usr/bin/chromium'
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
SETTLED = "['done', 'error'].includes(document.body.dataset.state)"


def _missing(message):
    """Skip where a browser-test requirement is absent; fail under CI=true, where .ci/run provides it."""
    if os.environ.get('CI') == 'true':
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope='module')
def browser():
    if not os.path.isfile(CHROMIUM):
        _missing(f"Debian's chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -r requirements-test.txt)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'])
        yield chromium
        chromium.close()


@pytest.fixture(scope='module')
def server(browser, tmp_path_factory):
    # ``browser`` first: without a browser, skip before spending seconds on an export
    deploy_yaml = make_tiny_export(tmp_path_factory.mktemp('export'))
    with Server(deploy_yaml, '--cpu_threads', '1') as srv:
        yield srv


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={'width': 1000, 'height': 600})
    page.goto(server.url + '/')
    # the model line is filled from /metadata at load
    page.wait_for_function("!document.getElementById('model-info').textContent.startsWith('Loading')")
    yield page
    page.close()


def image_bytes(width, height, seed):
    """A PNG of random colours: a random tiny model finds several classes in it."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format='PNG')
    return buffer.getvalue()


def api(server, path, payload=None):
    """(HTTP status, JSON body) of a GET (no payload) or a JSON POST to the server."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(server.url + path, data=data, headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def expected_legend(server, data):
    """[(class id, name, share %), ...] of the classes present in the server's label map for the image ``data``,
    largest share first (ties by id), as the page must list them."""
    status, body = api(server, '/semantic-segmentation', {'image': base64.b64encode(data).decode()})
    assert status == 200 and body['errorCode'] == 0, body
    label = np.asarray(body['result']['labelMap'], dtype=np.int64)
    counts = np.bincount(label)
    ids = sorted(np.flatnonzero(counts).tolist(), key=lambda i: (-counts[i], i))
    names = {c['id']: c['name'] for c in api(server, '/metadata')[1]['classes']}
    return [(i, names[i], 100.0 * counts[i] / label.size) for i in ids]


def shown_legend(page):
    return page.eval_on_selector_all('#legend li', """items => items.map(item => [
        Number(item.dataset.classId), item.querySelector('.name').textContent,
        item.querySelector('.share').textContent, getComputedStyle(item.querySelector('.swatch')).backgroundColor])""")


def settle(page):
    """Wait until the page has shown a result or an error; returns its state."""
    page.wait_for_function(SETTLED, timeout=60_000)
    return page.evaluate('document.body.dataset.state')


def check_result(page, server, data, size):
    """The page shows ``data``'s segmentation: overlay and original at the image's size (w, h), the legend of the
    server's label map with /metadata's names and colours, a latency, no error."""
    state = settle(page)
    assert state == 'done', page.text_content('#error')
    assert page.is_hidden('#error')
    page.wait_for_function("original.complete && !original.hidden")  # the local copy loads on its own
    assert page.is_visible('#overlay') and page.is_visible('#original')
    assert page.evaluate("[overlay.naturalWidth, overlay.naturalHeight]") == list(size)
    assert page.evaluate("[original.naturalWidth, original.naturalHeight]") == list(size)
    assert page.evaluate("overlay.src").startswith('data:image/jpeg;base64,')

    expected = expected_legend(server, data)
    shown = shown_legend(page)
    assert [(i, name) for i, name, _, _ in shown] == [(i, name) for i, name, _ in expected]
    colours = {c['id']: c['color'] for c in api(server, '/metadata')[1]['classes']}
    for (i, _, share, colour), (_, _, percent) in zip(shown, expected):
        assert colour == 'rgb({}, {}, {})'.format(*colours[i])
        if share == '<0.1%':
            assert 0 < percent < 0.05, (share, percent)
        else:
            assert re.fullmatch(r'\d+\.\d%', share), share
            assert abs(float(share[:-1]) - percent) <= 0.05 + 1e-9, (share, percent)
    assert re.fullmatch(r'Round trip: \d+ ms', page.text_content('#latency'))
    return expected


def test_upload_shows_overlay_legend_latency(page, server, tmp_path):
    data = image_bytes(64, 48, seed=0)
    path = tmp_path / 'street.png'
    path.write_bytes(data)
    page.set_input_files('#file-input', str(path))
    expected = check_result(page, server, data, (64, 48))
    assert len(expected) >= 2, "the random image should hold more than one class (a weak legend check otherwise)"

    metadata = api(server, '/metadata')[1]
    info = page.text_content('#model-info')
    assert f"Model: {metadata['modelName']}" in info and f"backend: {metadata['backend']}" in info

    shot = tmp_path / 'page.png'
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(shot) as image:
        assert image.format == 'PNG' and image.width == 1000 and image.height >= 600


def test_drop_on_drop_zone(page, server):
    data = image_bytes(40, 30, seed=1)
    page.evaluate("""async (b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
        const zone = document.getElementById('drop-zone');
        for (const type of ['dragenter', 'dragover', 'drop']) {
            zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }
    }""", base64.b64encode(data).decode())
    check_result(page, server, data, (40, 30))


def test_not_an_image_shows_server_error_then_recovers(page, server):
    data = b'this is a text file, not an image\n'
    status, body = api(server, '/semantic-segmentation', {'image': base64.b64encode(data).decode(), 'visualize': True})
    assert 400 <= status < 500 and body['errorCode'] == status and body['errorMsg'], body

    page.set_input_files('#file-input', files=[{'name': 'notes.txt', 'mimeType': 'text/plain', 'buffer': data}])
    assert settle(page) == 'error'
    assert page.is_visible('#error')
    assert page.text_content('#error') == f"Segmentation failed (HTTP {status}): {body['errorMsg']}"
    assert page.is_hidden('#overlay') and page.is_hidden('#original')
    assert page.eval_on_selector_all('#legend li', 'items => items.length') == 0
    assert page.text_content('#latency') == ''

    # the next upload works, and clears the error
    good = image_bytes(32, 24, seed=2)
    page.set_input_files('#file-input', files=[{'name': 'good.png', 'mimeType': 'image/png', 'buffer': good}])
    check_result(page, server, good, (32, 24))
