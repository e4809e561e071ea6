"""Hamburger with non-negative matrix factorisation (NMF) and the light Hamburger decoder of SegNeXt.

References:
    Zhengyang Geng, Meng-Hao Guo, Hongxu Chen, Xia Li, Ke Wei, Zhouchen Lin, "Is Attention Better Than Matrix
    Decomposition?", ICLR 2021. https://arxiv.org/abs/2109.04553
    Meng-Hao Guo et al., "SegNeXt: Rethinking Convolutional Attention Design for Semantic Segmentation",
    NeurIPS 2022. https://arxiv.org/abs/2209.08575

NMF on a feature map x [B, C, H, W] (C split into S groups of D channels, N = H * W pixels): X [D, N] ~= bases
[D, R] @ coef^T [R, N]. coef starts as softmax(INV_T * X^T bases) (INV_T is 1 for NMF, as in both releases), then
TRAIN_STEPS / EVAL_STEPS multiplicative updates of coef and bases, one more coef update, and the reconstruction
``bases @ coef^T`` replaces x. The iterations run on a detached copy (the "one-step gradient" of the paper and of
mmseg; only the last coef update carries gradients), which also keeps training memory flat in the step count.

Where the initial bases come from (``ham_kwargs`` keys are UPPER CASE, as PaddleSeg and mmseg read them; unknown or
lower-case keys are an error here, PaddleSeg silently ignores them):

* ``RAND_INIT: True`` (default, PaddleSeg/mmseg behaviour): fresh ``paddle.rand`` bases, L2-normalised over D, on
  every forward. Eval outputs then differ from run to run (slightly: the decomposition converges towards the same
  subspace) unless the RNG is seeded before each forward.
* ``RAND_INIT: False``: one set of random bases drawn at construction, kept as the persistable buffer ``bases``.
* Deterministic inference (``inference_bases``): with RAND_INIT, eval forwards may instead start from fixed bases
  (``fixed_bases``: drawn once from ``numpy.random.RandomState(0)``, L2-normalised, not saved in checkpoints, so
  PaddleSeg weights load unchanged). ``inference_bases='auto'`` (default) keeps random bases in dynamic-graph eval
  (PaddleSeg-compatible) and uses the fixed ones in the model's deploy form (``NMF2D.to_deploy``: what an export
  traces), so exported programs are deterministic; 'fixed' uses them in every eval forward; 'random' never (an
  exported program then draws new bases on every run, like PaddleSeg's). Training always starts from random bases
  when RAND_INIT is on.
"""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.errors import UserError
from paddle_models.layers.resize import resize
from paddle_models.utils.spatial import spatial_size
from paddle_models.utils.validate import check_bool, check_choice, check_int

__all__ = ['ConvGNAct', 'NMF2D', 'Hamburger', 'LightHamHead', 'HAM_KEYS', 'INFERENCE_BASES']

HAM_KEYS = {'SPATIAL': True, 'MD_S': 1, 'MD_D': 512, 'MD_R': 64, 'TRAIN_STEPS': 6, 'EVAL_STEPS': 7, 'INV_T': 100,
            'ETA': 0.9, 'RAND_INIT': True}
INFERENCE_BASES = ('auto', 'fixed', 'random')
_EPS = 1e-6


class ConvGNAct(nn.Layer):
    """1x1-style Conv2D (no bias by default) -> GroupNorm -> optional activation, with PaddleSeg's ``ConvGNAct``
    parameter names (``_conv``, ``_group_norm``).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Kernel size (padding keeps the size).
        num_groups (int): GroupNorm groups.
        act (str|None): 'relu' or None.
        bias (bool): Conv bias. Default: False.
    """

    def __init__(self, in_channels, out_channels, kernel_size, num_groups=32, act=None, bias=False):
        super().__init__()
        if out_channels % num_groups:
            raise UserError(f"LightHamHead: {out_channels} channels are not divisible by num_groups {num_groups}")
        self._conv = nn.Conv2D(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                               bias_attr=None if bias else False)
        self._group_norm = nn.GroupNorm(num_groups, out_channels)
        self.act = act

    def forward(self, x):
        x = self._group_norm(self._conv(x))
        return F.relu(x) if self.act == 'relu' else x


