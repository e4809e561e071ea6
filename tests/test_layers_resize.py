"""The portable resize (gather + lerp for fixed lengths, interpolation matrices for free ones) against F.interpolate,
in dygraph and in static graphs with free and fixed shapes."""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from paddle_models.layers.resize import _FORMS, _MATRIX_FORM, _MEMO, resize, same_size, size_of, trace_forms

pytestmark = pytest.mark.paddle26  # fast, and the static-graph forms differ between Paddle 2.6 and 3.x

MODES = [('bilinear', False), ('bilinear', True), ('nearest', False)]
# (input h, w) -> (output h, w): up, down, odd, mixed, identity, single row/column
SIZES = [
    ((5, 7), (10, 14)),
    ((5, 7), (17, 23)),
    ((16, 16), (3, 5)),
    ((16, 16), (7, 9)),
    ((9, 3), (4, 11)),
    ((6, 6), (6, 6)),
    ((5, 7), (1, 1)),
    ((1, 1), (4, 3)),
    ((13, 11), (64, 40)),
]


def _size_forms(oh, ow):
    """The size forms resize accepts: python ints, a 1-D int tensor, 0-D int tensors."""
    return {
        'ints': [oh, ow],
        'tensor_1d': paddle.to_tensor([oh, ow], dtype='int32'),
        'tensors_0d': [paddle.to_tensor(oh, dtype='int64'), paddle.to_tensor(ow, dtype='int64')],
    }


@pytest.mark.parametrize('mode,align_corners', MODES)
@pytest.mark.parametrize('in_hw,out_hw', SIZES)
def test_portable_matches_interpolate_dygraph(mode, align_corners, in_hw, out_hw):
    paddle.seed(1)
    x = paddle.randn([2, 3, *in_hw])
    ref = F.interpolate(x, size=list(out_hw), mode=mode, align_corners=align_corners).numpy()
    with trace_forms(portable=True):
        for form, size in _size_forms(*out_hw).items():
            out = resize(x, size, mode=mode, align_corners=align_corners).numpy()
            assert out.shape == ref.shape, form
            np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5, err_msg=form)


@pytest.mark.parametrize('final', [True, False])
@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('in_hw,out_hw', SIZES)
def test_dygraph_matrix_form_matches_interpolate_values_and_gradients(align_corners, in_hw, out_hw, final):
    """Bilinear resizing in the dynamic graph on the CPU, ``final=True`` or not (two matrix products: the fast
    form of CPU training), gives F.interpolate's values and input gradients, for every size form."""
    paddle.seed(2)
    x = paddle.randn([2, 3, *in_hw])
    x.stop_gradient = False
    ref = F.interpolate(x, size=list(out_hw), mode='bilinear', align_corners=align_corners)
    weights = paddle.randn(ref.shape)
    (ref_grad,) = paddle.grad((ref * weights).sum(), x)
    for form, size in _size_forms(*out_hw).items():
        out = resize(x, size, align_corners=align_corners, final=final)
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=0, atol=1e-5, err_msg=form)
        (grad,) = paddle.grad((out * weights).sum(), x)
        np.testing.assert_allclose(grad.numpy(), ref_grad.numpy(), rtol=0, atol=1e-4, err_msg=form)


def test_outside_context_is_plain_interpolate():
    """Outside trace_forms, nearest resizing is F.interpolate itself and bilinear gives its values (on the CPU
    through the matrix form, up to float rounding); a static graph then records the ``*_interp`` ops
    (test_static_graph_outside_context_uses_interp_op)."""
    paddle.seed(2)
    x = paddle.randn([1, 2, 6, 9])
    assert not _FORMS['portable']
    for mode, align_corners in MODES:
        ref = F.interpolate(x, size=[11, 4], mode=mode, align_corners=align_corners).numpy()
        out = resize(x, [11, 4], mode, align_corners).numpy()
        if mode == 'nearest':
            np.testing.assert_array_equal(out, ref)
        else:
            np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)


def test_context_restores_state_on_error():
    with pytest.raises(RuntimeError):
        with trace_forms(portable=True):
            assert _FORMS['portable']
            with trace_forms():
                assert not _FORMS['portable']
            assert _FORMS['portable']
            raise RuntimeError('boom')
    assert not _FORMS['portable']


def test_nearest_with_align_corners_is_rejected_like_interpolate():
    x = paddle.ones([1, 1, 4, 4])
    with pytest.raises(ValueError, match='align_corners option can only be set'):
        F.interpolate(x, size=[2, 2], mode='nearest', align_corners=True)
    with trace_forms(portable=True), pytest.raises(ValueError, match='align_corners option can only be set'):
        resize(x, [2, 2], mode='nearest', align_corners=True)


