"""UPerNet and Semantic FPN heads: UPerNet parity with PaddleSeg 2.8.0 (main and auxiliary outputs, PaddleSeg
checkpoints load), any backbone / any input size, every parameter used, training, export + oneDNN, errors."""

import numpy as np
import paddle
import paddleseg
import pytest

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones.resnext import ResNeXt
from paddle_models.errors import UserError
from paddle_models.models.semantic_fpn import SemanticFPN
from paddle_models.models.upernet import UPerNet
from paddleseg.cvlibs import manager
from helpers import assert_fits_any_size, export_and_infer, randomize_norms, tiny_van, train_steps


def _paddleseg_state(reference, seed):
    state = randomize_norms(reference, seed)
    conv_last = [k for k in state if k.startswith('head.conv_last.')]
    assert conv_last  # PaddleSeg builds it; its forward never uses it
    return state, conv_last


@pytest.mark.paddle26
@pytest.mark.parametrize('aux', [False, True])
def test_upernet_parity_with_paddleseg(aux):
    paddle.seed(0)
    reference = paddleseg.models.UPerNet(num_classes=5, backbone=tiny_van(0), backbone_indices=(0, 1, 2, 3),
                                         channels=32, enable_auxiliary_loss=aux, align_corners=True,
                                         dropout_prob=0.0)
    ours = UPerNet(num_classes=5, backbone=tiny_van(1), channels=32, enable_auxiliary_loss=aux,
                   align_corners=True, dropout_prob=0.0)
    assert manager.MODELS.components_dict['UPerNet'] is UPerNet
    state, conv_last = _paddleseg_state(reference, seed=2)
    assert list(ours.state_dict()) == [k for k in state if k not in conv_last]
    ours.set_state_dict({k: v for k, v in state.items() if k not in conv_last})
    for size in [(64, 64), (45, 77)]:
        x = paddle.to_tensor(np.random.RandomState(3).randn(2, 3, *size).astype('float32'))
        reference.eval()
        ours.eval()
        expected = [o.numpy() for o in reference(x)]
        got = [o.numpy() for o in ours(x)]
        assert len(got) == 1 and got[0].shape == (2, 5, *size)  # eval: the main output only
        assert expected[0].std() > 0.05
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=1e-4)
        if aux:  # training mode: BN uses batch statistics, no dropout -> deterministic; both outputs compared
            reference.train()
            ours.train()
            expected = [o.numpy() for o in reference(x)]
            got = [o.numpy() for o in ours(x)]
            assert len(got) == 2 == len(expected)
            for g, e in zip(got, expected):
                np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_upernet_loads_a_paddleseg_checkpoint(tmp_path):
    reference = paddleseg.models.UPerNet(num_classes=3, backbone=tiny_van(0), backbone_indices=(0, 1, 2, 3),
                                         channels=16, enable_auxiliary_loss=True)
    state, _ = _paddleseg_state(reference, seed=4)
    paddle.save(state, str(tmp_path / 'ps.pdparams'))
    ours = UPerNet(3, tiny_van(5), channels=16, enable_auxiliary_loss=True, pretrained=str(tmp_path / 'ps.pdparams'))
    for key, value in ours.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[key].numpy())
    wider = UPerNet(3, tiny_van(5), channels=24).state_dict()
    differ = sum(1 for k, v in wider.items() if list(v.shape) != list(state[k].shape))
    with pytest.raises(UserError) as err:
        UPerNet(3, tiny_van(5), channels=24, pretrained=str(tmp_path / 'ps.pdparams'))
    assert str(err.value) == (f"UPerNet: pretrained weights {tmp_path / 'ps.pdparams'} does not fit the model: "
                              f"{differ} shape mismatches, e.g. head.ppm.conv_bn_relu2._conv.weight has shape "
                              f"[16, 96, 3, 3] in the file but [24, 96, 3, 3] in the model")


@pytest.mark.parametrize('model_cls', [UPerNet, SemanticFPN])
@pytest.mark.parametrize('size', [(64, 64), (33, 71)])
def test_any_backbone_any_size(model_cls, size):
    kwargs = dict(channels=16) if model_cls is UPerNet else dict(fpn_channels=16, channels=8)
    backbones = [tiny_van(), ResNeXt(depth=50, cardinality=2, output_stride=16)]
    for backbone in backbones:
        # (local=False: pooled and deep features reach the whole image; each sample's output must still be its own)
        assert_fits_any_size(model_cls(4, backbone, **kwargs), (2, 3, *size), 4, local=False)


