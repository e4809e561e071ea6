"""PSPNet and DeepLabV3 (small backbones): outputs per mode (PSPNet's auxiliary head in training only), the pyramid
pooling bins, DeepLabV3's ASPP rates per output stride and its image-pooling branch, pretrained files saved from
PaddleSeg's classes, argument errors."""

import numpy as np
import paddle
import paddleseg
import pytest
from paddleseg.models.backbones.resnet_vd import ResNet18_vd as RefResNet18_vd

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones.resnet_vd import ResNet18_vd
from paddle_models.errors import UserError
from paddle_models.layers.deploy import DeployTarget, deploy_form
from paddle_models.layers.pyramid import ASPPModule, LowResPPModule, PPModule, SplitFusionASPP
from paddle_models.models.deeplab import DeepLabV3
from paddle_models.models.pspnet import PSPNet


def _pspnet(**kwargs):
    paddle.seed(0)
    return PSPNet(num_classes=3, backbone=ResNet18_vd(output_stride=8), pp_out_channels=16, **kwargs)


def test_pspnet_outputs_and_auxiliary_head():
    x = paddle.randn([2, 3, 40, 56])
    model = _pspnet()
    model.train()
    outputs = model(x)
    assert len(outputs) == 2 and all(o.shape == [2, 3, 40, 56] for o in outputs)
    model.eval()
    assert len(model(x)) == 1
    # the auxiliary head reads feature 2 (ResNet18_vd: 256 channels), with 256 / 4 inner channels
    assert model.head.auxlayer.conv_bn_relu._conv.weight.shape == [64, 256, 3, 3]
    model = _pspnet(enable_auxiliary_loss=False)
    model.train()
    assert len(model(x)) == 1 and not hasattr(model.head, 'auxlayer')


def test_pyramid_pooling_bins():
    ppm = PPModule(in_channels=32, out_channels=8, bin_sizes=(1, 2, 3, 6), dim_reduction=True, align_corners=False)
    assert [stage[0]._output_size for stage in ppm.stages] == [(1, 1), (2, 2), (3, 3), (6, 6)]
    assert [stage[1]._conv.weight.shape for stage in ppm.stages] == [[8, 32, 1, 1]] * 4  # 32 / 4 bins
    assert ppm.conv_bn_relu2._conv.weight.shape == [8, 64, 3, 3]
    ppm.eval()
    x = paddle.randn([1, 32, 13, 9])
    assert ppm(x).shape == [1, 8, 13, 9]
    # a bin's branch is a pooled summary: a constant input gives a constant-per-channel branch
    branch = ppm.stages[3](paddle.ones([1, 32, 12, 12]))
    # (float32 rounding of the pooled sums: relative to the branch's size, whatever the random weights)
    assert branch.shape == [1, 8, 6, 6]
    assert float(branch.std(axis=[2, 3]).max()) < 1e-5 * max(1.0, float(branch.abs().max()))
    wide = PPModule(in_channels=32, out_channels=8, bin_sizes=(1, 3), dim_reduction=False, align_corners=True)
    assert wide.conv_bn_relu2._conv.weight.shape == [8, 32 * 3, 3, 3]


@pytest.mark.parametrize('output_stride, expected', [(16, (1, 6, 12, 18)), (8, (1, 12, 24, 36))])
def test_deeplabv3_rates_follow_output_stride(output_stride, expected):
    model = DeepLabV3(num_classes=3, backbone=ResNet18_vd(output_stride=output_stride), aspp_out_channels=8)
    assert model.aspp_ratios == expected
    blocks = model.head.aspp.aspp_blocks
    assert blocks[0]._conv.weight.shape[2:] == [1, 1]
    assert [b._conv._dilation[0] for b in blocks[1:]] == list(expected[1:])
    assert all(b._conv.weight.shape[2:] == [3, 3] for b in blocks[1:])
    explicit = DeepLabV3(num_classes=3, backbone=ResNet18_vd(output_stride=output_stride), aspp_ratios=(1, 2),
                         aspp_out_channels=8)
    assert explicit.aspp_ratios == (1, 2)
    model.eval()
    assert model(paddle.randn([1, 3, 48, 40]))[0].shape == [1, 3, 48, 40]


def test_aspp_image_pooling_branch():
    aspp = ASPPModule((1, 2), in_channels=4, out_channels=6, align_corners=False, image_pooling=True)
    aspp.eval()
    assert aspp.conv_bn_relu._conv.weight.shape == [6, 18, 1, 1]  # two rates + image pooling
    assert aspp.global_avg_pool[1]._conv.bias is None
    # the image-level branch sees the whole map: moving one pixel far away changes every output pixel
    x = paddle.zeros([1, 4, 9, 9])
    y = x.clone()
    y[:, :, 0, 0] = 5.0
    changed = np.abs(aspp(x).numpy() - aspp(y).numpy())[0].max(axis=0)
    assert (changed[4:, 4:] > 0).all()
    without = ASPPModule((1, 2), in_channels=4, out_channels=6, align_corners=False, image_pooling=False)
    without.eval()
    changed = np.abs(without(x).numpy() - without(y).numpy())[0].max(axis=0)
    assert (changed[4:, 4:] == 0).all()


