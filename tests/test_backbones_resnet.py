"""ResNet backbones: ResNet*_vd against PaddleSeg 2.8.0's ResNet_vd (weights and outputs), output strides, dilation
and multi-grid, and the torchvision-layout ResNet-18/34 against paddle.vision's ResNet (same names) plus the
torchvision key map."""
import os

import numpy as np
import paddle
import pytest
from paddleseg.cvlibs import manager
from paddleseg.models.backbones import resnet_vd as reference


import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones import resnet_vd
from paddle_models.backbones.resnet import ResNet, ResNet18, ResNet34, convert_torchvision_weights
from paddle_models.errors import UserError
from helpers import load_script


def _randomized(state, seed):
    """Random BN statistics, BN affine terms and biases (fresh ones are near-identity and would hide a mis-wired
    statistic); conv and linear weights keep their random initial values."""
    rng = np.random.RandomState(seed)
    out = {}
    for key, value in state.items():
        shape = value.shape
        if key.endswith('_variance'):
            array = rng.uniform(0.5, 1.5, shape)
        elif key.endswith('_mean') or key.endswith('bias'):
            array = rng.uniform(-0.2, 0.2, shape)
        elif key.endswith('weight') and len(shape) == 1:  # BN scale
            array = rng.uniform(0.5, 1.5, shape)
        else:  # conv / linear weights: already random (the reference's own initialisation)
            out[key] = value
            continue
        out[key] = paddle.to_tensor(array.astype('float32'))
    return out


@pytest.mark.paddle26
@pytest.mark.parametrize('layers, kwargs, size', [
    (18, dict(output_stride=8), (45, 61)),
    (34, dict(output_stride=16, multi_grid=(1, 2, 4)), (40, 40)),
    (50, dict(output_stride=8, multi_grid=(1, 2, 4)), (33, 47)),
    (101, dict(output_stride=32, in_channels=1), (32, 32)),
])
def test_resnet_vd_matches_paddleseg(layers, kwargs, size):
    paddle.seed(0)
    ref = reference.ResNet_vd(layers=layers, **kwargs)
    paddle.seed(1)
    ours = resnet_vd.ResNet_vd(layers=layers, **kwargs)
    state = _randomized(ref.state_dict(), seed=layers)
    ref.set_state_dict(state)
    own = ours.state_dict()
    assert list(own) == list(state)  # same names in the same order
    assert all(list(own[k].shape) == list(state[k].shape) for k in state)
    assert ours.feat_channels == ref.feat_channels
    assert [len(s) for s in ours.stage_list] == [len(s) for s in ref.stage_list]

    ref.eval()
    ours.eval()
    x = paddle.to_tensor(np.random.RandomState(2).randn(2, kwargs.get('in_channels', 3), *size).astype('float32'))
    expected = [f.numpy() for f in ref(x)]
    before = ours(x)[-1].numpy()
    assert np.abs(before - expected[-1]).max() > 1e-2  # independently initialised: must differ before loading
    missing, unexpected = ours.set_state_dict(state)
    assert not missing and not unexpected
    got = [f.numpy() for f in ours(x)]
    assert len(got) == 4
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(b).max())))


@pytest.mark.parametrize('output_stride, sizes, dilations', [
    (32, [16, 8, 4, 2], [[1] * 3, [1] * 4, [1] * 6, [1, 2, 4]]),  # multi-grid applies at 32 too
    (16, [16, 8, 4, 4], [[1] * 3, [1] * 4, [1] * 6, [2, 4, 8]]),
    (8, [16, 8, 8, 8], [[1] * 3, [1] * 4, [2] * 6, [4, 8, 16]]),
])
def test_output_stride_and_multi_grid(output_stride, sizes, dilations):
    model = resnet_vd.ResNet34_vd(output_stride=output_stride, multi_grid=(1, 2, 4))
    model.eval()
    features = model(paddle.randn([1, 3, 64, 64]))
    assert [f.shape[2] for f in features] == sizes
    assert [f.shape[1] for f in features] == [64, 128, 256, 512] == model.feat_channels
    assert model.dilations == dilations
    # the 3x3 convs of the last stage really are dilated (and the first block strides only without dilation)
    last = model.stage_list[3]
    assert [b.conv0._conv._dilation[0] for b in last] == dilations[3]
    assert last[0].conv0._conv._stride[0] == (2 if output_stride == 32 else 1)


def test_bottleneck_widths_and_vd_shortcut():
    model = resnet_vd.ResNet50_vd(output_stride=32)
    assert model.feat_channels == [256, 512, 1024, 2048]
    block = model.stage_list[1][0]  # first block of stage 2: strided, projection average-pools first
    assert block.short.is_vd_mode and block.conv1._conv._stride[0] == 2
    assert not model.stage_list[0][0].short.is_vd_mode  # the very first block never pools


def test_registered_backbones():
    for name in ('ResNet18_vd', 'ResNet34_vd', 'ResNet50_vd', 'ResNet101_vd', 'ResNet18', 'ResNet34'):
        assert manager.BACKBONES[name].__module__.startswith('paddle_models.backbones.'), name


@pytest.mark.parametrize('kwargs, message', [
    (dict(layers=42), "ResNet_vd: layers must be one of 18, 34, 50, 101, 152, 200, got 42"),
    (dict(output_stride=4), "ResNet_vd: output_stride must be one of 8, 16, 32, got 4"),
    (dict(multi_grid=(1, 2)), "ResNet_vd: multi_grid must be a list of 3 integers >= 1, got [1, 2]"),
    (dict(multi_grid=(1, 0, 2)), "ResNet_vd: multi_grid must be a list of integers >= 1, got [1, 0, 2]"),
    (dict(data_format='NHWC'), "ResNet_vd: data_format must be one of 'NCHW', got 'NHWC'"),
])
def test_resnet_vd_bad_arguments(kwargs, message):
    with pytest.raises(UserError) as err:
        resnet_vd.ResNet_vd(**kwargs)
    assert str(err.value) == message


