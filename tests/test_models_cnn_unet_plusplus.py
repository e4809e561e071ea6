"""UNet++: outputs with and without deep supervision, per-level outputs for deep-supervision losses, pruning at
inference (only the sub-network of level L runs), any input size, argument errors."""

import numpy as np
import paddle
import pytest

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.errors import UserError
from paddle_models.models.unet_plusplus import UNetPlusPlus
from helpers import assert_fits_any_size

TINY = dict(channels=(4, 6, 8, 10, 12))


def _model(**kwargs):
    paddle.seed(0)
    model = UNetPlusPlus(num_classes=3, **dict(TINY, **kwargs))
    model.eval()
    return model


def test_main_output_is_mean_of_levels_or_level_4():
    x = paddle.randn([2, 3, 32, 48])
    model = _model()
    levels = [o.numpy() for o in model.level_outputs(x)]
    assert [o.shape for o in levels] == [(2, 3, 32, 48)] * 4
    assert not np.allclose(levels[0], levels[3])
    out = model(x)
    assert len(out) == 1
    np.testing.assert_allclose(out[0].numpy(), np.mean(levels, axis=0), rtol=1e-5, atol=1e-6)
    model.is_ds = False
    np.testing.assert_allclose(model(x)[0].numpy(), levels[3], rtol=1e-6, atol=1e-6)


def test_training_outputs():
    x = paddle.randn([2, 3, 32, 32])
    model = _model()
    model.train()
    assert len(model(x)) == 1  # PaddleSeg's behaviour by default: one output, one loss
    model = _model(ds_outputs=True)
    model.train()
    outputs = model(x)
    assert len(outputs) == 5 and all(o.shape == [2, 3, 32, 32] for o in outputs)
    # in training, BN uses batch statistics: the levels recomputed in training mode give the same values
    levels = model.level_outputs(x)
    np.testing.assert_allclose(outputs[0].numpy(), np.mean([o.numpy() for o in levels], axis=0), atol=1e-5)
    for a, b in zip(outputs[1:], levels):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    model.eval()
    assert len(model(x)) == 1


@pytest.mark.parametrize('level', [1, 2, 3, 4])
def test_pruned_inference_runs_only_the_sub_network(level):
    """prune_level=L: eval output = level L's deep-supervision output; nodes X(i, j) with i + j > L are not used
    (their weights set to NaN leave the output finite); the state dict is the full model's."""
    x = paddle.randn([1, 3, 32, 32])
    full = _model(is_ds=True)
    expected = full.level_outputs(x)[level - 1].numpy()
    pruned = _model(prune_level=level)
    assert list(pruned.state_dict()) == list(full.state_dict())
    pruned.set_state_dict(full.state_dict())
    unused = [f'conv{i}_0' for i in range(level + 1, 5)]
    unused += [f'up_cat{i}_{j}' for j in range(1, 5) for i in range(5 - j) if i + j > level]
    unused += [f'out_{j}' for j in range(1, 5) if j != level]
    for name in unused:
        for param in getattr(pruned, name).parameters():
            param.set_value(np.full(param.shape, np.nan, dtype='float32'))
    out = pruned(x)
    assert len(out) == 1
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    if level < 4:
        pruned.train()  # training always runs (and trains) the whole network
        assert np.isnan(pruned(x)[0].numpy()).all()


@pytest.mark.parametrize('use_deconv', [False, True])
def test_any_input_size_gives_aligned_per_sample_outputs(use_deconv):
    model = _model(use_deconv=use_deconv)
    for shape in [(1, 3, 45, 77), (2, 3, 16, 17), (1, 3, 33, 31), (1, 3, 48, 32)]:
        assert_fits_any_size(model, shape, 3)


@pytest.mark.parametrize('kwargs, message', [
    (dict(prune_level=5), "UNetPlusPlus: prune_level must be an integer in [1, 4], got 5"),
    (dict(prune_level=True), "UNetPlusPlus: prune_level must be an integer in [1, 4], got True"),
    (dict(channels=(4, 8)), "UNetPlusPlus: channels must be a list of 5 integers >= 1, got [4, 8]"),
    (dict(num_classes=0), "UNetPlusPlus: num_classes must be an integer >= 1, got 0"),
])
def test_bad_arguments(kwargs, message):
    args = dict(dict(num_classes=3, **TINY), **kwargs)
    with pytest.raises(UserError) as err:
        UNetPlusPlus(**args)
    assert str(err.value) == message


def test_pretrained_full_checkpoint_into_pruned_model(tmp_path):
    source = _model()
    path = str(tmp_path / 'unetpp.pdparams')
    paddle.save(source.state_dict(), path)
    paddle.seed(7)
    pruned = UNetPlusPlus(num_classes=3, prune_level=2, pretrained=path, **TINY)
    pruned.eval()
    x = paddle.randn([1, 3, 32, 32])
    np.testing.assert_allclose(pruned(x)[0].numpy(), source.level_outputs(x)[1].numpy(), rtol=1e-6, atol=1e-6)
