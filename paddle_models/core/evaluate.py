"""Evaluation: confusion-matrix metrics over a val dataset, with optional test-time augmentation and
sliding-window inference, and optionally a few val images with their prediction and label overlays in VisualDL;
also of an exported model (``evaluate_inference_model``, ``val.py --inference_model``) with the same metrics."""
import time

import cv2
import numpy as np
import paddle
import paddle.nn.functional as F
from tqdm.auto import tqdm  # a widget bar in notebooks (with ipywidgets), a text bar elsewhere

from paddle_models import image_io
from paddle_models.core import logger
from paddle_models.core.logits import aug_logits, predict_logits, undo_transforms
from paddle_models.core.metrics import auc_roc as auc_roc_metric
from paddle_models.core.metrics import confusion_matrix, metrics_from_confusion
from paddle_models.core.visualize import (class_names_or_ids, color_overlay, dataset_info, draw_legend, full_palette,
                                          legend_entries)
from paddle_models.errors import UserError


def _as_batch(sample):
    image = paddle.to_tensor(np.asarray(sample['img'], dtype='float32')[np.newaxis])
    label = np.asarray(sample['label']).astype('int64')
    if label.ndim == 2:
        label = label[np.newaxis]
    return image, label


def _original_image(dataset, index, sample, shape):
    """Val sample ``index`` as an RGB uint8 image of the label's ``shape`` (H, W), for display.

    It is read from its file where the dataset has a ``file_list`` (PaddleSeg's list datasets), generated where the
    dataset generates its images (``SyntheticShapes``), else rebuilt from the transformed input by stretching each
    channel to 0..255 (the colours then are those the network sees, normalized). A different size is resized.
    """
    image = None
    file_list = getattr(dataset, 'file_list', None)
    if file_list:
        image = image_io.read_image(file_list[index][0])[..., ::-1]
    elif callable(getattr(dataset, 'generate', None)):
        image = np.asarray(dataset.generate(index)[0])
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        chw = np.asarray(sample['img'], dtype=np.float32)
        low = chw.min(axis=(1, 2), keepdims=True)
        span = np.maximum(chw.max(axis=(1, 2), keepdims=True) - low, 1e-6)
        image = ((chw - low) / span * 255).transpose(1, 2, 0)[..., :3]
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
    image = np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8))
    if image.shape[:2] != tuple(shape):
        image = cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return image


def _log_images(writer, step, dataset, index, sample, pred, label, num_classes):
    """Log val sample ``index`` to VisualDL: the image and its prediction and label overlays (see ``evaluate``)."""
    image = _original_image(dataset, index, sample, label.shape)
    palette, names = dataset_info(dataset)
    palette = full_palette(palette, num_classes)
    for kind, mask in (('prediction', pred), ('label', label)):
        overlay = draw_legend(color_overlay(image, mask, palette), legend_entries(mask, palette, names))
        writer.add_image(f'Evaluate/{kind}_{index}', overlay, step)
    writer.add_image(f'Evaluate/image_{index}', image, step)


