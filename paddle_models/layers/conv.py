"""Convolution + normalisation + activation blocks shared by every model."""
import copy

import numpy as np
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

    @property
    def norm(self):
        """The batch norm (registered as ``_batch_norm``): for a deploy form that applies it after computing the
        convolution another way (the pyramid modules', SegFormer's)."""
        return self._batch_norm

    @property
    def act(self):
        """The activation layer (registered as ``_act``)."""
        return self._act

    def norm_act(self, x):
        """Normalisation and activation: the block after its convolution, for a caller that computed the
        convolution another way."""
        return self._act(self._batch_norm(x))

    def folded_norm(self):
        """(scale, shift), each [out_channels]: the batch norm with its running statistics (inference) as
        ``x * scale + shift``, with the conv's own bias folded into ``shift``, so that ``norm(conv(x))`` is
        ``conv_without_bias(x) * scale + shift``; for a caller that folds the block into another linear map
        (SegFormer's and the ASPP's exported forms). See :func:`folded_norm`."""
        return folded_norm(self._conv, self._batch_norm)

    def forward(self, x):
        return self.norm_act(self._conv(x))

    def to_deploy(self, target):
        """The deploy form (``layers/deploy.py``): with ``target.fold_norms``, a :class:`ConvAct` whose convolution
        has the batch norm folded in (a plain NCHW ``Conv2D`` + ``BatchNorm2D`` only); else this block.

        Why: Paddle Inference's oneDNN passes fold each conv + batch norm pair when the predictor is created (a
        fuse pass, then constant folding that runs each pair's arithmetic as a small program); on a model with
        about a thousand of them (MscaleOCRNet on HRNet-W48) that is half of ``create_predictor``. Folded once
        here, the program holds conv2d + bias, which the same passes fuse as before. Legacy programs are exported
        unfolded (``core/export`` sets ``fold_norms`` off there: a legacy conv's bias is traced as ``reshape2`` +
        ``elementwise_add``, which Paddle Inference's conv + bias fusion does not match)."""
        if not (target.fold_norms and type(self._conv) is nn.Conv2D and type(self._batch_norm) is nn.BatchNorm2D
                and self._conv._data_format == 'NCHW' and self._batch_norm._data_format == 'NCHW'):
            return self
        return ConvAct(folded_conv(self._conv, self._batch_norm), self._act)


def folded_norm(conv, norm):
    """(scale, shift), each [out_channels], of the batch norm ``norm`` (running statistics) after ``conv``:
    ``norm(conv(x)) == conv_without_bias(x) * scale + shift`` (the conv's bias folded into ``shift``). Tensors of
    the graph being built (a deploy form that folds in-graph calls it in its forward)."""
    scale = norm.weight / paddle.sqrt(norm._variance + norm._epsilon)
    shift = norm.bias - norm._mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    return scale, shift


def folded_conv(conv, norm):
    """A new ``nn.Conv2D`` computing ``norm(conv(x))`` (batch norm with its running statistics): weights
    ``w * g / sqrt(var + eps)``, bias ``(b - mean) * g / sqrt(var + eps) + beta``, computed once in float64."""
    out_channels = conv.weight.shape[0]
    gamma = norm.weight.numpy().astype('float64') if norm.weight is not None else np.ones(out_channels)
    beta = norm.bias.numpy().astype('float64') if norm.bias is not None else np.zeros(out_channels)
    scale = gamma / np.sqrt(norm._variance.numpy().astype('float64') + norm._epsilon)
    bias = conv.bias.numpy().astype('float64') if conv.bias is not None else np.zeros(out_channels)
    new = copy.deepcopy(conv)
    new.weight.set_value((conv.weight.numpy().astype('float64') *
                          scale.reshape([-1] + [1] * (len(conv.weight.shape) - 1))).astype('float32'))
    if new.bias is None:
        new.bias = new.create_parameter([out_channels], is_bias=True, dtype='float32')
    new.bias.set_value(((bias - norm._mean.numpy().astype('float64')) * scale + beta).astype('float32'))
    return new


class ConvAct(nn.Layer):
    """A convolution followed by an activation: a :class:`ConvBNAct` with its batch norm folded into the
    convolution (:meth:`ConvBNAct.to_deploy`).

    Args:
        conv (nn.Conv2D): The convolution (with the folded bias).
        act (nn.Layer): The activation.
    """

    def __init__(self, conv, act):
        super().__init__()
        self.conv = conv
        self.act = act

    def forward(self, x):
        return self.act(self.conv(x))


def ConvBNReLU(in_channels, out_channels, kernel_size, padding='same', **kwargs):
    """``ConvBNAct`` with ReLU (PaddleSeg's ``layers.ConvBNReLU``)."""
    return ConvBNAct(in_channels, out_channels, kernel_size, padding=padding, act='relu', **kwargs)


def ConvBN(in_channels, out_channels, kernel_size, padding='same', **kwargs):
    """``ConvBNAct`` without activation (PaddleSeg's ``layers.ConvBN``)."""
    return ConvBNAct(in_channels, out_channels, kernel_size, padding=padding, act=None, **kwargs)
