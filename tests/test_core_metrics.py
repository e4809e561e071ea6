"""Metrics agree with an independent implementation (scikit-learn) and honour ignore_index."""
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix as sk_confusion, jaccard_score

from paddle_models.core.metrics import confusion_matrix, metrics_from_confusion


def test_metrics_match_sklearn():
    rng = np.random.RandomState(0)
    label = rng.randint(0, 4, size=(3, 20, 30))
    pred = np.where(rng.rand(3, 20, 30) < 0.7, label, rng.randint(0, 4, size=(3, 20, 30)))
    label[0, :5] = 255
    cm = confusion_matrix(pred, label, 4, ignore_index=255)
    keep = label != 255
    np.testing.assert_array_equal(cm, sk_confusion(label[keep], pred[keep], labels=range(4)))
    m = metrics_from_confusion(cm)
    np.testing.assert_allclose(m['class_iou'], jaccard_score(label[keep], pred[keep], average=None), rtol=1e-12)
    assert m['miou'] == pytest.approx(jaccard_score(label[keep], pred[keep], average='macro'))
    assert m['kappa'] == pytest.approx(cohen_kappa_score(label[keep], pred[keep]))
    assert m['acc'] == pytest.approx((label[keep] == pred[keep]).mean())
    tp = np.diag(cm)
    np.testing.assert_allclose(m['class_dice'], 2 * tp / (cm.sum(0) + cm.sum(1)))


def test_ignored_pixels_and_absent_classes():
    label = np.array([[0, 0, 255, 1]])
    pred = np.array([[0, 1, 2, 1]])
    cm = confusion_matrix(pred, label, 3)
    assert cm.sum() == 3
    m = metrics_from_confusion(cm)
    # class 2 is absent from labels and (unignored) predictions: it does not count in the mean
    assert m['class_iou'][2] == 0
    assert m['miou'] == pytest.approx((0.5 + 0.5) / 2)


def test_confusion_matrix_shape_mismatch():
    with pytest.raises(ValueError, match='prediction has 4 pixels but label has 3'):
        confusion_matrix(np.zeros(4), np.zeros(3), 2)
