"""``train.py --profiler_options``: operator-level profiling of a range of training iterations with
``paddle.profiler``, configured by PaddleSeg's option string."""
import os

import paddle
import paddle.profiler as profiler

from paddle_models.core import logger
from paddle_models.errors import UserError

DEFAULTS = {'batch_range': (10, 20), 'state': 'All', 'sorted_key': 'total', 'tracer_option': 'Default',
            'profile_path': '/tmp/profile', 'exit_on_finished': True}
STATES = ('CPU', 'GPU', 'All')
SORTED_KEYS = ('calls', 'total', 'max', 'min', 'ave')
TRACER_OPTIONS = ('Default', 'OpDetail', 'AllOpDetail')
_TRUE = ('yes', 'true', 't', '1')
_FALSE = ('no', 'false', 'f', '0')


def parse_profiler_options(text):
    """The options of a PaddleSeg profiler string ``"key1=value1; key2=value2"``, with PaddleSeg's defaults.

    Keys (PaddleSeg's): ``batch_range`` ``[start, end]`` (0 <= start < end), ``state`` (CPU, GPU or All),
    ``sorted_key`` (calls, total, max, min or ave), ``tracer_option`` (Default, OpDetail or AllOpDetail),
    ``profile_path`` and ``exit_on_finished`` (true/false). PaddleSeg ignores what it cannot read; here a
    malformed item, an unknown key or a bad value is a ``UserError`` naming it.

    Args:
        text (str): The ``--profiler_options`` string; an empty string means all defaults.

    Returns:
        dict: every key of ``DEFAULTS``.
    """
    options = dict(DEFAULTS)
    for item in str(text).split(';'):
        if not item.strip():
            continue
        if '=' not in item:
            raise UserError(f"--profiler_options: {item.strip()!r} is not key=value")
        key, value = (part.strip() for part in item.split('=', 1))
        if key == 'batch_range':
            numbers = value.strip('[]() ').split(',')
            try:
                start, end = (int(n) for n in numbers)
            except ValueError:
                start = end = None
            if start is None or not 0 <= start < end:
                raise UserError(f"--profiler_options: batch_range must be [start, end] with integers "
                                f"0 <= start < end, got {value!r}")
            options[key] = (start, end)
        elif key in ('state', 'sorted_key', 'tracer_option'):
            allowed = {'state': STATES, 'sorted_key': SORTED_KEYS, 'tracer_option': TRACER_OPTIONS}[key]
            if value not in allowed:
                raise UserError(f"--profiler_options: {key} must be one of {', '.join(allowed)}, got {value!r}")
            options[key] = value
        elif key == 'profile_path':
            if not value:
                raise UserError("--profiler_options: profile_path is empty")
            options[key] = value
        elif key == 'exit_on_finished':
            if value.lower() not in _TRUE + _FALSE:
                raise UserError(f"--profiler_options: exit_on_finished must be true or false, got {value!r}")
            options[key] = value.lower() in _TRUE
        else:
            raise UserError(f"--profiler_options: unknown key {key!r} (keys: {', '.join(DEFAULTS)})")
    if options['state'] == 'GPU' and not paddle.is_compiled_with_cuda():
        raise UserError("--profiler_options: state=GPU needs a Paddle built with CUDA; use state=CPU or All")
    return options


class TrainProfiler:
    """Profiles training iterations as PaddleSeg's ``add_profiler_step``, with ``paddle.profiler``.

    ``step()`` is called once after every training iteration of this process (a resumed run counts from its first
    iteration). PaddleSeg starts its profiler at call ``batch_range[0]`` and stops it at call ``batch_range[1]``
    (calls counted from 0), so the iterations recorded are, in the log's 1-based numbering of this process's
    iterations, ``batch_range[0] + 2`` to ``batch_range[1] + 1``; the same ones here (``ProfileStep#k`` in the trace
    is this process's iteration ``k + 1``). When recording stops, the summary tables (sorted by ``sorted_key``; op
    detail with ``tracer_option`` OpDetail or AllOpDetail) are printed and a Chrome-tracing JSON trace is written
    to ``profile_path`` (open it in chrome://tracing or Perfetto). With ``exit_on_finished`` (the default) training
    then ends, as PaddleSeg exits there; where training ends inside the range, the part recorded is written then.

    Args:
        options (str): The ``--profiler_options`` string (see ``parse_profiler_options``).
    """

    def __init__(self, options):
        self.options = parse_profiler_options(options)
        start, end = self.options['batch_range']
        targets = [profiler.ProfilerTarget.CPU]
        if self.options['state'] == 'GPU':
            targets = [profiler.ProfilerTarget.GPU]
        elif self.options['state'] == 'All' and paddle.is_compiled_with_cuda():
            targets.append(profiler.ProfilerTarget.GPU)
        self.finished = False
        self.written = None
        self.steps = 0
        self._profiler = profiler.Profiler(targets=targets, scheduler=(start + 1, end + 1),
                                           on_trace_ready=self._write)
        self._profiler.start()

    def _sorted_by(self):
        device = 'GPU' if self.options['state'] == 'GPU' else 'CPU'
        # paddle.profiler has no sort by call count; 'calls' sorts by total time
        suffix = {'calls': 'Total', 'total': 'Total', 'max': 'Max', 'min': 'Min', 'ave': 'Avg'}[
            self.options['sorted_key']]
        return getattr(profiler.SortedKeys, device + suffix)

    def _write(self, prof):
        if self.finished:
            return
        path = self.options['profile_path']
        if paddle.distributed.get_rank() > 0:  # every rank profiles (they must stop together); one file each
            path = f"{path}.rank{paddle.distributed.get_rank()}"
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        prof.export(path=path, format='json')
        prof.summary(sorted_by=self._sorted_by(), op_detail=self.options['tracer_option'] != 'Default',
                     time_unit='ms')
        self.written = path
        self.finished = True
        logger.info(f"Profiler: trace of iterations {self.options['batch_range'][0] + 2}..{self.steps} written to "
                    f"{path}")

    def step(self):
        """Count one training iteration. Returns True when training should end here (profile written and
        ``exit_on_finished``)."""
        if self.finished:
            return False
        self.steps += 1
        self._profiler.step()
        return self.finished and self.options['exit_on_finished']

    def close(self):
        """Stop the profiler (writing what it recorded, where training ended inside the range) and release it:
        Paddle allows one live profiler per process, freed with the last reference to it."""
        if self._profiler is None:
            return
        try:
            self._profiler.stop()
        finally:
            self._profiler = None
        if not self.finished:
            logger.warning(f"Profiler: training ended after {self.steps} iteration(s), before batch_range "
                           f"{list(self.options['batch_range'])} began recording; no profile written")
