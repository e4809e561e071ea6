"""ResNeXt backbones: parameter counts, parity with paddle.vision's ResNeXt (also dilated), feature shapes, training
inside a segmentation model, export + deploy/python/infer.py with oneDNN, weight loading and argument errors."""
import os

import numpy as np
import paddle
import pytest

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones.resnext import (ResNeXt, ResNeXt50_32x4d, ResNeXt101_32x4d, ResNeXt101_64x4d)
from paddle_models.errors import UserError
from paddle_models.models.semantic_fpn import SemanticFPN
from paddleseg.cvlibs import manager

from helpers import count_params, export_and_infer, randomize_norms, train_steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reference_features(ref, x):
    x = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
    feats = []
    for layer in (ref.layer1, ref.layer2, ref.layer3, ref.layer4):
        x = layer(x)
        feats.append(x.numpy())
    return feats


def test_registered_and_parameter_counts_match_torchvision_and_timm():
    for name in ('ResNeXt50_32x4d', 'ResNeXt101_32x4d', 'ResNeXt101_64x4d'):
        assert manager.BACKBONES.components_dict[name] is globals()[name]
    # counted by construction (LazyGuard: no initialisation), with the 1000-class classifier
    with paddle.LazyGuard():
        counts = {f.__name__: count_params(f(num_classes=1000))
                  for f in (ResNeXt50_32x4d, ResNeXt101_32x4d, ResNeXt101_64x4d)}
        features_only = ResNeXt50_32x4d()
    assert counts == {'ResNeXt50_32x4d': 25_028_904,     # torchvision resnext50_32x4d
                      'ResNeXt101_32x4d': 44_177_704,    # timm resnext101_32x4d
                      'ResNeXt101_64x4d': 83_455_272}    # torchvision resnext101_64x4d
    assert count_params(features_only) == 25_028_904 - (2048 * 1000 + 1000)
    # a true grouped conv: 32 groups with their own 4-channel kernels (not one kernel shared by all groups)
    assert features_only.layer1[0].conv2.weight.shape == [128, 4, 3, 3]
    assert features_only.layer1[0].conv2._groups == 32
    assert features_only.feat_channels == [256, 512, 1024, 2048]