def evaluate(model, dataset, num_classes=None, ignore_index=None, aug_eval=False, scales=1.0,
             flip_horizontal=False, flip_vertical=False, is_slide=False, crop_size=None, stride=None,
             precision='fp32', amp_level='O1', print_detail=True, progress=True, auc_roc=False, vdl_writer=None,
             vdl_step=0, vdl_images=3, class_names=None):
    """Evaluate ``model`` on ``dataset`` (val mode: images transformed, labels at original size).

    Besides PaddleSeg's ``[EVAL]`` lines (mIoU, Acc, Kappa, Dice; the per-class IoU, precision and recall lists),
    the printout has one line per class with its name: ``[EVAL] class  3 road     IoU 0.8123  Precision ...``.

    Args:
        class_names (list): A name per class id, for the per-class lines and the result. Default: the dataset's
            ``CLASSES`` (``dataset_info``); classes without a name are ``class N``.
        vdl_writer (visualdl.LogWriter): Where training's ``--use_vdl`` writes; given, the first ``vdl_images``
            val samples are logged as images at step ``vdl_step`` (the training iteration), so that VisualDL's
            image tab shows how the predictions change from one evaluation to the next: ``Evaluate/image_N``
            (sample N as read from its file, RGB), ``Evaluate/prediction_N`` and ``Evaluate/label_N`` (the image
            with the predicted / true class colours blended in, the dataset's palette, and a legend of the
            classes present). None (the default) logs nothing.
        vdl_step (int): The step the images are logged at.
        vdl_images (int): How many val samples to log (the first ones, so the same images every time).
        auc_roc (bool): Also compute PaddleSeg's AUC-ROC metric (``val.py --auc_roc``, ``test_config.auc_roc``):
            the softmax of each image's logits is kept for every labelled pixel (4 bytes per class per pixel
            for the whole val set) and ranked at the end; see ``metrics.auc_roc``.

    Returns:
        dict: 'miou', 'class_iou', 'acc', 'class_precision', 'class_recall', 'kappa', 'mdice', 'class_dice',
        'confusion_matrix', 'seconds', 'class_names' (a name per class id), and with ``auc_roc`` 'auc_roc'.
    """
    if is_slide and (not crop_size or not stride):
        raise UserError("--is_slide needs --crop_size W H and --stride W H")
    was_training = model.training
    model.eval()

    def infer(image, trans_info):
        with paddle.amp.auto_cast(enable=precision == 'fp16', level=amp_level):
            if aug_eval:
                return aug_logits(model, image, trans_info, scales, flip_horizontal, flip_vertical, is_slide,
                                  crop_size, stride)
            return predict_logits(model, image, trans_info, is_slide, crop_size, stride)

    try:
        return _evaluate_loop(infer, dataset, num_classes, ignore_index, print_detail, progress, auc_roc, vdl_writer,
                              vdl_step, vdl_images, class_names)
    finally:
        if was_training:
            model.train()


def evaluate_inference_model(runner, dataset, num_classes=None, ignore_index=None, print_detail=True,
                             progress=True, auc_roc=False, class_names=None):
    """Evaluate an exported model (``paddle_models.core.exported.InferenceModel``: Paddle Inference FP32/INT8 or
    ONNX Runtime) on ``dataset`` with the metrics and printout of ``evaluate``, batch 1.

    Each val sample (transformed by the dataset's own val transforms, as ``evaluate`` does) runs through
    ``runner``; logits or probabilities ([N, C, H, W]) are mapped back to the label size as the dynamic evaluation
    maps its logits (bilinear, ``undo_transforms``) and then argmaxed; class ids from an ``argmax`` export
    ([N, H, W]) are mapped back by nearest neighbour (as deploy/python/infer.py does).

    Args:
        auc_roc (bool): Also the AUC-ROC (softmax of the exported logits or probabilities); an export with
            ``output_op: argmax`` has no scores for it (UserError).
        class_names (list): The names of the per-class lines where the export records none (``runner``'s
            ``class_names``, from deploy.yaml) or records a number of names other than the val set's classes (with
            a warning). Default: the dataset's, as ``evaluate``.

    Returns:
        dict: as ``evaluate``.
    """
    if auc_roc and runner.output_op == 'argmax':
        raise UserError(f"--auc_roc needs class scores, but {runner.deploy_path} exports class ids (output_op: "
                        f"argmax); export with --output_op none or softmax")

    def infer(image, trans_info):
        out = np.asarray(runner(image.numpy()))
        if out.ndim == 3:  # class ids [N, H, W]
            ids = paddle.to_tensor(out.astype('int64')[:, np.newaxis])
            return undo_transforms(ids, trans_info)
        if out.ndim != 4:
            raise UserError(f"{runner.model_file}: output of shape {list(out.shape)}; expected class ids "
                            f"[N, H, W] or scores [N, C, H, W]")
        return undo_transforms(paddle.to_tensor(out.astype('float32')), trans_info)

    exported = getattr(runner, 'class_names', None)
    classes = num_classes or dataset.num_classes
    if exported is not None and len(exported) != classes:
        logger.warning(f"[EVAL] {runner.deploy_path} names {len(exported)} classes but the val set has {classes}; "
                       f"the per-class lines use the config's names")
        exported = None
    return _evaluate_loop(infer, dataset, num_classes, ignore_index, print_detail, progress, auc_roc,
                          class_names=exported if exported is not None else class_names)


