"""The blocks the backbones share (paddle_models.layers: mlp, squeeze_excite, large_kernel, stages, drop_path) and
the converter table the backbone files fill with ``register_converter``."""
import inspect
import sys

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
from paddleseg.cvlibs import manager

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.layers import conv_mlp
from paddle_models.layers.drop_path import DropPath, drop_path_or_identity, drop_path_rates
from paddle_models.layers.large_kernel import ConvPatchEmbed, LayerScaleBlock, SpatialAttention
from paddle_models.layers.mlp import ConvMlp, Mlp
from paddle_models.layers.squeeze_excite import SqueezeExcite
from paddle_models.layers.stages import build_stages, run_stages, stage_layers
from paddle_models.registry import CONVERTERS

pytestmark = pytest.mark.paddle26


def test_every_convert_function_of_a_backbone_file_is_registered_for_exactly_its_architectures():
    """Each ``convert_<fmt>_weights`` of a backbone file serves, under ``fmt``, every registered backbone built in
    that file, and no other architecture."""
    by_module = {}
    for name, component in manager.BACKBONES.components_dict.items():
        if component.__module__.startswith('paddle_models.backbones.'):
            by_module.setdefault(component.__module__, set()).add(name)
    assert len(by_module) == 8
    seen = 0
    for module_name, archs in by_module.items():
        module = sys.modules[module_name]
        for attr, fn in vars(module).items():
            if not (attr.startswith('convert_') and attr.endswith('_weights') and inspect.isfunction(fn)):
                continue
            fmt = attr[len('convert_'):-len('_weights')]
            served = {arch for arch, formats in CONVERTERS.items() if formats.get(fmt) is fn}
            assert served == archs, (module_name, fmt)
            seen += 1
    assert seen == 9  # VAN official/hf, MSCAN mmseg, MiT hf/mmseg, MaxViT timm, ResNet torchvision, ResNeXt x2


