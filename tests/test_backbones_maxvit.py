"""MaxViT backbones: parameter counts and state-dict layout of timm's official-architecture models, block and grid
attention against an independent numpy implementation (also with padding), TF 'SAME' padding, feature shapes,
training inside UPerNet, export + infer.py with oneDNN (free and fixed input size) and argument errors.

A whole-network comparison with timm's ``maxvit_tiny_tf_224`` was run by hand (features within 3e-6 relative);
it is not a test because timm needs torchvision, which does not import beside the torch CI can install.
"""
import contextlib
import io
import os

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones.maxvit import (Downsample, MaxViT, MaxViT_T, PartitionAttention, Stem,
                                            convert_timm_weights, relative_position_index)
from paddle_models.core.export import export_model
from paddle_models.errors import UserError
from paddle_models.models.semantic_fpn import SemanticFPN
from paddle_models.models.upernet import UPerNet
from paddleseg.cvlibs import manager
from helpers import count_params, export_and_infer, randomize_norms, train_steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(embed_dims=[32, 32, 64, 64], depths=[1, 1, 1, 1], stem_width=16, head_hidden_size=32)


def test_registered_and_parameter_counts_match_timm_tf_models():
    with paddle.LazyGuard():
        models = {n: manager.BACKBONES.components_dict[f'MaxViT_{n}'](num_classes=1000) for n in 'TSBL'}
        features_only = MaxViT_T()
    # timm maxvit_{tiny,small,base,large}_tf_224 (the official architecture), with the 1000-class head
    assert {n: count_params(m) for n, m in models.items()} == {'T': 30_916_528, 'S': 68_927_956, 'B': 119_467_708,
                                                          'L': 211_785_560}
    # timm's state dicts hold 560 / 562 / 1199 / 1197 entries: ours plus one num_batches_tracked per BatchNorm
    for name, want in zip('TSBL', (560, 562, 1199, 1197)):
        state = models[name].state_dict()
        batch_norms = sum(1 for k in state if k.endswith('._variance'))
        assert len(state) + batch_norms == want
    state = features_only.state_dict()
    assert features_only.feat_channels == [64, 128, 256, 512]
    assert 'stages.0.blocks.0.conv.shortcut.expand.weight' not in state  # 64 -> 64: pooling only
    assert list(state['stages.1.blocks.0.conv.shortcut.expand.weight'].shape) == [128, 64, 1, 1]
    assert list(state['stages.2.blocks.3.attn_grid.attn.rel_pos.relative_position_bias_table'].shape) == [8, 13, 13]
    assert list(state['stages.3.blocks.1.conv.se.fc1.weight'].shape) == [128, 2048, 1, 1]  # SE: out / 4
    assert list(state['stages.0.blocks.1.attn_block.attn.qkv.weight'].shape) == [64, 192]
    assert 'stem.conv1.bias' in state and 'stem.norm1._mean' in state


def _np_layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + eps) * weight + bias