def test_pretrained_files_saved_from_paddleseg(tmp_path):
    """A checkpoint written from PaddleSeg's own PSPNet / DeepLabV3 loads through ``pretrained`` (strict)."""
    x = paddle.randn([1, 3, 32, 32])
    cases = [
        (paddleseg.models.PSPNet, PSPNet, dict(pp_out_channels=16)),
        (paddleseg.models.DeepLabV3, DeepLabV3, dict(aspp_out_channels=8, aspp_ratios=(1, 12, 24, 36))),
    ]
    for reference_cls, our_cls, kwargs in cases:
        reference = reference_cls(num_classes=3, backbone=RefResNet18_vd(output_stride=8), **kwargs)
        path = str(tmp_path / f'{our_cls.__name__}.pdparams')
        paddle.save(reference.state_dict(), path)
        ours = our_cls(num_classes=3, backbone=ResNet18_vd(output_stride=8), pretrained=path, **kwargs)
        reference.eval()
        ours.eval()
        np.testing.assert_allclose(ours(x)[0].numpy(), reference(x)[0].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('build, message', [
    (lambda: PSPNet(3, ResNet18_vd(), backbone_indices=(2, 4)),
     "PSPNet: backbone_indices must be a list of 2 integers in [0, 3] (the backbone has 4 outputs), got [2, 4]"),
    (lambda: DeepLabV3(3, ResNet18_vd(), backbone_indices=(1, 3)),
     "DeepLabV3: backbone_indices must be a list of 1 integers in [0, 3] (the backbone has 4 outputs), got [1, 3]"),
    (lambda: DeepLabV3(3, paddle.nn.Conv2D(3, 3, 1)),
     "DeepLabV3: the backbone Conv2D has no feat_channels"),
    (lambda: PSPNet(3, ResNet18_vd(), bin_sizes=(1, 0)),
     "PPModule: bin_sizes must be a list of integers >= 1, got [1, 0]"),
    (lambda: DeepLabV3(3, ResNet18_vd(), aspp_ratios=(1, 'six')),
     "ASPPModule: aspp_ratios must be a list of integers >= 1, got [1, 'six']"),
    (lambda: PSPNet(0, ResNet18_vd()), "PSPNet: num_classes must be an integer >= 1, got 0"),
])
def test_bad_arguments(build, message):
    with pytest.raises(UserError) as err:
        build()
    assert str(err.value) == message


@pytest.mark.parametrize('align_corners, dim_reduction, size', [(False, True, (13, 9)), (True, False, (1, 5)),
                                                                 (False, False, (24, 24))])
def test_pyramid_low_res_branches_equal_the_concatenation(align_corners, dim_reduction, size):
    """The exported graph's form of the pyramid (the branches' part of the 3x3 fusion conv computed on the pooled
    grids, then upsampled by shifted interpolation matrices) gives the fusion conv's output over the concatenation
    of the upsampled branches."""
    import paddle.nn.functional as F
    paddle.seed(3)
    ppm = PPModule(in_channels=12, out_channels=8, bin_sizes=(1, 2, 3, 6), dim_reduction=dim_reduction,
                   align_corners=align_corners)
    ppm.eval()
    x = paddle.randn([2, 12, *size])
    with paddle.no_grad():
        branches = [F.interpolate(stage(x), size=list(size), mode='bilinear', align_corners=align_corners)
                    for stage in ppm.stages]
        expected = ppm.conv_bn_relu2.conv(paddle.concat([x] + branches[::-1], axis=1))
        low_res = deploy_form(ppm, DeployTarget(program='pir'))
        assert isinstance(low_res, LowResPPModule)
        got = low_res.fused_conv(x)
    assert got.shape == expected.shape == [2, 8, *size]
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0,
                               atol=1e-5 * max(1.0, float(expected.abs().max())))


@pytest.mark.parametrize('image_pooling, use_sep_conv, align_corners', [(True, False, False), (False, True, True),
                                                                        (True, True, True)])
def test_aspp_split_fusion_equals_the_concatenation(image_pooling, use_sep_conv, align_corners):
    """The exported graph's ASPP (the fusion conv as a sum of per-branch slices with its batch norm folded in, the
    image-pooling branch added per channel) gives the concatenation's values, with running statistics that are not
    the identity."""
    paddle.seed(4)
    aspp = ASPPModule((1, 2, 3), in_channels=8, out_channels=6, align_corners=align_corners,
                      use_sep_conv=use_sep_conv, image_pooling=image_pooling)
    rng = np.random.RandomState(5)
    for name, value in aspp.state_dict().items():
        if name.endswith(('_mean', '_variance', '_batch_norm.weight', '_batch_norm.bias')):
            value.set_value((rng.rand(*value.shape) + 0.5).astype('float32'))
    aspp.eval()
    x = paddle.randn([2, 8, 11, 7])
    with paddle.no_grad():
        split = deploy_form(aspp, DeployTarget(program='pir'))
        assert isinstance(split, SplitFusionASPP)
        want, got = aspp(x).numpy(), split(x).numpy()
    assert got.shape == want.shape == (2, 6, 11, 7) and (want > 0).any()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))
