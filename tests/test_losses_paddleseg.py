"""PaddleSeg 2.8.0's losses that our configs use: ours where PaddleSeg's fails (RMILoss, MixedLoss and
OhemCrossEntropyLoss on Paddle 3; BootstrappedCrossEntropyLoss on images of min_K pixels or fewer), each against an
independent numpy computation and against PaddleSeg where it runs; PaddleSeg's own where it works (Lovasz softmax
and hinge, SemanticConnectivityLoss, DiceLoss, DetailAggregateLoss, PixelContrastCrossEntropyLoss), run as the
configs use them, against hand-computed values, so that a Paddle upgrade that breaks one fails here."""
import os

import numpy as np
import paddle
import pytest

from conftest import REPO, camvid_root
import paddle_models  # noqa: F401  (registers our components)
from paddle_models.core.config import Builder, load_config
from paddle_models.core.train import loss_computation
from paddle_models.errors import UserError
from paddle_models.losses.bootstrapped_cross_entropy import BootstrappedCrossEntropyLoss
from paddle_models.losses.cross_entropy import CrossEntropyLoss
from paddle_models.losses.mixed import MixedLoss
from paddle_models.losses.ohem_cross_entropy import OhemCrossEntropyLoss
from paddle_models.losses.rmi import RMILoss
from paddleseg.cvlibs import manager

# the whole module takes a few seconds and passes on Paddle 2.6.2 too (checked), where the parity tests against
# PaddleSeg's RMILoss and OhemCrossEntropyLoss run
pytestmark = pytest.mark.paddle26

IGNORE = 255
PADDLE_3 = int(paddle.__version__.split('.')[0]) >= 3
SHARED_CONFIGS = os.path.normpath(os.path.join(REPO, '..', 'shared', 'paddleseg-2.8.0-configs', 'configs'))


def tensor(array, grad=False):
    t = paddle.to_tensor(array)
    t.stop_gradient = not grad
    return t


def batch(num_classes=3, size=(15, 15), seed=0, scale=1.0):
    rng = np.random.RandomState(seed)
    logit = (rng.randn(2, num_classes, *size) * scale).astype('float32')
    label = rng.randint(0, num_classes, (2,) + size).astype('int64')
    label[:, :3, :4] = IGNORE
    return logit, label


def assert_same_loss_and_grad(ours, theirs, logit, label, rel, rtol, atol):
    """Our loss layer and PaddleSeg's on the same ``logit``/``label``: equal values and equal logit gradients."""
    ours_x, theirs_x = tensor(logit, grad=True), tensor(logit, grad=True)
    ours_value, theirs_value = ours(ours_x, tensor(label)), theirs(theirs_x, tensor(label))
    ours_value.backward()
    theirs_value.backward()
    assert float(ours_value) == pytest.approx(float(theirs_value), rel=rel)
    np.testing.assert_allclose(ours_x.grad.numpy(), theirs_x.grad.numpy(), rtol=rtol, atol=atol)


def message(excinfo):
    text = str(excinfo.value)
    assert '\n' not in text
    return text


def paddleseg_config(rel):
    path = os.path.join(SHARED_CONFIGS, rel)
    if not os.path.isfile(path):
        camvid_root()  # fails under CI=true (shared/ is laid beside the repo there), skips otherwise
        pytest.skip(f"PaddleSeg's configs not found in {SHARED_CONFIGS}")
    return load_config(path, require=('loss',))


# --- numpy references -------------------------------------------------------------------------------------------

