"""Transforms: ours replace PaddleSeg's entries of the same name where PaddleSeg 2.8.0's fails (see each module);
the others used by our configs (Normalize, ResizeStepScaling, RandomHorizontalFlip, RandomDistort, Padding,
RandomScaleAspect) are PaddleSeg's own, checked by tests/test_transforms.py."""
from .crop import RandomPaddingCrop  # noqa: F401
