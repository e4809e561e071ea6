"""Building blocks written once and shared by every model."""
from .conv import ConvBN, ConvBNAct, ConvBNReLU, activation, batch_norm_2d
from .resize import portable_resize, resize