@pytest.mark.parametrize('model_cls', [UPerNet, SemanticFPN])
def test_every_parameter_is_used(model_cls):
    """The loss reaches every parameter of the head (no dead layers such as PaddleSeg's conv_last)."""
    kwargs = dict(channels=16, enable_auxiliary_loss=True) if model_cls is UPerNet else dict(fpn_channels=16,
                                                                                             channels=8)
    model = model_cls(4, tiny_van(), **kwargs)
    model.train()
    logits = model(paddle.randn([2, 3, 64, 48]))
    assert len(logits) == (2 if model_cls is UPerNet else 1)
    sum(l.square().mean() for l in logits).backward()
    # (a conv bias right before a BatchNorm in training mode is cancelled by the batch mean: zero gradient)
    unused = [name for name, p in model.named_parameters() if not p.stop_gradient and
              not name.endswith('_conv.bias') and (p.grad is None or float(p.grad.abs().sum()) == 0.0)]
    assert unused == []


def test_semantic_fpn_structure_follows_the_paper():
    model = SemanticFPN(4, tiny_van(), fpn_channels=16, channels=8)
    # level i (stride 4 * 2**i) gets max(1, i) conv + 2x-upsampling steps
    assert [len(head) for head in model.head.scale_heads] == [1, 1, 2, 3]
    assert [c.weight.shape[1] for c in model.neck.lateral_convs] == [16, 24, 32, 48]
    # the coarsest input reaches every output pixel (top-down pathway + its scale head)
    model.eval()
    feats = [paddle.zeros([1, c, s, s]) for c, s in zip([16, 24, 32, 48], [16, 8, 4, 2])]
    base = model.head(model.neck(feats)).numpy()
    feats[3] = paddle.ones([1, 48, 2, 2])
    changed = model.head(model.neck(feats)).numpy()
    assert (np.abs(changed - base).sum(1) > 0).all()


@pytest.mark.parametrize('model_cls', [UPerNet, SemanticFPN])
def test_trains(model_cls):
    kwargs = dict(channels=16, enable_auxiliary_loss=True) if model_cls is UPerNet else dict(fpn_channels=16,
                                                                                             channels=8)
    model = model_cls(4, tiny_van(), dropout_prob=0.0, **kwargs)
    losses = train_steps(model, steps=5, learning_rate=0.1)
    assert losses[-1] < losses[0] * 0.9, losses


def test_upernet_export_and_infer_with_onednn(tmp_path):
    # (not in the Paddle 2.6 subset: there oneDNN rejects the pyramid pooling module's resizing, "could not create
    # a primitive descriptor for a binary operation primitive", and the export falls back to plain CPU)
    model = UPerNet(5, tiny_van(), channels=16, enable_auxiliary_loss=True)
    randomize_norms(model, seed=6)
    export_and_infer(model, tmp_path)


def test_bad_arguments_raise_user_errors():
    backbone = tiny_van()
    cases = [
        (UPerNet, dict(num_classes=0), "UPerNet: num_classes must be an integer >= 1, got 0"),
        (UPerNet, dict(num_classes=3, backbone_indices=(0, 5)),
         "UPerNet: backbone_indices must be a list of at least 2 integers in [-4, 3] (the backbone has 4 outputs), "
         "got [0, 5]"),
        (SemanticFPN, dict(num_classes=3, backbone_indices=[2]),
         "SemanticFPN: backbone_indices must be a list of at least 2 integers in [-4, 3] (the backbone has 4 "
         "outputs), got [2]"),
        (SemanticFPN, dict(num_classes=3, channels=-1), "SemanticFPN: channels must be an integer >= 1, got -1"),
        (SemanticFPN, dict(num_classes=3, backbone=paddle.nn.Conv2D(3, 3, 1)),
         "SemanticFPN: the backbone Conv2D has no feat_channels"),
    ]
    for cls, kwargs, message in cases:
        kwargs.setdefault('backbone', backbone)
        with pytest.raises(UserError) as err:
            cls(**kwargs)
        assert str(err.value) == message
