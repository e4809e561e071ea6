"""LinkNet: parameter count (the paper's 11.5M with ResNet-18), the decoder blocks and final block as specified,
skips added (not concatenated), any input size, ResNet-34 encoder, argument errors."""

import numpy as np
import paddle
import paddle.nn as nn
import pytest

import paddle_models  # noqa: F401  (registers our components)
from paddle_models.backbones.resnet import ResNet18, ResNet34
from paddle_models.errors import UserError
from paddle_models.models.linknet import LinkNet, LinkNetDecoderBlock
from helpers import assert_fits_any_size


def _trainable(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)


def _decoder_params(m, n):
    """A decoder block counted from the paper's description: 1x1 conv m -> m/4, 3x3 full conv m/4 -> m/4, 1x1 conv
    m/4 -> n, no conv biases, each followed by BN (2 trainable parameters per channel)."""
    q = m // 4
    return m * q + 2 * q + 9 * q * q + 2 * q + q * n + 2 * n


@pytest.mark.parametrize('num_classes', [1, 11])
def test_parameter_count_resnet18(num_classes):
    model = LinkNet(num_classes=num_classes)
    encoder = 11176512  # torchvision resnet18 without fc (11,689,512 - 513,000)
    decoder = sum(_decoder_params(m, n) for m, n in [(512, 256), (256, 128), (128, 64), (64, 64)])
    final = 9 * 64 * 32 + 2 * 32 + 9 * 32 * 32 + 2 * 32 + 4 * 32 * num_classes + num_classes
    assert _trainable(model.backbone) == encoder
    assert _trainable(model) == encoder + decoder + final
    assert abs(_trainable(model) - 11.5e6) < 0.05e6  # the paper's "11.5M"