def _evaluate_loop(infer, dataset, num_classes=None, ignore_index=None, print_detail=True, progress=True,
                   auc_roc=False, vdl_writer=None, vdl_step=0, vdl_images=3, class_names=None):
    """The confusion matrix of ``infer(image, trans_info)`` (scores [N, C, H, W], or class ids [N, 1, H, W] as an
    integer tensor) over ``dataset``, its metrics, and the [EVAL] printout (per-class lines named by
    ``class_names``, else by the dataset's ``CLASSES``)."""
    num_classes = num_classes or dataset.num_classes
    ignore_index = dataset.ignore_index if ignore_index is None else ignore_index
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    kept_probs, kept_labels = [], []
    start = time.time()
    bar = tqdm(range(len(dataset)), desc='evaluate', unit='img',
               disable=not progress or paddle.distributed.get_rank() != 0)
    with paddle.no_grad():
        for index in bar:
            sample = dataset[index]
            image, label = _as_batch(sample)
            logit = infer(image, sample.get('trans_info'))
            if logit.dtype in (paddle.int32, paddle.int64):
                pred = logit[:, 0].numpy()
            else:
                pred = paddle.argmax(logit, axis=1).numpy()
            if pred.shape[-2:] != label.shape[-2:]:
                raise UserError(f"prediction size {pred.shape[-2:]} differs from label size {label.shape[-2:]} "
                                f"for val sample {index}: check the val transforms")
            cm += confusion_matrix(pred, label, num_classes, ignore_index)
            if vdl_writer is not None and index < vdl_images:
                _log_images(vdl_writer, vdl_step, dataset, index, sample, pred[0], label[0], num_classes)
            if auc_roc:
                # as PaddleSeg: softmax over what inference returns (logits, or summed probabilities with aug_eval)
                probs = F.softmax(logit.astype('float32'), axis=1).numpy()
                probs = probs.transpose(0, 2, 3, 1).reshape(-1, probs.shape[1])
                flat = label.reshape(-1)
                keep = (flat != ignore_index) & (flat >= 0) & (flat < num_classes)
                kept_probs.append(probs[keep])
                kept_labels.append(flat[keep])
    result = metrics_from_confusion(cm)
    result['confusion_matrix'] = cm
    result['class_names'] = class_names_or_ids(
        class_names if class_names is not None else dataset_info(dataset)[1], num_classes)
    auc_text = ''
    if auc_roc:
        labels = np.concatenate(kept_labels) if kept_labels else np.zeros([0], np.int64)
        probs = np.concatenate(kept_probs) if kept_probs else np.zeros([0, num_classes], np.float32)
        result['auc_roc'], absent = auc_roc_metric(probs, labels, num_classes, ignore_index)
        auc_text = f" Auc_roc: {result['auc_roc']:.4f}"
        if absent and print_detail:
            logger.warning(f"[EVAL] Auc_roc: class(es) {absent} never occur in the val labels; "
                           + ("the AUC is undefined" if np.isnan(result['auc_roc']) else
                              "the one-vs-rest mean leaves them out"))
    result['seconds'] = time.time() - start
    if print_detail:
        logger.info(f"[EVAL] #Images: {len(dataset)} mIoU: {result['miou']:.4f} Acc: {result['acc']:.4f} "
                    f"Kappa: {result['kappa']:.4f} Dice: {result['mdice']:.4f}{auc_text}")
        logger.info(f"[EVAL] Class IoU: {np.round(result['class_iou'], 4).tolist()}")
        logger.info(f"[EVAL] Class Precision: {np.round(result['class_precision'], 4).tolist()}")
        logger.info(f"[EVAL] Class Recall: {np.round(result['class_recall'], 4).tolist()}")
        _log_class_lines(result)
    return result


def _log_class_lines(result):
    """One ``[EVAL]`` line per class: id, name, IoU, precision and recall, in aligned columns."""
    names = result['class_names']
    id_width = len(str(len(names) - 1))
    name_width = max((len(name) for name in names), default=0)
    for i, name in enumerate(names):
        logger.info(f"[EVAL] class {i:>{id_width}} {name:<{name_width}}  IoU {result['class_iou'][i]:.4f}  "
                    f"Precision {result['class_precision'][i]:.4f}  Recall {result['class_recall'][i]:.4f}")
