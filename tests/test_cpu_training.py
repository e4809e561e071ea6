"""The CPU training forms of bias additions (issue 24, layers/cpu_training.py): the same values and gradients as
Paddle's own forms, the layers switched only for the run, and a training run with them logging the losses of one
without them; and the package's import giving Paddle every CPU core."""
import os
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from paddle_models.core.config import Builder, load_config
from paddle_models.core.train import _Run, train
from paddle_models.layers.cpu_training import (BiasLastConv2D, BiasLastConv2DTranspose, BiasLastLinear,
                                               channel_bias, cpu_training_forms, feature_bias)
from conftest import REPO
from helpers import tiny_config

STEP = _Run.step  # one training iteration, recorded by the runs below
SEGFORMER = {'type': 'SegFormer', 'num_classes': 5, 'embedding_dim': 16,
             'backbone': {'type': 'MixVisionTransformer_B0', 'mlp_ratios': [1, 1, 1, 1]}}


def _value_and_grads(fn, x, bias, weights):
    x = paddle.to_tensor(x, stop_gradient=False)
    bias = paddle.to_tensor(bias, stop_gradient=False)
    y = fn(x, bias)
    (y * paddle.to_tensor(weights)).sum().backward()
    return y.numpy(), x.grad.numpy(), bias.grad.numpy()


@pytest.mark.parametrize('shape', [(2, 3, 5, 7), (3, 4, 6)])
def test_channel_bias_matches_the_broadcast_add(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype('float32')
    bias = rng.standard_normal(shape[1]).astype('float32')
    weights = rng.standard_normal(shape).astype('float32')
    plain_shape = [1, shape[1]] + [1] * (len(shape) - 2)
    fast = _value_and_grads(channel_bias, x, bias, weights)
    plain = _value_and_grads(lambda a, b: a + b.reshape(plain_shape), x, bias, weights)
    np.testing.assert_array_equal(fast[0], plain[0])
    np.testing.assert_array_equal(fast[1], plain[1])
    np.testing.assert_allclose(fast[2], plain[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast[2], weights.sum(axis=tuple(a for a in range(len(shape)) if a != 1)), rtol=1e-5,
                               atol=1e-5)


def test_feature_bias_matches_the_broadcast_add():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 6)).astype('float32')
    bias = rng.standard_normal(6).astype('float32')
    weights = rng.standard_normal((2, 9, 6)).astype('float32')
    fast = _value_and_grads(feature_bias, x, bias, weights)
    np.testing.assert_array_equal(fast[0], x + bias)
    np.testing.assert_array_equal(fast[1], weights)
    np.testing.assert_allclose(fast[2], weights.sum(axis=(0, 1)), rtol=1e-5, atol=1e-5)


class _Net(nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 4, 3, padding='same')
        self.depthwise = nn.Conv2D(4, 4, 3, padding=1, groups=4, stride=2)
        self.no_bias = nn.Conv2D(4, 4, 1, bias_attr=False)
        self.reflect = nn.Conv2D(4, 4, 3, padding=1, padding_mode='reflect')
        self.up = nn.Conv2DTranspose(4, 4, 3, stride=2, padding=1, output_padding=1)
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        y = self.up(self.reflect(self.no_bias(self.depthwise(self.conv(x)))))
        return self.linear(y.transpose([0, 2, 3, 1]))


def _grads(net, x):
    net.clear_gradients()
    out = net(paddle.to_tensor(x))
    (out * out).sum().backward()
    return out.numpy(), {name: p.grad.numpy() for name, p in net.named_parameters()}


def test_forms_switch_for_the_run_only_and_train_the_same():
    paddle.seed(0)
    net = _Net()
    x = np.random.default_rng(2).standard_normal((2, 3, 9, 11)).astype('float32')
    keys = list(net.state_dict())
    plain_out, plain_grads = _grads(net, x)
    with cpu_training_forms(net) as switched:
        assert switched == 4  # conv, depthwise, up, linear: not the conv without a bias, nor the reflect-padded one
        assert type(net.conv) is BiasLastConv2D and type(net.depthwise) is BiasLastConv2D
        assert type(net.up) is BiasLastConv2DTranspose and type(net.linear) is BiasLastLinear
        assert type(net.no_bias) is nn.Conv2D and type(net.reflect) is nn.Conv2D
        assert list(net.state_dict()) == keys
        fast_out, fast_grads = _grads(net, x)
    assert all(type(layer) in (nn.Conv2D, nn.Linear) for layer in (net.conv, net.depthwise, net.linear))
    assert type(net.up) is nn.Conv2DTranspose
    np.testing.assert_allclose(fast_out, plain_out, rtol=1e-6, atol=1e-6)
    for name, grad in plain_grads.items():
        np.testing.assert_allclose(fast_grads[name], grad, rtol=1e-4, atol=1e-5, err_msg=name)


