"""MultiScaleAttention: with one scale it is the base model; with several it is the paper's hierarchical
combination of the base model's per-scale predictions (recomputed here from the base model and the attention head);
training returns [fused, per-scale...] and learns; the YAML config wraps a nested model; the export bakes the scales
into the graph and runs in deploy/python/infer.py with oneDNN."""
import os

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from conftest import REPO
import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones.hrnet import HRNet_W18_Small_V1
from paddle_models.core.config import Builder, load_config
from paddle_models.errors import UserError
from paddle_models.models.fcn import FCN
from paddle_models.models.hardnet import HarDNet
from paddle_models.models.multiscale_attention import MultiScaleAttention
from paddle_models.models.unet_plusplus import UNetPlusPlus
from helpers import TINY_HARDNET, export_and_infer, randomized, train_steps

def _hardnet(num_classes=3):
    model = HarDNet(num_classes, **TINY_HARDNET)
    model.set_state_dict(randomized(model.state_dict()))
    return model


def _wrapped(base, **kwargs):
    model = MultiScaleAttention(base, attention_channels=8, **kwargs)
    model.set_state_dict(randomized(model.state_dict(), seed=2))
    model.eval()
    return model


def _input(shape, seed=1):
    return paddle.to_tensor(np.random.RandomState(seed).randn(*shape).astype('float32'))


def _up(t, size):
    return F.interpolate(t, size=size, mode='bilinear', align_corners=False)


@pytest.mark.paddle26
@pytest.mark.parametrize('base', [
    lambda: _hardnet(),
    lambda: FCN(3, backbone=HRNet_W18_Small_V1(), channels=8),
    lambda: UNetPlusPlus(3, channels=(4, 6, 8, 10, 12)),  # no forward_features: attention reads its logits
])
def test_single_scale_equals_the_base_model(base):
    base = base()
    model = _wrapped(base, test_scales=[1.0])
    x = _input([2, 3, 48, 40])
    expected = base(x)[0].numpy()
    assert expected.std() > 1e-3
    np.testing.assert_array_equal(model(x)[0].numpy(), expected)


def _scale(base, model, x, s):
    """(prediction, attention) of one scale, recomputed from the base model and the head."""
    h, w = x.shape[2:]
    xs = x if s == 1.0 else _up(x, [int(h * s), int(w * s)])
    logit, feature = base.forward_features(xs)
    size = xs.shape[2:]
    return _up(logit, size), _up(model.attention(feature), size)


def test_hierarchical_fusion_of_three_scales():
    base = _hardnet()
    model = _wrapped(base)  # default test scales 0.5, 1.0, 2.0
    x = _input([1, 3, 40, 48])
    p2, _ = _scale(base, model, x, 2.0)
    p1, a1 = _scale(base, model, x, 1.0)
    p05, a05 = _scale(base, model, x, 0.5)
    fused = a1 * p1 + (1 - a1) * _up(p2, [40, 48])          # 2.0 -> 1.0: trust 1.0 by a1
    fused = _up(a05 * p05, [40, 48]) + (1 - _up(a05, [40, 48])) * fused  # 0.5 joins with its own attention
    got = model(x)[0]
    np.testing.assert_allclose(got.numpy(), fused.numpy(), rtol=0, atol=1e-5)
    assert np.abs(got.numpy() - base(x)[0].numpy()).max() > 1e-2  # the scales do change the prediction


def test_training_outputs_and_learning():
    base = _hardnet(4)
    model = MultiScaleAttention(base, attention_channels=8)
    model.train()
    x = _input([1, 3, 32, 32])
    fused, at_05, at_1 = model(x)
    _, a05 = _scale(base, model, x, 0.5)
    p05 = base.forward_features(_up(x, [16, 16]))[0]
    p05 = _up(p05, [16, 16])
    np.testing.assert_allclose(at_05.numpy(), _up(p05, [32, 32]).numpy(), rtol=0, atol=1e-5)  # resize on the CPU: matrix products, float rounding
    expected = _up(a05 * p05, [32, 32]) + (1 - _up(a05, [32, 32])) * at_1
    np.testing.assert_allclose(fused.numpy(), expected.numpy(), rtol=0, atol=1e-5)
    paddle.seed(0)
    losses = train_steps(MultiScaleAttention(HarDNet(4, **TINY_HARDNET), attention_channels=8), steps=6,
                          learning_rate=0.2)
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] * 0.95, losses


def test_config_wraps_a_nested_model():
    path = os.path.join(REPO, 'configs', 'multiscale_attention_hardnet_camvid.yml')
    builder = Builder(load_config(path, require=('model', 'train_dataset', 'loss')))
    model = builder.model()
    assert type(model).__name__ == 'MultiScaleAttention' and type(model.model).__name__ == 'HarDNet'
    assert model.num_classes == 11 and model.train_scales == [0.5, 1.0] and model.test_scales == [0.5, 1.0, 2.0]
    assert model.attention.conv_bn_re0._conv.weight.shape == [256, model.model.feature_channels, 3, 3]
    losses = builder.losses()
    assert len(losses['types']) == 1 + len(model.train_scales) and losses['coef'] == [1.0, 0.05, 0.05]


@pytest.mark.parametrize('build, message', [
    (lambda: MultiScaleAttention(_hardnet(), test_scales=[]),
     "MultiScaleAttention: test_scales must be a non-empty list of distinct positive numbers, got []"),
    (lambda: MultiScaleAttention(_hardnet(), train_scales=[0.5, 0.5]),
     "MultiScaleAttention: train_scales must be a non-empty list of distinct positive numbers, got [0.5, 0.5]"),
    (lambda: MultiScaleAttention(_hardnet(3), num_classes=11),
     "MultiScaleAttention: num_classes is 11 but the wrapped HarDNet has 3"),
    (lambda: MultiScaleAttention({'type': 'HarDNet'}),
     "MultiScaleAttention: model must be a segmentation model component (a dict with a type), "
     "got {'type': 'HarDNet'}"),
])
def test_bad_arguments(build, message):
    with pytest.raises(UserError) as err:
        build()
    assert str(err.value) == message


def test_export_bakes_the_scales_and_runs_with_onednn(tmp_path):
    """The exported three-scale program reproduces the dynamic three-scale output (not the base model's), and
    infer.py with oneDNN writes its argmax."""
    from paddle.inference import Config, create_predictor

    paddle.seed(1)  # (Paddle's initialisation: this random model predicts several classes on the test image)
    model = MultiScaleAttention(HarDNet(3, **TINY_HARDNET), attention_channels=8)
    model.eval()
    export_and_infer(model, tmp_path)
    info_dir = tmp_path / 'export'
    config = Config(str(info_dir / ('model.json' if os.path.exists(info_dir / 'model.json') else 'model.pdmodel')),
                    str(info_dir / 'model.pdiparams'))
    config.disable_glog_info()
    config.enable_mkldnn()
    predictor = create_predictor(config)
    batch = np.random.RandomState(3).randn(1, 3, 40, 56).astype('float32')
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(batch.shape))
    handle.copy_from_cpu(batch)
    predictor.run()
    out = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    with paddle.no_grad():
        logits = model(paddle.to_tensor(batch))[0].numpy()
    assert out.shape == (1, 40, 56)  # argmax
    assert (out == logits.argmax(1)).mean() > 0.995
    assert (logits.argmax(1) != model.model(paddle.to_tensor(batch))[0].numpy().argmax(1)).any()