def test_squeeze_excite_layouts_compute_the_same_gate():
    """The Linear layout (PaddleSeg's HRNet names) and the 1x1-conv layout (timm's MaxViT names) are one block:
    with the same weights they give the same output, the input scaled by sigmoid(fc2(act(fc1(mean))))."""
    paddle.seed(0)
    linear = SqueezeExcite(8, 3, act='relu', linear=True, names=('squeeze', 'excitation'))
    conv = SqueezeExcite(8, 3, act='relu', fan_out_init=True)
    assert sorted(linear.state_dict()) == ['excitation.bias', 'excitation.weight', 'squeeze.bias', 'squeeze.weight']
    assert sorted(conv.state_dict()) == ['fc1.bias', 'fc1.weight', 'fc2.bias', 'fc2.weight']
    assert conv.fc1.weight.shape == [3, 8, 1, 1] and linear.squeeze.weight.shape == [8, 3]
    conv.fc1.weight.set_value(linear.squeeze.weight.numpy().T.reshape([3, 8, 1, 1]))
    conv.fc1.bias.set_value(linear.squeeze.bias.numpy())
    conv.fc2.weight.set_value(linear.excitation.weight.numpy().T.reshape([8, 3, 1, 1]))
    conv.fc2.bias.set_value(np.random.RandomState(1).randn(8).astype('float32'))
    linear.excitation.bias.set_value(conv.fc2.bias.numpy())
    x = paddle.randn([2, 8, 5, 4])
    pooled = x.numpy().mean(axis=(2, 3))
    hidden = np.maximum(pooled @ linear.squeeze.weight.numpy() + linear.squeeze.bias.numpy(), 0)
    gate = 1 / (1 + np.exp(-(hidden @ linear.excitation.weight.numpy() + linear.excitation.bias.numpy())))
    want = x.numpy() * gate[:, :, None, None]
    np.testing.assert_allclose(linear(x).numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(conv(x).numpy(), want, rtol=1e-5, atol=1e-6)
    silu = SqueezeExcite(8, 3, act='silu')
    assert isinstance(silu.act, nn.Silu)


def test_mlp_is_fc1_act_fc2():
    paddle.seed(0)
    mlp = Mlp(6, 10)
    x = paddle.randn([2, 7, 6])
    want = F.gelu(x @ mlp.fc1.weight + mlp.fc1.bias) @ mlp.fc2.weight + mlp.fc2.bias
    np.testing.assert_allclose(mlp(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    assert isinstance(Mlp(6, 10, act=nn.ReLU()).act, nn.ReLU)


def test_conv_mlp_names_and_sliced_eval(monkeypatch):
    """VAN's names nest the depthwise conv (``dwconv.dwconv``), MSCAN's do not; with the same weights both compute
    the same map, and the sliced eval forward matches the one-pass one (training never slices)."""
    paddle.seed(0)
    nested = ConvMlp(4, 96, nested_dwconv=True, sliced=True)
    flat = ConvMlp(4, 96)
    assert sorted(nested.state_dict()) == ['dwconv.dwconv.bias', 'dwconv.dwconv.weight', 'fc1.bias', 'fc1.weight',
                                           'fc2.bias', 'fc2.weight']
    assert sorted(flat.state_dict()) == ['dwconv.bias', 'dwconv.weight', 'fc1.bias', 'fc1.weight', 'fc2.bias',
                                         'fc2.weight']
    flat.set_state_dict({k.replace('dwconv.dwconv.', 'dwconv.'): v for k, v in nested.state_dict().items()})
    nested.eval()
    flat.eval()
    x = paddle.randn([2, 4, 9, 7])
    with paddle.no_grad():
        one_pass = flat(x).numpy()
        calls = []
        original = conv_mlp.sliced_conv_mlp
        monkeypatch.setattr('paddle_models.layers.mlp.sliced_conv_mlp',
                            lambda *args: calls.append(args[-1]) or original(*args))
        monkeypatch.setattr(conv_mlp, 'CHUNK_ELEMENTS', 1)
        sliced = nested(x).numpy()
        assert calls == [64]
        assert flat(x).numpy().shape == one_pass.shape and calls == [64]  # not ``sliced``: one pass
        nested.train()
        nested(x)
        assert calls == [64]
    np.testing.assert_allclose(sliced, one_pass, rtol=1e-4, atol=1e-5)


def test_drop_path_rates_and_identity():
    rates = drop_path_rates(0.3, [1, 2, 1])
    assert [len(r) for r in rates] == [1, 2, 1]
    np.testing.assert_allclose(sum(rates, []), [0.0, 0.1, 0.2, 0.3], atol=1e-12)
    assert drop_path_rates(0.0, [2]) == [[0.0, 0.0]]
    assert isinstance(drop_path_or_identity(0.0), nn.Identity)
    assert isinstance(drop_path_or_identity(0.2), DropPath) and drop_path_or_identity(0.2).drop_prob == 0.2


class _Scale(nn.Layer):
    def __init__(self, dim):
        super().__init__()
        self.weight = self.create_parameter([dim], default_initializer=nn.initializer.Constant(2.0))

    def forward(self, x):
        return x * self.weight.reshape([-1, 1, 1])


def test_layer_scale_block_and_spatial_attention():
    """x + s1 * attn(BN(x)), then + s2 * mlp(BN(x)); both layer-scale layouts compute the same; SpatialAttention
    is proj_2(gate(GELU(proj_1(x)))) + x."""
    paddle.seed(0)
    x = paddle.randn([2, 3, 4, 5])
    outs = []
    for shape in ('C', 'C11'):
        block = LayerScaleBlock(3, lambda: _Scale(3), lambda: nn.Identity(), layer_scale_init=0.5,
                                layer_scale_shape=shape)
        assert block.layer_scale_1.shape == ([3] if shape == 'C' else [3, 1, 1])
        block.eval()
        outs.append(block(x).numpy())
    bn = x.numpy() / np.sqrt(1 + 1e-5)  # eval BN with fresh statistics
    after_attn = x.numpy() + 0.5 * 2.0 * bn
    want = after_attn + 0.5 * after_attn / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs[1], want, rtol=1e-5, atol=1e-5)
    attn = SpatialAttention(3, lambda: _Scale(3))
    assert sorted(attn.state_dict()) == ['proj_1.bias', 'proj_1.weight', 'proj_2.bias', 'proj_2.weight',
                                         'spatial_gating_unit.weight']
    want = attn.proj_2(2.0 * F.gelu(attn.proj_1(x))) + x
    np.testing.assert_allclose(attn(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_build_and_run_stages():
    """patch_embed{i}, block{i}, norm{i} in the releases' order, with stochastic depth rising over all blocks."""

    class Tiny(nn.Layer):
        def __init__(self):
            super().__init__()
            self.rates = []

            def block(i, rate):
                self.rates.append(rate)
                return nn.Identity()
            build_stages(self, [1, 2], 0.2, embed=lambda i: ConvPatchEmbed(3 if i == 0 else 4, 4),
                         block=block, norm=lambda i: nn.BatchNorm2D(4))

        def forward(self, x):
            return run_stages(self, x)

    model = Tiny()
    np.testing.assert_allclose(model.rates, [0.0, 0.1, 0.2], atol=1e-12)
    assert [k for k in model.state_dict() if k.endswith('weight')] == [
        'patch_embed1.proj.weight', 'patch_embed1.norm.weight', 'norm1.weight', 'patch_embed2.proj.weight',
        'patch_embed2.norm.weight', 'norm2.weight']
    assert len(stage_layers(model)) == 2 and len(model.block2) == 2
    outs = model(paddle.randn([1, 3, 9, 8]))
    assert [o.shape for o in outs] == [[1, 4, 5, 4], [1, 4, 3, 2]]


def test_variants_fix_their_size_and_keep_overridable_defaults():
    from paddle_models.backbones.mscan import MSCAN_L
    from paddle_models.backbones.van import VAN_B0
    from paddle_models.errors import UserError

    with pytest.raises(UserError) as err:
        VAN_B0(depths=[1, 1, 1, 1])
    assert str(err.value) == "VAN_B0: depths is fixed by the variant; use VAN to set it"
    with paddle.LazyGuard():
        default, override = MSCAN_L(), MSCAN_L(drop_path_rate=0.0)
    assert default.block4[-1].drop_path.drop_prob == pytest.approx(0.3)
    assert isinstance(override.block4[-1].drop_path, nn.Identity)
    assert manager.BACKBONES['MSCAN_L'] is MSCAN_L and MSCAN_L.__name__ == 'MSCAN_L'
