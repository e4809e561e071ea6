"""The training loop: iterations, losses over every model output, logging, periodic evaluation and checkpoints,
resuming, VisualDL, mixed precision on GPU, data parallelism under ``paddle.distributed.launch``, an exponential
moving average of the weights (``--use_ema``), profiling (``--profiler_options``) and repeated epochs
(``--repeats``)."""
import collections
import contextlib
import math
import os
import random
import shutil
import threading
import time

import numpy as np
import paddle

from paddle_models.core import logger
from paddle_models.core.checkpoint import EMA_FILE, resume, save_checkpoint
from paddle_models.core.ema import ModelEMA
from paddle_models.core.evaluate import evaluate
from paddle_models.core.profiler import TrainProfiler, parse_profiler_options
from paddle_models.errors import UserError


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


class _SkipFirstBatches(paddle.io.Sampler):
    """A batch sampler that leaves out the first ``skip`` batches of its first epoch (resuming mid-epoch)."""

    def __init__(self, batch_sampler, skip):
        self.batch_sampler = batch_sampler
        self.skip = skip

    def set_epoch(self, epoch):
        self.batch_sampler.set_epoch(epoch)

    def __iter__(self):
        for index, batch in enumerate(self.batch_sampler):
            if index >= self.skip:
                yield batch
        self.skip = 0

    def __len__(self):
        return len(self.batch_sampler) - self.skip


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


def _worker_init(seed):
    def init(worker_id):
        np.random.seed((seed or 0) + worker_id + 1)
        random.seed((seed or 0) + worker_id + 1)
    return init


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
        resume_model (str): An ``iter_N`` folder to continue from (same iteration and learning rate).
        keep_checkpoint_max (int): Most ``iter_N`` folders kept.
        precision (str): 'fp32' or 'fp16' (GPU only) with ``amp_level`` 'O1' or 'O2'.
        test_config (dict): Evaluation options (aug_eval, scales, flips, is_slide, crop_size, stride, auc_roc).
        seed (int): Seed for data order and augmentation workers.
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
    if resume_model:
        start_iter = resume(model, optimizer, resume_model, ema)
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
    batches = _SkipFirstBatches(sampler, start_iter % len(sampler))
    if num_workers > 0:
        loader = paddle.io.DataLoader(train_dataset, batch_sampler=batches, num_workers=num_workers,
                                      return_list=True, collate_fn=collate_train, worker_init_fn=_worker_init(seed),
                                      persistent_workers=True)
    else:
        # in the main thread: paddle's single-process DataLoader reads in a helper thread and hangs when the
        # dataset raises (e.g. a bad label), instead of passing the error on
        loader = _MainThreadLoader(train_dataset, batches)

    writer = None
    if use_vdl and rank == 0:
        from visualdl import LogWriter
        writer = LogWriter(save_dir)

    test_config = {k: v for k, v in dict(test_config or {}).items() if k in EVAL_OPTIONS}
    kept = collections.deque()
    best_miou, best_iter, last_loss = -1.0, -1, None
    best_ema_miou, best_ema_iter = -1.0, -1
    stop = False
    last_good = None
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
                            result = evaluate(model, val_dataset, precision=precision, amp_level=amp_level,
                                              **test_config)
                            model.train()
                            if result['miou'] > best_miou:
                                best_miou, best_iter = result['miou'], iteration
                                save_checkpoint(save_dir, 'best_model', model,
                                                extra={'score.txt': f"iter: {iteration}\nmiou: {best_miou:.6f}\n"})
                            logger.info(f"[EVAL] The model with the best validation mIoU ({best_miou:.4f}) was saved "
                                        f"at iter {best_iter}.")
                            if writer is not None:
                                writer.add_scalar('Evaluate/mIoU', result['miou'], iteration)
                                writer.add_scalar('Evaluate/Acc', result['acc'], iteration)
                            if ema is not None:
                                ema_result = evaluate(ema.model, val_dataset, precision=precision,
                                                      amp_level=amp_level, **test_config)
                                if ema_result['miou'] > best_ema_miou:
                                    best_ema_miou, best_ema_iter = ema_result['miou'], iteration
                                    save_checkpoint(save_dir, 'ema_best_model', ema.model, model_file=EMA_FILE,
                                                    extra={'score.txt': f"iter: {iteration}\n"
                                                                        f"miou: {best_ema_miou:.6f}\n"})
                                logger.info(f"[EVAL] The EMA model with the best validation mIoU "
                                            f"({best_ema_miou:.4f}) was saved at iter {best_ema_iter}.")
                                if writer is not None:
                                    writer.add_scalar('Evaluate/Ema_mIoU', ema_result['miou'], iteration)
                                    writer.add_scalar('Evaluate/Ema_Acc', ema_result['acc'], iteration)
                        path = save_checkpoint(save_dir, f'iter_{iteration}', model, optimizer, ema=ema)
                        last_good = path
                        kept.append(path)
                        while len(kept) > keep_checkpoint_max > 0:
                            shutil.rmtree(kept.popleft(), ignore_errors=True)
                    if iteration >= iters:
                        break
                    tic = time.time()
                epoch += 1
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
