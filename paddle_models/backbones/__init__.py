"""Backbones."""
from .resnext import ResNeXt, ResNeXt50_32x4d, ResNeXt101_32x4d, ResNeXt101_64x4d  # noqa: F401
from .van import VAN, VAN_B0, VAN_B1, VAN_B2, VAN_B3, VAN_B4, VAN_B5, VAN_B6  # noqa: F401
from .resnet_vd import ResNet_vd, ResNet18_vd, ResNet34_vd, ResNet50_vd, ResNet101_vd  # noqa: F401
from .resnet import ResNet, ResNet18, ResNet34  # noqa: F401
from .maxvit import MaxViT, MaxViT_T, MaxViT_S, MaxViT_B, MaxViT_L  # noqa: F401
from .mix_transformer import MixVisionTransformer, MixVisionTransformer_B0, MixVisionTransformer_B1, MixVisionTransformer_B2, MixVisionTransformer_B3, MixVisionTransformer_B4, MixVisionTransformer_B5  # noqa: F401,E501
from .hrnet import (HRNet, HRNet_W18_Small_V1, HRNet_W18_Small_V2, HRNet_W18, HRNet_W30, HRNet_W32,  # noqa: F401
                    HRNet_W40, HRNet_W44, HRNet_W48, HRNet_W60, HRNet_W64)
from .mscan import MSCAN, MSCAN_T, MSCAN_S, MSCAN_B, MSCAN_L  # noqa: F401