@pytest.mark.paddle26
def test_parity_with_paddle_vision_resnext50():
    paddle.seed(0)
    ref = paddle.vision.models.resnext50_32x4d()
    state = randomize_norms(ref, seed=1)
    paddle.seed(2)
    ours = ResNeXt50_32x4d(num_classes=1000)
    assert list(ours.state_dict()) == list(state)
    ours.set_state_dict(state)
    ref.eval()
    ours.eval()
    for size in [(64, 64), (45, 77)]:
        x = paddle.to_tensor(np.random.RandomState(3).randn(2, 3, *size).astype('float32'))
        expected = _reference_features(ref, x)
        feats = ours(x)
        strides = [4, 8, 16, 32]
        assert [f.shape for f in feats] == [[2, c, -(-size[0] // s), -(-size[1] // s)]
                                            for c, s in zip(ours.feat_channels, strides)]
        for got, want in zip(feats, expected):
            assert want.std() > 0.05
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ours.classify(x).numpy(), ref(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('output_stride, dilated', [(16, ('layer4',)), (8, ('layer3', 'layer4'))])
def test_dilation_matches_torchvision_style_dilated_reference(output_stride, dilated):
    """Reference: paddle.vision's ``_make_layer(dilate=True)`` (the first block of a dilated stage keeps the previous
    dilation, as torchvision's replace_stride_with_dilation). paddle.vision then builds the following blocks without
    dilation, where torchvision gives them the stage's dilation: the reference's later blocks are set to it here."""
    from paddle.vision.models.resnet import BottleneckBlock

    paddle.seed(0)
    ref = paddle.vision.models.resnext50_32x4d(num_classes=0, with_pool=False)
    ref.inplanes, ref.dilation = 512, 1
    blocks = {'layer3': 6, 'layer4': 3}
    planes = {'layer3': 256, 'layer4': 512}
    for name in ('layer3', 'layer4'):
        layer = ref._make_layer(BottleneckBlock, planes[name], blocks[name], stride=2, dilate=name in dilated)
        for block in list(layer)[1:]:
            block.conv2._dilation = [ref.dilation] * 2
            block.conv2._updated_padding = [ref.dilation] * 2
        setattr(ref, name, layer)
    state = randomize_norms(ref, seed=4)
    ours = ResNeXt50_32x4d(output_stride=output_stride)
    ours.set_state_dict(state)
    ref.eval()
    ours.eval()
    x = paddle.to_tensor(np.random.RandomState(5).randn(1, 3, 65, 47).astype('float32'))
    feats = ours(x)
    strides = [4, 8, 16, 32] if output_stride == 32 else ([4, 8, 16, 16] if output_stride == 16 else [4, 8, 8, 8])
    assert [f.shape[2:] for f in feats] == [[-(-65 // s), -(-47 // s)] for s in strides]
    assert ours.layer4[0].conv2._dilation == ([2, 2] if output_stride == 8 else [1, 1])
    assert ours.layer4[1].conv2._dilation == ([4, 4] if output_stride == 8 else [2, 2])
    for got, want in zip(feats, _reference_features(ref, x)):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)


def test_trains_inside_a_segmentation_model():
    paddle.seed(0)
    model = SemanticFPN(4, ResNeXt50_32x4d(output_stride=16), fpn_channels=32, channels=16, dropout_prob=0.0)
    losses = train_steps(model)
    assert losses[-1] < losses[0] * 0.9, losses


@pytest.mark.paddle26
def test_export_and_infer_with_onednn(tmp_path):
    paddle.seed(0)
    # cardinality 4 (small 3x3 convs, same graph as 32) keeps the export quick
    model = SemanticFPN(5, ResNeXt(depth=50, cardinality=4), fpn_channels=32, channels=16)
    randomize_norms(model, seed=6)
    export_and_infer(model, tmp_path)


def test_pretrained_loading_ignores_only_the_classifier(tmp_path):
    paddle.seed(0)
    full = ResNeXt(depth=50, cardinality=4, num_classes=10)
    state = randomize_norms(full, seed=7)
    path = tmp_path / 'w.pdparams'
    paddle.save(state, str(path))
    backbone = ResNeXt(depth=50, cardinality=4, pretrained=str(path))
    for key, value in backbone.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[key].numpy())
    wider = ResNeXt(depth=50, cardinality=8).state_dict()
    differ = sum(1 for k, v in wider.items() if list(v.shape) != list(state[k].shape))
    with pytest.raises(UserError) as err:
        ResNeXt(depth=50, cardinality=8, pretrained=str(path))
    assert str(err.value) == (f"ResNeXt: pretrained weights {path} does not fit the model: {differ} shape mismatches, "
                              f"e.g. layer1.0.conv1.weight has shape [16, 64, 1, 1] in the file but [32, 64, 1, 1] "
                              f"in the model")
    del state['layer4.2.bn3._variance']
    paddle.save(state, str(path))
    with pytest.raises(UserError) as err:
        ResNeXt(depth=50, cardinality=4, pretrained=str(path))
    assert str(err.value) == (f"ResNeXt: pretrained weights {path} does not fit the model: 1 key missing from the "
                              f"file (layer4.2.bn3._variance)")
    with pytest.raises(UserError) as err:
        ResNeXt(pretrained=str(tmp_path / 'missing.pdparams'))
    assert str(err.value) == f"ResNeXt: pretrained weights not found: {tmp_path / 'missing.pdparams'}"


def test_bad_arguments_raise_user_errors():
    cases = [
        (dict(depth=34), "ResNeXt: depth must be one of 50, 101, 152, got 34"),
        (dict(output_stride=4), "ResNeXt: output_stride must be one of 8, 16, 32, got 4"),
        (dict(cardinality=0), "ResNeXt: cardinality must be an integer >= 1, got 0"),
        (dict(num_classes=-1), "ResNeXt: num_classes must be an integer >= 0, got -1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserError) as err:
            ResNeXt(**kwargs)
        assert str(err.value) == message
    with paddle.LazyGuard():
        backbone = ResNeXt50_32x4d()
    with pytest.raises(UserError) as err:
        backbone.classify(paddle.zeros([1, 3, 32, 32]))
    assert str(err.value) == "ResNeXt: classify() needs a model built with num_classes > 0"


def test_camvid_config_builds_deeplabv3_with_resnext50():
    from paddle_models.core.config import Builder, load_config

    cfg = load_config(os.path.join(REPO, 'configs', 'resnext50_deeplabv3_camvid.yml'))
    builder = Builder(cfg)
    model = builder.model()
    assert type(model).__name__ == 'DeepLabV3' and isinstance(model.backbone, ResNeXt)
    assert model.backbone.output_stride == 8 and model.backbone.cardinality == 32
    assert len(builder.losses()['types']) == 1
    builder.optimizer(model, builder.lr_scheduler())
    model.eval()
    feats = model.backbone(paddle.randn([1, 3, 64, 64]))
    assert [f.shape[2:] for f in feats] == [[16, 16], [8, 8], [8, 8], [8, 8]]
    assert model(paddle.randn([1, 3, 64, 64]))[0].shape == [1, 11, 64, 64]
