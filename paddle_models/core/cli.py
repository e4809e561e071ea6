"""What the command-line tools share: flags, device selection and turning user errors into one line on stderr."""
import argparse
import logging
import math
import os
import sys

import paddle

from paddle_models.core import signals
from paddle_models.errors import UserError


def add_config_args(parser):
    parser.add_argument('--config', dest='config', help='The PaddleSeg-format YAML config file.')
    parser.add_argument('--opts', nargs='+', default=None, metavar='KEY=VALUE',
                        help='Override config keys, e.g. --opts batch_size=4 model.num_classes=11')
    parser.add_argument('--device', default=None, choices=['cpu', 'gpu', 'xpu', 'npu', 'mlu'],
                        help='Device to run on (default: gpu when this Paddle has CUDA, else cpu).')


def add_model_arg(parser):
    """``--model NAME``: a published trained checkpoint in place of ``--config`` and ``--model_path``."""
    parser.add_argument('--model', default=None, metavar='NAME',
                        help='A published trained checkpoint by name or alias, e.g. segformer_b0_cityscapes '
                             '(python -m paddle_models.tools.list_pretrained lists them): its packaged config and its weights, '
                             "downloaded once into PaddleSeg's cache ($SEG_HOME/pretrained_model), in place of "
                             '--config and --model_path.')


def resolve_model_arg(args):
    """Fill ``args.config`` and ``args.model_path`` from ``--model NAME`` (the checkpoint's packaged config and its
    cached or downloaded weights); nothing without ``--model``.

    Raises:
        UserError: ``--model`` with ``--config`` or ``--model_path``, an unknown name (with the closest ones), or
            weights that cannot be downloaded (the URL and the cache path to put the file at).
    """
    if args.model is None:
        return
    from paddle_models.pretrained import get_pretrained, pretrained_weights

    for flag in ('config', 'model_path'):
        if getattr(args, flag, None):
            raise UserError(f"--model and --{flag} exclude each other: --model NAME brings its config and weights")
    args.config = get_pretrained(args.model)['config']
    args.model_path = pretrained_weights(args.model)


def add_inference_args(parser, aug_flag='--aug_eval'):
    """Test-time augmentation and sliding-window flags (PaddleSeg's names)."""
    parser.add_argument(aug_flag, action='store_true', help='Multi-scale and flip test-time augmentation.')
    parser.add_argument('--scales', nargs='+', type=positive_float, default=[1.0], help='Scales for augmentation.')
    parser.add_argument('--flip_horizontal', action='store_true', help='Add horizontal flips to augmentation.')
    parser.add_argument('--flip_vertical', action='store_true', help='Add vertical flips to augmentation.')
    parser.add_argument('--is_slide', action='store_true', help='Sliding-window inference.')
    parser.add_argument('--crop_size', nargs=2, type=positive_int, default=None, metavar=('W', 'H'),
                        help='Window size for --is_slide.')
    parser.add_argument('--stride', nargs=2, type=positive_int, default=None, metavar=('W', 'H'),
                        help='Window stride for --is_slide.')


def add_data_format_arg(parser):
    """PaddleSeg's ``--data_format`` (NCHW or NHWC); checked by ``check_data_format``."""
    parser.add_argument('--data_format', default='NCHW',
                        help='Input layout, NCHW (the only one our models run) or NHWC (an error). Default: NCHW.')


def check_data_format(value):
    """``--data_format``: NCHW passes; NHWC (which PaddleSeg supports for DeepLabV3P only) and anything else are a
    UserError."""
    if value == 'NHWC':
        raise UserError("--data_format NHWC is not supported: our models run NCHW (use --data_format NCHW)")
    if value != 'NCHW':
        raise UserError(f"--data_format must be NCHW, got {value!r}")


def str2bool(value):
    """argparse type for PaddleSeg's boolean flags written with a value (``--auc_roc True``)."""
    text = str(value).strip().lower()
    if text in ('true', '1', 'yes', 'y', 'on'):
        return True
    if text in ('false', '0', 'no', 'n', 'off'):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def inference_options(args, test_config=None, aug_flag='aug_eval'):
    """Evaluation/prediction options: the config's ``test_config`` overridden by flags that were given."""
    options = {k: v for k, v in dict(test_config or {}).items()
               if k in ('aug_eval', 'scales', 'flip_horizontal', 'flip_vertical', 'is_slide', 'crop_size', 'stride')}
    if getattr(args, aug_flag):
        options['aug_eval'] = True
    if args.scales != [1.0]:
        options['scales'] = args.scales
    for flag in ('flip_horizontal', 'flip_vertical', 'is_slide'):
        if getattr(args, flag):
            options[flag] = True
    for flag in ('crop_size', 'stride'):
        if getattr(args, flag):
            options[flag] = getattr(args, flag)
    if options.get('is_slide') and (not options.get('crop_size') or not options.get('stride')):
        raise UserError("--is_slide needs --crop_size W H and --stride W H (or test_config.crop_size/stride)")
    return options


