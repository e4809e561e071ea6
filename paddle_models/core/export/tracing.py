"""Tracing speed-ups: dy2st's costs that grow with the model, removed for the duration of one trace by patching
private Paddle objects (the program traced is the same).

Tracing cost: dy2st re-converts every layer instance's ``forward``, re-checks every call against its list of
Paddle functions and records each op's full Python call stack; on a model of thousands of layer calls
(MscaleOCRNet on HRNet-W48) that was most of the export. ``fast_tracing`` shares those conversions and checks per
function and keeps the innermost frames of each call stack, for the duration of the trace only (same program).
"""
import contextlib
import inspect
import traceback

@contextlib.contextmanager
def fast_tracing():
    """dy2st's costs that grow with the model, removed for the duration of one trace (same program):

    * dy2st converts each called ``forward`` into a static function and caches it in a ``WeakKeyDictionary``
      keyed by the *bound* method, which dies right after the call: every layer instance's call converts its
      class's ``forward`` again (parse, write and import a module). Here conversions of a method are shared per
      underlying function (``__func__``): the converted function is unbound (dy2st binds the instance afterwards)
      and made from the function's own source, globals and closure, so it is the same for every instance.
    * ``Layer.__call__`` wraps each call in ``paddle.base.framework.name_struct``, which under PIR lists all ops of
      the program before and after the call (quadratic in the op count) to tag the new ones with a
      ``struct_name`` attribute that only auto-parallel reads. Here the tag is not written.

    * dy2st's ``is_unsupported(func)`` (asked for every call it converts) rebuilds the list of all functions of
      the modules it never converts on each call; its answer depends on ``func`` alone (for a bound method, on
      its function), so it is asked once per function here.
    * Paddle records the Python call stack of every op it creates (``traceback.extract_stack``, called from C++),
      for error messages; here only the innermost 12 frames, which hold the model line that created the op.

    The patches touch private Paddle objects; where they are missing (another Paddle version) tracing runs as
    Paddle does it. All are restored on exit."""
    restore = []
    try:
        for patch in (_share_unsupported_checks, _short_call_stacks, _share_conversions, _no_struct_names):
            undo = patch()
            if undo is not None:
                restore.append(undo)
        yield
    finally:
        for undo in reversed(restore):
            undo()


def _share_unsupported_checks():
    """dy2st's ``is_unsupported`` answered once per function; returns the undo (None: nothing to patch)."""
    try:
        from paddle.jit.dy2static import convert_call_func

        original_unsupported = convert_call_func.is_unsupported
    except (ImportError, AttributeError):
        return None
    answers = {}

    def is_unsupported(func):
        # a bound method's answer is its function's (the check reads its code's file; no bound method is
        # one of the listed module functions), whatever the instance
        key = ('method', func.__func__) if inspect.ismethod(func) else ('callable', func)
        try:
            return answers[key]
        except (KeyError, TypeError):
            answer = original_unsupported(func)
            try:
                answers[key] = answer
            except TypeError:  # unhashable callable
                pass
            return answer

    convert_call_func.is_unsupported = is_unsupported
    return lambda: setattr(convert_call_func, 'is_unsupported', original_unsupported)


def _short_call_stacks():
    """``traceback.extract_stack`` keeps the innermost 12 frames unless asked for more; returns the undo."""
    original_extract = traceback.extract_stack

    def extract_stack(f=None, limit=None):
        return original_extract(f, limit=12 if limit is None else limit)

    traceback.extract_stack = extract_stack
    return lambda: setattr(traceback, 'extract_stack', original_extract)


def _share_conversions():
    """dy2st's conversion of a bound method shared per underlying function; returns the undo (None: nothing to
    patch)."""
    try:
        from paddle.jit.dy2static import program_translator

        cache = program_translator._FUNCTION_CACHE
        original = cache.convert_with_cache
    except (ImportError, AttributeError):
        return None
    converted = {}

    def convert_with_cache(func):
        if not inspect.ismethod(func):
            return original(func)
        hit = converted.get(func.__func__)
        if hit is None:
            hit = converted[func.__func__] = original(func)
        return hit

    cache.convert_with_cache = convert_with_cache
    return lambda: delattr(cache, 'convert_with_cache')


def _no_struct_names():
    """``Layer.__call__``'s ``name_struct`` a no-op (no ``struct_name`` tags); returns the undo (None: nothing to
    patch)."""
    try:
        from paddle.nn.layer import layers

        original_struct = layers.name_struct
    except (ImportError, AttributeError):
        return None

    @contextlib.contextmanager
    def name_struct(prefix=None):
        yield

    layers.name_struct = name_struct
    return lambda: setattr(layers, 'name_struct', original_struct)