def _np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _np_partition_attention(layer, x):
    """Reference written from the paper's description, token by token: LN, zero-pad to multiples of s, for every
    window gather its s*s tokens, multi-head attention with bias table[k - q + s - 1] per axis, scatter back, crop,
    residual; then the MLP residual."""
    p = {k: v.numpy().astype('float64') for k, v in layer.state_dict().items()}
    s, heads = layer.size, layer.attn.num_heads
    n, h, w, c = x.shape
    dh = c // heads
    y = _np_layer_norm(x, p['norm1.weight'], p['norm1.bias'])
    hp, wp = -(-h // s) * s, -(-w // s) * s
    y = np.pad(y, [(0, 0), (0, hp - h), (0, wp - w), (0, 0)])
    table = p['attn.rel_pos.relative_position_bias_table']
    out = np.zeros_like(y)
    for b in range(n):
        for wi in range(hp // s):
            for wj in range(wp // s):
                if layer.partition == 'block':
                    pos = [(wi * s + i, wj * s + j) for i in range(s) for j in range(s)]
                else:  # token (i, j) of cell (wi, wj) of a s x s grid over the map
                    pos = [(i * (hp // s) + wi, j * (wp // s) + wj) for i in range(s) for j in range(s)]
                tokens = np.stack([y[b, r, q] for r, q in pos])
                qkv = (tokens @ p['attn.qkv.weight'] + p['attn.qkv.bias']).reshape(s * s, 3, heads, dh)
                result = np.zeros((s * s, heads, dh))
                for head in range(heads):
                    q, k, v = qkv[:, 0, head], qkv[:, 1, head], qkv[:, 2, head]
                    logits = q @ k.T / np.sqrt(dh)
                    for a in range(s * s):
                        for m in range(s * s):
                            logits[a, m] += table[head, m // s - a // s + s - 1, m % s - a % s + s - 1]
                    attn = np.exp(logits - logits.max(1, keepdims=True))
                    result[:, head] = (attn / attn.sum(1, keepdims=True)) @ v
                projected = result.reshape(s * s, c) @ p['attn.proj.weight'] + p['attn.proj.bias']
                for (r, q), value in zip(pos, projected):
                    out[b, r, q] = value
    x = x + out[:, :h, :w]
    hidden = _np_gelu_tanh(_np_layer_norm(x, p['norm2.weight'], p['norm2.bias']) @ p['mlp.fc1.weight'] +
                           p['mlp.fc1.bias'])
    return x + hidden @ p['mlp.fc2.weight'] + p['mlp.fc2.bias']


@pytest.mark.parametrize('partition', ['block', 'grid'])
@pytest.mark.parametrize('size', [(6, 9), (5, 7)])
def test_partition_attention_matches_numpy_reference(partition, size):
    """Windows/grid of 3 on maps of 6x9 (exact) and 5x7 (padded to 6x9 and cropped)."""
    paddle.seed(0)
    layer = PartitionAttention(16, partition, size=3, dim_head=8)
    randomize_norms(layer, seed=1)
    table = layer.attn.rel_pos.relative_position_bias_table
    table.set_value(paddle.to_tensor(np.random.RandomState(2).randn(*table.shape).astype('float32')))
    layer.eval()
    x = np.random.RandomState(3).randn(2, *size, 16).astype('float32')
    got = layer(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(got, _np_partition_attention(layer, x.astype('float64')), rtol=1e-4, atol=1e-4)


def test_relative_position_index_reads_key_minus_query():
    index = relative_position_index(3)  # flattened (5, 5) table
    assert index.shape == (9, 9)
    assert index[0, 0] == 2 * 5 + 2            # same position: centre
    assert index[0, 8] == 4 * 5 + 4            # query (0, 0), key (2, 2): offset (+2, +2)
    assert index[5, 3] == (1 - 1 + 2) * 5 + (0 - 2 + 2)  # query (1, 2), key (1, 0)


def test_tf_same_padding_of_stem_and_pooled_shortcut():
    """Stride-2 convs pad TF-style (the extra row/column at the end); the pooled shortcut counts its zero padding."""
    paddle.seed(0)
    stem = Stem(3, 8)
    for h, w in [(8, 8), (9, 7)]:
        x = paddle.randn([1, 3, h, w])
        total_h, total_w = max((-(-h // 2) - 1) * 2 + 3 - h, 0), max((-(-w // 2) - 1) * 2 + 3 - w, 0)
        padded = F.pad(x, [total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2])
        want = F.conv2d(padded, stem.conv1.weight, stem.conv1.bias, stride=2)
        np.testing.assert_allclose(stem.conv1(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    pool = Downsample(4, 4)
    x = np.random.RandomState(0).randn(1, 4, 5, 3).astype('float32')
    got = pool(paddle.to_tensor(x)).numpy()
    padded = np.pad(x, [(0, 0), (0, 0), (0, 1), (0, 1)])
    want = padded.reshape(1, 4, 3, 2, 2, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_feature_shapes_at_any_size():
    paddle.seed(0)
    model = MaxViT(**TINY)
    model.eval()
    for size in [(64, 64), (65, 47), (32, 33)]:
        feats = model(paddle.randn([2, 3, *size]))
        assert [f.shape for f in feats] == [[2, c, -(-size[0] // s), -(-size[1] // s)]
                                            for c, s in zip([32, 32, 64, 64], [4, 8, 16, 32])]
    # the window/grid reshapes keep the samples of a batch apart (also with padding)
    x = paddle.randn([2, 3, 45, 50])
    both = model(x)[3].numpy()
    single = model(x[1:])[3].numpy()
    np.testing.assert_allclose(both[1:], single, rtol=1e-4, atol=1e-5)


def test_paddle_flops_counts_maxvit():
    """paddle.flops (tools/benchmark.py's GFLOPs) hooks every layer call and reads its first input: the
    relative-position bias is read as a method, so the count works and includes the qkv projections."""
    model = MaxViT(**TINY)
    model.eval()
    with contextlib.redirect_stdout(io.StringIO()):
        flops = paddle.flops(model, [1, 3, 64, 64], print_detail=False)
    # a lower bound: the qkv projections alone, tokens x dim x 3 dim for the block and the grid attention of each
    # stage (stage i runs at 1/(4 * 2**i) of the input side)
    qkv = sum(64 * 64 // (16 * 4 ** i) * dim * 3 * dim * 2 for i, dim in enumerate(TINY["embed_dims"]))
    assert flops > qkv


def test_classifier_head():
    paddle.seed(0)
    model = MaxViT(num_classes=7, **TINY)
    model.eval()
    logits = model.classify(paddle.randn([2, 3, 64, 64]))
    assert logits.shape == [2, 7]
    assert [name for name, _ in model.head.named_sublayers()] == ['norm', 'pre_logits', 'pre_logits.fc',
                                                                  'pre_logits.act', 'fc']


def test_trains_inside_upernet():
    paddle.seed(0)
    model = UPerNet(4, MaxViT(**TINY), channels=16, dropout_prob=0.0)
    losses = train_steps(model, steps=6, learning_rate=0.1)
    assert losses[-1] < losses[0] * 0.9, losses


@pytest.mark.paddle26
def test_export_and_infer_with_onednn(tmp_path):
    paddle.seed(0)
    model = SemanticFPN(5, MaxViT(**TINY), fpn_channels=16, channels=8)
    randomize_norms(model, seed=3)
    export_and_infer(model, tmp_path)  # free input size; the 64x96 image pads every attention


def test_export_with_a_fixed_input_size_runs_with_onednn(tmp_path):
    paddle.seed(0)
    model = SemanticFPN(5, MaxViT(**TINY), fpn_channels=16, channels=8)
    model.eval()
    info = export_model(model, str(tmp_path / 'fixed'), input_shape=[1, 3, 40, 72], output_op='none',
                        transforms=[{'type': 'Normalize'}])
    assert info['onednn'], info['onednn_error']
    from paddle.inference import Config, create_predictor
    x = np.random.RandomState(0).randn(1, 3, 40, 72).astype('float32')
    config = Config(info['model'], info['params'])
    config.disable_gpu()
    config.enable_mkldnn()
    predictor = create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape([1, 3, 40, 72])
    handle.copy_from_cpu(x)
    predictor.run()
    got = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    with paddle.no_grad():
        want = model(paddle.to_tensor(x))[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_bad_arguments_raise_user_errors():
    cases = [
        (dict(embed_dims=[64, 128, 256]),
         "MaxViT: embed_dims must be a list of 4 integers >= 1, got [64, 128, 256]"),
        (dict(embed_dims=[64, 128, 256, 500]),
         "MaxViT: embed_dims [64, 128, 256, 500] must be multiples of dim_head 32"),
        (dict(window_size=0), "MaxViT: window_size must be an integer >= 1, got 0"),
        (dict(drop_path_rate=-0.1), "MaxViT: drop_path_rate must be a number in [0, 1), got -0.1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserError) as err:
            MaxViT(**kwargs)
        assert str(err.value) == message
    with pytest.raises(UserError) as err:
        MaxViT(**TINY).classify(paddle.zeros([1, 3, 32, 32]))
    assert str(err.value) == "MaxViT: classify() needs a model built with num_classes > 0"


def test_camvid_config_builds_upernet_with_maxvit_t():
    from paddle_models.core.config import Builder, load_config

    cfg = load_config(os.path.join(REPO, 'configs', 'maxvit_t_upernet_camvid.yml'))
    builder = Builder(cfg)
    model = builder.model()
    assert isinstance(model, UPerNet) and isinstance(model.backbone, MaxViT)
    assert model.backbone.feat_channels == [64, 128, 256, 512]
    assert len(builder.losses()['types']) == 2  # main + auxiliary head
    builder.optimizer(model, builder.lr_scheduler())
    model.train()
    assert [o.shape for o in model(paddle.randn([2, 3, 64, 64]))] == [[2, 11, 64, 64]] * 2


def _timm_layout(model):
    """Our state dict stored the way timm stores it: BN running statistics, [out, in] linear weights."""
    out = {}
    for key, value in model.state_dict().items():
        value = value.numpy()
        if value.ndim == 2 and key.endswith('.weight'):
            value = value.T
        out[key.replace('._mean', '.running_mean').replace('._variance', '.running_var')] = value
    return out


def test_timm_key_map_infers_classes_and_window_size():
    paddle.seed(0)
    source = MaxViT(window_size=5, num_classes=3, **TINY)
    state = _timm_layout(source)
    state['stem.norm1.num_batches_tracked'] = np.array(0, 'int64')
    converted, kwargs = convert_timm_weights(state)
    assert kwargs == {'num_classes': 3, 'window_size': 5}
    assert sorted(converted) == sorted(source.state_dict())
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(converted[key], value.numpy())
    # timm with num_classes=0 keeps head.norm and head.pre_logits but no head.fc: no head at all here
    headless = {k: v for k, v in state.items() if not k.startswith('head.fc.')}
    converted, kwargs = convert_timm_weights(headless)
    assert kwargs == {'num_classes': 0, 'window_size': 5}
    assert not [k for k in converted if k.startswith('head.')]
    assert sorted(converted) == sorted(MaxViT(window_size=5, **TINY).state_dict())
