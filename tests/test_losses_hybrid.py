"""UNet 3+'s hybrid-loss pieces (focal, MS-SSIM, IoU) and the CGM's BCE: values against PaddleSeg's FocalLoss and
against independent NumPy implementations of the formulas, ignored pixels, gradients, registration, errors."""

import numpy as np
import paddle
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from paddleseg.cvlibs import manager
from paddleseg.models.losses.focal_loss import FocalLoss as ReferenceFocalLoss

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.errors import UserError
from paddle_models.losses.bce import ForegroundBCELoss, contains_foreground
from paddle_models.losses.focal import FocalLoss
from paddle_models.losses.iou import IoULoss
from paddle_models.losses.ms_ssim import MSSSIMLoss

RNG = np.random.RandomState(0)


def _case(n=2, c=3, h=32, w=40, ignore=True, seed=0):
    rng = np.random.RandomState(seed)
    logit = rng.randn(n, c, h, w).astype('float32') * 2
    label = rng.randint(0, c, (n, h, w))
    label[:, h // 3:h // 2, :] = rng.randint(0, c)  # a band of one class: structure for SSIM
    if ignore:
        label[0, :5, :7] = 255
    return logit, label.astype('int64')


def _softmax(logit):
    e = np.exp(logit - logit.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _one_hot(label, c):
    valid = label != 255
    onehot = np.stack([(label == k) & valid for k in range(c)], 1).astype('float64')
    return onehot, valid[:, None].astype('float64')


def _loss(loss, logit, label):
    return float(loss(paddle.to_tensor(logit), paddle.to_tensor(label)))


# ---------------------------------------------------------------------------------------------------- focal


def test_focal_matches_paddleseg_on_two_classes():
    logit, label = _case(c=2)
    for kwargs in (dict(), dict(alpha=0.6, gamma=1.5)):
        ours = _loss(FocalLoss(**kwargs), logit, label)
        expected = _loss(ReferenceFocalLoss(**kwargs), logit, label)
        assert abs(ours - expected) <= 1e-6 * max(1.0, abs(expected))


def _focal_reference(logit, label, alpha, gamma):
    c = logit.shape[1]
    y, valid = _one_hot(label, c)
    p = 1 / (1 + np.exp(-logit.astype('float64')))
    p_t = np.where(y == 1, p, 1 - p)
    a = np.asarray(alpha, dtype='float64').reshape(1, -1, 1, 1) if np.ndim(alpha) else alpha
    a_t = np.where(y == 1, a, 1 - a)
    loss = -a_t * (1 - p_t) ** gamma * np.log(p_t) * valid
    return loss.sum() / (valid.sum() * c)


@pytest.mark.parametrize('alpha, gamma', [(0.25, 2.0), ([0.2, 0.5, 0.8], 0.0), (0.5, 3.0)])
def test_focal_any_number_of_classes(alpha, gamma):
    logit, label = _case(c=3)
    assert abs(_loss(FocalLoss(alpha=alpha, gamma=gamma), logit, label)
               - _focal_reference(logit, label, alpha, gamma)) < 1e-6


# --------------------------------------------------------------------------------------------------- MS-SSIM

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gauss2d(size, sigma):
    g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma ** 2))
    g2 = np.outer(g, g)
    return g2 / g2.sum()


def _ssim_np(x, y, window, sigma):
    """Mean SSIM and cs of two 2-D maps with a 2-D Gaussian window over the valid region (direct sums)."""
    size = min(window, *x.shape)
    g = _gauss2d(size, sigma)

    def filt(a):
        return (sliding_window_view(a, (size, size)) * g).sum(axis=(-1, -2))

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    ssim = (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1) * cs
    return ssim.mean(), cs.mean()


def _pool2(a):
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    return a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _ms_ssim_loss_reference(logit, label, window=11, sigma=1.5, weights=WEIGHTS):
    c = logit.shape[1]
    y, valid = _one_hot(label, c)
    p = _softmax(logit.astype('float64')) * valid
    values = []
    for n in range(logit.shape[0]):
        for k in range(c):
            a, b = p[n, k], y[n, k]
            value = 1.0
            for scale, weight in enumerate(weights):
                ssim, cs = _ssim_np(a, b, window, sigma)
                last = scale == len(weights) - 1
                value *= (((ssim if last else cs) + 1) / 2) ** weight
                a, b = _pool2(a), _pool2(b)
            values.append(value)
    return 1 - np.mean(values)


@pytest.mark.parametrize('shape, kwargs', [
    ((2, 3, 40, 48), dict()),                              # the window shrinks at the coarse scales (5x6, 2x3)
    ((1, 2, 24, 20), dict(window_size=7, sigma=1.0)),
    ((2, 4, 16, 16), dict(weights=(0.5, 0.5))),             # two scales
])
def test_ms_ssim_matches_numpy_reference(shape, kwargs):
    n, c, h, w = shape
    logit, label = _case(n, c, h, w, seed=3)
    ours = _loss(MSSSIMLoss(**kwargs), logit, label)
    expected = _ms_ssim_loss_reference(logit, label, kwargs.get('window_size', 11), kwargs.get('sigma', 1.5),
                                       kwargs.get('weights', WEIGHTS))
    assert 0.05 < expected < 1
    assert abs(ours - expected) < 2e-5


def test_ms_ssim_and_iou_are_zero_for_a_perfect_prediction():
    _, label = _case(seed=4)
    logit = (np.eye(3)[np.where(label == 255, 0, label)].transpose(0, 3, 1, 2) * 40).astype('float32')
    assert _loss(MSSSIMLoss(), logit, label) < 1e-5
    assert _loss(IoULoss(), logit, label) < 1e-5
    wrong = np.roll(logit, 1, axis=1)
    assert _loss(MSSSIMLoss(), wrong, label) > 0.3 and _loss(IoULoss(), wrong, label) > 0.9