def test_forms_are_undone_when_the_body_raises():
    net = _Net()
    with pytest.raises(RuntimeError, match='stop'):
        with cpu_training_forms(net):
            raise RuntimeError('stop')
    assert type(net.conv) is nn.Conv2D and type(net.linear) is nn.Linear
    with cpu_training_forms(net, enabled=False) as switched:
        assert switched == 0 and type(net.conv) is nn.Conv2D


def _losses(config, tmp_path, name, fast, monkeypatch):
    """The loss of each iteration of a 4-iteration run of ``config`` (seeded), and the trained model."""
    builder = Builder(load_config(config))
    paddle.seed(3)
    model = builder.model()
    losses = []

    def recording_step(run, images, labels):
        loss, lr = STEP(run, images, labels)
        losses.append(loss)
        return loss, lr

    monkeypatch.setattr(_Run, 'step', recording_step)
    optimizer = builder.optimizer(model, builder.lr_scheduler())
    train(model, builder.dataset('train_dataset'), builder.losses(), optimizer, save_dir=str(tmp_path / name),
          iters=4, batch_size=2, save_interval=4, log_iters=4, seed=5, fast_cpu_forms=fast)
    return losses, model


def test_training_with_the_forms_logs_the_plain_losses(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, train_samples=8, iters=4, batch_size=2, model=SEGFORMER, image_size=32)
    fast, fast_model = _losses(config, tmp_path, 'fast', True, monkeypatch)
    plain, plain_model = _losses(config, tmp_path, 'plain', False, monkeypatch)
    assert len(fast) == 4
    np.testing.assert_allclose(fast, plain, rtol=1e-4)
    assert not any(isinstance(layer, (BiasLastConv2D, BiasLastConv2DTranspose, BiasLastLinear)) for layer in fast_model.sublayers())
    for (name, a), b in zip(fast_model.state_dict().items(), plain_model.state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-4, err_msg=name)


THREADS_PROBE = """
import os
import paddle_models, paddle
before = len(os.listdir('/proc/self/task'))
a = paddle.randn([512, 512])
paddle.matmul(a, a)
print(len(os.listdir('/proc/self/task')) - before, os.environ.get('OMP_NUM_THREADS'))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason='needs 2 usable cores to see a second thread')
def test_importing_the_package_gives_paddle_every_core_quietly():
    """Paddle's import alone pins its kernels to one thread; importing paddle_models first gives it the usable
    cores (OpenMP starts a worker thread at the first matrix product), without Paddle's OMP_NUM_THREADS warning
    and without leaving the variable set for child processes; OMP_NUM_THREADS=1 keeps one thread."""
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    result = subprocess.run([sys.executable, '-c', THREADS_PROBE], capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    started, variable = result.stdout.split()
    assert int(started) >= 1 and variable == 'None'
    assert 'OMP_NUM_THREADS' not in result.stderr, result.stderr
    result = subprocess.run([sys.executable, '-c', THREADS_PROBE], capture_output=True, text=True,
                            env=dict(env, OMP_NUM_THREADS='1'), cwd=REPO, timeout=120)
    assert result.stdout.split() == ['0', '1'], result.stdout + result.stderr


@pytest.mark.parametrize('avg_non_ignore', [True, False])
def test_cross_entropy_value_and_gradient_match_numpy(avg_non_ignore):
    """CrossEntropyLoss's fused form (the class axis moved last for Paddle's cross_entropy kernel) against the
    definition in NumPy: mean over pixels of -log softmax at the label, ignored pixels 0, divided by the share of
    counted pixels; the gradient softmax - onehot at counted pixels."""
    from paddle_models.losses.cross_entropy import CrossEntropyLoss

    rng = np.random.default_rng(4)
    logit = rng.standard_normal((2, 5, 3, 4)).astype('float64')
    label = rng.integers(0, 5, (2, 3, 4))
    label[0, 0] = 255
    x = paddle.to_tensor(logit.astype('float32'), stop_gradient=False)
    loss = CrossEntropyLoss(avg_non_ignore=avg_non_ignore)(x, paddle.to_tensor(label))
    loss.backward()
    prob = np.exp(logit - logit.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    valid = label != 255
    safe = np.where(valid, label, 0)
    onehot = np.eye(5)[safe].transpose(0, 3, 1, 2)
    nll = -np.log((prob * onehot).sum(1)) * valid
    counted = valid.mean() if avg_non_ignore else 1.0
    expected = nll.mean() / (counted + CrossEntropyLoss.EPS)
    grad = (prob - onehot) * valid[:, None] / valid.size / (counted + CrossEntropyLoss.EPS)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), grad, rtol=1e-4, atol=1e-7)
