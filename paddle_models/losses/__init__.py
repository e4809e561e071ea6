"""Losses."""
from .focal import FocalLoss  # noqa: F401
from .ms_ssim import MSSSIMLoss  # noqa: F401
from .iou import IoULoss  # noqa: F401
from .bce import ForegroundBCELoss  # noqa: F401
from .cross_entropy import CrossEntropyLoss  # noqa: F401