def set_device(device, precision='fp32'):
    """Select the device; fp16 needs a GPU."""
    if device is None:
        device = 'gpu' if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0 else 'cpu'
    if device == 'gpu' and not paddle.is_compiled_with_cuda():
        raise UserError("--device gpu: this Paddle build has no CUDA support (install paddlepaddle-gpu, see docs/getting_started.md, GPU install)")
    if precision == 'fp16' and device == 'cpu':
        raise UserError("--precision fp16 needs a GPU (--device gpu); use --precision fp32 on CPU")
    paddle.set_device(device)
    return device


def _exit_now(code, message):
    """Print ``message`` and leave at once: data-loader worker processes left by an interrupted loop can block an
    ordinary interpreter exit (Paddle's loader shutdown waits on them), and everything worth keeping is on disk."""
    progress = sys.modules.get('tqdm')
    for bar in list(getattr(getattr(progress, 'tqdm', None), '_instances', ())):  # the message on a line of its own
        try:
            bar.close()
        except Exception:  # noqa: BLE001  (a bar that cannot draw any more: nothing to finish)
            pass
    print(message, file=sys.stderr)
    signals.clean_up()  # what an interrupted write left registered (normally nothing: its own handler removed it)
    exported = sys.modules.get('paddle_models.core.exported')
    if exported is not None:  # os._exit skips atexit: the OpenVINO engine's temporary cache
        exported.remove_openvino_cache()
    import multiprocessing
    for child in multiprocessing.active_children():  # data-loader workers would keep our output pipes open
        child.kill()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main_wrapper(main):
    """Run ``main()`` (every command-line tool's entry point); a UserError becomes ``error: <its one line>`` on stderr
    and exit code 2. A data-loader worker's UserError reaches here as the UserError itself (the training loader
    carries it, see ``core/train.py``), so errors are told apart by type alone.

    SIGTERM and SIGINT (Ctrl-C) are handled by ``core/signals.py`` (not by Paddle's handler, which can deadlock):
    the work stops, its temporary folders are removed, and ``error: interrupted by SIGTERM[: what was stopped]``
    ends the process with exit code 143 (130 for SIGINT), without a traceback."""
    signals.install()
    try:
        main()
    except UserError as err:
        text = str(err).strip()  # one line by contract; the last is the message should a wrapped reason add lines
        _exit_now(2, f"error: {text.splitlines()[-1] if text else type(err).__name__}")
    except KeyboardInterrupt as err:
        stopped = err if isinstance(err, signals.Interrupted) else signals.Interrupted()  # a plain one: Ctrl-C
        _exit_now(stopped.exit_code, f"error: {stopped}")


# --- numeric flags: argparse ``type=`` helpers, each a range; a bad value is one line naming the flag ------------

def _integer(text):
    try:
        return int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _number(text):
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_int(text):
    """argparse type: an integer >= 1 (batch sizes, intervals, thread counts, window sizes)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text):
    """argparse type: an integer >= 0 (worker counts; ``--keep_checkpoint_max 0`` keeps all)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def seed_int(text):
    """argparse type: a random seed, an integer in [0, 2**32) (NumPy's range; other values crash it)."""
    value = _integer(text)
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32), got {value}")
    return value


def dimension(text):
    """argparse type: a tensor dimension, a positive integer or -1 (free)."""
    value = _integer(text)
    if value < 1 and value != -1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or -1 (free), got {value}")
    return value


def positive_float(text):
    """argparse type: a finite number > 0 (scales)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def fraction(text):
    """argparse type: a number in [0, 1] (shares of pixels)."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are a UserError (one line: ``main_wrapper`` prints it and exits 2, the API
    raises it) instead of the usage text and ``SystemExit``. A range helper's message reads ``--FLAG must be ...,
    got V``; argparse's own (an unknown flag, a bad choice, a missing value) keep its wording."""

    def error(self, message):
        head, sep, rest = message.partition(': ')
        if sep and head.startswith('argument ') and rest.startswith('must be '):
            flag = head[len('argument '):].split('/')[-1]  # '-s/--scales' names the long form
            raise UserError(f"{flag} {rest}")
        raise UserError(message)


def log_to_stderr(*names):
    """Send the stdlib loggers ``names`` to stderr at INFO and above as ``<time> <LEVEL> <name>: message``, each with
    its own handler and level, set once (importing Paddle 2.6 resets the root logger to WARNING, so the root's
    configuration cannot be relied on). For the tools that log through ``logging`` (tools/quantize.py);
    deploy/python/infer.py has the same function, as it stands alone."""
    for name in names:
        log = logging.getLogger(name)
        if not log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            log.propagate = False


def parser(description):
    """The command-line tools' parser (see :class:`ArgumentParser`)."""
    return ArgumentParser(description=description)


def option_strings(parser):
    """Every flag ``parser`` takes (``--iters``, ``--help``, ...)."""
    return [option for action in parser._actions for option in action.option_strings]
