"""Weight and output parity with PaddleSeg 2.8.0's own classes: PSPNet + ResNet50_vd, DeepLabV3 + ResNet50_vd,
UNetPlusPlus and UNet3Plus. PaddleSeg's state_dict must load strictly into ours (same names, order and shapes), and
the eval outputs must agree within 1e-5 (relative to the output's magnitude)."""

import numpy as np
import paddle
import paddleseg
import pytest
from paddleseg.models.backbones.resnet_vd import ResNet50_vd as RefResNet50_vd

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones.resnet_vd import ResNet50_vd
from paddle_models.layers import resize
from paddle_models.models.deeplab import DeepLabV3
from paddle_models.models.pspnet import PSPNet
from paddle_models.models.unet_3plus import UNet3Plus
from paddle_models.models.unet_plusplus import UNetPlusPlus


def _randomized(state, seed):
    """Random BN statistics, BN affine terms and biases (fresh ones are near-identity and would hide a mis-wired
    statistic); conv weights keep their random initial values."""
    rng = np.random.RandomState(seed)
    out = {}
    for key, value in state.items():
        shape = value.shape
        if key.endswith('_variance'):
            array = rng.uniform(0.5, 1.5, shape)
        elif key.endswith('_mean') or key.endswith('bias'):
            array = rng.uniform(-0.2, 0.2, shape)
        elif len(shape) == 1:  # BN scale
            array = rng.uniform(0.5, 1.5, shape)
        else:  # conv / linear weights: already random (the reference's own initialisation)
            out[key] = value
            continue
        out[key] = paddle.to_tensor(array.astype('float32'))
    return out


def _check_parity(reference, ours, x, seed=0, compare_train=False):
    """Load the reference's (randomized) state dict strictly into ours; compare eval outputs (ours returns only
    the main output in eval mode) and, where asked, every training output."""
    state = _randomized(reference.state_dict(), seed)
    reference.set_state_dict(state)
    own = ours.state_dict()
    assert list(own) == list(state)
    assert {k: list(v.shape) for k, v in own.items()} == {k: list(v.shape) for k, v in state.items()}
    reference.eval()
    ours.eval()
    expected = reference(x)
    assert np.abs(ours(x)[0].numpy() - expected[0].numpy()).max() > 1e-3  # before loading they differ
    missing, unexpected = ours.set_state_dict(state)
    assert not missing and not unexpected
    got = ours(x)
    assert len(got) == 1
    _assert_close(got[0], expected[0])
    assert float(expected[0].std()) > 1e-2  # a non-trivial output
    if compare_train:
        reference.train()
        ours.train()
        expected = reference(x)
        got = ours(x)
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            _assert_close(a, b)
    return got


def _assert_close(a, b):
    a, b = a.numpy(), b.numpy()
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, float(np.abs(b).max())))


def _input(shape, seed=1):
    return paddle.to_tensor(np.random.RandomState(seed).randn(*shape).astype('float32'))


@pytest.mark.paddle26
def test_pspnet_resnet50_vd():
    """Every path: ResNet50_vd at output stride 8, PPM bins (1, 2, 3, 6), the auxiliary head (its weights load;
    its output is PaddleSeg's second eval output)."""
    kwargs = dict(num_classes=5, pp_out_channels=64)
    reference = paddleseg.models.PSPNet(backbone=RefResNet50_vd(output_stride=8), **kwargs)
    ours = PSPNet(backbone=ResNet50_vd(output_stride=8), **kwargs)
    x = _input([1, 3, 64, 72])
    _check_parity(reference, ours, x)
    # the auxiliary head computes PaddleSeg's auxiliary output (dropout off: compare through the head directly)
    ours.eval()
    features = ours.backbone(x)
    aux = ours.head.auxlayer(features[2])
    expected_aux = reference(x)[1]
    _assert_close(resize(aux, [64, 72]), expected_aux)


