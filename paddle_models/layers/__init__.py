"""Building blocks written once and shared by every model."""
from .conv import ConvBN, ConvBNAct, ConvBNReLU, activation, batch_norm_2d
from .resize import portable_resize, resize
from .drop_path import DropPath, drop_path  # noqa: F401
from .norm import LayerNorm2d  # noqa: F401
from .psa import PolarizedSelfAttention  # noqa: F401
from .pyramid import ASPPModule, AuxLayer, PPModule, SeparableConvBNReLU  # noqa: F401
