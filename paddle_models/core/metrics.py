"""Segmentation metrics from a confusion matrix (rows: ground truth, columns: prediction)."""
import numpy as np


def confusion_matrix(pred, label, num_classes, ignore_index=255):
    """Accumulable confusion matrix of integer arrays ``pred`` and ``label`` (same shape); ignored pixels and
    labels outside ``[0, num_classes)`` are left out."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    label = np.asarray(label).reshape(-1).astype(np.int64)
    if pred.shape != label.shape:
        raise ValueError(f"prediction has {pred.size} pixels but label has {label.size}")
    keep = (label != ignore_index) & (label >= 0) & (label < num_classes)
    index = label[keep] * num_classes + np.clip(pred[keep], 0, num_classes - 1)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def metrics_from_confusion(cm):
    """mIoU, per-class IoU, pixel accuracy, per-class precision/recall, Cohen's kappa and Dice.

    Classes absent from both label and prediction get IoU/Dice 0 and do not count towards the means
    (mean over classes that appear in the label or the prediction).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    gt = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    union = gt + pred - tp
    present = union > 0
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = np.where(present, tp / union, 0.0)
        dice = np.where(present, 2 * tp / (gt + pred), 0.0)
        precision = np.where(pred > 0, tp / pred, 0.0)
        recall = np.where(gt > 0, tp / gt, 0.0)
    total = cm.sum()
    acc = tp.sum() / total if total else 0.0
    expected = (gt * pred).sum() / (total * total) if total else 0.0
    kappa = (acc - expected) / (1 - expected) if total and expected != 1 else 0.0
    n_present = max(int(present.sum()), 1)
    return {
        'miou': float(iou[present].sum() / n_present),
        'class_iou': iou,
        'acc': float(acc),
        'class_precision': precision,
        'class_recall': recall,
        'kappa': float(kappa),
        'mdice': float(dice[present].sum() / n_present),
        'class_dice': dice,
    }
