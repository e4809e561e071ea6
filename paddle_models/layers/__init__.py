"""Building blocks written once and shared by every model."""
from .conv import ConvBN, ConvBNAct, ConvBNReLU, activation, batch_norm_2d
from .resize import resize
from .drop_path import DropPath, drop_path, drop_path_or_identity, drop_path_rates  # noqa: F401
from .conv_init import fan_out_attr, fan_out_conv, zero_bias_attr  # noqa: F401
from .mlp import ConvMlp, Mlp  # noqa: F401
from .squeeze_excite import SqueezeExcite  # noqa: F401
from .large_kernel import ConvPatchEmbed, LayerScaleBlock, SpatialAttention  # noqa: F401
from .stages import build_stages, run_stages, stage_layers  # noqa: F401
from .norm import LayerNorm2d  # noqa: F401
from .psa import PolarizedSelfAttention  # noqa: F401
from .pyramid import ASPPModule, AuxLayer, PPModule, SeparableConvBNReLU  # noqa: F401
from .features import backbone_channels  # noqa: F401
from .ocr import OCRHead, gather_regions, object_attention  # noqa: F401
from .scale_attention import AttentionHead, check_scales, fuse_scales, output_scale, scaled_size  # noqa: F401