# ------------------------------------------------------------------------------------------------------- IoU


@pytest.mark.parametrize('smooth', [1.0, 0.0])
def test_iou_matches_numpy_reference(smooth):
    logit, label = _case(seed=5)
    y, valid = _one_hot(label, 3)
    p = _softmax(logit.astype('float64')) * valid
    inter = (p * y).sum(axis=(2, 3))
    union = (p + y - p * y).sum(axis=(2, 3))
    expected = 1 - ((inter + smooth) / (union + smooth)).mean()
    assert abs(_loss(IoULoss(smooth=smooth), logit, label) - expected) < 1e-6


# --------------------------------------------------------------------------------------------- shared behaviour


@pytest.mark.parametrize('loss', [FocalLoss(), MSSSIMLoss(), IoULoss()], ids=['focal', 'ms_ssim', 'iou'])
def test_ignored_pixels_do_not_count_and_gradients_flow(loss):
    logit, label = _case(seed=6)
    changed = logit.copy()
    changed[0, :, :5, :7] += RNG.randn(3, 5, 7).astype('float32') * 5  # only ignored pixels change
    assert abs(_loss(loss, logit, label) - _loss(loss, changed, label)) < 1e-6
    changed[1, 0, 20:, :] += 3.0  # a labelled region changes (one class: softmax ignores a shift of all)
    assert abs(_loss(loss, logit, label) - _loss(loss, changed, label)) > 1e-4
    tensor = paddle.to_tensor(logit, stop_gradient=False)
    loss(tensor, paddle.to_tensor(label)).backward()
    grad = tensor.grad.numpy()
    assert np.isfinite(grad).all() and np.abs(grad[1]).max() > 0
    assert np.abs(grad[0, :, :5, :7]).max() == 0  # no gradient at ignored pixels


# ------------------------------------------------------------------------------------------------------- BCE


def test_contains_foreground_target():
    label = np.zeros((4, 6, 6), dtype='int64')
    label[1, 2, 3] = 2                # one foreground pixel
    label[2] = 255                    # all void: no foreground
    label[3, :3] = 255                # background + void
    label[3, 5, 5] = 1
    assert contains_foreground(paddle.to_tensor(label)).numpy().tolist() == [0, 1, 0, 1]
    assert contains_foreground(paddle.to_tensor(label), background_index=2).numpy().tolist() == [1, 1, 0, 1]


def test_foreground_bce_value():
    label = np.zeros((3, 8, 8), dtype='int64')
    label[0, 1, 1] = 4
    label[2, :, :4] = 255
    label[2, 0, 7] = 1
    logit = np.array([[0.3, -1.2], [2.0, 0.5], [-0.7, 0.1]], dtype='float32')
    target = np.array([[0, 1], [1, 0], [0, 1]], dtype='float64')
    p = 1 / (1 + np.exp(-logit.astype('float64')))
    expected = -(target * np.log(p) + (1 - target) * np.log(1 - p)).mean()
    assert abs(_loss(ForegroundBCELoss(), logit, label) - expected) < 1e-6
    assert abs(_loss(ForegroundBCELoss(), logit.reshape(3, 2, 1, 1), label) - expected) < 1e-6


# ------------------------------------------------------------------------------------------- registration, errors


def test_registered_in_losses():
    for name, cls in (('FocalLoss', FocalLoss), ('MSSSIMLoss', MSSSIMLoss), ('IoULoss', IoULoss),
                      ('ForegroundBCELoss', ForegroundBCELoss)):
        assert manager.LOSSES[name] is cls


@pytest.mark.parametrize('build, message', [
    (lambda: FocalLoss(alpha=1.5), "FocalLoss: alpha must be a number in [0, 1], got 1.5"),
    (lambda: FocalLoss(alpha=[0.5, 2]), "FocalLoss: alpha must be a list of numbers in [0, 1], got [0.5, 2]"),
    (lambda: FocalLoss(gamma=-1), "FocalLoss: gamma must be a number >= 0, got -1"),
    (lambda: MSSSIMLoss(weights=[]), "MSSSIMLoss: weights must be a list of numbers >= 0, got []"),
    (lambda: MSSSIMLoss(window_size=0), "MSSSIMLoss: window_size must be an integer >= 1, got 0"),
    (lambda: MSSSIMLoss(sigma=0), "MSSSIMLoss: sigma must be a number > 0, got 0"),
    (lambda: IoULoss(smooth=-1), "IoULoss: smooth must be a number >= 0, got -1"),
    (lambda: ForegroundBCELoss(background_index=-1),
     "ForegroundBCELoss: background_index must be an integer >= 0, got -1"),
])
def test_bad_arguments(build, message):
    with pytest.raises(UserError) as err:
        build()
    assert str(err.value) == message


def test_bad_inputs():
    logit, label = _case(h=8, w=8)
    with pytest.raises(UserError) as err:
        _loss(MSSSIMLoss(), logit, label)
    assert str(err.value) == "MSSSIMLoss: 5 scales need sides >= 16, got [8, 8]"
    with pytest.raises(UserError) as err:
        _loss(IoULoss(), logit, label[:, :4])
    assert str(err.value) == "IoULoss: logit size [8, 8] differs from label size [4, 8]"
    with pytest.raises(UserError) as err:
        _loss(FocalLoss(alpha=[0.1, 0.2]), logit, label)
    assert str(err.value) == "FocalLoss: alpha has 2 entries for 3 classes"
    with pytest.raises(UserError) as err:
        _loss(ForegroundBCELoss(), logit, label)
    assert str(err.value).startswith("ForegroundBCELoss: logit must be (N, 2), got shape [2, 192]")
