"""The training loop: iterations, losses over every model output, logging, periodic evaluation and checkpoints,
resuming, VisualDL, mixed precision on GPU, data parallelism under ``paddle.distributed.launch``, an exponential
moving average of the weights (``--use_ema``), profiling (``--profiler_options``) and repeated epochs
(``--repeats``).

``train`` is the list of its steps, the methods of ``_Run`` in order: resume, set up devices, build the loader, open
the outputs (save_dir, VisualDL), set up evaluation, start, run the epochs (per iteration: ``step``, ``log``, the EMA
update, ``evaluate_and_save``), close. Their order is fixed: an exactly resumed run must draw the same random numbers
and write the same log lines and checkpoints as the uninterrupted one (docs/architecture.md walks through it)."""
import collections
import json
import math
import os
import random
import secrets
import sys
import time
import warnings

import numpy as np
import paddle

from paddle_models.core import logger
from paddle_models.core.checkpoint import (EMA_FILE, TRAIN_STATE_FILE, check_save_dir, iter_checkpoints,
                                           read_train_state, remove_checkpoint, remove_empty_folders,
                                           remove_stale_temp_folders, resume, save_checkpoint)
from paddle_models.core.ema import ModelEMA
from paddle_models.core.evaluate import evaluate
from paddle_models.core.folders import FolderLock, lock_path_inside, log_clean_up
from paddle_models.core.profiler import TrainProfiler, parse_profiler_options
from paddle_models.core.signals import interrupted
from paddle_models.errors import UserError
from paddle_models.layers.cpu_training import cpu_training_forms
from paddle_models.utils.compat import cpu_threads

# Paddle's BatchNorm warns on its first training forward pass; an error later in the run would print it to stderr
# above the one-line message
warnings.filterwarnings('ignore', message='When training, we now always track global mean and variance')


CONFIG_FILE = 'config.yml'


def environment():
    """What the run ran on, as PaddleSeg logs it at start: Python, Paddle (and its CUDA build), PaddleSeg,
    paddle_models, the device Paddle uses and the CPU threads. A dict of display strings."""
    import platform

    import paddleseg

    import paddle_models

    cuda = paddle.is_compiled_with_cuda()
    device = paddle.device.get_device()
    if device.startswith('gpu'):
        try:
            device += f" ({paddle.device.cuda.get_device_name()})"
        except Exception:  # noqa: BLE001  (a name is a nicety)
            pass
    return {
        'Python': platform.python_version(),
        'Paddle': paddle.__version__ + (f", CUDA {paddle.version.cuda()}" if cuda else ', CPU build'),
        'PaddleSeg': paddleseg.__version__,
        'paddle_models': paddle_models.__version__,
        'device': device,
        'CPU threads': f"{os.cpu_count()} cores, {cpu_threads()}",
        'platform': platform.platform(),
    }