def test_blocks_as_specified():
    model = LinkNet(num_classes=5)
    shapes = [(64, 64, 1), (128, 64, 2), (256, 128, 2), (512, 256, 2)]  # (m, n, upsampling) of D1..D4
    for block, (m, n, stride) in zip(model.decoders, shapes):
        assert block.conv1[0].weight.shape == [m // 4, m, 1, 1]  # m channels in: the skip was added, not concat
        assert isinstance(block.full_conv[0], nn.Conv2DTranspose)
        assert block.full_conv[0].weight.shape == [m // 4, m // 4, 3, 3]
        assert block.full_conv[0]._stride == [stride, stride]
        assert block.conv2[0].weight.shape == [n, m // 4, 1, 1]
        assert all(isinstance(block[1], nn.BatchNorm2D) and isinstance(block[2], nn.ReLU)
                   for block in (block.conv1, block.full_conv, block.conv2))
    final = model.final
    assert isinstance(final[0], nn.Conv2DTranspose) and final[0].weight.shape == [64, 32, 3, 3]
    assert final[0]._stride == [2, 2]
    assert type(final[3]) is nn.Conv2D and final[3].weight.shape == [32, 32, 3, 3]
    assert isinstance(final[6], nn.Conv2DTranspose) and final[6].weight.shape == [32, 5, 2, 2]
    assert final[6]._stride == [2, 2]
    stem = model.backbone
    assert stem.conv1.weight.shape == [64, 3, 7, 7] and stem.conv1._stride == [2, 2] and stem.maxpool.ksize == 3
    assert stem.maxpool.stride == 2


def test_encoder_outputs_are_added_to_decoder_outputs():
    """The input of decoder block i is (output of block i+1) + (input of encoder stage i+1), cropped alike."""
    paddle.seed(0)
    model = LinkNet(num_classes=3)
    model.eval()
    seen = {}

    def keep(name):
        def hook(layer, inputs, output=None):
            seen[name] = (inputs[0] if output is None else output).numpy()
        return hook

    handles = [model.backbone.maxpool.register_forward_post_hook(keep('stem'))]
    for i, stage in enumerate(model.backbone.stages()):
        handles.append(stage.register_forward_post_hook(keep(f'e{i + 1}')))
    for i, block in enumerate(model.decoders):
        handles.append(block.register_forward_post_hook(keep(f'd{i + 1}_out')))
        handles.append(block.register_forward_pre_hook(keep(f'd{i + 1}_in')))
    handles.append(model.final[0].register_forward_pre_hook(keep('final_in')))
    model(paddle.randn([1, 3, 70, 90]))  # odd sizes: e4 is 3x3, e3 5x6 -- D4 upsamples 3x3 to 5x6, not 6x6
    for handle in handles:
        handle.remove()
    np.testing.assert_allclose(seen['d3_in'], seen['d4_out'] + seen['e3'], atol=1e-5)
    np.testing.assert_allclose(seen['d2_in'], seen['d3_out'] + seen['e2'], atol=1e-5)
    np.testing.assert_allclose(seen['d1_in'], seen['d2_out'] + seen['e1'], atol=1e-5)
    np.testing.assert_allclose(seen['final_in'], seen['d1_out'] + seen['stem'], atol=1e-5)
    assert seen['e4'].shape[2:] == (3, 3) and seen['e3'].shape[2:] == seen['d4_out'].shape[2:] == (5, 6)


def test_odd_sizes_equal_output_padding_and_crop():
    """Upsampling to an odd size gives the values of a transposed conv with output_padding=1 cropped."""
    paddle.seed(0)
    block = LinkNetDecoderBlock(16, 8, stride=2)
    block.eval()
    x = paddle.randn([1, 16, 3, 4])
    padded = nn.Conv2DTranspose(4, 4, 3, stride=2, padding=1, output_padding=1, bias_attr=False)
    padded.weight.set_value(block.full_conv[0].weight)
    inner = padded(block.conv1(x))[:, :, :5, :7]
    expected = block.conv2(block.full_conv[2](block.full_conv[1](inner)))
    np.testing.assert_allclose(block(x, [5, 7]).numpy(), expected.numpy(), atol=1e-6)
    assert block(x, [6, 8]).shape == [1, 8, 6, 8]


def test_any_input_size_gives_aligned_per_sample_outputs():
    # (the decoder crops each upsampled map to its skip's size: odd sizes must stay aligned with the input)
    paddle.seed(0)
    model = LinkNet(num_classes=4)
    for shape in [(1, 3, 64, 64), (2, 3, 45, 77), (1, 3, 33, 31), (1, 3, 224, 176)]:
        assert_fits_any_size(model, shape, 4)


def test_resnet34_encoder_and_one_output_in_training():
    model = LinkNet(num_classes=2, backbone=ResNet34(in_channels=1))
    assert _trainable(model) == 21641344 + 129 * 2 - 2 * 64 * 7 * 7  # a 1-channel stem conv: 2 channels fewer
    model.train()
    out = model(paddle.randn([2, 1, 32, 32]))
    assert len(out) == 1 and out[0].shape == [2, 2, 32, 32]


def test_pretrained_backbone_and_model(tmp_path):
    source = LinkNet(num_classes=3)
    path = str(tmp_path / 'linknet.pdparams')
    paddle.save(source.state_dict(), path)
    encoder_path = str(tmp_path / 'resnet18.pdparams')
    paddle.save(source.backbone.state_dict(), encoder_path)
    loaded = LinkNet(num_classes=3, pretrained=path)
    encoder_only = LinkNet(num_classes=3, backbone=ResNet18(pretrained=encoder_path))
    x = paddle.randn([1, 3, 32, 32])
    for model in (source, loaded, encoder_only):
        model.eval()
    np.testing.assert_array_equal(loaded(x)[0].numpy(), source(x)[0].numpy())
    np.testing.assert_array_equal(encoder_only.backbone(x)[-1].numpy(), source.backbone(x)[-1].numpy())


def test_bad_arguments():
    with pytest.raises(UserError) as err:
        LinkNet(num_classes=0)
    assert str(err.value) == "LinkNet: num_classes must be an integer >= 1, got 0"
    with pytest.raises(UserError) as err:
        LinkNet(num_classes=2, backbone=nn.Conv2D(3, 3, 1))
    assert str(err.value) == ("LinkNet: the backbone Conv2D lacks conv1, bn1, relu, maxpool, stages, stem_channels, "
                              "feat_channels, strides; use ResNet18 or ResNet34")
