"""Workarounds for differences between Paddle versions, in one place.

``preload_zlib`` must run before ``import paddle``: Paddle 2.6.2's wheel bundles a zlib that breaks later users of
the system zlib (``zlib.crc32``, ``gzip``, PNG checks) unless the system library is loaded first. The package's
``__init__`` and ``tests/conftest.py`` call it; tools import the package before Paddle.
"""
import importlib


def preload_zlib():
    """Load the system zlib into the process (idempotent)."""
    importlib.import_module('zlib')


def static_graph_kind():
    """What Paddle is recording into now: 'dynamic' (eager execution), 'pir' (a Paddle 3 static graph, e.g. an
    export's trace) or 'legacy' (a legacy static program: Paddle 2.6, or Paddle 3 under FLAGS_enable_pir_api=0 as
    tools/quantize.py traces). Model code that builds a different but equivalent graph for one program format
    asks here."""
    import paddle
    if paddle.in_dynamic_mode():
        return 'dynamic'
    return 'pir' if getattr(paddle.framework, 'in_pir_mode', lambda: False)() else 'legacy'
