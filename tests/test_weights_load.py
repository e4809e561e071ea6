"""The one strict weight loader (``weights.load_weights``) and the comparison every strict load shares
(``weights.check_fit``)."""
import numpy as np
import paddle
import pytest

from paddle_models.errors import UserError
from paddle_models.weights import check_fit, load_weights


class Tiny(paddle.nn.Layer):
    def __init__(self, width=4, classes=0):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, width, 1)
        if classes:
            self.fc = paddle.nn.Linear(width, classes)


def _state(model, seed):
    rng = np.random.RandomState(seed)
    return {k: paddle.to_tensor(rng.rand(*v.shape).astype('float32')) for k, v in model.state_dict().items()}


def test_loads_exactly_the_models_keys(tmp_path):
    state = _state(Tiny(), 1)
    path = str(tmp_path / 'w.pdparams')
    paddle.save(state, path)
    model = Tiny()
    load_weights(model, path)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[key].numpy())


def test_skip_prefixes_ignore_only_extra_keys_under_them(tmp_path):
    with_head = _state(Tiny(classes=3), 2)
    path = str(tmp_path / 'imagenet.pdparams')
    paddle.save(with_head, path)
    with pytest.raises(UserError) as err:
        load_weights(Tiny(), path)
    assert str(err.value) == (f"Tiny: pretrained weights {path} does not fit the model: 2 keys not in the model "
                              f"(fc.weight, fc.bias)")
    model = Tiny()
    load_weights(model, path, skip_prefixes=('fc.',))
    np.testing.assert_array_equal(model.conv.weight.numpy(), with_head['conv.weight'].numpy())
    # a key the model has is never skipped: the file must still hold it with its shape
    paddle.save({k: v for k, v in with_head.items() if k != 'fc.bias'}, path)
    with pytest.raises(UserError) as err:
        load_weights(Tiny(classes=3), path, skip_prefixes=('fc.',))
    assert str(err.value) == (f"Tiny: pretrained weights {path} does not fit the model: 1 key missing from the file "
                              f"(fc.bias)")


def test_missing_file_and_non_dict(tmp_path):
    missing = str(tmp_path / 'none.pdparams')
    with pytest.raises(UserError) as err:
        load_weights(Tiny(), missing)
    assert str(err.value) == f"Tiny: pretrained weights not found: {missing}"
    path = str(tmp_path / 'list.pdparams')
    paddle.save([1, 2], path)
    with pytest.raises(UserError) as err:
        load_weights(Tiny(), path)
    assert str(err.value) == f"Tiny: pretrained weights {path} hold a list, not a dict of parameters"


def test_check_fit_reports_shapes_first_then_both_kinds_of_keys():
    expected = {'a': [2, 3], 'b': [4], 'c': [1]}
    with pytest.raises(UserError) as err:
        check_fit({'a': np.zeros([3, 3]), 'b': np.zeros([5]), 'd': np.zeros([1])}, expected, 'f.pdparams', 'Net')
    assert str(err.value) == ("f.pdparams does not fit Net: 2 shape mismatches, e.g. a has shape [3, 3] in the file "
                              "but [2, 3] in the model")
    with pytest.raises(UserError) as err:
        check_fit({'a': np.zeros([2, 3]), 'd': np.zeros([1]), 'e': np.zeros([1]), 'f': np.zeros([1]),
                   'g': np.zeros([1])}, expected, 'f.pdparams')
    assert str(err.value) == ("f.pdparams does not fit the model: 2 keys missing from the file (b, c); 4 keys not in "
                              "the model (d, e, f, ...)")


def test_check_fit_returns_the_state_without_skipped_keys_and_paddle_bookkeeping():
    state = {'a': np.zeros([2]), 'head.w': np.zeros([1]), 'StructuredToParameterName@@': {'a': 'x'}}
    assert list(check_fit(state, {'a': [2]}, 'f', ignore_prefixes=('head.',))) == ['a']