def test_resnet_vd_pretrained_file(tmp_path):
    source = resnet_vd.ResNet18_vd(output_stride=32)
    source.set_state_dict(_randomized(source.state_dict(), 3))
    path = str(tmp_path / 'r18.pdparams')
    paddle.save(source.state_dict(), path)
    loaded = resnet_vd.ResNet18_vd(output_stride=32, pretrained=path)
    source.eval()
    loaded.eval()
    x = paddle.randn([1, 3, 32, 32])
    np.testing.assert_array_equal(loaded(x)[-1].numpy(), source(x)[-1].numpy())
    deeper = [k for k in resnet_vd.ResNet34_vd().state_dict() if k not in source.state_dict()]
    with pytest.raises(UserError) as err:
        resnet_vd.ResNet34_vd(pretrained=path)
    assert deeper[0] == 'bb_0_2.conv0._conv.weight'
    assert str(err.value) == (f"ResNet_vd: pretrained weights {path} does not fit the model: {len(deeper)} keys "
                              f"missing from the file ({', '.join(deeper[:3])}, ...)")


@pytest.mark.parametrize('ours, vision, trainable', [
    (ResNet18, paddle.vision.models.resnet18, 11176512),
    (ResNet34, paddle.vision.models.resnet34, 21284672),
])
def test_torchvision_layout_resnet_matches_paddle_vision(ours, vision, trainable):
    """paddle.vision's ResNet has torchvision's names; ours must hold exactly the same tensors and compute the same
    features (checked at every stage) and logits."""
    model = ours(num_classes=10)
    ref = vision(num_classes=10)
    state = _randomized(ref.state_dict(), seed=5)
    ref.set_state_dict(state)
    assert list(model.state_dict()) == list(state)
    model.set_state_dict(state)
    model.eval()
    ref.eval()
    x = paddle.to_tensor(np.random.RandomState(6).randn(2, 3, 50, 70).astype('float32'))
    features = model(x)
    assert [list(f.shape) for f in features] == [[2, 64, 13, 18], [2, 128, 7, 9], [2, 256, 4, 5], [2, 512, 2, 3]]
    y = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
    for stage, feature in zip((ref.layer1, ref.layer2, ref.layer3, ref.layer4), features):
        y = stage(y)
        np.testing.assert_allclose(feature.numpy(), y.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.classify(x).numpy(), ref(x).numpy(), rtol=1e-5, atol=1e-5)
    backbone = ours()  # no classifier: exactly the feature extractor's parameters
    assert sum(int(np.prod(p.shape)) for p in backbone.parameters() if not p.stop_gradient) == trainable


def test_torchvision_key_map(tmp_path):
    """A state dict in torchvision's naming (running_mean/var, num_batches_tracked, fc.weight as [out, in]) converts
    into one that loads strictly into ResNet18 and reproduces the source network."""
    source = ResNet18(num_classes=7)
    source.set_state_dict(_randomized(source.state_dict(), seed=8))
    torch_style = {}
    for key, value in source.state_dict().items():
        array = value.numpy()
        if key == 'fc.weight':
            array = array.T  # torch.nn.Linear stores [out, in]
        key = key.replace('._mean', '.running_mean').replace('._variance', '.running_var')
        torch_style[key] = array
        if key.endswith('running_var'):
            torch_style[key.replace('running_var', 'num_batches_tracked')] = np.array(100)
    converted, kwargs = convert_torchvision_weights(torch_style)
    assert kwargs == {'num_classes': 7}
    assert not any('running' in k or 'num_batches' in k for k in converted)
    path = str(tmp_path / 'resnet18.pdparams')
    paddle.save({k: paddle.to_tensor(v) for k, v in converted.items()}, path)
    loaded = ResNet18(num_classes=7, pretrained=path)
    backbone_only = ResNet18(pretrained=path)  # the classifier is ignored by a feature extractor
    x = paddle.randn([1, 3, 40, 40])
    for model in (source, loaded, backbone_only):
        model.eval()
    np.testing.assert_allclose(loaded.classify(x).numpy(), source.classify(x).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(backbone_only(x)[-1].numpy(), source(x)[-1].numpy(), rtol=1e-6, atol=1e-6)


def test_resnet_bad_arguments():
    with pytest.raises(UserError) as err:
        ResNet(layers=50)
    assert str(err.value) == "ResNet: layers must be one of 18, 34, got 50"
    with pytest.raises(UserError) as err:
        ResNet18().classify(paddle.randn([1, 3, 32, 32]))
    assert str(err.value) == "ResNet: classify() needs a model built with num_classes > 0"
    missing = os.path.join('nowhere', 'r18.pdparams')
    with pytest.raises(UserError) as err:
        ResNet18(pretrained=missing)
    assert str(err.value) == (f"ResNet: pretrained weights not found: {missing} "
                              f"(absolute: {os.path.abspath(missing)})")  # relative: read against the cwd


def test_convert_tool_finds_the_torchvision_key_map():
    """tools/convert_weights.py finds key maps by name in the architecture's file: ResNet18/34 offer 'torchvision'."""
    tool = load_script(os.path.join('tools', 'convert_weights.py'))
    for arch in ('ResNet18', 'ResNet34'):
        assert tool.key_maps(tool.find_arch(arch)) == {'torchvision': convert_torchvision_weights}
