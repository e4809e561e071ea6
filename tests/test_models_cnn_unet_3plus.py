"""UNet 3+: outputs per mode and option, the classification-guided module (gating by the argmax, classification
logits as an extra training output), the full-scale skip wiring, any input size, argument errors."""

import numpy as np
import paddle
import pytest

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.errors import UserError
from paddle_models.models.unet_3plus import UNet3Plus

TINY = dict(filters=(4, 6, 8, 10, 12))


def _model(**kwargs):
    paddle.seed(0)
    model = UNet3Plus(**dict(dict(num_classes=3, **TINY), **kwargs))
    model.eval()
    return model


@pytest.mark.parametrize('kwargs, train_count', [
    (dict(), 1),
    (dict(is_deepsup=True), 5),
    (dict(is_CGM=True), 6),
])
def test_outputs_per_mode(kwargs, train_count):
    x = paddle.randn([2, 3, 32, 48])
    model = _model(**kwargs)
    out = model(x)
    assert len(out) == 1 and out[0].shape == [2, 3, 32, 48]
    model.train()
    out = model(x)
    assert len(out) == train_count
    assert all(o.shape == [2, 3, 32, 48] for o in out[:5])
    if kwargs.get('is_CGM'):
        assert model.is_deepsup  # the CGM implies deep supervision (as in PaddleSeg)
        assert out[5].shape == [2, 2]


def _set_cls_bias(model, bias):
    model.cls[1].bias.set_value(np.asarray(bias, dtype='float32'))


def test_cgm_gates_every_side_output():
    x = paddle.randn([2, 3, 32, 32])
    plain = _model(is_deepsup=True)
    cgm = _model(is_CGM=True)
    state = plain.state_dict()
    missing, _ = cgm.set_state_dict(state)
    assert missing == [] or all(k.startswith('cls.') for k in missing)
    expected = plain(x)[0].numpy()
    plain.train()
    expected_train = [o.numpy() for o in plain(x)]

    _set_cls_bias(cgm, [-50, 50])  # "contains foreground": side outputs pass unchanged
    np.testing.assert_allclose(cgm(x)[0].numpy(), expected, rtol=1e-6, atol=1e-6)
    _set_cls_bias(cgm, [50, -50])  # "no foreground": every side output is zeroed
    assert np.abs(cgm(x)[0].numpy()).max() == 0
    cgm.train()
    paddle.seed(1)
    outputs = cgm(x)
    assert all(np.abs(o.numpy()).max() == 0 for o in outputs[:5])
    cls_logits = outputs[5].numpy()  # before the sigmoid: not squashed into (0, 1)
    assert (cls_logits[:, 0] > 20).all() and (cls_logits[:, 1] < -20).all()

    _set_cls_bias(cgm, [-50, 50])
    outputs = cgm(x)
    for a, b in zip(outputs[:5], expected_train):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-5)


def test_gate_is_per_image():
    """The argmax is taken per image: one image kept, the other zeroed."""
    model = _model(is_CGM=True)
    x = paddle.randn([2, 3, 32, 32])
    deepest = model.encoder(x)[-1]
    logits = model.classify(deepest).numpy()  # eval: no dropout
    # shift the bias so that the two images fall on different sides
    margin = logits[:, 1] - logits[:, 0]
    shift = -(margin[0] + margin[1]) / 2
    assert abs(margin[0] - margin[1]) > 1e-3  # (seeded: the two images get different margins)
    _set_cls_bias(model, model.cls[1].bias.numpy() + np.array([0, shift], dtype='float32'))
    out = model(x)[0].numpy()
    kept = (margin + shift) > 0
    assert kept.tolist() in ([True, False], [False, True])
    assert np.abs(out[~kept]).max() == 0 and np.abs(out[kept]).max() > 0


def test_full_scale_skips():
    """Decoder level d reads all five scales: pooled shallower encoder levels, its own level, upsampled deeper
    decoder levels (and X5); each branch has filters[0] channels, the fusion 5 * filters[0]."""
    model = _model()
    dec = model.decoder
    assert [kind for kind, _ in dec.plan[4]] == ['pool', 'pool', 'pool', 'cat', 'up']
    assert dec.plan[1] == [('cat', 1), ('up', 2), ('up', 3), ('up', 4), ('up', 5)]
    assert dec.h1_PT_hd4.ksize == 8 and dec.h2_PT_hd3.ksize == 2
    assert dec.hd5_UT_hd1_cbr[0].weight.shape == [4, 12, 3, 3]   # from X5 (filters[4])
    assert dec.hd3_UT_hd1_cbr[0].weight.shape == [4, 20, 3, 3]   # from a decoder level (5 * filters[0])
    assert dec.cbr1d_1[0].weight.shape == [20, 20, 3, 3]
    # changing X5 changes level-1 features only through the deeper path: every level depends on X5
    x = paddle.randn([1, 3, 32, 32])
    features = model.encoder(x)
    base = model.decoder(features)
    features[4] = features[4] + 1.0
    changed = model.decoder(features)
    assert all(np.abs(a.numpy() - b.numpy()).max() > 0 for a, b in zip(base[:4], changed[:4]))


def test_any_input_size():
    model = _model(is_deepsup=True)
    model.train()
    for shape in [(1, 3, 45, 61), (2, 3, 16, 16), (1, 3, 37, 100)]:
        outputs = model(paddle.randn(shape))
        assert all(o.shape == [shape[0], 3, shape[2], shape[3]] for o in outputs)


@pytest.mark.parametrize('kwargs, message', [
    (dict(filters=(4, 8, 16)), "UNet3Plus: filters must be a list of 5 integers >= 1, got [4, 8, 16]"),
    (dict(num_classes=-1), "UNet3Plus: num_classes must be an integer >= 1, got -1"),
    (dict(in_channels=0), "UNet3Plus: in_channels must be an integer >= 1, got 0"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(UserError) as err:
        UNet3Plus(**dict(dict(num_classes=3, **TINY), **kwargs))
    assert str(err.value) == message
