"""VAN backbones: parameter counts (paper / transformers), feature shapes, parity with transformers' VanModel through
tools/convert_weights.py, the official checkpoint layout, training inside a segmentation model, export + infer.py
with oneDNN, and the shared DropPath / LayerNorm2d layers.

The transformers parity tests need ``torch==2.13.0`` and ``transformers==4.57.6`` (the last release with VanModel);
they skip, naming what is missing, where those are not installed.
"""
import os

import numpy as np
import paddle
import pytest

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones import van as van_module
from paddle_models.backbones.van import VAN, VAN_B0
from paddle_models.errors import UserError
from paddle_models.layers import DropPath, LayerNorm2d
from paddle_models.models.semantic_fpn import SemanticFPN
from paddleseg.cvlibs import manager
from helpers import count_params, export_and_infer, load_script, train_steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
convert_weights = load_script(os.path.join('tools', 'convert_weights.py'))

B0 = dict(hidden_sizes=[32, 64, 160, 256], depths=[3, 3, 5, 2], mlp_ratios=[8, 8, 4, 4])


def _torch_and_transformers():
    try:
        import torch
        import transformers
    except ImportError as err:
        pytest.skip(f"needs torch==2.13.0 and transformers==4.57.6 (VanModel) for the reference: {err}")
    if not hasattr(transformers, 'VanModel'):
        pytest.skip(f"transformers {transformers.__version__} has no VanModel (removed in 5.x); needs 4.57.6")
    return torch, transformers


def test_registered_and_parameter_counts():
    with paddle.LazyGuard():
        counts = {n: count_params(manager.BACKBONES.components_dict[f'VAN_{n}'](num_classes=1000))
                  for n in ('B0', 'B1', 'B2', 'B3', 'B4', 'B5', 'B6')}
        features_only = VAN_B0()
    # transformers' VanForImageClassification counts 4,106,312 / 13,862,824 / 26,579,496 for B0-B2: those include
    # VanModel.layernorm (2 x last width), which transformers defines but never applies; the release has no such layer.
    assert counts['B0'] == 4_106_312 - 2 * 256
    assert counts['B1'] == 13_862_824 - 2 * 512
    assert counts['B2'] == 26_579_496 - 2 * 512
    # the paper's table (with the head): 4.1M, 13.9M, 26.6M, 44.8M; B4-B6 60.3M, 90.0M, 200M
    assert [round(counts[n] / 1e6, 1) for n in ('B0', 'B1', 'B2', 'B3', 'B4', 'B5')] == \
        [4.1, 13.9, 26.6, 44.8, 60.3, 90.0]
    assert round(counts['B6'] / 1e6) == 200
    assert count_params(features_only) == counts['B0'] - (256 * 1000 + 1000)
    assert features_only.feat_channels == [32, 64, 160, 256]
    block = features_only.block3[4]
    assert block.attn.spatial_gating_unit.conv0.weight.shape == [160, 1, 5, 5]
    assert block.attn.spatial_gating_unit.conv_spatial.weight.shape == [160, 1, 7, 7]
    assert block.attn.spatial_gating_unit.conv_spatial._dilation == [3, 3]
    assert block.mlp.fc1.weight.shape == [640, 160, 1, 1]  # MLP ratio 4 in stage 3