def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_log_softmax(logit):
    shifted = logit - logit.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def np_pool(x, size, stride, mode):
    """Max or average (padding excluded from the count) pooling of (N, C, H, W) with size // 2 zero-count padding."""
    pad = size // 2
    n, c, h, w = x.shape
    out_h, out_w = (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
    out = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            y0, x0 = i * stride - pad, j * stride - pad
            window = x[:, :, max(y0, 0):y0 + size, max(x0, 0):x0 + size]
            out[:, :, i, j] = window.max(axis=(2, 3)) if mode == 'max' else window.mean(axis=(2, 3))
    return out


def np_rmi(logit, label, radius=3, pool=('max', 3), alpha=5e-4):
    """Zhao et al.'s RMI lower bound as PaddleSeg's RMILoss evaluates it, in float64 numpy."""
    num_classes = logit.shape[1]
    valid = (label != IGNORE)[:, None].astype(np.float64)
    onehot = np.eye(num_classes)[np.where(label == IGNORE, 0, label)].transpose(0, 3, 1, 2) * valid
    prob = np_sigmoid(logit.astype(np.float64)) * valid + 1e-6
    if pool is not None:
        onehot, prob = np_pool(onehot, pool[1], pool[1], pool[0]), np_pool(prob, pool[1], pool[1], pool[0])
    d = radius * radius
    h, w = onehot.shape[2] - radius + 1, onehot.shape[3] - radius + 1
    total = 0.0
    for c in range(num_classes):
        per_image = []
        for n in range(logit.shape[0]):
            y = np.stack([onehot[n, c, dy:dy + h, dx:dx + w].ravel() for dy in range(radius) for dx in range(radius)])
            p = np.stack([prob[n, c, dy:dy + h, dx:dx + w].ravel() for dy in range(radius) for dx in range(radius)])
            y = y - y.mean(axis=1, keepdims=True)
            p = p - p.mean(axis=1, keepdims=True)
            s_yp = y @ p.T
            posterior = y @ y.T - s_yp @ np.linalg.inv(p @ p.T + alpha * np.eye(d)) @ s_yp.T
            per_image.append(0.5 * np.linalg.slogdet(posterior + alpha * np.eye(d))[1])
        total += np.mean(per_image) / d
    return total


def np_ohem(logit, label, thresh, min_kept):
    """Per-pixel cross entropy averaged over the hard pixels, as PaddleSeg's OhemCrossEntropyLoss defines them."""
    log_prob = np_log_softmax(logit.astype(np.float64))
    flat_label = label.reshape(-1)
    valid = flat_label != IGNORE
    safe = np.where(valid, flat_label, 0)
    picked = np.moveaxis(log_prob, 1, -1).reshape(-1, logit.shape[1])[np.arange(safe.size), safe]
    kept = valid.copy()
    if 0 < min_kept < valid.sum():
        prob = np.exp(picked)
        threshold = max(np.sort(prob[valid])[min_kept - 1], thresh)
        kept = valid & (prob < threshold)
    return -(picked * kept).sum() / (kept.sum() + 1e-5 * flat_label.size)


def np_lovasz_grad(gt_sorted):
    """Berman et al.'s gradient of the Lovasz extension of the Jaccard loss at sorted errors (Alg. 1)."""
    intersection = gt_sorted.sum() - np.cumsum(gt_sorted)
    union = gt_sorted.sum() + np.cumsum(1 - gt_sorted)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def np_lovasz_softmax(logit, label):
    """Multi-class Lovasz-Softmax over the labelled pixels of the batch, averaged over the present classes."""
    prob = np.exp(np_log_softmax(logit.astype(np.float64)))
    prob = np.moveaxis(prob, 1, -1).reshape(-1, logit.shape[1])
    flat = label.reshape(-1)
    prob, flat = prob[flat != IGNORE], flat[flat != IGNORE]
    losses = []
    for c in range(logit.shape[1]):
        fg = (flat == c).astype(np.float64)
        if fg.sum() == 0:
            continue
        errors = np.abs(fg - prob[:, c])
        order = np.argsort(-errors)
        losses.append(errors[order] @ np_lovasz_grad(fg[order]))
    return np.mean(losses)


def np_lovasz_hinge_two_channels(logit, label):
    """Binary Lovasz hinge of PaddleSeg's LovaszHingeLoss with (N, 2, H, W) logits: the unary score is
    log(p1 + 1e-9 / (1 - p1 + 1e-9)) exactly as PaddleSeg writes it (so about log p1, not the log-odds)."""
    p1 = np.exp(np_log_softmax(logit.astype(np.float64)))[:, 1]
    score = np.log(p1 + 1e-9 / (1 - p1 + 1e-9)).reshape(-1)
    flat = label.reshape(-1)
    score, flat = score[flat != IGNORE], flat[flat != IGNORE].astype(np.float64)
    errors = 1.0 - score * (2 * flat - 1)
    order = np.argsort(-errors)
    return np.maximum(errors[order], 0) @ np_lovasz_grad(flat[order])


# --- RMILoss (ours) ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('kwargs, pool', [({}, ('max', 3)),
                                          ({'rmi_pool_way': 1}, ('avg', 3)),
                                          ({'rmi_radius': 2, 'rmi_pool_size': 1, 'rmi_pool_stride': 1}, None)])
