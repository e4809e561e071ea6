"""A few training iterations of each CNN-family model at tiny sizes: every trainable parameter receives a gradient
from the training outputs' losses, and the loss falls. UNet 3+ trains with the paper's recipe (deep supervision,
CGM, hybrid loss focal + MS-SSIM + IoU per side output, BCE on the classification)."""

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones.resnet import ResNet
from paddle_models.backbones.resnet_vd import ResNet18_vd
from paddle_models.losses.bce import ForegroundBCELoss
from paddle_models.losses.focal import FocalLoss
from paddle_models.losses.iou import IoULoss
from paddle_models.losses.ms_ssim import MSSSIMLoss
from paddle_models.models.deeplab import DeepLabV3
from paddle_models.models.linknet import LinkNet
from paddle_models.models.pspnet import PSPNet
from paddle_models.models.unet_3plus import UNet3Plus
from paddle_models.models.unet_plusplus import UNetPlusPlus

NUM_CLASSES = 3


def _cross_entropy(logit, label):
    return F.cross_entropy(logit, label, axis=1, ignore_index=255)


def _hybrid(logit, label, parts=(FocalLoss(), MSSSIMLoss(), IoULoss())):
    return paddle.add_n([part(logit, label) for part in parts])


MODELS = {
    'PSPNet': (lambda: PSPNet(NUM_CLASSES, ResNet18_vd(output_stride=8), pp_out_channels=16),
               [_cross_entropy, _cross_entropy], [1.0, 0.4], 0.05),
    'DeepLabV3': (lambda: DeepLabV3(NUM_CLASSES, ResNet18_vd(output_stride=16), aspp_out_channels=16),
                  [_cross_entropy], [1.0], 0.05),
    'UNetPlusPlus': (lambda: UNetPlusPlus(NUM_CLASSES, channels=(8, 8, 12, 12, 16), ds_outputs=True),
                     [_cross_entropy] * 5, [1.0] * 5, 0.05),
    'UNet3Plus': (lambda: UNet3Plus(num_classes=NUM_CLASSES, is_deepsup=True, filters=(8, 8, 12, 12, 16)),
                  [_hybrid] * 5, [1.0] * 5, 0.05),
    'LinkNet': (lambda: LinkNet(NUM_CLASSES, backbone=ResNet(18)), [_cross_entropy], [1.0], 0.05),
}


def _data(batch=4, size=32, seed=0):
    """Images whose colour encodes the class of 8x8 blocks (plus noise): learnable in a few steps."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, NUM_CLASSES, (batch, size // 8, size // 8)).repeat(8, axis=1).repeat(8, axis=2)
    images = np.eye(3)[labels].transpose(0, 3, 1, 2) * 2 + rng.randn(batch, 3, size, size) * 0.3
    labels[:, :2, :2] = 255  # some ignored pixels
    return paddle.to_tensor(images.astype('float32')), paddle.to_tensor(labels.astype('int64'))


def _train(model, losses, coefs, lr, steps, x, y, check_gradients=True):
    optimizer = paddle.optimizer.Momentum(learning_rate=lr, momentum=0.9, parameters=model.parameters())
    model.train()
    history = []
    for step in range(steps):
        outputs = model(x)
        assert len(outputs) == len(losses)
        loss = paddle.add_n([fn(out, y) * c for fn, out, c in zip(losses, outputs, coefs)])
        loss.backward()
        if step == 0 and check_gradients:
            dead = [p.name for p in model.parameters()
                    if not p.stop_gradient and (p.grad is None or float(p.grad.abs().max()) == 0.0)]
            assert not dead, dead[:5]
        optimizer.step()
        optimizer.clear_grad()
        history.append(float(loss))
    return history


@pytest.mark.parametrize('name', sorted(MODELS))
def test_sgd_steps_reduce_loss(name):
    build, losses, coefs, lr = MODELS[name]
    paddle.seed(0)
    model = build()
    x, y = _data()
    history = _train(model, losses, coefs, lr, 12, x, y)
    assert np.isfinite(history).all()
    assert history[-1] < 0.7 * history[0], history


def test_unet_3plus_full_recipe_with_cgm():
    """Deep supervision + CGM + hybrid loss + BCE: the classification loss falls too (the side outputs are gated
    by a non-differentiable argmax, so the CGM learns only from the BCE)."""
    paddle.seed(0)
    model = UNet3Plus(num_classes=NUM_CLASSES, is_CGM=True, filters=(8, 8, 12, 12, 16))
    bce = ForegroundBCELoss()
    x, y = _data(seed=1)
    y = y.numpy()
    y[1] = np.where(y[1] == 255, 255, 0)  # one image holds only background (and void): target "no foreground"
    y = paddle.to_tensor(y)
    classification = []

    def bce_logged(logit, label):
        value = bce(logit, label)
        classification.append(float(value))
        return value

    history = _train(model, [_hybrid] * 5 + [bce_logged], [1.0] * 6, 0.05, 24, x, y, check_gradients=False)
    assert np.isfinite(history).all()
    assert history[-1] < history[0], history
    assert classification[-1] < 0.5 * classification[0], classification
    model.eval()
    with paddle.no_grad():
        logits = model.classify(model.encoder(x)[-1]).numpy()
    assert logits.argmax(1).tolist() == [1, 0, 1, 1]  # the CGM learnt which image has foreground
