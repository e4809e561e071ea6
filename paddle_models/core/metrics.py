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


def binary_auc(scores, positive):
    """Area under the ROC curve of ``scores`` for the binary labels ``positive``, exactly (no binning).

    Equal to the Mann-Whitney statistic: the chance that a random positive scores above a random negative, a tie
    counting one half; the same value as ``sklearn.metrics.roc_auc_score(positive, scores)``.

    Args:
        scores (np.ndarray): 1-D scores (e.g. one class's probability per pixel).
        positive (np.ndarray): 1-D booleans of the same length.

    Returns:
        float: the AUC, or nan where ``positive`` is all True or all False (the curve is undefined).
    """
    scores = np.asarray(scores).reshape(-1)
    positive = np.asarray(positive, dtype=bool).reshape(-1)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float('nan')
    order = np.argsort(scores, kind='stable')
    ranked_scores = scores[order]
    ranked_pos = positive[order]
    starts = np.concatenate([[0], np.flatnonzero(ranked_scores[1:] != ranked_scores[:-1]) + 1])
    pos = np.add.reduceat(ranked_pos.astype(np.int64), starts).astype(np.float64)  # per group of equal scores
    neg = np.diff(np.concatenate([starts, [scores.size]])).astype(np.float64) - pos
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (float(n_pos) * float(n_neg)))


def auc_roc(probs, label, num_classes, ignore_index=255):
    """PaddleSeg's ``--auc_roc`` metric over pixels: the ROC AUC of the class probabilities.

    As PaddleSeg 2.8 (``utils/metrics.py: auc_roc``, which calls scikit-learn): with 2 classes, the AUC of class 1's
    probability; with more, the unweighted mean over classes of the one-vs-rest AUC of each class's probability
    (``roc_auc_score(label, probs, multi_class='ovr')``). Computed here with NumPy. Differences, where PaddleSeg
    fails: pixels labelled ``ignore_index`` (or outside ``[0, num_classes)``) are left out, where PaddleSeg refuses
    labels with ignored pixels; a class that never occurs in the labels has no one-vs-rest AUC and is left out of
    the mean (scikit-learn raises), and with 2 classes an absent class gives nan.

    Args:
        probs (np.ndarray): Probabilities, (N, C, H, W) or (pixels, C).
        label (np.ndarray): Class ids, (N, H, W), (N, 1, H, W) or (pixels,).
        num_classes (int): C.
        ignore_index (int): Label value of pixels to leave out.

    Returns:
        (float, list[int]): the AUC (nan where undefined) and the classes absent from the labels.
    """
    probs = np.asarray(probs)
    if probs.ndim == 4:
        probs = probs.transpose(0, 2, 3, 1).reshape(-1, probs.shape[1])
    label = np.asarray(label).reshape(-1).astype(np.int64)
    if probs.shape != (label.size, num_classes):
        raise ValueError(f"probabilities of shape {list(probs.shape)} do not fit {label.size} labels of "
                         f"{num_classes} classes")
    keep = (label != ignore_index) & (label >= 0) & (label < num_classes)
    probs, label = probs[keep], label[keep]
    absent = [c for c in range(num_classes) if not (label == c).any()]
    if num_classes == 2:
        return binary_auc(probs[:, 1], label == 1), absent
    aucs = [binary_auc(probs[:, c], label == c) for c in range(num_classes) if c not in absent]
    if not aucs or len(absent) == num_classes - 1:
        return float('nan'), absent
    return float(np.mean(aucs)), absent
