"""SIGTERM and SIGINT for the command-line tools: a clean, prompt end instead of Paddle's handler.

Importing Paddle installs glog's failure handler for SIGTERM (at the C level; Python still reports ``SIG_DFL``). It
prints a stack trace from inside the signal handler, which allocates memory: a SIGTERM that lands while the process
is in ``malloc`` (tools/quantize.py's calibration) deadlocks there and the process never ends. :func:`install`
replaces it (and Python's SIGINT handler) with one that raises :class:`Interrupted` in the main thread, so that
every ``finally``/``except BaseException`` on the way out runs: temporary folders are removed, locks released, and
training names its last good checkpoint. ``cli.main_wrapper`` then prints one line and exits with 128 + the signal
number (143 for SIGTERM, 130 for SIGINT), without a traceback.

Python runs the handler between bytecodes of the main thread, so a single long C++ call delays it until it
returns. Should the clean-up itself not end within ``GRACE_S`` seconds after the signal, a watchdog thread removes
the temporary folders still registered (``folders.ACTIVE_TEMP_DIRS``), releases the locks and ends the process with
the same exit code.
"""
import os
import signal
import sys
import threading
import time

GRACE_S = 20
HANDLED = (signal.SIGTERM, signal.SIGINT)

_state = {'pid': None, 'previous': {}, 'stopping': None}


class Interrupted(KeyboardInterrupt):
    """The process got ``signum`` (SIGTERM or SIGINT); ``detail`` says what was stopped (e.g. training's last good
    checkpoint). A ``KeyboardInterrupt``, so that code which cleans up on Ctrl-C does so on SIGTERM too."""

    def __init__(self, signum=signal.SIGINT, detail=None):
        super().__init__(signum, detail)
        self.signum = int(signum)
        self.detail = detail

    @property
    def exit_code(self):
        return 128 + self.signum

    def __str__(self):
        text = f"interrupted by {signal.Signals(self.signum).name}"
        return f"{text}: {self.detail}" if self.detail else text


def interrupted(err, detail):
    """An :class:`Interrupted` for the same signal as ``err`` (an ``Interrupted``, or a plain ``KeyboardInterrupt``:
    SIGINT) carrying ``detail``."""
    return Interrupted(getattr(err, 'signum', signal.SIGINT), detail)


def exit_code(err):
    """128 + the signal number of a ``KeyboardInterrupt`` (130 for a plain one: SIGINT)."""
    return 128 + getattr(err, 'signum', signal.SIGINT)


def install():
    """Handle SIGTERM and SIGINT in this process as the module docstring says (the main thread only; call it
    after Paddle is imported). Forked children (data-loader workers) that inherit the handler get the behaviour
    they had before."""
    if threading.current_thread() is not threading.main_thread():
        return
    _state['pid'] = os.getpid()
    for signum in HANDLED:
        previous = signal.getsignal(signum)
        if previous is not _handler:
            _state['previous'][signum] = previous
        signal.signal(signum, _handler)


def _handler(signum, frame):
    if os.getpid() != _state['pid']:  # a forked child: what it had before install()
        previous = _state['previous'].get(signum, signal.SIG_DFL)
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        if callable(previous):
            return previous(signum, frame)
        os.kill(os.getpid(), signum)
        return None
    if _state['stopping'] is not None:  # already on the way out: the watchdog ends it if that takes too long
        return None
    _state['stopping'] = signum
    threading.Thread(target=_watchdog, args=(signum,), name='signal-watchdog', daemon=True).start()
    raise Interrupted(signum)


def _watchdog(signum):
    time.sleep(GRACE_S)
    force_exit(128 + signum, f"error: interrupted by {signal.Signals(signum).name} (clean-up took over "
                             f"{GRACE_S} s; ended it)")


def clean_up():
    """Remove the temporary folders still registered and release this process's folder locks."""
    import shutil

    from paddle_models.core import folders

    for path in list(folders.ACTIVE_TEMP_DIRS):
        shutil.rmtree(path, ignore_errors=True)
        folders.forget_temp(path)
    folders.release_all()


def force_exit(code, message):
    """Print ``message``, clean up (:func:`clean_up`, data-loader workers) and end the process at once."""
    try:
        print(message, file=sys.stderr, flush=True)
        clean_up()
        import multiprocessing
        for child in multiprocessing.active_children():
            child.kill()
    finally:
        os._exit(code)