def test_feature_shapes_layer_scale_and_drop_path_schedule():
    paddle.seed(0)
    model = VAN_B0(drop_path_rate=0.2)
    np.testing.assert_allclose(model.block2[1].layer_scale_1.numpy(), np.full([64], 1e-2, 'float32'))
    rates = [b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0
             for i in range(1, 5) for b in getattr(model, f'block{i}')]
    np.testing.assert_allclose(rates, np.linspace(0, 0.2, 13), atol=1e-7)
    model.eval()
    for size in [(64, 64), (65, 47), (33, 97)]:
        feats = model(paddle.randn([2, 3, *size]))
        assert [f.shape for f in feats] == [[2, c, -(-size[0] // s), -(-size[1] // s)]
                                            for c, s in zip([32, 64, 160, 256], [4, 8, 16, 32])]
        # each stage output is LayerNorm'd over the channels
        mean = feats[3].numpy().mean(1)
        np.testing.assert_allclose(mean, 0 * mean, atol=1e-4)


def _randomize_torch(torch, model, seed):
    """Random BN statistics, norm affine terms, biases and layer scales (the init would hide mistakes: BN near
    identity, zero biases, layer scales of 1e-2)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith('running_mean'):
                buf.uniform_(-0.2, 0.2, generator=gen)
            elif name.endswith('running_var'):
                buf.uniform_(0.5, 1.5, generator=gen)
        for name, param in model.named_parameters():
            if 'scaling' in name or (param.ndim == 1 and 'normalization' in name and name.endswith('weight')):
                param.uniform_(0.5, 1.5, generator=gen)
            elif param.ndim == 1:
                param.uniform_(-0.2, 0.2, generator=gen)


def _rel_close(got, want, rtol=1e-4):
    """Agreement within ``rtol`` relative to the reference's scale (per tensor)."""
    scale = float(np.abs(want).max())
    assert scale > 0.5
    assert float(np.abs(got - want).max()) <= rtol * scale, (float(np.abs(got - want).max()), scale)


@pytest.mark.parametrize('suffix', ['.safetensors', '.bin'])
def test_parity_with_transformers_van_model(tmp_path, suffix):
    """random init -> save -> tools/convert_weights.py --format hf -> the four stage outputs agree."""
    torch, transformers = _torch_and_transformers()
    torch.manual_seed(0)
    reference = transformers.VanModel(transformers.VanConfig(**B0)).eval()
    _randomize_torch(torch, reference, seed=1)
    path = tmp_path / f'van{suffix}'
    if suffix == '.safetensors':
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    else:
        torch.save(reference.state_dict(), str(path))
    info = convert_weights.convert('VAN_B0', 'hf', str(path), str(tmp_path / 'van.pdparams'))
    assert info['kwargs'] == {'num_classes': 0}

    ours = VAN_B0(pretrained=str(tmp_path / 'van.pdparams'))
    ours.eval()
    for size in [(64, 64), (45, 77)]:
        x = np.random.RandomState(2).randn(2, 3, *size).astype('float32')
        with torch.no_grad():
            expected = [h.numpy() for h in reference(torch.from_numpy(x), output_hidden_states=True).hidden_states]
        got = [f.numpy() for f in ours(paddle.to_tensor(x))]
        assert [g.shape for g in got] == [e.shape for e in expected]
        for g, e in zip(got, expected):
            _rel_close(g, e)


def test_parity_with_transformers_van_classifier(tmp_path):
    torch, transformers = _torch_and_transformers()
    torch.manual_seed(3)
    reference = transformers.VanForImageClassification(transformers.VanConfig(num_labels=7, **B0)).eval()
    _randomize_torch(torch, reference, seed=4)
    torch.save(reference.state_dict(), str(tmp_path / 'cls.bin'))
    info = convert_weights.convert('VAN_B0', 'hf', str(tmp_path / 'cls.bin'), str(tmp_path / 'cls.pdparams'))
    assert info['kwargs'] == {'num_classes': 7}
    ours = VAN_B0(num_classes=7)
    ours.set_state_dict(paddle.load(str(tmp_path / 'cls.pdparams')))
    ours.eval()
    x = np.random.RandomState(5).randn(2, 3, 64, 64).astype('float32')
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).logits.numpy()
    _rel_close(ours.classify(paddle.to_tensor(x)).numpy(), expected)


def test_official_checkpoint_layout_converts(tmp_path):
    """The release's names (``patch_embed1.proj``, ``block1.0.attn.spatial_gating_unit.conv0``, ``norm1``, ``head``
    with PyTorch BN statistics and a [out, in] head) convert onto the same model: saved with safetensors' numpy API
    (no torch), converted, loaded, same outputs."""
    save_file = pytest.importorskip('safetensors.numpy', reason='tools/convert_weights.py needs safetensors').save_file
    paddle.seed(0)
    source = VAN_B0(num_classes=5)
    source.eval()
    torch_layout = {}
    for key, value in source.state_dict().items():
        value = value.numpy()
        if key == 'head.weight':
            value = value.T  # torch nn.Linear: [out, in]
        key = key.replace('._mean', '.running_mean').replace('._variance', '.running_var')
        torch_layout[key] = np.ascontiguousarray(value)
        if key.endswith('running_var'):
            torch_layout[key.replace('running_var', 'num_batches_tracked')] = np.array(0, dtype='int64')
    for key in ('patch_embed1.proj.weight', 'block1.0.attn.spatial_gating_unit.conv_spatial.weight',
                'block1.0.attn.proj_1.weight', 'block4.1.mlp.dwconv.dwconv.weight', 'block2.2.layer_scale_2',
                'norm4.weight', 'patch_embed3.norm.running_var', 'head.weight'):
        assert key in torch_layout
    save_file(torch_layout, str(tmp_path / 'official.safetensors'))
    info = convert_weights.convert('VAN_B0', 'official', str(tmp_path / 'official.safetensors'),
                                   str(tmp_path / 'b0.pdparams'))
    assert info['kwargs'] == {'num_classes': 5}
    target = VAN_B0(num_classes=5)
    target.set_state_dict(paddle.load(str(tmp_path / 'b0.pdparams')))
    target.eval()
    x = paddle.randn([1, 3, 64, 64])
    np.testing.assert_array_equal(target.classify(x).numpy(), source.classify(x).numpy())


def test_trains_inside_a_segmentation_model():
    paddle.seed(0)
    model = SemanticFPN(4, VAN_B0(), fpn_channels=32, channels=16, dropout_prob=0.0)
    losses = train_steps(model)
    assert losses[-1] < losses[0] * 0.9, losses


def test_export_and_infer_with_onednn(tmp_path):
    paddle.seed(0)
    model = SemanticFPN(5, VAN_B0(), fpn_channels=32, channels=16)
    export_and_infer(model, tmp_path)


def test_drop_path_drops_whole_samples_and_rescales():
    layer = DropPath(0.5)
    x = paddle.ones([64, 3, 4, 4])
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())
    layer.train()
    paddle.seed(0)
    out = layer(x).numpy()
    per_sample = out.reshape(64, -1)
    assert set(np.unique(per_sample)) == {0.0, 2.0}
    assert (per_sample.min(1) == per_sample.max(1)).all()  # all or nothing per sample
    assert 10 < (per_sample[:, 0] == 0).sum() < 54
    with pytest.raises(ValueError):
        DropPath(1.0)


