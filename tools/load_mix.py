"""The request mix of the serving load test, shared by tools/locustfile.py, tools/load_test.py and the tests
(which must not import Locust: it monkey-patches the standard library with gevent when imported): the request
kinds, the bad inputs with the answer each must get, and the run's fixed order of requests."""
import base64
import io
import random

import numpy as np
from PIL import Image

KINDS = ('json', 'predict', 'bad')
DEFAULT_MIX = 'json=70,predict=15,bad=15'

# The bad inputs and the answer each must get: (name, endpoint, HTTP status, the errorMsg word for word), as
# deploy/python/serve.py answers them (PaddleX's error envelope: errorCode = the HTTP status).
NOT_AN_IMAGE = "is not an image of a format whose header gives its size (PNG, JPEG, BMP, WebP, TIFF, ...)"
BAD_INPUTS = (
    ('bad json: not an image', '/semantic-segmentation', 400, f"'image' {NOT_AN_IMAGE}"),
    ('bad json: truncated jpeg', '/semantic-segmentation', 400,
     "'image': truncated JPEG file (it ends inside the image data, before its end-of-image marker)"),
    ('bad json: truncated png', '/semantic-segmentation', 400,
     "'image': truncated PNG file (it ends inside chunk IDAT)"),
    ('bad json: malformed body', '/semantic-segmentation', 422,
     "the request body is not valid JSON (Expecting value: line 1 column 36 (char 35))"),
    ('bad predict: not an image', '/predict', 400, f"the uploaded file {NOT_AN_IMAGE}"),
)

class LoadError(Exception):
    """A setting of the load test the user must fix; ``str()`` is the one-line message."""


def parse_mix(text, source='LOAD_MIX'):
    """``'json=70,predict=15,bad=15'`` -> {'json': 70, 'predict': 15, 'bad': 15} (non-negative integer weights
    summing to more than 0; kinds left out weigh 0). ``source`` names the setting in the error messages."""
    mix = dict.fromkeys(KINDS, 0)
    for part in str(text).split(','):
        name, sep, value = part.strip().partition('=')
        if not sep or name not in mix:
            raise LoadError(f"{source}: expected kind=weight with kinds {', '.join(KINDS)}, got {part.strip()!r}")
        try:
            mix[name] = int(value)
        except ValueError:
            raise LoadError(f"{source}: weight of {name} must be an integer, got {value!r}") from None
        if mix[name] < 0:
            raise LoadError(f"{source}: weight of {name} must be >= 0, got {mix[name]}")
    if not sum(mix.values()):
        raise LoadError(f"{source}: the weights sum to 0 in {text!r}")
    return mix


def schedule(count, mix, num_images, seed=0):
    """The run's requests in order: ``count`` (kind, index) pairs, the kinds in the proportions of ``mix``
    (largest remainders), shuffled with ``seed``; index is an image for good kinds, a ``BAD_INPUTS`` entry for
    ``bad``, taken in turn so that every image and every bad input gets its share."""
    total = sum(mix.values())
    exact = {k: count * w / total for k, w in mix.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(KINDS, key=lambda k: counts[k] - exact[k])[:count - sum(counts.values())]:
        counts[k] += 1
    kinds = [k for k in KINDS for _ in range(counts[k])]
    random.Random(seed).shuffle(kinds)
    seen = dict.fromkeys(KINDS, 0)
    out = []
    for kind in kinds:
        out.append((kind, seen[kind] % (len(BAD_INPUTS) if kind == 'bad' else num_images)))
        seen[kind] += 1
    return out


def _noise_image(fmt, seed=1):
    """A 64x48 RGB noise image encoded as ``fmt`` (bytes)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def bad_request(name):
    """The request of the bad input ``name``: (keyword arguments for ``client.post``)."""
    text = b'this is a text file, not an image\n' * 8
    if name == 'bad json: not an image':
        return {'json': {'image': base64.b64encode(text).decode('ascii'), 'visualize': False}}
    if name in ('bad json: truncated jpeg', 'bad json: truncated png'):
        data = _noise_image('JPEG' if name.endswith('jpeg') else 'PNG')
        return {'json': {'image': base64.b64encode(data[:len(data) // 2]).decode('ascii'), 'visualize': False}}
    if name == 'bad json: malformed body':
        return {'data': b'{"image": "aGVsbG8=", "visualize": fal', 'headers': {'Content-Type': 'application/json'}}
    if name == 'bad predict: not an image':
        return {'files': {'file': ('notes.jpg', text, 'image/jpeg')}}
    raise KeyError(name)
