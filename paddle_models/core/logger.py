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
    if _rank() != 0:
        return
    stamp = time.strftime('%Y-%m-%d %H:%M:%S')
    print(f"{stamp} [{level}] {message}", file=sys.stdout, flush=True)


def info(message):
    log('INFO', message)


def warning(message):
    log('WARNING', message)
