"""Random crop with bottom-right padding, optionally rejecting crops dominated by one class.

Registered as ``RandomPaddingCrop`` with PaddleSeg 2.8.0's arguments and defaults. PaddleSeg 2.8.0's own, with
``category_max_ratio < 1`` (SegNeXt's configs), stores the cropped *label* as the image, so training stops in
``Normalize`` ("operands could not be broadcast together"); when no crop passes the test it leaves the image uncropped
while cropping the label. PaddleSeg fixed this after 2.9; this one crops the image and every ``gt_fields`` entry at the
same window in all cases. It draws its random numbers in the same order as PaddleSeg's, so with the same NumPy seed
it picks the same window (PaddleSeg 2.8.0's label output, which was right, is reproduced exactly).

The rejection rule is the one of mmsegmentation's ``RandomCrop(cat_max_ratio)`` (used by SegFormer and SegNeXt).
"""
import numpy as np

from paddle_models.registry import register_transform
from paddle_models.utils.validate import check_int, check_ints, check_number, check_numbers

__all__ = ['RandomPaddingCrop', 'pad_bottom_right']


def pad_bottom_right(array, pad_height, pad_width, value):
    """``array`` (H, W) or (H, W, C) extended by ``pad_height`` rows at the bottom and ``pad_width`` columns at the
    right, filled with ``value`` (a number, or one number per channel).

    For integer arrays the value is rounded half to even and clipped to the dtype's range, as OpenCV's
    ``copyMakeBorder`` (which PaddleSeg uses) stores it: 127.5 pads a uint8 image with 128.
    """
    if pad_height <= 0 and pad_width <= 0:
        return array
    fill = np.asarray(value, dtype=np.float64)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        fill = np.clip(np.rint(fill), info.min, info.max)
    shape = (array.shape[0] + max(pad_height, 0), array.shape[1] + max(pad_width, 0)) + array.shape[2:]
    out = np.empty(shape, dtype=array.dtype)
    out[...] = fill.astype(array.dtype)
    out[:array.shape[0], :array.shape[1]] = array
    return out


@register_transform
class RandomPaddingCrop:
    """Pad the sample at the bottom and right up to ``crop_size`` where it is smaller, then cut a random
    ``crop_size`` window out of the image and every key in ``data['gt_fields']`` (the label), at the same place.

    With ``category_max_ratio < 1``, up to ``loop_times`` windows are tried in turn and the first one whose label
    has at least two classes (``ignore_index`` not counted), none of them covering ``category_max_ratio`` or more of
    the counted pixels, is taken; when none passes, one more random window is taken as it comes. This keeps crops
    from being nearly all road or sky.

    Args:
        crop_size (list|tuple, optional): [width, height] of the crop. Default: (512, 512).
        im_padding_value (float|list, optional): Value of padded image pixels (one number, or one per channel).
            Default: 127.5.
        label_padding_value (int, optional): Value of padded label pixels (the ignore index, so padding adds no
            loss). Default: 255.
        category_max_ratio (float, optional): Largest share of one class in an accepted crop; 1 (or more) accepts
            any crop. Default: 1.0.
        ignore_index (int, optional): Label value not counted by the share test. Default: 255.
        loop_times (int, optional): Number of windows tried against the share test. Default: 10.
    """

    def __init__(self, crop_size=(512, 512), im_padding_value=127.5, label_padding_value=255,
                 category_max_ratio=1.0, ignore_index=255, loop_times=10):
        owner = 'RandomPaddingCrop'
        width, height = check_ints(owner, 'crop_size', crop_size, length=2)
        self.crop_size = (height, width)  # stored (height, width), as PaddleSeg does
        if isinstance(im_padding_value, (list, tuple)):  # one value per channel
            self.im_padding_value = check_numbers(owner, 'im_padding_value', im_padding_value)
        else:
            self.im_padding_value = check_number(owner, 'im_padding_value', im_padding_value)
        self.label_padding_value = check_int(owner, 'label_padding_value', label_padding_value, minimum=None)
        self.category_max_ratio = check_number(owner, 'category_max_ratio', category_max_ratio, minimum=0,
                                               above_min=True)
        self.ignore_index = check_int(owner, 'ignore_index', ignore_index, minimum=None)
        self.loop_times = check_int(owner, 'loop_times', loop_times)

    def _random_window(self, image_size):
        """(y0, x0) of a crop window in an image of ``image_size`` (height, width) at least as large as the crop.
        Draws the row offset first, then the column offset (PaddleSeg's order)."""
        y0 = np.random.randint(0, image_size[0] - self.crop_size[0] + 1)
        x0 = np.random.randint(0, image_size[1] - self.crop_size[1] + 1)
        return y0, x0

    def _crop(self, array, window):
        y0, x0 = window
        return array[y0:y0 + self.crop_size[0], x0:x0 + self.crop_size[1]]

    def _balanced(self, label):
        """True when no class (ignore_index aside) covers category_max_ratio of the counted pixels and there are
        at least two classes."""
        values, counts = np.unique(label, return_counts=True)
        counts = counts[values != self.ignore_index]
        return len(counts) > 1 and counts.max() / counts.sum() < self.category_max_ratio

    def __call__(self, data):
        """Crop ``data`` (PaddleSeg's sample dict: 'img' (H, W[, C]), 'gt_fields' naming the label maps); returns
        it with 'img' and those maps replaced."""
        if tuple(data['img'].shape[:2]) == self.crop_size:
            return data
        gt_fields = data.get('gt_fields', [])
        image_size = data['img'].shape[:2]
        pad_height = max(self.crop_size[0] - image_size[0], 0)
        pad_width = max(self.crop_size[1] - image_size[1], 0)
        data['img'] = pad_bottom_right(data['img'], pad_height, pad_width, self.im_padding_value)
        for key in gt_fields:
            data[key] = pad_bottom_right(data[key], pad_height, pad_width, self.label_padding_value)
        image_size = data['img'].shape[:2]

        window = self._random_window(image_size)
        label = data['label'] if 'label' in gt_fields else None
        if self.category_max_ratio < 1.0 and label is not None:
            for _ in range(self.loop_times):
                if self._balanced(self._crop(label, window)):
                    break
                window = self._random_window(image_size)
        data['img'] = self._crop(data['img'], window)
        for key in gt_fields:
            data[key] = self._crop(data[key], window)
        return data
