"""The training loop: iterations, losses over every model output, logging, periodic evaluation and checkpoints,
resuming, VisualDL, mixed precision on GPU, data parallelism under ``paddle.distributed.launch``, an exponential
moving average of the weights (``--use_ema``), profiling (``--profiler_options``) and repeated epochs
(``--repeats``)."""
import collections
import contextlib
import json
import math
import os
import random
import secrets
import shutil
import threading
import time
import warnings

import numpy as np
import paddle

from paddle_models.core import logger
from paddle_models.core.checkpoint import (EMA_FILE, TRAIN_STATE_FILE, check_save_dir, iter_checkpoints,
                                           read_train_state, remove_empty_folders, remove_stale_temp_folders, resume,
                                           save_checkpoint)
from paddle_models.core.ema import ModelEMA
from paddle_models.core.evaluate import evaluate
from paddle_models.core.profiler import TrainProfiler, parse_profiler_options
from paddle_models.errors import UserError

# Paddle's BatchNorm warns on its first training forward pass; an error later in the run would print it to stderr
# above the one-line message
warnings.filterwarnings('ignore', message='When training, we now always track global mean and variance')


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
    """Stack images and labels of training samples (dicts as PaddleSeg's datasets return them)."""
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
        return self.dataset[index]


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


def _save(save_dir, name, last_good, *args, **kwargs):
    """``save_checkpoint``; a failed write (disk full, read-only file system, ...) stops training with a
    ``UserError`` naming the last good checkpoint (the failed save leaves nothing behind and keeps what was there).

    Args:
        last_good (str): The newest complete ``iter_N`` checkpoint of this run (or the resumed one), or None.
    """
    try:
        return save_checkpoint(save_dir, name, *args, **kwargs)
    except OSError as err:
        raise UserError(f"saving checkpoint {os.path.join(save_dir, name)} failed ({err.strerror or err}); "
                        f"training stopped, last good checkpoint: {last_good or 'none was saved yet'}") from None