def test_bad_size_is_rejected():
    x = paddle.ones([1, 1, 4, 4])
    with trace_forms(portable=True):
        with pytest.raises(ValueError, match='size must be'):
            resize(x, [2, 2, 2])
        with pytest.raises(ValueError, match='size entries must be'):
            resize(x, [2.5, 2])


class _Resizer(nn.Layer):
    """Resizes to a multiple of the input's own (dynamic) size, to a fixed size, and back."""

    def __init__(self, mode, align_corners):
        super().__init__()
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x):
        hw = paddle.shape(x)[2:]
        up = resize(x, hw * 2 + 1, self.mode, self.align_corners)               # 1-D size tensor
        fixed = resize(x, [7, 12], self.mode, self.align_corners)               # python ints
        back = resize(up, [hw[0], hw[1]], self.mode, self.align_corners)        # 0-D size tensors
        return up, fixed, back


def _reference(x, mode, align_corners):
    h, w = x.shape[2:]
    up = F.interpolate(x, size=[2 * h + 1, 2 * w + 1], mode=mode, align_corners=align_corners)
    fixed = F.interpolate(x, size=[7, 12], mode=mode, align_corners=align_corners)
    back = F.interpolate(up, size=[h, w], mode=mode, align_corners=align_corners)
    return up, fixed, back


def _op_names(static_layer):
    """Names of the ops in a to_static layer's forward program (PIR or legacy)."""
    program = static_layer.forward.concrete_program.main_program
    block = program.global_block()
    if hasattr(block.ops[0], 'name'):
        return [op.name() for op in block.ops]
    return [op.type for op in block.ops]


@pytest.mark.parametrize('mode,align_corners', MODES)
def test_portable_matches_interpolate_in_static_graph_with_free_shape(mode, align_corners):
    paddle.seed(3)
    spec = [paddle.static.InputSpec([None, 3, None, None], 'float32')]
    with trace_forms(portable=True):
        static = paddle.jit.to_static(_Resizer(mode, align_corners), input_spec=spec, full_graph=True)
        for hw in [(5, 8), (12, 7)]:  # one program, two input sizes
            x = paddle.randn([2, 3, *hw])
            for got, want in zip(static(x), _reference(x, mode, align_corners)):
                assert list(got.shape) == list(want.shape)
                np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5)
        ops = ' '.join(_op_names(static))
    assert 'interp' not in ops, ops            # no *_interp op: the portable path was traced
    if mode == 'bilinear' and _MATRIX_FORM:
        # free sizes (Paddle 3): both axes through interpolation matrices
        assert 'matmul' in ops and 'gather' not in ops, ops
    else:
        assert 'gather' in ops and 'matmul' not in ops, ops


def test_static_graph_outside_context_uses_interp_op():
    spec = [paddle.static.InputSpec([None, 3, None, None], 'float32')]
    static = paddle.jit.to_static(_Resizer('bilinear', False), input_spec=spec, full_graph=True)
    x = paddle.randn([1, 3, 4, 6])
    for got, want in zip(static(x), _reference(x, 'bilinear', False)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-6)
    assert any('interp' in name for name in _op_names(static))


@pytest.mark.parametrize('align_corners', [False, True])
def test_fixed_input_size_uses_gather_free_size_uses_matrices(align_corners):
    """Bilinear resizing of an input whose size is free does both axes with matmuls by interpolation matrices (on
    Paddle 3); with a fixed input size both axes stay gather + lerp (the matrix form misbehaved under oneDNN
    there)."""
    paddle.seed(5)

    class Up(nn.Layer):
        def __init__(self, corners):
            super().__init__()
            self.corners = corners

        def forward(self, x):
            return resize(x, [11, 17], 'bilinear', self.corners)

    x = paddle.randn([1, 3, 5, 6])
    want = F.interpolate(x, size=[11, 17], mode='bilinear', align_corners=align_corners).numpy()
    for shape, matmul in (([1, 3, None, None], True), ([1, 3, 5, 6], False)):
        with trace_forms(portable=True):
            static = paddle.jit.to_static(Up(align_corners), input_spec=[paddle.static.InputSpec(shape, 'float32')],
                                          full_graph=True)
            np.testing.assert_allclose(static(x).numpy(), want, rtol=0, atol=1e-5)
            ops = ' '.join(_op_names(static))
        dense = matmul and _MATRIX_FORM
        assert ('gather' in ops) != dense and ('matmul' in ops) == dense and 'interp' not in ops, \
            (shape, ops)


