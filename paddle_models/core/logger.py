"""The engine's logger: timestamped lines on stdout, silent on ranks other than 0."""
import sys
import time

import paddle


def _rank():
    try:
        return paddle.distributed.get_rank()
    except Exception:
        return 0


def log(level, message):
    """Print ``<date time> [LEVEL] message`` on stdout, flushed at once so that it keeps its place among progress
    bars and subprocess output; ranks other than 0 print nothing, so a multi-GPU run logs each line once."""
    if _rank() != 0:
        return
    stamp = time.strftime('%Y-%m-%d %H:%M:%S')
    print(f"{stamp} [{level}] {message}", file=sys.stdout, flush=True)


def info(message):
    """Log an ``[INFO]`` line (progress, results)."""
    log('INFO', message)


def warning(message):
    """Log a ``[WARNING]`` line: the run goes on, but not quite as asked (e.g. a resumed run without its seed)."""
    log('WARNING', message)
