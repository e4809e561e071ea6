"""ResNeXt backbones: parameter counts, parity with paddle.vision's ResNeXt (also dilated), feature shapes, training
inside a segmentation model, export + deploy/python/infer.py with oneDNN, weight loading and argument errors."""
import os
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from PIL import Image

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones.resnext import (ResNeXt, ResNeXt50_32x4d, ResNeXt101_32x4d, ResNeXt101_64x4d)
from paddle_models.core.export import export_model
from paddle_models.errors import UserError
from paddle_models.models.semantic_fpn import SemanticFPN
import paddleseg.transforms as T
from paddleseg.cvlibs import manager

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INFER = os.path.join(REPO, 'deploy', 'python', 'infer.py')


def _count(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters() if p.trainable)


def _randomize(model, seed):
    """Random BN statistics and affine terms (fresh BN layers are near-identity and would hide wiring mistakes)."""
    rng = np.random.RandomState(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith('_mean') or key.endswith('bias'):
            value = rng.uniform(-0.2, 0.2, value.shape)
        elif key.endswith('_variance') or (key.endswith('weight') and len(value.shape) == 1):
            value = rng.uniform(0.5, 1.5, value.shape)
        else:
            value = value.numpy()
        state[key] = paddle.to_tensor(value.astype('float32'))
    model.set_state_dict(state)
    return state


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
        counts = {f.__name__: _count(f(num_classes=1000))
                  for f in (ResNeXt50_32x4d, ResNeXt101_32x4d, ResNeXt101_64x4d)}
        features_only = ResNeXt50_32x4d()
    assert counts == {'ResNeXt50_32x4d': 25_028_904,     # torchvision resnext50_32x4d
                      'ResNeXt101_32x4d': 44_177_704,    # timm resnext101_32x4d
                      'ResNeXt101_64x4d': 83_455_272}    # torchvision resnext101_64x4d
    assert _count(features_only) == 25_028_904 - (2048 * 1000 + 1000)
    # a true grouped conv: 32 groups with their own 4-channel kernels (not one kernel shared by all groups)
    assert features_only.layer1[0].conv2.weight.shape == [128, 4, 3, 3]
    assert features_only.layer1[0].conv2._groups == 32
    assert features_only.feat_channels == [256, 512, 1024, 2048]


@pytest.mark.paddle26
def test_parity_with_paddle_vision_resnext50():
    paddle.seed(0)
    ref = paddle.vision.models.resnext50_32x4d()
    state = _randomize(ref, seed=1)
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
    state = _randomize(ref, seed=4)
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


def _train_steps(model, steps=4, size=(64, 64), num_classes=4, learning_rate=0.02):
    """SGD steps on one fixed random batch; returns the losses (cross entropy, auxiliary outputs weighted 0.4)."""
    paddle.seed(0)
    rng = np.random.RandomState(0)
    x = paddle.to_tensor(rng.randn(2, 3, *size).astype('float32'))
    label = paddle.to_tensor(rng.randint(0, num_classes, (2, *size)).astype('int64'))
    optimizer = paddle.optimizer.SGD(learning_rate=learning_rate, parameters=model.parameters())
    model.train()
    losses = []
    for _ in range(steps):
        logits = model(x)
        assert all(logit.shape == [2, num_classes, *size] for logit in logits)
        loss = sum(F.cross_entropy(paddle.transpose(logit, [0, 2, 3, 1]), label.unsqueeze(-1)).mean() *
                   (1.0 if i == 0 else 0.4) for i, logit in enumerate(logits))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        losses.append(float(loss))
    return losses


def test_trains_inside_a_segmentation_model():
    paddle.seed(0)
    model = SemanticFPN(4, ResNeXt50_32x4d(output_stride=16), fpn_channels=32, channels=16, dropout_prob=0.0)
    losses = _train_steps(model)
    assert losses[-1] < losses[0] * 0.9, losses


def _export_and_infer(model, tmp_path):
    """Export (free input size), run deploy/python/infer.py with oneDNN on a 64x96 image and compare its PNG with
    the dynamic graph's argmax."""
    transforms = [{'type': 'Normalize', 'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5]}]
    model.eval()
    info = export_model(model, str(tmp_path / 'export'), transforms=transforms)
    assert info['onednn'], info['onednn_error']
    image = np.random.RandomState(0).randint(0, 256, (64, 96, 3)).astype('uint8')
    Image.fromarray(image).save(tmp_path / 'img.png')
    result = subprocess.run([sys.executable, INFER, '--config', info['deploy_yaml'], '--image_path',
                             str(tmp_path / 'img.png'), '--save_dir', str(tmp_path / 'out'), '--device', 'cpu',
                             '--enable_mkldnn', 'True', '--print_detail', 'False'],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert 'oneDNN: on' in result.stderr
    pred = np.asarray(Image.open(tmp_path / 'out' / 'img.png')).astype('int64')
    x = T.Compose([T.Normalize(mean=[0.5] * 3, std=[0.5] * 3)])({'img': str(tmp_path / 'img.png')})['img']
    x = paddle.to_tensor(x[None].astype('float32'))  # the runner's preprocessing (PaddleSeg's Compose)
    with paddle.no_grad():
        logits = model(x)[0].numpy()
    ref = logits.argmax(1)[0]
    assert len(np.unique(ref)) > 1
    assert (pred == ref).mean() > 0.995


@pytest.mark.paddle26
def test_export_and_infer_with_onednn(tmp_path):
    paddle.seed(0)
    # cardinality 4 (small 3x3 convs, same graph as 32) keeps the export quick
    model = SemanticFPN(5, ResNeXt(depth=50, cardinality=4), fpn_channels=32, channels=16)
    _randomize(model, seed=6)
    _export_and_infer(model, tmp_path)


def test_pretrained_loading_ignores_only_the_classifier(tmp_path):
    paddle.seed(0)
    full = ResNeXt(depth=50, cardinality=4, num_classes=10)
    state = _randomize(full, seed=7)
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