@pytest.mark.parametrize('align_corners', [False, True])
def test_final_resize_ends_in_the_matrix_product(align_corners):
    """``final=True`` (a model's last upsampling): same values; on Paddle 3 with a free size the program's last op is
    the column matmul itself (it writes the output, which Paddle Inference reuses between runs), where a non-final
    resize ends in a reshape of a 2-D GEMM."""
    paddle.seed(6)

    class Up(nn.Layer):
        def __init__(self, final, corners):
            super().__init__()
            self.final = final
            self.corners = corners

        def forward(self, x):
            return resize(x * 2.0, paddle.shape(x)[2:] * 4, 'bilinear', self.corners, final=self.final)

    spec = [paddle.static.InputSpec([None, 3, None, None], 'float32')]
    x = paddle.randn([2, 3, 5, 7])
    want = F.interpolate(x * 2.0, size=[20, 28], mode='bilinear', align_corners=align_corners).numpy()
    last = {}
    for final in (False, True):
        with trace_forms(portable=True):
            static = paddle.jit.to_static(Up(final, align_corners), input_spec=spec, full_graph=True)
            got = static(x).numpy()
            ops = [op for op in _op_names(static) if not op.endswith(('fetch', 'shadow_output', 'data'))]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        assert list(got.shape) == [2, 3, 20, 28]
        last[final] = ops[-1]
    if _MATRIX_FORM:
        assert last == {False: 'pd_op.reshape', True: 'pd_op.matmul'}, last


class _Shared(nn.Layer):
    """Three resizes to the input's size: of a pooled map, of a tensor ``same_size`` ties to it, and of one with no
    such tie."""

    def forward(self, x):
        small = F.avg_pool2d(x, 2)
        tied = same_size(small * 3.0, small)
        size = size_of(x)
        return resize(small, size) + resize(tied, size) + resize(small + 1.0, size, final=True)


def _shared_reference(x):
    small = F.avg_pool2d(x, 2)
    size = list(x.shape[2:])
    return sum(F.interpolate(t, size=size, mode='bilinear') for t in (small, small * 3.0, small + 1.0))


def test_resizes_between_the_same_sizes_share_their_matrices_within_a_trace():
    """Within one trace, resizes whose input and output lengths come from the same traced values (the same size
    tensor, tensors tied by same_size) build their interpolation matrices once (one abs op per matrix); a tensor
    with no tie gets its own. Values stay F.interpolate's; nothing is kept after the context."""
    paddle.seed(7)
    spec = [paddle.static.InputSpec([None, 3, None, None], 'float32')]
    with trace_forms(portable=True):
        static = paddle.jit.to_static(_Shared(), input_spec=spec, full_graph=True)
        for hw in [(10, 14), (9, 7)]:
            x = paddle.randn([2, 3, *hw])
            np.testing.assert_allclose(static(x).numpy(), _shared_reference(x).numpy(), rtol=0, atol=1e-5)
        ops = _op_names(static)
    assert not _MEMO
    if _MATRIX_FORM:
        assert ops.count('pd_op.abs') == 4, ops  # rows + columns for small/tied, and again for the untied one
        assert ops.count('pd_op.shape64') == 3, ops  # x, small and the untied tensor: one shape op each


def test_same_size_and_size_of_in_the_dynamic_graph():
    x = paddle.randn([1, 2, 5, 6])
    y = x * 2.0
    with trace_forms(portable=True):
        assert same_size(y, x) is y
        assert size_of(x).numpy().tolist() == [5, 6]
    assert not _MEMO
    assert size_of(x).numpy().tolist() == [5, 6]


class _PoolUpAdd(nn.Layer):
    """Features pooled by 4 and resized back onto themselves (as a decoder's skip), for inputs whose pooled map is
    one pixel wide or high."""

    def __init__(self, final):
        super().__init__()
        self.conv = nn.Conv2D(3, 16, 1)
        self.num_classes = 16
        self.final = final

    def forward(self, x):
        y = self.conv(x)
        small = F.avg_pool2d(F.avg_pool2d(y, 2, 2), 2, 2)
        if self.final:  # a model's last upsampling: the product writes the output
            return [resize(small, paddle.shape(y)[2:], final=True)]
        return [resize(small, paddle.shape(y)[2:]) + y]


@pytest.mark.parametrize('final', [False, True])
def test_exported_resize_of_a_one_pixel_wide_map_is_right_under_onednn(final, tmp_path):
    """A free-size export whose resize input is 1 pixel wide (HarDNet's deepest level for an input under 64 pixels):
    Paddle 3.3.1's oneDNN matmul returned garbage (~1e35, NaN) for the column product with an inner length of 1; the
    zero column of ``_columns_gemm`` keeps it at 2 or more."""
    from conftest import run_export
    from paddle_models.core.export import export_model

    paddle.seed(0)
    model = _PoolUpAdd(final)
    model.eval()
    info = export_model(model, str(tmp_path / 'export'), output_op='none', transforms=[{'type': 'Normalize'}])
    for hw in ((4, 4), (8, 4), (4, 8), (12, 4), (8, 8)):
        x = np.random.RandomState(1).randn(1, 3, *hw).astype('float32')
        with paddle.no_grad():
            want = model(paddle.to_tensor(x))[0].numpy()
        got = run_export(info, x, onednn=True)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=str(hw))