def check_ham_kwargs(ham_kwargs):
    """The NMF settings with defaults filled in; a one-line UserError for a key PaddleSeg would silently ignore."""
    if ham_kwargs is None:
        ham_kwargs = {}
    if not isinstance(ham_kwargs, dict):
        raise UserError(f"LightHamHead: ham_kwargs must be a mapping, got {ham_kwargs!r}")
    for key in ham_kwargs:
        if key not in HAM_KEYS:
            hint = f" (keys are upper case: {str(key).upper()})" if str(key).upper() in HAM_KEYS else ''
            raise UserError(f"LightHamHead: unknown ham_kwargs key {key!r}{hint}; known: {', '.join(HAM_KEYS)}")
    args = dict(HAM_KEYS, **ham_kwargs)
    for key in ('MD_S', 'MD_R', 'TRAIN_STEPS', 'EVAL_STEPS'):
        args[key] = check_int('LightHamHead', f'ham_kwargs {key}', args[key])
    if args['SPATIAL'] is not True:
        raise UserError(f"LightHamHead: ham_kwargs SPATIAL={args['SPATIAL']!r} is not supported (only True, the "
                        f"released setting)")
    check_bool('LightHamHead', 'ham_kwargs RAND_INIT', args['RAND_INIT'])
    return args


def _normalized_bases(bases):
    """L2-normalise over D (axis -2) as F.normalize does (norm clamped at 1e-12)."""
    return F.normalize(bases, axis=-2)


class NMF2D(nn.Layer):
    """NMF of the channel x pixel matrix of a feature map (spatial mode, S groups).

    Args:
        channels (int): C of the input (D = C / MD_S).
        ham_kwargs (dict|None): Upper-case settings, see the module docstring.
        inference_bases (str): 'auto', 'fixed' or 'random' (see the module docstring). Default: 'auto'.
    """

    def __init__(self, channels, ham_kwargs=None, inference_bases='auto'):
        super().__init__()
        args = check_ham_kwargs(ham_kwargs)
        check_choice('LightHamHead', 'inference_bases', inference_bases, INFERENCE_BASES)
        self.S, self.R = args['MD_S'], args['MD_R']
        if channels % self.S:
            raise UserError(f"LightHamHead: ham_channels {channels} are not divisible by MD_S {self.S}")
        self.D = channels // self.S
        self.train_steps, self.eval_steps = args['TRAIN_STEPS'], args['EVAL_STEPS']
        self.inv_t = 1  # NMF overrides INV_T with 1 in both releases
        self.rand_init = args['RAND_INIT']
        self.inference_bases = inference_bases
        fixed = np.random.RandomState(0).rand(1, self.S, self.D, self.R).astype('float32')
        fixed /= np.maximum(np.linalg.norm(fixed, axis=2, keepdims=True), 1e-12)
        self.register_buffer('fixed_bases', paddle.to_tensor(fixed), persistable=False)
        if not self.rand_init:
            self.register_buffer('bases', _normalized_bases(paddle.rand([self.S, self.D, self.R])))

    @paddle.jit.not_to_static
    def _initial_bases(self, batch):
        """[B or 1, S, D, R] starting bases for this forward."""
        if not self.rand_init:
            return self.bases.unsqueeze(0)
        if not self.training and self.inference_bases == 'fixed':
            return self.fixed_bases
        return _normalized_bases(paddle.rand([batch, self.S, self.D, self.R]))

    def to_deploy(self, target):
        """The deploy form (``layers/deploy.py``): ``inference_bases='auto'`` becomes 'fixed' (deterministic
        exported programs; see the module docstring); this module (a deploy copy) is switched to it."""
        if self.inference_bases == 'auto':
            self.inference_bases = 'fixed'
        return self

    def _update_coef(self, x, bases, coef):
        numerator = paddle.matmul(x, bases, transpose_x=True)  # [B, S, N, R]
        denominator = paddle.matmul(coef, paddle.matmul(bases, bases, transpose_x=True))
        # eps as an [R] vector, not a scalar (same values): in an exported program with fixed bases the first
        # product has a constant right operand, which OpenVINO's CPU plugin turns into a FullyConnected node; a
        # scalar added to it is fused as a bias that plugin cannot build ("FullyConnected node ... could not create
        # a primitive descriptor"; Paddle Inference's OpenVINO engine then returns an empty output), an [R] one runs
        eps = paddle.full([self.R], _EPS, dtype=denominator.dtype)
        return coef * numerator / (denominator + eps)

    def _update_bases(self, x, bases, coef):
        numerator = paddle.matmul(x, coef)  # [B, S, D, R]
        denominator = paddle.matmul(bases, paddle.matmul(coef, coef, transpose_x=True))
        return bases * numerator / (denominator + _EPS)

    def forward(self, x):
        h, w = spatial_size(x)
        batch = x.shape[0] if x.shape[0] is not None and x.shape[0] > 0 else paddle.shape(x)[0]
        flat = x.reshape([0, self.S, self.D, -1])  # [B, S, D, N]
        bases = self._initial_bases(batch)
        steps = self.train_steps if self.training else self.eval_steps
        frozen = flat.detach()
        coef = F.softmax(self.inv_t * paddle.matmul(frozen, bases, transpose_x=True), axis=-1)
        for _ in range(steps):
            coef = self._update_coef(frozen, bases, coef)
            bases = self._update_bases(frozen, bases, coef)
        bases, coef = bases.detach(), coef.detach()
        coef = self._update_coef(flat, bases, coef)
        out = paddle.matmul(bases, coef, transpose_y=True)  # [B, S, D, N]
        return out.reshape([-1, self.S * self.D, h, w])