def save_config(config, save_dir):
    """Write ``config`` (the merged config dict: YAML, its ``_base_`` files and the command line's overrides) to
    ``save_dir/config.yml``, atomically (a temporary file renamed over it), so a run's folder says what it ran."""
    import yaml

    path = os.path.join(save_dir, CONFIG_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, 'w', encoding='utf-8') as f:
            yaml.safe_dump(config, f, default_flow_style=False, sort_keys=False, allow_unicode=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def in_notebook():
    """True inside a Jupyter kernel (notebooks, AI Studio), where a widget progress bar shows the run's progress;
    a terminal keeps the log lines alone (a text bar would break them up)."""
    shell = sys.modules.get('IPython')
    try:
        ip = shell.get_ipython() if shell is not None else None
    except Exception:  # noqa: BLE001
        return False
    return ip is not None and 'IPKernelApp' in getattr(ip, 'config', {})


def set_seed(seed):
    """Seed Python, NumPy and Paddle so that a run can be repeated exactly (on CPU)."""
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


class RepeatedDataset(paddle.io.Dataset):
    """``dataset`` seen ``repeats`` times per epoch (``train.py --repeats``): index ``i`` is sample
    ``i % len(dataset)``, as PaddleSeg's ``train_dataset.file_list *= repeats`` makes it. Other attributes
    (``num_classes``, ``ignore_index``, ...) are the dataset's.

    Args:
        dataset: A map-style dataset.
        repeats (int): How many times each sample appears in one epoch, >= 1.
    """

    def __init__(self, dataset, repeats):
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise UserError(f"--repeats must be a positive integer, got {repeats!r}")
        self.dataset = dataset
        self.repeats = repeats

    def __len__(self):
        return len(self.dataset) * self.repeats

    def __getitem__(self, index):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return self.dataset[index % len(self.dataset)]

    def __getattr__(self, name):
        if name == 'dataset':  # not set yet (e.g. while unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def repeat_dataset(dataset, repeats):
    """``dataset`` itself for ``repeats == 1``, else a ``RepeatedDataset``."""
    if repeats == 1 and not isinstance(repeats, bool):
        return dataset
    return RepeatedDataset(dataset, repeats)


EVAL_OPTIONS = ('aug_eval', 'scales', 'flip_horizontal', 'flip_vertical', 'is_slide', 'crop_size', 'stride',
                'auc_roc')


def collate_train(samples):
    """Stack images and labels of training samples (dicts as PaddleSeg's datasets return them); a batch with a
    sample that failed to read is ``(placeholder, _CarriedError)``, passed on to the main process."""
    failed = [s for s in samples if isinstance(s, _CarriedError)]
    if failed:
        return np.zeros([1], dtype='float32'), failed[0]  # Paddle's loader needs at least one array in a batch
    images = np.stack([np.asarray(s['img'], dtype='float32') for s in samples])
    labels = np.stack([np.asarray(s['label']).astype('int64') for s in samples])
    if labels.ndim == 4:
        labels = labels[:, 0]
    return images, labels


def loss_computation(outputs, label, losses):
    """Weighted sum of ``losses['types'][i](outputs[i], label) * losses['coef'][i]`` over the model's outputs.

    Returns:
        (total loss, list of per-output losses)
    """
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    types, coefs = losses['types'], losses['coef']
    if len(outputs) != len(coefs):
        raise UserError(f"the model returns {len(outputs)} outputs in training but loss.coef has {len(coefs)} "
                        f"entries: give one coef per output")
    parts = []
    for loss, output, coef in zip(types, outputs, coefs):
        value = loss(output, label)
        if isinstance(value, (list, tuple)):  # PaddleSeg's MixedLoss returns its weighted parts
            value = paddle.add_n(list(value))
        parts.append(value * coef)
    return paddle.add_n(parts) if len(parts) > 1 else parts[0], parts


# streams of random numbers derived from a run's seed: one per training iteration, one per sample read
_STEP_STREAM, _SAMPLE_STREAM = 0, 1


def _seed_words(*key):
    """Six 32-bit words derived from the non-negative integers ``key`` by NumPy's ``SeedSequence`` (well mixed:
    keys that differ in any place give unrelated words)."""
    return np.random.SeedSequence([int(k) for k in key]).generate_state(6, dtype=np.uint32)


def _reseed(words, paddle_too):
    """Seed Python's and NumPy's global generators (and Paddle's, CPU and GPU, with ``paddle_too``) from ``words``.

    Args:
        words (ndarray): Six uint32 words from ``_seed_words``; each generator gets its own pair.
        paddle_too (bool): Also seed Paddle's generators (dropout, ``paddle.rand`` in a forward pass).
    """
    np.random.seed(words[:2])
    random.seed(int(words[2]) << 32 | int(words[3]))
    if paddle_too:
        paddle.seed(int(words[4]) << 31 | int(words[5]) >> 1)


class _SeededSamples(paddle.io.Dataset):
    """``dataset[index]`` read with Python's and NumPy's global generators (which PaddleSeg's random transforms use)
    seeded from ``(seed, epoch, index)`` first.

    A sample's augmentation then depends on nothing else: not on the samples read before it, not on which
    data-loader worker reads it, not on whether the run was resumed. That is what makes a resumed run (which skips
    the batches before its checkpoint) and ``--num_workers N`` repeat the uninterrupted single-process run.

    Args:
        dataset: A map-style dataset.
        seed (int): The run's seed (non-negative).
    """

    def __init__(self, dataset, seed):
        self.dataset = dataset
        self.seed = seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        _reseed(_seed_words(self.seed, _SAMPLE_STREAM, epoch, index), paddle_too=False)
        try:
            return self.dataset[index]
        except UserError as err:  # carried to the main process as the object itself (see _CarriedError)
            return _CarriedError(err)


class _CarriedError:
    """A sample whose reading raised a UserError, in place of the sample.

    A DataLoader worker's exception reaches the main process only as a new exception built from its traceback text
    (and Paddle's loader thread dies with it), so the worker returns the error as data instead: ``collate_train``
    passes it on in the batch, pickled with its type and message, and ``_raise_carried`` raises it in the main
    process, the same UserError with 0 workers or N."""

    def __init__(self, error):
        self.error = error


def _raise_carried(loader):
    """The batches of ``loader``; the UserError a sample carried (``_CarriedError``) is raised where it arrives."""
    for images, labels in loader:
        if isinstance(labels, _CarriedError):
            raise labels.error
        yield images, labels


class _EpochBatches(paddle.io.Sampler):
    """The batches of ``batch_sampler`` as lists of ``(epoch, index)`` for ``_SeededSamples``, leaving out the first
    ``skip`` batches of the first epoch (resuming mid-epoch).

    Args:
        batch_sampler (DistributedBatchSampler): Its order is fixed by the epoch (``set_epoch``).
        skip (int): Batches of the first epoch already trained on before the checkpoint.
    """

    def __init__(self, batch_sampler, skip):
        self.batch_sampler = batch_sampler
        self.skip = skip
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.batch_sampler.set_epoch(epoch)

    def __iter__(self):
        epoch = self.epoch
        for position, batch in enumerate(self.batch_sampler):
            if position >= self.skip:
                yield [(epoch, int(index)) for index in batch]
        self.skip = 0

    def __len__(self):
        return len(self.batch_sampler) - self.skip


def _run_seed(seed, state, resume_model, expected):
    """The seed that drives data augmentation and every iteration's random numbers.

    Args:
        seed (int): ``--seed`` (None: not given).
        state (dict): The resumed checkpoint's ``train_state.json`` (None: not resuming, or a checkpoint without
            one). Its seed wins over ``--seed``, so that the resumed run continues the original one exactly.
        resume_model (str): The resumed checkpoint folder, for messages.
        expected (dict): This run's ``iter``, ``batch_size``, ``world_size`` and ``samples``; a checkpoint written
            with other values continues with a warning that the data order is not the original run's.

    Returns:
        int: ``state``'s seed, else ``seed``, else a random one (saved in every checkpoint all the same).
    """
    if state is None:
        if resume_model:
            logger.warning(f"{resume_model} has no {TRAIN_STATE_FILE} (an older or PaddleSeg checkpoint): weights, "
                           f"optimizer and iteration continue, random augmentation does not repeat the original run")
        return seed if seed is not None else secrets.randbits(63)
    file = os.path.join(resume_model, TRAIN_STATE_FILE)
    base = state.get('seed')
    if isinstance(base, bool) or not isinstance(base, int) or base < 0:
        raise UserError(f"--resume_model {file}: 'seed' must be a non-negative integer, got {base!r}")
    if seed is not None and seed != base:
        logger.warning(f"--seed {seed} is not the seed of {resume_model} ({base}): continuing with {base}")
    differs = [f"{key} {state.get(key)!r} (now {value})" for key, value in expected.items() if state.get(key) != value]
    if differs:
        logger.warning(f"{file} was written with {', '.join(differs)}: the run goes on, but its data order and "
                       f"augmentation do not continue the original run's")
    return base


def _best_so_far(state, save_dir, name, prefix):
    """(mIoU, iter) of the best model that a resumed run goes on comparing against.

    Args:
        state (dict): The resumed checkpoint's ``train_state.json`` (None: a fresh start).
        save_dir (str): This run's save_dir.
        name (str): ``best_model`` or ``ema_best_model``: the record counts only when this folder is in
            ``save_dir`` (resumed into another folder, the run starts a best model of its own).
        prefix (str): The record's keys in ``state``: ``best_`` or ``best_ema_`` + ``miou``/``iter``.

    Returns:
        (float, int): The record, or (-1.0, -1) (none yet).
    """
    if state is None or not os.path.isdir(os.path.join(save_dir, name)):
        return -1.0, -1
    miou, at = state.get(prefix + 'miou'), state.get(prefix + 'iter')
    if isinstance(miou, (int, float)) and isinstance(at, int) and not isinstance(miou, bool) \
            and not isinstance(at, bool):
        return float(miou), at
    return -1.0, -1


def _checkpoint_bytes(model, ema):
    """About the size of one ``iter_N`` checkpoint: the weights, as much again for the optimizer's state (SGD's
    momentum; Adam keeps twice that) and the weights once more with an EMA."""
    weights = sum(int(np.prod(v.shape)) * v.element_size() for v in model.state_dict().values())
    return weights * (3 if ema is not None else 2)


class _Checkpoints:
    """The checkpoints a run writes in ``save_dir``.

    A failed write (disk full, read-only file system, ...) stops training with a ``UserError`` naming the last good
    checkpoint (the failed save leaves nothing behind and keeps what was there); at most ``keep_max`` ``iter_N``
    folders are kept, counting those already in ``save_dir``; a run that fails before its first save removes the
    folders it created for ``save_dir``.

    Args:
        save_dir (str): Where the checkpoints go.
        keep_max (int): Most ``iter_N`` folders kept (``keep_checkpoint_max``); the oldest go first. 0: keep all.
        last_good (str): The checkpoint the run resumed from, or None.
    """

    def __init__(self, save_dir, keep_max, last_good):
        self.save_dir = save_dir
        self.keep_max = keep_max
        self.last_good = last_good  # the newest complete iter_N checkpoint of this run (or the resumed one)
        self.kept = collections.deque()  # iter_N folders in save_dir, oldest first
        self.created = None  # the topmost folder created for save_dir (None: it existed)
        self.lock = None  # save_dir's FolderLock while this run writes there

    def open(self, need_bytes):
        """Check ``save_dir`` for room, take its lock (one run per folder), clean up after killed saves and count
        the ``iter_N`` folders already there (rank 0 only: the other ranks write nothing)."""
        self.created, self.lock = _prepare_save_dir(self.save_dir, need_bytes)
        self.kept.extend(iter_checkpoints(self.save_dir))

    def release(self):
        """Unlock ``save_dir`` (after success or failure)."""
        if self.lock is not None:
            self.lock.release()

    def describe_last_good(self):
        return self.last_good or 'none was saved yet'

    def save(self, name, *args, **kwargs):
        """``save_checkpoint`` into ``save_dir/name``; returns its path."""
        try:
            return save_checkpoint(self.save_dir, name, *args, **kwargs)
        except OSError as err:
            raise UserError(f"saving checkpoint {os.path.join(self.save_dir, name)} failed ({err.strerror or err}); "
                            f"training stopped, last good checkpoint: {self.describe_last_good()}") from None

    def save_iter(self, iteration, model, optimizer, ema, state):
        """Save ``iter_N`` with ``train_state.json`` = ``state``, then drop the oldest beyond ``keep_max``."""
        path = self.save(f'iter_{iteration}', model, optimizer, ema=ema,
                         extra={TRAIN_STATE_FILE: json.dumps(state, indent=1) + '\n'})
        self.last_good = path
        if path in self.kept:  # rewritten (resumed into the folder of a run that got further)
            self.kept.remove(path)
        self.kept.append(path)
        while len(self.kept) > self.keep_max > 0:
            remove_checkpoint(self.kept.popleft())

    def remove_if_unused(self):
        """After a failure: a run that failed before its first save leaves nothing behind."""
        self.release()
        if self.created:
            remove_empty_folders(self.save_dir, self.created)


def _evaluate_keep_best(net, best, val_dataset, test_config, precision, amp_level, iteration, checkpoints, writer,
                        ema=False):
    """Evaluate ``net`` (the model, or with ``ema`` its moving average) and save it as ``best_model`` (or
    ``ema_best_model``) when its mIoU beats ``best`` = (mIoU, iteration); log and write the scalars.

    Returns:
        tuple: The new (best mIoU, its iteration).
    """
    result = evaluate(net, val_dataset, precision=precision, amp_level=amp_level,
                      vdl_writer=None if ema else writer, vdl_step=iteration, **test_config)
    best_miou, best_iter = best
    if result['miou'] > best_miou:
        best_miou, best_iter = result['miou'], iteration
        checkpoints.save('ema_best_model' if ema else 'best_model', net,
                         **({'model_file': EMA_FILE} if ema else {}),
                         extra={'score.txt': f"iter: {iteration}\nmiou: {best_miou:.6f}\n"})
    logger.info(f"[EVAL] The {'EMA ' if ema else ''}model with the best validation mIoU ({best_miou:.4f}) was saved "
                f"at iter {best_iter}.")
    if writer is not None:
        prefix = 'Ema_' if ema else ''
        writer.add_scalar(f'Evaluate/{prefix}mIoU', result['miou'], iteration)
        writer.add_scalar(f'Evaluate/{prefix}Acc', result['acc'], iteration)
    return best_miou, best_iter


def _prepare_save_dir(save_dir, need_bytes):
    """Check ``save_dir`` (``check_save_dir``), lock it (``folders.FolderLock``: a second run into it stops with a
    line naming this one's PID) and clean up after saves that were killed, logging what was done.

    Returns:
        (str, FolderLock): The topmost folder created here, None if ``save_dir`` existed (``check_save_dir``), and
        the lock, held until the run releases it.
    """
    created = check_save_dir(save_dir, need_bytes)
    lock = FolderLock(lock_path_inside(save_dir), save_dir)
    try:
        lock.acquire()
        removed, restored = remove_stale_temp_folders(save_dir)
    except BaseException as err:
        lock.release()
        if created:
            remove_empty_folders(save_dir, created)
        if isinstance(err, OSError):
            raise UserError(f"--save_dir {save_dir}: cannot clean up unfinished checkpoint folders "
                            f"({err.strerror or err})") from None
        raise
    log_clean_up(removed, restored, 'checkpoint folder', f'in {save_dir}', 'save')
    return created, lock


class _MainThreadLoader:
    """Batches of ``collate_train`` as tensors, read in the calling thread."""

    def __init__(self, dataset, batch_sampler):
        self.dataset = dataset
        self.batch_sampler = batch_sampler

    def __iter__(self):
        for indices in self.batch_sampler:
            images, labels = collate_train([self.dataset[i] for i in indices])
            if isinstance(labels, _CarriedError):
                raise labels.error
            yield paddle.to_tensor(images), paddle.to_tensor(labels)


def _current_lr(optimizer):
    return float(optimizer.get_lr())


def _format_eta(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _Speed:
    """Seconds spent waiting for batches (reader_cost) and on whole iterations (batch_cost), averaged over the
    iterations since the last log line."""

    def __init__(self):
        self.reader_cost = self.batch_cost = 0.0
        self.count = 0
        self.tic = time.time()

    def batch_read(self):
        self.reader_cost += time.time() - self.tic

    def step_done(self):
        self.batch_cost += time.time() - self.tic
        self.count += 1

    def restart(self):
        """The next iteration starts (waiting for its batch)."""
        self.tic = time.time()

    def averages(self):
        """(batch_cost, reader_cost) per iteration since the last call, which starts a new window."""
        batch_cost, reader_cost = self.batch_cost / self.count, self.reader_cost / self.count
        self.reader_cost = self.batch_cost = 0.0
        self.count = 0
        return batch_cost, reader_cost


class _Run:
    """One call of ``train``: its settings and the state that changes as it goes (iteration, epoch, best mIoU
    records, checkpoints). Each method is one step of ``train``, which calls them in the order they are written.

    Args:
        model, optimizer, losses, iters, batch_size, log_iters, save_interval: As for ``train``.
    """

    def __init__(self, model, optimizer, losses, iters, batch_size, log_iters, save_interval):
        self.model = model
        self.optimizer = optimizer
        self.losses = losses
        self.iters = iters
        self.batch_size = batch_size
        self.log_iters = log_iters
        self.save_interval = save_interval
        self.world_size = paddle.distributed.get_world_size()
        self.rank = paddle.distributed.get_rank()

    # preparing --------------------------------------------------------------------------------------------------

    def resume(self, resume_model, use_ema):
        """Create the EMA; with ``resume_model`` load weights, optimizer, learning rate and EMA and read
        ``train_state.json`` (seed, best records). Sets ``ema``, ``start_iter`` and ``train_state``."""
        self.ema = ModelEMA(self.model) if use_ema else None
        self.start_iter = 0
        self.train_state = None
        if resume_model:
            self.start_iter = resume(self.model, self.optimizer, resume_model, self.ema)
            self.train_state = read_train_state(resume_model)
            logger.info(f"Resumed from {resume_model} at iter {self.start_iter}, lr {_current_lr(self.optimizer):.6g}")
            if self.ema is not None and not os.path.isfile(os.path.join(resume_model, EMA_FILE)):
                logger.warning(f"{resume_model} has no {EMA_FILE}: the weight average restarts from the resumed "
                               f"weights")
        if self.start_iter >= self.iters:
            raise UserError(f"--resume_model {resume_model} is at iter {self.start_iter}, not before --iters "
                            f"{self.iters}")

    def set_up_devices(self, precision, amp_level):
        """Mixed precision (fp16: a loss scaler, with O2 the model and optimizer decorated), the learning-rate
        scheduler to step, and ``paddle.DataParallel`` under the launcher (``train_model``)."""
        self.precision, self.amp_level = precision, amp_level
        self.scaler = None
        if precision == 'fp16':
            if amp_level == 'O2':
                self.model, self.optimizer = paddle.amp.decorate(models=self.model, optimizers=self.optimizer,
                                                                 level='O2', save_dtype='float32')
            self.scaler = paddle.amp.GradScaler(init_loss_scaling=1024)
        self.scheduler = getattr(self.optimizer, '_learning_rate', None)
        if not isinstance(self.scheduler, paddle.optimizer.lr.LRScheduler):
            self.scheduler = None
        self.train_model = self.model
        if self.world_size > 1:
            paddle.distributed.init_parallel_env()
            self.train_model = paddle.DataParallel(self.model)

    def build_loader(self, train_dataset, num_workers, seed, resume_model):
        """This rank's shuffled batches, each sample augmented from ``(run seed, epoch, index)`` (``_SeededSamples``),
        starting after the batches a resumed run already trained on. Sets ``run_seed``, ``sampler``, ``batches``
        and ``loader``."""
        self.samples_count = len(train_dataset)
        self.sampler = paddle.io.DistributedBatchSampler(train_dataset, batch_size=self.batch_size, shuffle=True,
                                                         drop_last=True)
        if len(self.sampler) == 0:
            raise UserError(f"train_dataset has {len(train_dataset)} samples, fewer than batch_size "
                            f"{self.batch_size} x {self.world_size} devices")
        self.run_seed = _run_seed(seed, self.train_state, resume_model, {
            'iter': self.start_iter, 'batch_size': self.batch_size, 'world_size': self.world_size,
            'samples': len(train_dataset)})
        samples = _SeededSamples(train_dataset, self.run_seed)
        self.batches = _EpochBatches(self.sampler, self.start_iter % len(self.sampler))
        if num_workers > 0:
            self.loader = paddle.io.DataLoader(samples, batch_sampler=self.batches, num_workers=num_workers,
                                               return_list=True, collate_fn=collate_train, persistent_workers=True)
        else:
            # in the main thread: paddle's single-process DataLoader reads in a helper thread and hangs when the
            # dataset raises (e.g. a bad label), instead of passing the error on
            self.loader = _MainThreadLoader(samples, self.batches)

    def open_outputs(self, save_dir, keep_checkpoint_max, use_vdl, resume_model):
        """Rank 0 checks ``save_dir`` and opens the VisualDL writer (``use_vdl``); other ranks write nothing."""
        self.save_dir = save_dir
        self.checkpoints = _Checkpoints(save_dir, keep_checkpoint_max, resume_model or None)
        if self.rank == 0:
            self.checkpoints.open(_checkpoint_bytes(self.model, self.ema))
        self.writer = None
        if use_vdl and self.rank == 0:
            from visualdl import LogWriter
            self.writer = LogWriter(save_dir)

    def set_evaluation(self, val_dataset, test_config):
        """What each evaluation runs (``val_dataset`` None: none) and the best mIoU so far: a resumed run goes on
        comparing against its checkpoint's records."""
        self.val_dataset = val_dataset
        self.test_config = {k: v for k, v in dict(test_config or {}).items() if k in EVAL_OPTIONS}
        self.best = _best_so_far(self.train_state, self.save_dir, 'best_model', 'best_')
        self.best_ema = _best_so_far(self.train_state, self.save_dir, 'ema_best_model', 'best_ema_')

    def start(self, profiler_options):
        """The counters at the start (or resumed) iteration, the model in training mode, the profiler."""
        self.last_loss = None
        self.stopped = False
        self.iteration = self.start_iter
        self.epoch = self.iteration // len(self.sampler)
        self.model.train()
        self.speed = _Speed()
        logger.info(f"Training {type(self.model).__name__} for {self.iters} iters, batch {self.batch_size} x "
                    f"{self.world_size} device(s)")
        self.profiler = TrainProfiler(profiler_options) if profiler_options is not None else None
        self.bar = None
        if self.rank == 0 and in_notebook():
            from tqdm.auto import tqdm  # ipywidgets' bar in a notebook

            self.bar = tqdm(total=self.iters, initial=self.iteration, desc='train', unit='iter')

    # training ---------------------------------------------------------------------------------------------------

    def run_epochs(self):
        """Iterations, epoch after epoch, until ``iters`` (or the profiler's end, with ``exit_on_finished``)."""
        while self.iteration < self.iters and not self.stopped:
            self.batches.set_epoch(self.epoch)
            for images, labels in _raise_carried(self.loader):
                self.speed.batch_read()
                self.iteration += 1
                loss, lr = self.step(images, labels)
                if self.profiler is not None and self.profiler.step():
                    logger.info(f"Profiler finished (exit_on_finished): training stops at iter {self.iteration}")
                    self.stopped = True  # as PaddleSeg, which exits here
                    break
                self.speed.step_done()
                if self.bar is not None:
                    self.bar.update(1)
                if self.rank == 0 and self._due(self.log_iters):
                    self.log(loss, lr)
                if self.ema is not None:
                    self.ema.update(self.model, self.iteration)
                if self.rank == 0 and self._due(self.save_interval):
                    self.evaluate_and_save()
                if self.iteration >= self.iters:
                    break
                self.speed.restart()
            self.epoch += 1

    def _due(self, interval):
        return self.iteration % interval == 0 or self.iteration == self.iters

    def step(self, images, labels):
        """One iteration: its random numbers seeded from ``(run seed, iteration, rank)``, the forward pass and
        losses, the backward pass, the optimizer and the learning-rate schedule. A loss that is not finite stops
        training, naming the last good checkpoint.

        Returns:
            (float, float): The loss and the learning rate it was trained with.
        """
        _reseed(_seed_words(self.run_seed, _STEP_STREAM, self.iteration, self.rank), paddle_too=True)
        with paddle.amp.auto_cast(enable=self.scaler is not None, level=self.amp_level):
            outputs = self.train_model(images)
            loss, _ = loss_computation(outputs, labels, self.losses)
        loss_value = float(loss)
        if not math.isfinite(loss_value):
            raise UserError(f"loss became {loss_value} at iter {self.iteration}; training stopped, last good "
                            f"checkpoint: {self.checkpoints.describe_last_good()}")
        if self.scaler is not None:
            scaled = self.scaler.scale(loss)
            scaled.backward()
            self.scaler.minimize(self.optimizer, scaled)
        else:
            loss.backward()
            self.optimizer.step()
        lr = _current_lr(self.optimizer)
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.clear_grad()
        self.last_loss = loss_value
        return loss_value, lr

    def log(self, loss, lr):
        """The ``[TRAIN]`` line (and VisualDL's Train/ scalars) with the speed since the last one."""
        batch_cost, reader_cost = self.speed.averages()
        logger.info(f"[TRAIN] epoch: {self.epoch + 1}, iter: {self.iteration}/{self.iters}, loss: {loss:.4f}, "
                    f"lr: {lr:.6f}, batch_cost: {batch_cost:.4f}, reader_cost: {reader_cost:.5f}, "
                    f"ips: {self.batch_size * self.world_size / batch_cost:.2f} samples/sec | ETA "
                    f"{_format_eta((self.iters - self.iteration) * batch_cost)}")
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if self.writer is not None:
            self.writer.add_scalar('Train/loss', loss, self.iteration)
            self.writer.add_scalar('Train/lr', lr, self.iteration)
            self.writer.add_scalar('Train/batch_cost', batch_cost, self.iteration)

    def evaluate_and_save(self):
        """Every ``save_interval`` iterations and at the end: evaluate the model (and its EMA), keeping the best,
        then save ``iter_N`` with the ``train_state.json`` that lets a resumed run continue exactly. The run's
        merged config goes to ``save_dir/config.yml`` with the first save (a run stopped before it leaves nothing)."""
        if getattr(self, 'config', None) is not None:
            logger.info(f"Config saved as {save_config(self.config, self.save_dir)}")
            self.config = None
        if self.val_dataset is not None:
            evaluation = dict(val_dataset=self.val_dataset, test_config=self.test_config, precision=self.precision,
                              amp_level=self.amp_level, iteration=self.iteration, checkpoints=self.checkpoints,
                              writer=self.writer)
            self.best = _evaluate_keep_best(self.model, self.best, **evaluation)
            self.model.train()
            if self.ema is not None:
                self.best_ema = _evaluate_keep_best(self.ema.model, self.best_ema, ema=True, **evaluation)
        state = {'format': 1, 'iter': self.iteration, 'seed': self.run_seed, 'batch_size': self.batch_size,
                 'world_size': self.world_size, 'samples': self.samples_count,
                 'best_miou': float(self.best[0]), 'best_iter': self.best[1]}
        if self.ema is not None:
            state.update(best_ema_miou=float(self.best_ema[0]), best_ema_iter=self.best_ema[1])
        self.checkpoints.save_iter(self.iteration, self.model, self.optimizer, self.ema, state)

    # finishing --------------------------------------------------------------------------------------------------

    def close(self):
        """Stop the profiler, close the VisualDL writer and unlock ``save_dir``, after success or failure."""
        if getattr(self, 'profiler', None) is not None:
            self.profiler.close()
        if getattr(self, 'bar', None) is not None:
            self.bar.close()
        if getattr(self, 'writer', None) is not None:
            self.writer.close()
        if self.checkpoints is not None:
            self.checkpoints.release()

    def summary(self):
        summary = {'last_iter': self.iteration, 'best_miou': self.best[0], 'best_iter': self.best[1],
                   'last_loss': self.last_loss, 'iters_per_epoch': len(self.sampler)}
        if self.ema is not None:
            summary.update(best_ema_miou=self.best_ema[0], best_ema_iter=self.best_ema[1])
        return summary


def train(model, train_dataset, losses, optimizer, save_dir='output', iters=10000, batch_size=2,
          val_dataset=None, resume_model=None, save_interval=1000, log_iters=10, num_workers=0, use_vdl=False,
          keep_checkpoint_max=5, precision='fp32', amp_level='O1', test_config=None, do_eval=False, seed=None,
          use_ema=False, profiler_options=None, config=None, fast_cpu_forms=True):
    """Train ``model`` for ``iters`` iterations.

    Args:
        model (nn.Layer): Returns a list of logits; in training one per loss coef.
        train_dataset: PaddleSeg-style dataset (items are dicts with 'img' and 'label').
        losses (dict): {'types': [loss layers], 'coef': [floats]}.
        optimizer: A paddle optimizer whose learning rate is an ``LRScheduler`` (stepped every iteration).
        save_dir (str): Where ``iter_N/`` and ``best_model/`` checkpoints go.
        val_dataset: Evaluated every ``save_interval`` iterations when ``do_eval``.
        resume_model (str): An ``iter_N`` folder to continue from: weights, optimizer and learning rate, EMA, and
            from its ``train_state.json`` the seed, the position in the data and the best mIoU so far, so that the
            run goes on exactly as if it had not stopped (on CPU; see ``seed``).
        keep_checkpoint_max (int): Most ``iter_N`` folders kept in ``save_dir``, counting those already there
            (e.g. written before a resume); the oldest (smallest N) go first. 0: keep all.
        precision (str): 'fp32' or 'fp16' (GPU only) with ``amp_level`` 'O1' or 'O2'.
        test_config (dict): Evaluation options (aug_eval, scales, flips, is_slide, crop_size, stride, auc_roc).
        seed (int): Seed of data augmentation and of every iteration's random numbers (None: a random one); a
            resumed run takes its checkpoint's. Sample ``i`` of epoch ``e`` is augmented with Python's and NumPy's
            generators seeded from ``(seed, e, i)``; iteration ``n`` starts with Python's, NumPy's and Paddle's
            seeded from ``(seed, n, rank)``. So a resumed run and ``num_workers > 0`` repeat the uninterrupted
            single-process run exactly (on CPU); ``train_state.json`` in each ``iter_N`` keeps the seed.
        use_ema (bool): Keep an exponential moving average of the weights (``ModelEMA``, PaddleSeg's rule),
            updated after every iteration; each ``iter_N`` checkpoint gets ``ema_model.pdparams`` (which a resumed
            run continues from), evaluation (``do_eval``) also scores the average and keeps the best one in
            ``ema_best_model/ema_model.pdparams``.
        profiler_options (str): PaddleSeg's profiler option string (``TrainProfiler``); None: no profiling.
        config (dict): The merged config the run was built from (train.py passes it): saved as
            ``save_dir/config.yml`` with the run's first checkpoint (rank 0). None: nothing saved.
        fast_cpu_forms (bool): On the CPU, train with the faster bias additions of
            ``layers/cpu_training.py`` (the same values; each ``nn.Conv2D``/``nn.Linear`` with a bias switches to
            them for the run and back at its end). Ignored on other devices.

    Returns:
        dict: 'last_iter', 'best_miou', 'best_iter', 'last_loss', 'iters_per_epoch', and with ``use_ema``
        'best_ema_miou', 'best_ema_iter'.
    """
    if profiler_options is not None:
        parse_profiler_options(profiler_options)  # a bad option string fails before anything is done
    run = _Run(model, optimizer, losses, iters, batch_size, log_iters, save_interval)
    run.resume(resume_model, use_ema)
    run.set_up_devices(precision, amp_level)
    run.build_loader(train_dataset, num_workers, seed, resume_model)
    run.checkpoints = None
    try:
        run.open_outputs(save_dir, keep_checkpoint_max, use_vdl, resume_model)
        if run.rank == 0:
            logger.info("Environment: " + "; ".join(f"{k} {v}" for k, v in environment().items()))
        run.config = config
        run.set_evaluation(val_dataset if do_eval else None, test_config)
        run.start(profiler_options)
        on_cpu = paddle.device.get_device() == 'cpu'
        with cpu_training_forms(run.model, enabled=fast_cpu_forms and on_cpu) as switched:
            if switched:
                logger.info(f"CPU training forms: {switched} conv/linear bias additions (layers/cpu_training.py)")
            run.run_epochs()
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM/SIGINT under the command line's handlers
        if run.checkpoints is not None:
            run.checkpoints.remove_if_unused()
        stopped = f"training stopped at iter {getattr(run, 'iteration', run.start_iter)}, last good checkpoint: " \
                  f"{run.checkpoints.describe_last_good() if run.checkpoints else 'none was saved yet'}"
        raise interrupted(err, stopped) from None
    except BaseException:
        if run.checkpoints is not None:
            run.checkpoints.remove_if_unused()
        raise
    finally:
        run.close()
    return run.summary()
