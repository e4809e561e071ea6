"""Running a model on one preprocessed image: whole-image or sliding-window, multi-scale and flip augmentation,
and undoing the val transforms' resizing/padding so that logits line up with the original label."""
import math

import paddle
import paddle.nn.functional as F


def first_logit(outputs):
    """Models return a list of logits (PaddleSeg convention); the first is the main output."""
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def undo_transforms(logit, trans_info, mode='bilinear'):
    """Undo the resizes and paddings recorded in ``trans_info`` (PaddleSeg's list of (op, (h, w)) entries)."""
    for op, (h, w) in reversed([(item[0][0] if isinstance(item[0], (list, tuple)) else item[0], item[1])
                                for item in trans_info or []]):
        h, w = int(h), int(w)
        if op == 'resize':
            if logit.dtype in (paddle.int32, paddle.int64):
                logit = F.interpolate(logit.astype('float32'), [h, w], mode='nearest').astype(logit.dtype)
            else:
                logit = F.interpolate(logit, [h, w], mode=mode, align_corners=False)
        elif op == 'padding':
            logit = logit[:, :, :h, :w]
        else:
            raise ValueError(f"unknown transform record {op!r} in trans_info")
    return logit


def slide_logits(model, image, crop_size, stride, num_classes=None):
    """Logits from overlapping ``crop_size`` windows moved by ``stride``, averaged where they overlap.

    Args:
        crop_size, stride: (w, h) as in PaddleSeg's flags.
    """
    _, _, h, w = image.shape
    crop_w, crop_h = crop_size
    stride_w, stride_h = stride
    rows = max(math.ceil((h - crop_h) / stride_h), 0) + 1
    cols = max(math.ceil((w - crop_w) / stride_w), 0) + 1
    total, count = None, paddle.zeros([1, 1, h, w])
    for r in range(rows):
        for c in range(cols):
            y1 = min(r * stride_h, max(h - crop_h, 0))
            x1 = min(c * stride_w, max(w - crop_w, 0))
            y2, x2 = min(y1 + crop_h, h), min(x1 + crop_w, w)
            logit = first_logit(model(image[:, :, y1:y2, x1:x2]))
            if total is None:
                total = paddle.zeros([image.shape[0], logit.shape[1], h, w])
            total[:, :, y1:y2, x1:x2] += logit
            count[:, :, y1:y2, x1:x2] += 1
    return total / count


def predict_logits(model, image, trans_info=None, is_slide=False, crop_size=None, stride=None):
    """Logits for a batch of preprocessed images, mapped back to the original size."""
    if is_slide:
        if not crop_size or not stride:
            raise ValueError("sliding-window inference needs crop_size and stride")
        logit = slide_logits(model, image, crop_size, stride)
    else:
        logit = first_logit(model(image))
    return undo_transforms(logit, trans_info)


def _flips(flip_horizontal, flip_vertical):
    combos = [(False, False)]
    if flip_horizontal:
        combos.append((True, False))
    if flip_vertical:
        combos.append((False, True))
        if flip_horizontal:
            combos.append((True, True))
    return combos


def _flip(x, horizontal, vertical):
    if horizontal:
        x = paddle.flip(x, axis=[3])
    if vertical:
        x = paddle.flip(x, axis=[2])
    return x


def aug_logits(model, image, trans_info=None, scales=1.0, flip_horizontal=False, flip_vertical=False,
               is_slide=False, crop_size=None, stride=None):
    """Sum of softmax probabilities over scales and flips (test-time augmentation), at the original size."""
    if isinstance(scales, (int, float)):
        scales = [scales]
    _, _, h, w = image.shape
    total = None
    for scale in scales:
        size = [int(h * scale + 0.5), int(w * scale + 0.5)]
        scaled = F.interpolate(image, size, mode='bilinear', align_corners=False) if scale != 1 else image
        for horizontal, vertical in _flips(flip_horizontal, flip_vertical):
            flipped = _flip(scaled, horizontal, vertical)
            if is_slide:
                logit = slide_logits(model, flipped, crop_size, stride)
            else:
                logit = first_logit(model(flipped))
            logit = _flip(logit, horizontal, vertical)
            logit = F.interpolate(logit, [h, w], mode='bilinear', align_corners=False)
            prob = F.softmax(logit, axis=1)
            total = prob if total is None else total + prob
    return undo_transforms(total, trans_info)
