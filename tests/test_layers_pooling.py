"""Adaptive average pooling's ONNX export form (``layers/resize.py: adaptive_avg_pool2d``, ``pooling_matrix``)
against ``F.adaptive_avg_pool2d``: the bins of Paddle's kernel, also where the input is shorter than the grid,
in a static graph with a free input size inside ``trace_forms(onnx=True)``; Paddle's own op everywhere else.
Not marked paddle26: the form exists for ONNX exports, which are tested on Paddle 3.x only."""
import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from paddle_models.layers.pyramid import AdaptiveAvgPool2D
from paddle_models.layers.resize import _FORMS, adaptive_avg_pool2d, pooling_matrix, trace_forms

# (input length, bins): dividing, overlapping bins, a single bin, and inputs shorter than the grid
LENGTHS = [(12, 6), (7, 3), (13, 6), (9, 2), (5, 1), (4, 6), (2, 3), (1, 6), (23, 7)]


def _expected_matrix(length, bins):
    """Paddle's bins written out: row i is 1/n over [floor(i * L / o), ceil((i + 1) * L / o))."""
    matrix = np.zeros([bins, length], dtype='float64')
    for i in range(bins):
        start, end = math.floor(i * length / bins), math.ceil((i + 1) * length / bins)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


@pytest.mark.parametrize('length,bins', LENGTHS)
def test_pooling_matrix_holds_paddles_bins_for_int_and_tensor_lengths(length, bins):
    want = _expected_matrix(length, bins)
    for given in (length, paddle.to_tensor(length, dtype='int64')):
        got = pooling_matrix(given, bins).numpy()
        assert got.shape == (bins, length) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    # and pooling with it is Paddle's adaptive pooling along that axis
    x = paddle.randn([2, 3, length, 5])
    np.testing.assert_allclose(paddle.matmul(pooling_matrix(length, bins), x).numpy(),
                               F.adaptive_avg_pool2d(x, [bins, 5]).numpy(), rtol=0, atol=1e-6)


def test_pooling_matrix_refuses_a_bad_grid():
    with pytest.raises(ValueError, match='out_len must be a positive python int, got 0'):
        pooling_matrix(5, 0)


class _Pools(nn.Layer):
    """Pools its input to several grids, through the layer and the function."""

    def __init__(self, grids):
        super().__init__()
        self.grids = grids
        self.layers = nn.LayerList([AdaptiveAvgPool2D(g) for g in grids])

    def forward(self, x):
        return [layer(x) for layer in self.layers] + [adaptive_avg_pool2d(x, (2, 5))]


GRIDS = [6, 3, (2, 3), 1]


def _reference(x):
    return [F.adaptive_avg_pool2d(x, g) for g in GRIDS] + [F.adaptive_avg_pool2d(x, (2, 5))]


def _op_names(static):
    return [op.name() for op in static.forward.concrete_program.main_program.global_block().ops]


@pytest.mark.parametrize('shape,sizes', [
    ([None, 4, None, None], [(12, 18), (13, 7), (4, 5), (50, 70), (1, 2)]),  # free: lengths built in the graph
    ([2, 4, 13, 7], [(13, 7)]),                                              # fixed: lengths are python ints
])
def test_onnx_form_in_a_static_graph_matches_paddle(shape, sizes):
    """Inside trace_forms(onnx=True) a traced graph pools to grids other than 1x1 by matrix products (pool2d only for
    the 1x1 grid): input sizes that the grids divide, do not divide, and that are shorter than them."""
    paddle.seed(1)
    spec = [paddle.static.InputSpec(shape, 'float32')]
    with trace_forms(onnx=True):
        static = paddle.jit.to_static(_Pools(GRIDS), input_spec=spec, full_graph=True)
        for hw in sizes:
            x = paddle.randn([2, 4, *hw])
            for got, want in zip(static(x), _reference(x)):
                assert list(got.shape) == list(want.shape)
                np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-6)
        ops = _op_names(static)
    assert ops.count('pd_op.pool2d') == 1, ops  # the 1x1 grid (GlobalAveragePool in ONNX at any size)
    assert ops.count('pd_op.matmul') == 2 * 4, ops  # two per other grid
    assert not _FORMS['onnx']


def test_paddle_op_outside_the_onnx_forms_and_in_the_dynamic_graph():
    """The dynamic graph (also inside trace_forms(onnx=True)) and a graph traced outside it (Paddle Inference
    exports) keep Paddle's op: the same values bit for bit."""
    paddle.seed(2)
    x = paddle.randn([1, 4, 9, 11])
    model = _Pools(GRIDS)
    with trace_forms(onnx=True):
        for got, want in zip(model(x), _reference(x)):
            np.testing.assert_array_equal(got.numpy(), want.numpy())
    spec = [paddle.static.InputSpec([None, 4, None, None], 'float32')]
    static = paddle.jit.to_static(_Pools(GRIDS), input_spec=spec, full_graph=True)
    for got, want in zip(static(x), _reference(x)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    ops = _op_names(static)
    assert ops.count('pd_op.pool2d') == len(GRIDS) + 1 and 'pd_op.matmul' not in ops, ops


def test_trace_forms_restores_the_previous_state():
    assert not _FORMS['onnx']
    with pytest.raises(RuntimeError):
        with trace_forms(onnx=True):
            assert _FORMS['onnx']
            with trace_forms():
                assert not _FORMS['onnx']
            assert _FORMS['onnx']
            raise RuntimeError
    assert not _FORMS['onnx']
