"""HRNet backbones: every variant has PaddleSeg 2.8.0's parameter names, order and shapes; the backbone's features
equal PaddleSeg's with both padding modes and squeeze-excitation; pretrained files load strictly; bad arguments
raise one-line UserErrors."""
import zlib  # noqa: F401  (before paddle: Paddle 2.6.2's bundled zlib)

import numpy as np
import paddle
import pytest
from paddleseg.cvlibs import manager
from paddleseg.models.backbones import hrnet as ref_hrnet

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones import hrnet
from paddle_models.backbones.hrnet import HRNet, HRNet_W18_Small_V1
from paddle_models.errors import UserError

VARIANTS = ['HRNet_W18_Small_V1', 'HRNet_W18_Small_V2', 'HRNet_W18', 'HRNet_W30', 'HRNet_W32', 'HRNet_W40',
            'HRNet_W44', 'HRNet_W48', 'HRNet_W60', 'HRNet_W64']


def randomized(state, seed=0):
    """Random weights of moderate scale (conv/linear ~ N(0, 1/fan_in), BN statistics and affine terms, biases):
    PaddleSeg's initial convs (std 0.001) would make every output ~0 and hide mistakes."""
    rng = np.random.RandomState(seed)
    out = {}
    for key, value in state.items():
        shape = list(value.shape)
        if key.endswith('_variance'):
            array = rng.uniform(0.5, 1.5, shape)
        elif key.endswith('_mean') or key.endswith('bias'):
            array = rng.uniform(-0.2, 0.2, shape)
        elif len(shape) == 1:
            array = rng.uniform(0.5, 1.5, shape)
        else:
            fan_in = shape[0] if len(shape) == 2 else int(np.prod(shape[1:]))  # Linear weights are [in, out]
            array = rng.normal(0.0, fan_in ** -0.5, shape)
        out[key] = paddle.to_tensor(array.astype('float32'))
    return out


def _shapes(layer):
    return [(k, list(v.shape)) for k, v in layer.state_dict().items()]


@pytest.mark.parametrize('name', VARIANTS)
def test_variant_has_paddleseg_names_order_and_shapes(name):
    assert manager.BACKBONES.components_dict[name] is getattr(hrnet, name)
    with paddle.LazyGuard():
        ours = getattr(hrnet, name)()
    reference = getattr(ref_hrnet, name)() if name in ('HRNet_W18_Small_V1', 'HRNet_W18') else None
    if reference is None:  # (building PaddleSeg's wide variants initialises ~100M parameters: use LazyGuard)
        with paddle.LazyGuard():
            reference = getattr(ref_hrnet, name)()
    assert _shapes(ours) == _shapes(reference)
    assert ours.feat_channels == reference.feat_channels


def _features_match(ours, reference, x):
    state = randomized(reference.state_dict())
    reference.set_state_dict(state)
    missing, unexpected = ours.set_state_dict(state)
    assert not missing and not unexpected
    reference.eval()
    ours.eval()
    expected, got = reference(x), ours(x)
    assert len(got) == 1 and got[0].shape == expected[0].shape
    a, b = got[0].numpy(), expected[0].numpy()
    assert b.std() > 1e-2
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, float(np.abs(b).max())))


@pytest.mark.paddle26
@pytest.mark.parametrize('kwargs, size', [
    (dict(), (64, 64)),
    (dict(padding_same=False, align_corners=True), (66, 70)),  # symmetric padding, odd branch sizes
    (dict(has_se=True), (64, 48)),
])
def test_small_v1_features_equal_paddleseg(kwargs, size):
    x = paddle.to_tensor(np.random.RandomState(1).randn(1, 3, *size).astype('float32'))
    _features_match(HRNet_W18_Small_V1(**kwargs), ref_hrnet.HRNet_W18_Small_V1(**kwargs), x)
    assert HRNet_W18_Small_V1(**kwargs)(x)[0].shape == [1, 240, (size[0] + 3) // 4, (size[1] + 3) // 4]


def test_pretrained_loads_strictly(tmp_path):
    source = HRNet_W18_Small_V1()
    state = randomized(source.state_dict(), seed=3)
    path = str(tmp_path / 'hrnet.pdparams')
    paddle.save(state, path)
    loaded = HRNet_W18_Small_V1(pretrained=path)
    for key, value in loaded.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[key].numpy())
    del state['conv_layer1_1._conv.weight']
    paddle.save(state, path)
    with pytest.raises(UserError) as err:
        HRNet_W18_Small_V1(pretrained=path)
    assert str(err.value) == f"HRNet: pretrained weights {path} lack conv_layer1_1._conv.weight"


@pytest.mark.parametrize('build, message', [
    (lambda: HRNet(stage3_num_channels=(18, 36)),
     "HRNet: stage3_num_channels must be 3 positive integers, got (18, 36)"),
    (lambda: HRNet(stage4_num_modules=0), "HRNet: stage4_num_modules must be a positive integer, got 0"),
    (lambda: HRNet(stage1_num_modules=2), "HRNet: stage1_num_modules must be 1, got 2"),
    (lambda: HRNet_W18_Small_V1(stage2_num_channels=[8, 16]),
     "HRNet_W18_Small_V1: stage2_num_channels is fixed by the variant; use HRNet to set it"),
])
def test_bad_arguments(build, message):
    with pytest.raises(UserError) as err:
        build()
    assert str(err.value) == message
