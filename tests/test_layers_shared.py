"""Blocks and helpers that models share from ``paddle_models.layers``: the backbone-index check, ConvBNAct's public
pieces, the OCR and multi-scale attention blocks."""
import numpy as np
import paddle
import pytest

from paddle_models.errors import UserError
from paddle_models.layers import ConvBNReLU, backbone_channels, check_scales


class FakeBackbone(paddle.nn.Layer):
    feat_channels = [8, 16, 32, 64]


@pytest.mark.parametrize('kwargs, indices, expected', [
    (dict(), [1, 3], ([1, 3], [16, 64])),
    (dict(length=1, allow_negative=True), [-1], ([3], [64])),
    (dict(length=(1, 2), allow_negative=True), [0, -2], ([0, 2], [8, 32])),
    (dict(min_length=2, allow_negative=True), (0, 1, 2), ([0, 1, 2], [8, 16, 32])),
])
def test_backbone_channels_picks_the_maps(kwargs, indices, expected):
    assert backbone_channels('M', FakeBackbone(), indices, **kwargs) == expected


@pytest.mark.parametrize('kwargs, indices, message', [
    (dict(length=2), [1, 4],
     "M: backbone_indices must be a list of 2 integers in [0, 3] (the backbone has 4 outputs), got [1, 4]"),
    (dict(), [-1], "M: backbone_indices must be a list of integers in [0, 3] (the backbone has 4 outputs), got [-1]"),
    (dict(length=1, allow_negative=True), [-5],
     "M: backbone_indices must be a list of 1 integers in [-4, 3] (the backbone has 4 outputs), got [-5]"),
    (dict(length=(1, 2), allow_negative=True), (0, 1, 2),
     "M: backbone_indices must be a list of 1 or 2 integers in [-4, 3] (the backbone has 4 outputs), got [0, 1, 2]"),
    (dict(min_length=2, allow_negative=True), [True, 1],
     "M: backbone_indices must be a list of at least 2 integers in [-4, 3] (the backbone has 4 outputs), "
     "got [True, 1]"),
])
def test_backbone_channels_refuses_bad_indices(kwargs, indices, message):
    with pytest.raises(UserError) as err:
        backbone_channels('M', FakeBackbone(), indices, **kwargs)
    assert str(err.value) == message


def test_backbone_channels_needs_feat_channels():
    with pytest.raises(UserError) as err:
        backbone_channels('M', paddle.nn.Conv2D(3, 3, 1), [0])
    assert str(err.value) == "M: the backbone Conv2D has no feat_channels"


def test_conv_bn_act_public_pieces_compose_to_its_forward():
    paddle.seed(3)
    block = ConvBNReLU(3, 5, 1, bias_attr=False)
    block.eval()
    x = paddle.randn([2, 3, 6, 7])
    assert block.conv is block._conv
    folded = paddle.nn.functional.conv2d(x, block.conv.weight)  # the conv computed another way
    np.testing.assert_allclose(block.norm_act(folded).numpy(), block(x).numpy(), rtol=1e-6, atol=1e-6)
    assert 'conv.weight' not in block.state_dict() and '_conv.weight' in block.state_dict()


def test_check_scales():
    assert check_scales('M', 'scales', (1, 0.5)) == [1.0, 0.5]
    assert check_scales('M', 'mscale', None, allow_empty=True) == []
    with pytest.raises(UserError) as err:
        check_scales('M', 'scales', (0.5, 0.5))
    assert str(err.value) == "M: scales must be a non-empty list of distinct positive numbers, got [0.5, 0.5]"
    with pytest.raises(UserError) as err:
        check_scales('M', 'mscale', [1, True], allow_empty=True)
    assert str(err.value) == "M: mscale must be a list of distinct positive numbers, got [1, True]"
