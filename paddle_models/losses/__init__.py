"""Losses."""
from .focal import FocalLoss  # noqa: F401
from .ms_ssim import MSSSIMLoss  # noqa: F401
from .iou import IoULoss  # noqa: F401
from .bce import ForegroundBCELoss  # noqa: F401
from .cross_entropy import CrossEntropyLoss  # noqa: F401
from .ohem_cross_entropy import OhemCrossEntropyLoss  # noqa: F401
from .bootstrapped_cross_entropy import BootstrappedCrossEntropyLoss  # noqa: F401
from .rmi import RMILoss  # noqa: F401
from .mixed import MixedLoss  # noqa: F401