@paddle.jit.not_to_static
class Hamburger(nn.Layer):
    """1x1 conv (bias) -> ReLU -> NMF -> 1x1 conv + GroupNorm, added to the input, ReLU.

    Args:
        ham_channels (int): Channels.
        num_groups (int): GroupNorm groups.
        ham_kwargs (dict|None): NMF settings.
        inference_bases (str): See :class:`NMF2D`.
    """

    def __init__(self, ham_channels=512, num_groups=32, ham_kwargs=None, inference_bases='auto'):
        super().__init__()
        self.ham_in = nn.Conv2D(ham_channels, ham_channels, 1)
        self.ham = NMF2D(ham_channels, ham_kwargs, inference_bases)
        self.ham_out = ConvGNAct(ham_channels, ham_channels, 1, num_groups=num_groups)

    def forward(self, x):
        return F.relu(x + self.ham_out(self.ham(F.relu(self.ham_in(x)))))


class LightHamHead(nn.Layer):
    """The light Hamburger decoder: levels resized to the first one's size, concatenated, squeezed (1x1 conv + GN
    + ReLU), Hamburger, aligned (1x1 conv + GN + ReLU), dropout, 1x1 classifier.

    Args:
        in_channels (list[int]): Channels of the levels it reads (three in the release: strides 8, 16, 32).
        num_classes (int): Output classes.
        channels (int): Width after ``align``. Default: 256.
        dropout_rate (float): Dropout before the classifier. Default: 0.1.
        align_corners (bool): Of the bilinear resizing. Default: False.
        ham_channels (int): Width of the Hamburger. Default: 512.
        num_groups (int): GroupNorm groups. Default: 32.
        ham_kwargs (dict|None): NMF settings (upper-case keys).
        inference_bases (str): See :class:`NMF2D`. Default: 'auto'.
    """

    def __init__(self, in_channels, num_classes, channels=256, dropout_rate=0.1, align_corners=False,
                 ham_channels=512, num_groups=32, ham_kwargs=None, inference_bases='auto'):
        super().__init__()
        self.align_corners = align_corners
        self.squeeze = ConvGNAct(sum(in_channels), ham_channels, 1, num_groups=num_groups, act='relu')
        self.hamburger = Hamburger(ham_channels, num_groups, ham_kwargs, inference_bases)
        self.align = ConvGNAct(ham_channels, channels, 1, num_groups=num_groups, act='relu')
        self.dropout = nn.Dropout2D(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.conv_seg = nn.Conv2D(channels, num_classes, 1)

    def forward(self, feats):
        size = spatial_size(feats[0])
        levels = [feats[0]] + [resize(f, size, align_corners=self.align_corners) for f in feats[1:]]
        x = self.hamburger(self.squeeze(paddle.concat(levels, axis=1)))
        return self.conv_seg(self.dropout(self.align(x)))