@pytest.mark.paddle26
@pytest.mark.parametrize('output_stride, ratios, multi_grid', [
    (8, (1, 12, 24, 36), (1, 2, 4)),
    (16, (1, 6, 12, 18), (1, 1, 1)),
])
def test_deeplabv3_resnet50_vd(output_stride, ratios, multi_grid):
    reference = paddleseg.models.DeepLabV3(
        num_classes=4, backbone=RefResNet50_vd(output_stride=output_stride, multi_grid=multi_grid),
        aspp_ratios=ratios, aspp_out_channels=32)
    ours = DeepLabV3(num_classes=4, backbone=ResNet50_vd(output_stride=output_stride, multi_grid=multi_grid),
                     aspp_out_channels=32)  # the paper's rates for the stride are picked by default
    assert ours.aspp_ratios == ratios
    _check_parity(reference, ours, _input([1, 3, 64, 64]))


@pytest.mark.parametrize('kwargs, size', [
    (dict(), (32, 48)),                                   # deep supervision: mean of L1..L4
    (dict(is_ds=False, align_corners=True), (48, 32)),    # L4 only
    (dict(use_deconv=True, in_channels=1), (32, 32)),     # transposed-conv upsampling
])
def test_unet_plusplus(kwargs, size):
    reference = paddleseg.models.UNetPlusPlus(num_classes=3, **kwargs)
    ours = UNetPlusPlus(num_classes=3, **kwargs)
    _check_parity(reference, ours, _input([2, kwargs.get('in_channels', 3), *size]), compare_train=True)


def test_unet_3plus_deep_supervision_and_cgm():
    """Deep supervision + CGM: eval gives the gated d1; in training all five gated side outputs match PaddleSeg's.
    The classification bias is forced to "contains foreground", so that the gate is 1 whatever the CGM's dropout
    does and the side outputs are non-trivial."""
    x = _input([2, 3, 32, 32])
    reference = paddleseg.models.UNet3Plus(num_classes=3, is_CGM=True)
    ours = UNet3Plus(num_classes=3, is_CGM=True)
    state = _randomized(reference.state_dict(), 3)
    state['cls.1.bias'] = paddle.to_tensor(np.array([-50.0, 50.0], dtype='float32'))
    reference.set_state_dict(state)
    assert list(ours.state_dict()) == list(state)
    missing, unexpected = ours.set_state_dict(state)
    assert not missing and not unexpected
    reference.eval()
    ours.eval()
    got = ours(x)
    assert len(got) == 1
    _assert_close(got[0], reference(x)[0])
    assert float(got[0].std()) > 1e-2
    reference.train()
    ours.train()
    expected = reference(x)
    got = ours(x)
    assert len(got) == len(expected) + 1  # ours adds the classification logits for the BCE
    for a, b in zip(got, expected):
        _assert_close(a, b)


def test_unet_3plus_plain():
    """No deep supervision (one 3x3 output conv on XD1), no BN in the encoder, one input channel."""
    reference = paddleseg.models.UNet3Plus(num_classes=2, is_batchnorm=False, in_channels=1)
    ours = UNet3Plus(num_classes=2, is_batchnorm=False, in_channels=1)
    _check_parity(reference, ours, _input([1, 1, 32, 48]), compare_train=True)


class _AsList(paddle.nn.Layer):
    """A layer whose output is wrapped in a list (the models' convention), for _check_parity."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return [self.layer(x)]


@pytest.mark.parametrize('name, args, kwargs, in_channels', [
    ('PPModule', (), dict(in_channels=12, out_channels=8, bin_sizes=(1, 2, 3, 6), dim_reduction=False,
                          align_corners=True), 12),
    ('ASPPModule', ((1, 2, 3), 6, 5, False), dict(use_sep_conv=True, image_pooling=True), 6),
    ('AuxLayer', (), dict(in_channels=6, inter_channels=4, out_channels=3), 6),
])
def test_context_layers_match_paddleseg(name, args, kwargs, in_channels):
    """PPModule, ASPPModule (separable convs, image pooling) and AuxLayer against PaddleSeg's layers."""
    reference = _AsList(getattr(paddleseg.models.layers, name)(*args, **kwargs))
    ours = _AsList(getattr(paddle_models.layers, name)(*args, **kwargs))
    _check_parity(reference, ours, _input([2, in_channels, 11, 13]))