def test_rmi_matches_the_numpy_formula(kwargs, pool):
    logit, label = batch(size=(15, 16))
    value = float(RMILoss(num_classes=3, **kwargs)(tensor(logit), tensor(label)))
    np.testing.assert_allclose(value, np_rmi(logit, label, kwargs.get('rmi_radius', 3), pool), rtol=1e-4, atol=1e-5)


def test_rmi_gradient_matches_finite_differences_and_skips_ignored_pixels():
    logit, label = batch(num_classes=2, size=(12, 12), seed=1)
    x = tensor(logit, grad=True)
    RMILoss(num_classes=2)(x, tensor(label)).backward()
    grad = x.grad.numpy()
    assert np.all(grad[:, :, :3, :4] == 0)  # the ignored corner
    rng = np.random.RandomState(2)
    checked = 0
    for _ in range(12):
        n, c, i, j = rng.randint(2), rng.randint(2), rng.randint(3, 12), rng.randint(0, 12)
        step = np.zeros_like(logit, dtype=np.float64)
        step[n, c, i, j] = 1e-4
        numeric = (np_rmi(logit + step, label) - np_rmi(logit - step, label)) / 2e-4
        np.testing.assert_allclose(grad[n, c, i, j], numeric, rtol=2e-2, atol=2e-4)
        checked += abs(numeric) > 1e-3
    assert checked  # some of the sampled entries carry a real gradient (max pooling passes only the maxima)


def test_rmi_takes_int32_and_channel_labels():
    logit, label = batch()
    loss = RMILoss(num_classes=3)
    reference = float(loss(tensor(logit), tensor(label)))
    assert float(loss(tensor(logit), tensor(label.astype('int32')))) == pytest.approx(reference, rel=1e-6)
    assert float(loss(tensor(logit), tensor(label[:, None]))) == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize('pool_way', [0, 1, 2])
def test_rmi_matches_paddlesegs_lower_bound(pool_way):
    """PaddleSeg 2.8.0's RMILoss fails on Paddle 3 before its ``rmi_lower_bound``; that part runs, so it is compared
    here on the inputs PaddleSeg's forward would give it (one-hot labels and probabilities zeroed at ignored pixels,
    the probabilities raised by 1e-6)."""
    from paddleseg.models.losses.rmi_loss import RMILoss as PaddleSegRMILoss
    logit, label = batch(size=(17, 14))
    valid = (label != IGNORE)[:, None]
    onehot = (np.eye(3)[np.where(valid[:, 0], label, 0)].transpose(0, 3, 1, 2) * valid).astype('float32')
    prob = (np_sigmoid(logit) * valid + 1e-6).astype('float32')
    expected = float(PaddleSegRMILoss(num_classes=3, rmi_pool_way=pool_way).rmi_lower_bound(tensor(onehot),
                                                                                            tensor(prob)))
    ours = float(RMILoss(num_classes=3, rmi_pool_way=pool_way)(tensor(logit), tensor(label)))
    assert ours == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.skipif(PADDLE_3, reason="PaddleSeg 2.8.0's RMILoss raises on Paddle 3 (float32 * bool)")
