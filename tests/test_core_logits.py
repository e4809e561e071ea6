"""Inference helpers: sliding windows, test-time augmentation and undoing the val transforms."""
import os

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import val as val_tool
from paddle_models.core.logits import aug_logits, predict_logits, slide_logits, undo_transforms
from helpers import tiny_config, tiny_hardnet


class PixelwiseModel(paddle.nn.Layer):
    """A 1x1 convolution: its output at a pixel depends on that pixel alone, so windows and flips can't change it."""

    def __init__(self):
        super().__init__()
        paddle.seed(0)
        self.conv = paddle.nn.Conv2D(3, 4, 1)

    def forward(self, x):
        return [self.conv(x)]


def image(h=37, w=53):
    return paddle.to_tensor(np.random.RandomState(0).rand(1, 3, h, w).astype('float32'))


def test_slide_windows_cover_the_image_and_average_overlaps():
    model, x = PixelwiseModel(), image()
    expected = model(x)[0].numpy()
    # overlapping windows, a last window clamped to the border, and a window larger than the image
    for crop, stride in (((16, 16), (10, 10)), ((20, 15), (20, 15)), ((64, 64), (32, 32))):
        np.testing.assert_allclose(slide_logits(model, x, crop, stride).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_slide_counts_each_window_once():
    class Ones(paddle.nn.Layer):
        def forward(self, x):
            return [paddle.ones([x.shape[0], 1, x.shape[2], x.shape[3]])]
    out = slide_logits(Ones(), image(), (16, 16), (8, 8))
    np.testing.assert_allclose(out.numpy(), 1.0)  # the sum is divided by the number of windows at each pixel


def test_flip_and_scale_augmentation():
    model, x = PixelwiseModel(), image()
    prob = F.softmax(model(x)[0], axis=1).numpy()
    flipped = aug_logits(model, x, flip_horizontal=True, flip_vertical=True)
    np.testing.assert_allclose(flipped.numpy(), 4 * prob, rtol=1e-5, atol=1e-6)  # 4 flip combinations
    scaled = aug_logits(model, x, scales=[1.0, 2.0]).numpy()
    assert scaled.shape == prob.shape
    # the sum of two probability maps (each resized back to the input size)
    np.testing.assert_allclose(scaled.sum(axis=1), 2.0, rtol=1e-5)
    assert np.abs(scaled / 2 - prob).mean() < 0.02


def test_undo_transforms_resizes_and_crops_back():
    logit = paddle.arange(2 * 8 * 8, dtype='float32').reshape([1, 2, 8, 8])
    # records as PaddleSeg's transforms write them, in the order applied, each with the size before it: a 4x6
    # image resized to 3x5, then padded to 8x8; undone last step first
    out = undo_transforms(logit, [('resize', (4, 6)), ('padding', (3, 5))])
    assert list(out.shape) == [1, 2, 4, 6]
    expected = F.interpolate(logit[:, :, :3, :5], [4, 6], mode='bilinear', align_corners=False)
    np.testing.assert_allclose(out.numpy(), expected.numpy())
    label = paddle.to_tensor(np.arange(16).reshape(1, 1, 4, 4).astype('int64'))
    assert undo_transforms(label, [('resize', (2, 2))]).dtype == paddle.int64


def test_predict_logits_requires_window_sizes():
    with pytest.raises(ValueError, match='needs crop_size and stride'):
        predict_logits(PixelwiseModel(), image(), is_slide=True)


def test_val_with_augmentation_and_sliding_windows(tmp_path):
    config = tiny_config(tmp_path)
    paddle.save(tiny_hardnet(seed=1).state_dict(), str(tmp_path / 'w.pdparams'))
    weights = str(tmp_path / 'w.pdparams')
    plain = val_tool.main(['--config', config, '--model_path', weights, '--device', 'cpu'])
    # windows as large as the image: exactly the plain evaluation
    slide = val_tool.main(['--config', config, '--model_path', weights, '--device', 'cpu', '--is_slide',
                           '--crop_size', '64', '64', '--stride', '64', '64'])
    np.testing.assert_array_equal(plain['confusion_matrix'], slide['confusion_matrix'])
    aug = val_tool.main(['--config', config, '--model_path', weights, '--device', 'cpu', '--aug_eval',
                         '--flip_horizontal', '--scales', '0.75', '1.0'])
    assert aug['confusion_matrix'].sum() == plain['confusion_matrix'].sum()
    assert os.path.isfile(weights)
