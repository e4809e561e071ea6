"""Workarounds for differences between Paddle versions, in one place.

``preload_zlib`` must run before ``import paddle``: Paddle 2.6.2's wheel bundles a zlib that breaks later users of
the system zlib (``zlib.crc32``, ``gzip``, PNG checks) unless the system library is loaded first. The package's
``__init__`` and ``tests/conftest.py`` call it; tools import the package before Paddle.
"""
import importlib


def preload_zlib():
    """Load the system zlib into the process (idempotent)."""
    importlib.import_module('zlib')


def paddle_major():
    """Paddle's major version as an int (3 for 3.3.1, 2 for 2.6.2; 0 for a development build)."""
    import paddle
    return int(paddle.__version__.split('.')[0])
