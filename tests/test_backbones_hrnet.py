"""HRNet backbones: every variant has PaddleSeg 2.8.0's parameter names, order and shapes; the backbone's features
equal PaddleSeg's with both padding modes, squeeze-excitation and polarized self-attention (``use_psa``); pretrained
files load strictly; bad arguments raise one-line UserErrors."""

import numpy as np
import paddle
import pytest
from paddleseg.cvlibs import manager
from paddleseg.models.backbones import hrnet as ref_hrnet
from paddleseg.models.backbones.hrnet import HRNet_W48 as PSHRNet_W48
from paddleseg.models.layers.polaried_self_attention import PolarizedSelfAttentionModule

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones import hrnet
from paddle_models.backbones.hrnet import HRNet, HRNet_W18_Small_V1, HRNet_W48
from paddle_models.errors import UserError
from paddle_models.layers import PolarizedSelfAttention
from helpers import randomized, tamed

VARIANTS = ['HRNet_W18_Small_V1', 'HRNet_W18_Small_V2', 'HRNet_W18', 'HRNet_W30', 'HRNet_W32', 'HRNet_W40',
            'HRNet_W44', 'HRNet_W48', 'HRNet_W60', 'HRNet_W64']


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
    (dict(use_psa=True, padding_same=False), (64, 56)),
])
def test_small_v1_features_equal_paddleseg(kwargs, size):
    x = paddle.to_tensor(np.random.RandomState(1).randn(1, 3, *size).astype('float32'))
    _features_match(HRNet_W18_Small_V1(**kwargs), ref_hrnet.HRNet_W18_Small_V1(**kwargs), x)
    assert HRNet_W18_Small_V1(**kwargs)(x)[0].shape == [1, 240, (size[0] + 3) // 4, (size[1] + 3) // 4]


@pytest.mark.paddle26
def test_psa_block_equals_paddleseg():
    reference = PolarizedSelfAttentionModule(18, 18)
    ours = PolarizedSelfAttention(18)
    state = randomized(reference.state_dict(), seed=2)
    reference.set_state_dict(state)
    assert _shapes(ours) == _shapes(reference)
    missing, unexpected = ours.set_state_dict(state)
    assert not missing and not unexpected
    x = paddle.to_tensor(np.random.RandomState(4).randn(2, 18, 7, 5).astype('float32'))
    expected = reference(x).numpy()
    # both masks matter: x * channel_mask alone (or x * spatial_mask alone) is far from the reference
    for part in (ours.channel_mask(x), ours.spatial_mask(x)):
        assert np.abs((x * part).numpy() - expected).max() > 0.1
    np.testing.assert_allclose(ours(x).numpy(), expected, rtol=0, atol=1e-6 * float(np.abs(expected).max()))


def test_w48_psa_loads_paddleseg_strictly_and_gives_its_four_branches():
    """The mscale_ocrnet_hrnetv2_psa backbone (HRNet_W48, use_psa, padding_same False): PaddleSeg's state dict loads
    strictly (same keys in the same order, same shapes) and the four stage-4 maps and the concatenated feature
    equal PaddleSeg's within 1e-5 of their magnitude."""
    kwargs = dict(use_psa=True, padding_same=False)
    reference = PSHRNet_W48(**kwargs)
    ours = HRNet_W48(**kwargs)
    assert _shapes(ours) == _shapes(reference)
    state = tamed(randomized(reference.state_dict(), seed=5))
    assert sum('.deattn.' in key for key in state) == 5 * 4 * (2 * 1 + 3 * 4 + 4 * 3)  # 5 convs per basic block
    reference.set_state_dict(state)
    missing, unexpected = ours.set_state_dict(state)
    assert not missing and not unexpected
    reference.eval()
    ours.eval()
    x = paddle.to_tensor(np.random.RandomState(1).randn(1, 3, 64, 64).astype('float32'))
    with paddle.no_grad():
        xs = [reference.la1(reference.conv_layer1_2(reference.conv_layer1_1(x)))]
        for transition, stage in ((reference.tr1, reference.st2), (reference.tr2, reference.st3),
                                  (reference.tr3, reference.st4)):
            xs = stage(transition(xs))
        got = ours.forward_branches(x)
        expected_feature, feature = reference(x)[0].numpy(), ours(x)[0].numpy()
    assert [b.shape for b in got] == [[1, 48, 16, 16], [1, 96, 8, 8], [1, 192, 4, 4], [1, 384, 2, 2]]
    for a, b in zip(got, xs):
        b = b.numpy()
        assert b.std() > 0.1
        np.testing.assert_allclose(a.numpy(), b, rtol=0, atol=1e-5 * float(np.abs(b).max()))
    np.testing.assert_allclose(feature, expected_feature, rtol=0, atol=1e-5 * float(np.abs(expected_feature).max()))
    # the attention is not a no-op here: the same weights without it give another feature
    plain = HRNet_W48(padding_same=False)
    plain.set_state_dict({k: v for k, v in state.items() if '.deattn.' not in k})
    plain.eval()
    with paddle.no_grad():
        assert np.abs(plain(x)[0].numpy() - expected_feature).max() > 0.1 * np.abs(expected_feature).max()


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
    assert str(err.value) == (f"HRNet: pretrained weights {path} does not fit the model: 1 key missing from the file "
                              f"(conv_layer1_1._conv.weight)")


@pytest.mark.parametrize('build, message', [
    (lambda: HRNet(stage3_num_channels=(18, 36)),
     "HRNet: stage3_num_channels must be a list of 3 integers >= 1, got [18, 36]"),
    (lambda: HRNet(stage4_num_modules=0), "HRNet: stage4_num_modules must be an integer >= 1, got 0"),
    (lambda: HRNet(stage1_num_modules=2), "HRNet: stage1_num_modules must be 1, got 2"),
    (lambda: HRNet_W18_Small_V1(use_psa='yes'), "HRNet: use_psa must be true or false, got 'yes'"),
    (lambda: PolarizedSelfAttention(1), "PolarizedSelfAttention: channels must be an integer >= 2, got 1"),
    (lambda: HRNet_W18_Small_V1(stage2_num_channels=[8, 16]),
     "HRNet_W18_Small_V1: stage2_num_channels is fixed by the variant; use HRNet to set it"),
])
def test_bad_arguments(build, message):
    with pytest.raises(UserError) as err:
        build()
    assert str(err.value) == message
