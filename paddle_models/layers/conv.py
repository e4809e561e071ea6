"""Convolution + normalisation + activation blocks shared by every model."""
import paddle
import paddle.nn as nn


def batch_norm_2d(num_channels, data_format='NCHW'):
    """BatchNorm2D on CPU or a single device, SyncBatchNorm when Paddle runs on several GPUs."""
    if paddle.get_device() == 'cpu' or paddle.distributed.get_world_size() <= 1:
        return nn.BatchNorm2D(num_channels, data_format=data_format)
    return nn.SyncBatchNorm(num_channels, data_format=data_format)


_ACTIVATIONS = {
    'relu': nn.ReLU,
    'relu6': nn.ReLU6,
    'gelu': nn.GELU,
    'leakyrelu': nn.LeakyReLU,
    'sigmoid': nn.Sigmoid,
    'hardswish': nn.Hardswish,
    'silu': nn.Silu,
}


def activation(name):
    """An activation layer by name ('relu', 'gelu', ...); ``None`` or 'identity' gives ``nn.Identity``."""
    if name is None or name == 'identity':
        return nn.Identity()
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(_ACTIVATIONS)}") from None


class ConvBNAct(nn.Layer):
    """Conv2D -> BatchNorm -> activation.

    Parameter names (``_conv``, ``_batch_norm``) are PaddleSeg's ``ConvBN``/``ConvBNReLU`` names, so PaddleSeg
    checkpoints load into models built from this block.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Kernel size.
        padding (int|str): Padding; 'same' (default) keeps the spatial size at stride 1.
        act (str|None): Activation name, or None for ConvBN. Default: 'relu'.
        **kwargs: Passed on to ``nn.Conv2D`` (stride, dilation, groups, bias_attr, data_format).
    """

    def __init__(self, in_channels, out_channels, kernel_size, padding='same', act='relu', **kwargs):
        super().__init__()
        self._conv = nn.Conv2D(in_channels, out_channels, kernel_size, padding=padding, **kwargs)
        self._batch_norm = batch_norm_2d(out_channels, kwargs.get('data_format', 'NCHW'))
        self._act = activation(act)

    @property
    def conv(self):
        """The convolution (registered as ``_conv``, PaddleSeg's parameter name): for a caller that folds its
        weight into another linear map, as SegFormer's decoder does."""
        return self._conv

    def norm_act(self, x):
        """Normalisation and activation: the block after its convolution, for a caller that computed the
        convolution another way."""
        return self._act(self._batch_norm(x))

    def folded_norm(self):
        """(scale, shift), each [out_channels]: the batch norm with its running statistics (inference) as
        ``x * scale + shift``, with the conv's own bias folded into ``shift``, so that ``norm(conv(x))`` is
        ``conv_without_bias(x) * scale + shift``; for a caller that folds the block into another linear map
        (SegFormer's and the ASPP's exported forms)."""
        bn = self._batch_norm
        scale = bn.weight / paddle.sqrt(bn._variance + bn._epsilon)
        shift = bn.bias - bn._mean * scale
        if self._conv.bias is not None:
            shift = shift + self._conv.bias * scale
        return scale, shift

    def forward(self, x):
        return self.norm_act(self._conv(x))


def ConvBNReLU(in_channels, out_channels, kernel_size, padding='same', **kwargs):
    """``ConvBNAct`` with ReLU (PaddleSeg's ``layers.ConvBNReLU``)."""
    return ConvBNAct(in_channels, out_channels, kernel_size, padding=padding, act='relu', **kwargs)


def ConvBN(in_channels, out_channels, kernel_size, padding='same', **kwargs):
    """``ConvBNAct`` without activation (PaddleSeg's ``layers.ConvBN``)."""
    return ConvBNAct(in_channels, out_channels, kernel_size, padding=padding, act=None, **kwargs)
