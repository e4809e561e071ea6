"""feature_shape: the int32 ``shape`` op in a PIR program (oneDNN reads it without reordering the tensor), the same
values as ``paddle.shape`` in the dynamic graph; and core.exported.cpu_config's Paddle Inference CPU settings."""
import paddle
import pytest

from paddle_models.core.exported import cpu_config
from paddle_models.utils.spatial import feature_shape

IS_PIR = not paddle.__version__.startswith('2.')


def test_dynamic_graph_values():
    x = paddle.zeros([2, 3, 5, 7])
    assert feature_shape(x).numpy().tolist() == [2, 3, 5, 7]


@pytest.mark.skipif(not IS_PIR, reason='Paddle 2.6 programs are legacy programs, whose shape op is int32 already')
def test_pir_program_uses_the_int32_shape_op():
    with paddle.pir_utils.IrGuard():
        main = paddle.static.Program()
        with paddle.static.program_guard(main):
            x = paddle.static.data('x', [None, 3, None, None], 'float32')
            size = feature_shape(x)[2:]
        names = [op.name() for op in main.global_block().ops]
    assert 'pd_op.shape' in names and 'pd_op.shape64' not in names
    assert size.dtype == paddle.int32


@pytest.mark.parametrize('onednn, int8', [(True, False), (True, True), (False, False)])
def test_cpu_config(onednn, int8):
    config = paddle.inference.Config()
    assert cpu_config(config, 3, onednn=onednn, int8=int8) is config
    assert config.mkldnn_enabled() is onednn
    assert config.cpu_math_library_num_threads() == 3
    assert not config.use_gpu()
    if hasattr(config, 'mkldnn_int8_enabled'):
        assert config.mkldnn_int8_enabled() is int8