def _evaluate_keep_best(net, best, val_dataset, test_config, precision, amp_level, iteration, save_dir, last_good,
                        writer, ema=False):
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
        _save(save_dir, 'ema_best_model' if ema else 'best_model', last_good, net,
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
    """Check ``save_dir`` (``check_save_dir``) and clean up after saves that were killed, logging what was done.

    Returns:
        str: The topmost folder created here, None if ``save_dir`` existed (``check_save_dir``).
    """
    created = check_save_dir(save_dir, need_bytes)
    try:
        removed, restored = remove_stale_temp_folders(save_dir)
    except OSError as err:
        raise UserError(f"--save_dir {save_dir}: cannot clean up unfinished checkpoint folders "
                        f"({err.strerror or err})") from None
    if removed:
        logger.info(f"Removed {len(removed)} unfinished checkpoint folder(s) left by an interrupted save in "
                    f"{save_dir}: {', '.join(os.path.basename(p) for p in removed)}")
    for path in restored:
        logger.warning(f"Put {path} back: a save replacing it was interrupted")
    return created


@contextlib.contextmanager
def _loader_errors():
    """Pass a UserError raised inside a DataLoader worker on as the UserError itself.

    Paddle's loader thread dies with the worker's exception (printing its traceback) and the main loop only sees
    "blocking queue is killed"; here the thread's exception is kept (and not printed) and raised in its place.
    """
    caught = []
    previous = threading.excepthook

    def hook(args):
        if isinstance(args.exc_value, UserError) or 'UserError' in str(args.exc_value):
            caught.append(args.exc_value)
        else:
            previous(args)

    threading.excepthook = hook
    try:
        yield
    except (SystemError, RuntimeError):
        if caught:
            text = str(caught[-1])
            lines = [line.split('UserError: ', 1)[1] for line in text.splitlines() if 'UserError: ' in line]
            raise UserError(lines[-1].strip() if lines else text.strip().splitlines()[-1]) from None
        raise
    finally:
        threading.excepthook = previous


class _MainThreadLoader:
    """Batches of ``collate_train`` as tensors, read in the calling thread."""

    def __init__(self, dataset, batch_sampler):
        self.dataset = dataset
        self.batch_sampler = batch_sampler

    def __iter__(self):
        for indices in self.batch_sampler:
            images, labels = collate_train([self.dataset[i] for i in indices])
            yield paddle.to_tensor(images), paddle.to_tensor(labels)


def _current_lr(optimizer):
    return float(optimizer.get_lr())


def _format_eta(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train(model, train_dataset, losses, optimizer, save_dir='output', iters=10000, batch_size=2,
          val_dataset=None, resume_model=None, save_interval=1000, log_iters=10, num_workers=0, use_vdl=False,
          keep_checkpoint_max=5, precision='fp32', amp_level='O1', test_config=None, do_eval=False, seed=None,
          use_ema=False, profiler_options=None):
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

    Returns:
        dict: 'last_iter', 'best_miou', 'best_iter', 'last_loss', 'iters_per_epoch', and with ``use_ema``
        'best_ema_miou', 'best_ema_iter'.
    """
    if profiler_options is not None:
        parse_profiler_options(profiler_options)  # a bad option string fails before anything is done
    world_size = paddle.distributed.get_world_size()
    rank = paddle.distributed.get_rank()
    ema = ModelEMA(model) if use_ema else None
    start_iter = 0
    train_state = None
    if resume_model:
        start_iter = resume(model, optimizer, resume_model, ema)
        train_state = read_train_state(resume_model)
        logger.info(f"Resumed from {resume_model} at iter {start_iter}, lr {_current_lr(optimizer):.6g}")
        if ema is not None and not os.path.isfile(os.path.join(resume_model, EMA_FILE)):
            logger.warning(f"{resume_model} has no {EMA_FILE}: the weight average restarts from the resumed weights")
    if start_iter >= iters:
        raise UserError(f"--resume_model {resume_model} is at iter {start_iter}, not before --iters {iters}")
    if precision == 'fp16':
        if amp_level == 'O2':
            model, optimizer = paddle.amp.decorate(models=model, optimizers=optimizer, level='O2',
                                                   save_dtype='float32')
        scaler = paddle.amp.GradScaler(init_loss_scaling=1024)
    else:
        scaler = None

    scheduler = getattr(optimizer, '_learning_rate', None)
    if not isinstance(scheduler, paddle.optimizer.lr.LRScheduler):
        scheduler = None
    train_model = model
    if world_size > 1:
        paddle.distributed.init_parallel_env()
        train_model = paddle.DataParallel(model)

    sampler = paddle.io.DistributedBatchSampler(train_dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    if len(sampler) == 0:
        raise UserError(f"train_dataset has {len(train_dataset)} samples, fewer than batch_size {batch_size}"
                        f" x {world_size} devices")
    run_seed = _run_seed(seed, train_state, resume_model, {
        'iter': start_iter, 'batch_size': batch_size, 'world_size': world_size, 'samples': len(train_dataset)})
    samples = _SeededSamples(train_dataset, run_seed)
    batches = _EpochBatches(sampler, start_iter % len(sampler))
    if num_workers > 0:
        loader = paddle.io.DataLoader(samples, batch_sampler=batches, num_workers=num_workers,
                                      return_list=True, collate_fn=collate_train, persistent_workers=True)
    else:
        # in the main thread: paddle's single-process DataLoader reads in a helper thread and hangs when the
        # dataset raises (e.g. a bad label), instead of passing the error on
        loader = _MainThreadLoader(samples, batches)

    kept = collections.deque()
    created_save_dir = None
    if rank == 0:
        created_save_dir = _prepare_save_dir(save_dir, _checkpoint_bytes(model, ema))
        kept.extend(iter_checkpoints(save_dir))
    writer = None
    if use_vdl and rank == 0:
        from visualdl import LogWriter
        writer = LogWriter(save_dir)

    test_config = {k: v for k, v in dict(test_config or {}).items() if k in EVAL_OPTIONS}
    last_loss = None
    best_miou, best_iter = _best_so_far(train_state, save_dir, 'best_model', 'best_')
    best_ema_miou, best_ema_iter = _best_so_far(train_state, save_dir, 'ema_best_model', 'best_ema_')
    stop = False
    last_good = resume_model or None
    iteration = start_iter
    epoch = iteration // len(sampler)
    model.train()
    reader_cost = batch_cost = 0.0
    window = 0
    tic = time.time()
    logger.info(f"Training {type(model).__name__} for {iters} iters, batch {batch_size} x {world_size} device(s)")
    profiler = TrainProfiler(profiler_options) if profiler_options is not None else None
    try:
        with _loader_errors():
            while iteration < iters and not stop:
                batches.set_epoch(epoch)
                for images, labels in loader:
                    reader_cost += time.time() - tic
                    iteration += 1
                    _reseed(_seed_words(run_seed, _STEP_STREAM, iteration, rank), paddle_too=True)
                    with paddle.amp.auto_cast(enable=scaler is not None, level=amp_level):
                        outputs = train_model(images)
                        loss, _ = loss_computation(outputs, labels, losses)
                    loss_value = float(loss)
                    if not math.isfinite(loss_value):
                        where = last_good or 'none was saved yet'
                        raise UserError(f"loss became {loss_value} at iter {iteration}; training stopped, last good "
                                        f"checkpoint: {where}")
                    if scaler is not None:
                        scaled = scaler.scale(loss)
                        scaled.backward()
                        scaler.minimize(optimizer, scaled)
                    else:
                        loss.backward()
                        optimizer.step()
                    lr = _current_lr(optimizer)
                    if scheduler is not None:
                        scheduler.step()
                    optimizer.clear_grad()
                    last_loss = loss_value
                    if profiler is not None and profiler.step():
                        logger.info(f"Profiler finished (exit_on_finished): training stops at iter {iteration}")
                        stop = True  # as PaddleSeg, which exits here
                        break
                    batch_cost += time.time() - tic
                    window += 1

                    if rank == 0 and (iteration % log_iters == 0 or iteration == iters):
                        avg_batch = batch_cost / window
                        logger.info(f"[TRAIN] epoch: {epoch + 1}, iter: {iteration}/{iters}, loss: {loss_value:.4f}, "
                                    f"lr: {lr:.6f}, batch_cost: {avg_batch:.4f}, reader_cost: {reader_cost / window:.5f},"
                                    f" ips: {batch_size * world_size / avg_batch:.2f} samples/sec | ETA "
                                    f"{_format_eta((iters - iteration) * avg_batch)}")
                        if writer is not None:
                            writer.add_scalar('Train/loss', loss_value, iteration)
                            writer.add_scalar('Train/lr', lr, iteration)
                            writer.add_scalar('Train/batch_cost', avg_batch, iteration)
                        reader_cost = batch_cost = 0.0
                        window = 0
                    if ema is not None:
                        ema.update(model, iteration)

                    if rank == 0 and (iteration % save_interval == 0 or iteration == iters):
                        if do_eval and val_dataset is not None:
                            evaluation = dict(val_dataset=val_dataset, test_config=test_config, precision=precision,
                                              amp_level=amp_level, iteration=iteration, save_dir=save_dir,
                                              last_good=last_good, writer=writer)
                            best_miou, best_iter = _evaluate_keep_best(model, (best_miou, best_iter), **evaluation)
                            model.train()
                            if ema is not None:
                                best_ema_miou, best_ema_iter = _evaluate_keep_best(
                                    ema.model, (best_ema_miou, best_ema_iter), ema=True, **evaluation)
                        state = {'format': 1, 'iter': iteration, 'seed': run_seed, 'batch_size': batch_size,
                                 'world_size': world_size, 'samples': len(train_dataset),
                                 'best_miou': float(best_miou), 'best_iter': best_iter}
                        if ema is not None:
                            state.update(best_ema_miou=float(best_ema_miou), best_ema_iter=best_ema_iter)
                        path = _save(save_dir, f'iter_{iteration}', last_good, model, optimizer, ema=ema,
                                     extra={TRAIN_STATE_FILE: json.dumps(state, indent=1) + '\n'})
                        last_good = path
                        if path in kept:  # rewritten (resumed into the folder of a run that got further)
                            kept.remove(path)
                        kept.append(path)
                        while len(kept) > keep_checkpoint_max > 0:
                            shutil.rmtree(kept.popleft(), ignore_errors=True)
                    if iteration >= iters:
                        break
                    tic = time.time()
                epoch += 1
    except BaseException:
        if created_save_dir:  # a run that failed before its first save leaves nothing behind
            remove_empty_folders(save_dir, created_save_dir)
        raise
    finally:
        if profiler is not None:
            profiler.close()
        if writer is not None:
            writer.close()
    summary = {'last_iter': iteration, 'best_miou': best_miou, 'best_iter': best_iter, 'last_loss': last_loss,
               'iters_per_epoch': len(sampler)}
    if ema is not None:
        summary.update(best_ema_miou=best_ema_miou, best_ema_iter=best_ema_iter)
    return summary
