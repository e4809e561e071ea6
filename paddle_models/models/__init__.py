"""Models. Importing this package registers each model in ``paddleseg.cvlibs.manager.MODELS``."""
from .hardnet import HarDNet  # noqa: F401
from .semantic_fpn import SemanticFPN  # noqa: F401
from .pspnet import PSPNet  # noqa: F401
from .deeplab import DeepLabV3  # noqa: F401
from .unet_plusplus import UNetPlusPlus  # noqa: F401
from .unet_3plus import UNet3Plus  # noqa: F401
from .linknet import LinkNet  # noqa: F401
from .upernet import UPerNet  # noqa: F401
from .segformer import SegFormer, SegFormer_B0, SegFormer_B1, SegFormer_B2, SegFormer_B3, SegFormer_B4, SegFormer_B5  # noqa: F401,E501
from .fcn import FCN  # noqa: F401
from .ocrnet import OCRNet  # noqa: F401
from .multiscale_attention import MultiScaleAttention  # noqa: F401
from .mscale_ocrnet import MscaleOCRNet  # noqa: F401
from .segnext import SegNeXt, SegNeXt_T, SegNeXt_S, SegNeXt_B, SegNeXt_L  # noqa: F401