@pytest.mark.parametrize('pool_way', [0, 1, 2])
def test_rmi_matches_paddleseg_on_paddle_2(pool_way):
    from paddleseg.models.losses.rmi_loss import RMILoss as PaddleSegRMILoss
    logit, label = batch(size=(18, 18))
    assert_same_loss_and_grad(RMILoss(num_classes=3, rmi_pool_way=pool_way),
                              PaddleSegRMILoss(num_classes=3, rmi_pool_way=pool_way), logit, label,
                              rel=1e-6, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize('kwargs, text', [
    ({'num_classes': 0}, "RMILoss: num_classes must be an integer >= 1, got 0"),
    ({'rmi_radius': 11}, "RMILoss: rmi_radius must be an integer in [1, 10], got 11"),
    ({'rmi_pool_way': 3}, "RMILoss: rmi_pool_way must be one of 0, 1, 2, got 3"),
    ({'rmi_pool_way': True}, "RMILoss: rmi_pool_way must be one of 0, 1, 2, got True"),
    ({'rmi_pool_size': 2}, "RMILoss: rmi_pool_size (2) must equal rmi_pool_stride (3)"),
    ({'rmi_pool_stride': 0, 'rmi_pool_size': 0}, "RMILoss: rmi_pool_size must be an integer >= 1, got 0"),
    ({'loss_weight_lambda': 'x'}, "RMILoss: loss_weight_lambda must be a number, got 'x'"),
    ({'ignore_index': None}, "RMILoss: ignore_index must be an integer, got None"),
])
def test_rmi_rejects_bad_arguments(kwargs, text):
    with pytest.raises(UserError) as excinfo:
        RMILoss(**kwargs)
    assert message(excinfo) == text


def test_rmi_rejects_logits_that_do_not_fit():
    logit, label = batch()
    with pytest.raises(UserError) as excinfo:
        RMILoss()(tensor(logit), tensor(label))
    assert message(excinfo) == ("RMILoss: num_classes is 19 but the logits have 3 channels; set the loss's "
                                "num_classes to the model's")
    with pytest.raises(UserError) as excinfo:
        RMILoss(num_classes=3)(tensor(logit[:, :, :5, :5]), tensor(label[:, :5, :5]))
    assert message(excinfo) == "RMILoss: inputs of [5, 5] pixels downsample to [2, 2], smaller than rmi_radius 3"


# --- MixedLoss (ours) -------------------------------------------------------------------------------------------

def test_mixed_loss_returns_the_weighted_parts():
    logit, label = batch()
    rmi, ce = RMILoss(num_classes=3), CrossEntropyLoss()
    parts = MixedLoss([rmi, ce], [0.5, 2.0])(tensor(logit), tensor(label))
    assert isinstance(parts, list) and len(parts) == 2
    assert float(parts[0]) == pytest.approx(0.5 * float(rmi(tensor(logit), tensor(label))), rel=1e-6)
    assert float(parts[1]) == pytest.approx(2.0 * float(ce(tensor(logit), tensor(label))), rel=1e-6)


def test_mscale_ocrnet_config_losses_train_through_the_engine():
    """PaddleSeg's MscaleOCRNet config: [CE, MixedLoss[RMILoss, CE], CE, CE] with coef [0.4, 1, 0.05, 0.05] builds
    our classes and gives 0.4 CE + (RMI + CE) + 0.1 CE on four outputs, with a gradient for each."""
    builder = Builder(paddleseg_config('mscale_ocrnet/mscale_ocrnet_hrnetv2_psa_cityscapes_1024x2048_150k.yml'))
    losses = builder.losses()
    mixed = losses['types'][1]
    assert type(mixed) is MixedLoss and [type(part) for part in mixed.losses] == [RMILoss, CrossEntropyLoss]
    assert mixed.losses[0].num_classes == 19 and losses['coef'] == [0.4, 1.0, 0.05, 0.05]
    rng = np.random.RandomState(3)
    logits = [tensor(rng.randn(1, 19, 12, 12).astype('float32'), grad=True) for _ in range(4)]
    label = rng.randint(0, 19, (1, 12, 12)).astype('int64')
    label[:, :2] = IGNORE
    total, _ = loss_computation(logits, tensor(label), losses)
    total.backward()
    ce = [float(CrossEntropyLoss()(x, tensor(label))) for x in logits]
    rmi = np_rmi(logits[1].numpy(), label)
    assert float(total) == pytest.approx(0.4 * ce[0] + rmi + ce[1] + 0.05 * (ce[2] + ce[3]), rel=1e-4)
    assert all(np.abs(x.grad.numpy()).sum() > 0 for x in logits)


@pytest.mark.parametrize('args, text', [
    (({}, [1]), "MixedLoss: losses must be a non-empty list of losses, got {}"),
    (([], []), "MixedLoss: losses must be a non-empty list of losses, got []"),
    (([CrossEntropyLoss()], 1), "MixedLoss: coef must be a list of numbers, got 1"),
    (([CrossEntropyLoss()], [True]), "MixedLoss: coef must be a list of numbers, got [True]"),
    (([CrossEntropyLoss()], [1, 2]), "MixedLoss: coef has 2 entries but losses has 1; give one coef per loss"),
])
def test_mixed_loss_rejects_bad_arguments(args, text):
    with pytest.raises(UserError) as excinfo:
        MixedLoss(*args)
    assert message(excinfo) == text


# --- OhemCrossEntropyLoss (ours) --------------------------------------------------------------------------------

@pytest.mark.parametrize('thresh, min_kept', [(0.7, 50), (0.7, 0), (0.7, 10000), (0.05, 60), (0.05, 200)])
def test_ohem_matches_the_numpy_reference(thresh, min_kept):
    # scale 3: confident logits, so that the min_kept-th probability beats a low thresh in some cases
    logit, label = batch(num_classes=4, size=(10, 12), scale=3.0)
    x = tensor(logit, grad=True)
    loss = OhemCrossEntropyLoss(thresh=thresh, min_kept=min_kept)(x, tensor(label))
    assert float(loss) == pytest.approx(np_ohem(logit, label, thresh, min_kept), rel=1e-5)
    loss.backward()
    assert np.all(x.grad.numpy()[:, :, :3, :4] == 0)


def test_ohem_mining_changes_the_value_and_takes_int32_labels():
    logit, label = batch(num_classes=4, size=(10, 12), scale=3.0)
    mined = float(OhemCrossEntropyLoss(thresh=0.05, min_kept=60)(tensor(logit), tensor(label)))
    plain = float(OhemCrossEntropyLoss(thresh=0.05, min_kept=0)(tensor(logit), tensor(label)))
    assert mined > plain  # the hard pixels have larger losses than the average pixel
    assert float(OhemCrossEntropyLoss(thresh=0.05, min_kept=60)(tensor(logit), tensor(label.astype('int32')))) \
        == pytest.approx(mined, rel=1e-6)


@pytest.mark.skipif(PADDLE_3, reason="PaddleSeg 2.8.0's OhemCrossEntropyLoss raises on Paddle 3 when it mines")
@pytest.mark.parametrize('thresh, min_kept', [(0.7, 50), (0.05, 60), (0.7, 10000)])
def test_ohem_matches_paddleseg_on_paddle_2(thresh, min_kept):
    from paddleseg.models.losses.ohem_cross_entropy_loss import OhemCrossEntropyLoss as PaddleSegOhem
    logit, label = batch(num_classes=4, size=(10, 12), scale=3.0)
    assert_same_loss_and_grad(OhemCrossEntropyLoss(thresh, min_kept), PaddleSegOhem(thresh, min_kept), logit, label,
                              rel=1e-5, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('kwargs, text', [
    ({'thresh': 'high'}, "OhemCrossEntropyLoss: thresh must be a number, got 'high'"),
    ({'min_kept': -1}, "OhemCrossEntropyLoss: min_kept must be an integer >= 0, got -1"),
    ({'min_kept': 1.5}, "OhemCrossEntropyLoss: min_kept must be an integer >= 0, got 1.5"),
    ({'ignore_index': '255'}, "OhemCrossEntropyLoss: ignore_index must be an integer, got '255'"),
])
def test_ohem_rejects_bad_arguments(kwargs, text):
    with pytest.raises(UserError) as excinfo:
        OhemCrossEntropyLoss(**kwargs)
    assert message(excinfo) == text


def test_our_losses_replace_paddlesegs_in_the_manager():
    assert manager.LOSSES['RMILoss'] is RMILoss
    assert manager.LOSSES['MixedLoss'] is MixedLoss
    assert manager.LOSSES['OhemCrossEntropyLoss'] is OhemCrossEntropyLoss
    assert manager.LOSSES['BootstrappedCrossEntropyLoss'] is BootstrappedCrossEntropyLoss


# --- BootstrappedCrossEntropyLoss (ours) -------------------------------------------------------------------------

def np_bootstrapped(logit, label, min_k, threshold, weight=None):
    """Per image: the mean of the pixel losses above threshold, or of the min_k largest when the (min_k + 1)-th is
    not above it (all pixels when there are no more than min_k); ignored pixels count as 0. Mean over images."""
    log_prob = np_log_softmax(logit.astype(np.float64))
    weight = np.ones(logit.shape[1]) if weight is None else np.asarray(weight, np.float64)
    per_image = []
    for n in range(logit.shape[0]):
        safe = np.where(label[n] == IGNORE, 0, label[n])
        pixel = -np.take_along_axis(log_prob[n], safe[None], 0)[0] * weight[safe] * (label[n] != IGNORE)
        ordered = np.sort(pixel.ravel())[::-1]
        if ordered.size <= min_k:
            per_image.append(ordered.mean())
        elif ordered[min_k] > threshold:
            per_image.append(ordered[ordered > threshold].mean())
        else:
            per_image.append(ordered[:min_k].mean())
    return np.mean(per_image)


@pytest.mark.parametrize('min_k, threshold, weight', [(10, 0.3, None), (10, 50.0, None), (10, 0.3, [1, 2, 0.5, 3]),
                                                      (64, 0.3, None), (500, 0.3, None)])
def test_bootstrapped_cross_entropy_matches_the_numpy_reference(min_k, threshold, weight):
    """HarDNet's config: BootstrappedCrossEntropyLoss(min_K, loss_th=0.3) (min_K 4096 there, scaled down here); 64
    and 500 are at least the 64 pixels of an image, where PaddleSeg's raises IndexError."""
    logit, label = batch(num_classes=4, size=(8, 8), scale=2.0)
    x = tensor(logit, grad=True)
    loss = BootstrappedCrossEntropyLoss(min_K=min_k, loss_th=threshold, weight=weight)
    value = loss(x, tensor(label))
    value.backward()
    assert float(value) == pytest.approx(np_bootstrapped(logit, label, min_k, threshold, weight), rel=1e-5)
    assert np.all(x.grad.numpy()[:, :, :3, :4] == 0)
    assert float(loss(tensor(logit), tensor(label.astype('int32')))) == pytest.approx(float(value), rel=1e-6)


@pytest.mark.parametrize('min_k, threshold', [(10, 0.3), (10, 50.0), (63, 0.3)])
def test_bootstrapped_cross_entropy_matches_paddleseg(min_k, threshold):
    """Where PaddleSeg 2.8.0's runs (an image has more than min_K pixels), on Paddle 3 and 2 alike."""
    from paddleseg.models.losses.bootstrapped_cross_entropy import BootstrappedCrossEntropyLoss as PaddleSegBoot
    logit, label = batch(num_classes=4, size=(8, 8), scale=2.0)
    assert_same_loss_and_grad(BootstrappedCrossEntropyLoss(min_k, threshold), PaddleSegBoot(min_k, threshold), logit,
                              label, rel=1e-5, rtol=1e-4, atol=1e-7)


def test_hardnet_config_builds_our_bootstrapped_loss():
    losses = Builder(paddleseg_config('hardnet/hardnet_cityscapes_1024x1024_160k.yml')).losses()
    loss = losses['types'][0]
    assert type(loss) is BootstrappedCrossEntropyLoss and (loss.K, loss.threshold) == (4096, 0.3)
    logit, label = batch(num_classes=19, size=(64, 64))  # 4096 pixels per image: PaddleSeg's raised here
    assert float(loss(tensor(logit), tensor(label))) == pytest.approx(np_bootstrapped(logit, label, 4096, 0.3),
                                                                      rel=1e-5)


@pytest.mark.parametrize('kwargs, text', [
    ({'min_K': 0, 'loss_th': 0.3}, "BootstrappedCrossEntropyLoss: min_K must be an integer >= 1, got 0"),
    ({'min_K': 4096.0, 'loss_th': 0.3}, "BootstrappedCrossEntropyLoss: min_K must be an integer >= 1, got 4096.0"),
    ({'min_K': 10, 'loss_th': None}, "BootstrappedCrossEntropyLoss: loss_th must be a number, got None"),
    ({'min_K': 10, 'loss_th': 0.3, 'weight': 'balanced'},
     "BootstrappedCrossEntropyLoss: weight must be a list of numbers, got 'balanced'"),
    ({'min_K': 10, 'loss_th': 0.3, 'ignore_index': 2.5},
     "BootstrappedCrossEntropyLoss: ignore_index must be an integer, got 2.5"),
])
def test_bootstrapped_cross_entropy_rejects_bad_arguments(kwargs, text):
    with pytest.raises(UserError) as excinfo:
        BootstrappedCrossEntropyLoss(**kwargs)
    assert message(excinfo) == text


# --- PaddleSeg's own losses that work on Paddle 3.3.1 and 2.6.2, as our configs use them -------------------------

def test_paddleseg_lovasz_softmax_mixed_with_our_cross_entropy():
    """OCRNet's Lovasz config: MixedLoss[CrossEntropyLoss, LovaszSoftmaxLoss] with coef [0.8, 0.2]."""
    loss_cls = manager.LOSSES['LovaszSoftmaxLoss']
    assert loss_cls.__module__.startswith('paddleseg.')
    logit, label = batch(num_classes=4, size=(6, 7))
    x = tensor(logit, grad=True)
    total, _ = loss_computation([x], tensor(label), {'types': [MixedLoss([CrossEntropyLoss(), loss_cls()],
                                                                         [0.8, 0.2])], 'coef': [1.0]})
    total.backward()
    ce = float(CrossEntropyLoss()(tensor(logit), tensor(label)))
    assert float(total) == pytest.approx(0.8 * ce + 0.2 * np_lovasz_softmax(logit, label), rel=1e-5)
    assert np.all(x.grad.numpy()[:, :, :3, :4] == 0)


def test_paddleseg_lovasz_hinge_on_two_class_logits():
    """The road-extraction config: LovaszHingeLoss on a two-class model (logits (N, 2, H, W), labels 0/1)."""
    loss_cls = manager.LOSSES['LovaszHingeLoss']
    assert loss_cls.__module__.startswith('paddleseg.')
    logit, label = batch(num_classes=2, size=(6, 7))
    x = tensor(logit, grad=True)
    value = loss_cls()(x, tensor(label))
    value.backward()
    assert float(value) == pytest.approx(np_lovasz_hinge_two_channels(logit, label), rel=1e-5)
    assert np.all(x.grad.numpy()[:, :, :3, :4] == 0)


def test_paddleseg_semantic_connectivity_loss_hand_computed():
    """SCL (the FCN/OCRNet *_SCL configs), two 4x4 images, label: class 1 in the top-left 2x2 block, class 0 around.

    PaddleSeg scores a component by the IoU of (component mask x predicted class index) with the label's component,
    so class 0 always scores 0 (loss 1) and the argmax carries no gradient.
    Image 0 predicted exactly: class 0 -> 1 - 0 / (1 label component + 1 lone predicted one) = 1; class 1 -> IoU 1,
    loss 0; mean 0.5. Image 1 predicts class 0 everywhere: class 0 -> 1; class 1 has no predicted component ->
    missed area 4/16 + 1 = 1.25; mean 1.125. Loss = (0.5 + 1.125) / 2 = 0.8125.
    """
    loss_cls = manager.LOSSES['SemanticConnectivityLoss']
    assert loss_cls.__module__.startswith('paddleseg.')
    label = np.zeros((2, 4, 4), dtype='int64')
    label[:, :2, :2] = 1
    logit = np.zeros((2, 2, 4, 4), dtype='float32')
    logit[0, 1] = np.where(label[0] == 1, 5.0, -5.0)
    logit[1, 0] = 5.0
    assert float(loss_cls()(tensor(logit), tensor(label))) == pytest.approx(0.8125, rel=1e-6)
    assert float(loss_cls()(tensor(logit), tensor(label.astype('int32')))) == pytest.approx(0.8125, rel=1e-6)
    # as the configs use it, beside our cross entropy: MixedLoss[CE, SCL] coef [1, 0.05]
    x = tensor(logit, grad=True)
    total, _ = loss_computation([x], tensor(label), {'types': [MixedLoss([CrossEntropyLoss(), loss_cls()],
                                                                         [1, 0.05])], 'coef': [1.0]})
    total.backward()
    ce = float(CrossEntropyLoss()(tensor(logit), tensor(label)))
    assert float(total) == pytest.approx(ce + 0.05 * 0.8125, rel=1e-5)
    assert np.abs(x.grad.numpy()).sum() > 0


def test_paddleseg_dice_loss():
    """DiceLoss (no config of ours uses it): 1 - (2 sum(P Y) + 1) / (sum(P + Y) + 1 + 1e-8) per image and class
    over labelled pixels, averaged over images then classes."""
    loss_cls = manager.LOSSES['DiceLoss']
    assert loss_cls.__module__.startswith('paddleseg.')
    logit, label = batch(num_classes=3, size=(5, 6))
    prob = np.exp(np_log_softmax(logit.astype(np.float64)))
    valid = (label != IGNORE)[:, None]
    onehot = np.eye(3)[np.where(valid[:, 0], label, 0)].transpose(0, 3, 1, 2)
    inter = (prob * onehot * valid).sum(axis=(2, 3))
    card = ((prob + onehot) * valid).sum(axis=(2, 3))
    expected = (1 - (2 * inter + 1) / (card + 1 + 1e-8)).mean()
    assert float(loss_cls()(tensor(logit), tensor(label))) == pytest.approx(expected, rel=1e-5)


def test_paddleseg_detail_aggregate_and_pixel_contrast_losses_run():
    """No config of ours uses them; they run forward and backward with finite values (their values depend on a
    random fuse kernel and random pixel sampling)."""
    detail_cls = manager.LOSSES['DetailAggregateLoss']
    contrast_cls = manager.LOSSES['PixelContrastCrossEntropyLoss']
    assert detail_cls.__module__.startswith('paddleseg.') and contrast_cls.__module__.startswith('paddleseg.')
    paddle.seed(0)
    rng = np.random.RandomState(4)
    label = rng.randint(0, 2, (2, 16, 16)).astype('int64')
    x = tensor(rng.randn(2, 1, 16, 16).astype('float32'), grad=True)
    value = detail_cls()(x, tensor(label))
    value.backward()
    assert np.isfinite(float(value)) and np.abs(x.grad.numpy()).sum() > 0
    seg = tensor(rng.randn(2, 3, 12, 12).astype('float32'))
    embed = tensor(rng.randn(2, 8, 12, 12).astype('float32'), grad=True)
    value = contrast_cls(max_samples=64, max_views=5)({'seg': seg, 'embed': paddle.nn.functional.normalize(embed,
                                                                                                          axis=1)},
                                                       tensor(rng.randint(0, 3, (2, 12, 12)).astype('int64')))
    value.backward()
    assert np.isfinite(float(value)) and np.abs(embed.grad.numpy()).sum() > 0
