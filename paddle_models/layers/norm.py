"""Layer normalisation over the channels of NCHW feature maps."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F


class LayerNorm2d(nn.Layer):
    """LayerNorm over the channel axis of an [N, C, H, W] tensor: every pixel's C values are normalised to zero mean
    and unit variance, then scaled by ``weight`` and shifted by ``bias`` (per channel).

    The tensor is moved to channels-last, normalised with ``layer_norm`` and moved back (transpose and layer_norm
    both run under Paddle Inference's oneDNN executor).

    Args:
        num_channels (int): C.
        epsilon (float): Added to the variance. Default: 1e-6.
    """

    def __init__(self, num_channels, epsilon=1e-6):
        super().__init__()
        self.num_channels = num_channels
        self.epsilon = epsilon
        self.weight = self.create_parameter([num_channels], default_initializer=nn.initializer.Constant(1.0))
        self.bias = self.create_parameter([num_channels], is_bias=True,
                                          default_initializer=nn.initializer.Constant(0.0))

    def forward(self, x):
        x = paddle.transpose(x, [0, 2, 3, 1])
        x = F.layer_norm(x, [self.num_channels], weight=self.weight, bias=self.bias, epsilon=self.epsilon)
        return paddle.transpose(x, [0, 3, 1, 2])

    def extra_repr(self):
        return f"{self.num_channels}, epsilon={self.epsilon}"