def test_layer_norm_2d_normalises_channels():
    paddle.seed(0)
    layer = LayerNorm2d(6, epsilon=1e-6)
    layer.weight.set_value(paddle.to_tensor(np.arange(1, 7, dtype='float32')))
    layer.bias.set_value(paddle.to_tensor(np.full([6], 0.5, 'float32')))
    x = np.random.RandomState(0).randn(2, 6, 5, 3).astype('float32') * 3 + 1
    mean = x.mean(1, keepdims=True)
    var = x.var(1, keepdims=True)
    want = (x - mean) / np.sqrt(var + 1e-6) * np.arange(1, 7).reshape(1, 6, 1, 1) + 0.5
    np.testing.assert_allclose(layer(paddle.to_tensor(x)).numpy(), want, rtol=1e-5, atol=1e-5)


def test_bad_arguments_raise_user_errors():
    cases = [
        (dict(embed_dims=[32, 64, 160]), "VAN: embed_dims must be a list of 4 integers >= 1, got [32, 64, 160]"),
        (dict(depths=[3, 3, 0, 2]), "VAN: depths must be a list of 4 integers >= 1, got [3, 3, 0, 2]"),
        (dict(drop_path_rate=1.5), "VAN: drop_path_rate must be a number in [0, 1), got 1.5"),
        (dict(num_classes=-2), "VAN: num_classes must be an integer >= 0, got -2"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserError) as err:
            VAN(**kwargs)
        assert str(err.value) == message
    with pytest.raises(UserError) as err:
        VAN(depths=[1, 1, 1, 1]).classify(paddle.zeros([1, 3, 32, 32]))
    assert str(err.value) == "VAN: classify() needs a model built with num_classes > 0"
    assert set(van_module.VAN_SETTINGS) == {'b0', 'b1', 'b2', 'b3', 'b4', 'b5', 'b6'}


def test_camvid_config_builds_and_imports_converted_weights(tmp_path):
    """configs/van_b0_semantic_fpn_camvid.yml with backbone.pretrained set to a converted checkpoint."""
    from paddle_models.core.config import Builder, load_config

    paddle.seed(0)
    source = VAN_B0(num_classes=1000)  # plays the ImageNet checkpoint: converted with its head
    paddle.save(source.state_dict(), str(tmp_path / 'van_b0.pdparams'))
    cfg = load_config(os.path.join(REPO, 'configs', 'van_b0_semantic_fpn_camvid.yml'),
                      [f"model.backbone.pretrained={tmp_path / 'van_b0.pdparams'}"])
    builder = Builder(cfg)
    model = builder.model()
    assert isinstance(model, SemanticFPN) and isinstance(model.backbone, VAN)
    assert model.backbone.num_classes == 0
    for key, value in model.backbone.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), source.state_dict()[key].numpy())
    builder.optimizer(model, builder.lr_scheduler())
    model.eval()
    assert model(paddle.randn([1, 3, 64, 64]))[0].shape == [1, 11, 64, 64]
