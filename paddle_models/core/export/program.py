"""The Paddle program of an export: the deployed model (main output + ``output_op``), its trace and save, and
the batch norms folded into their convolutions before it.

The model is traced with ``paddle.jit.to_static`` for an input of the export's ``input_shape`` inside
``layers/resize.py: portable_resize()`` (unless ``portable`` is False), which builds bilinear and nearest resizing
from ops Paddle Inference's oneDNN executor accepts under PIR (see ``checks``), and saved with ``paddle.jit.save``:
``model.json`` (Paddle 3.x, PIR program) or ``model.pdmodel`` (Paddle 2.6, or legacy mode), ``model.pdiparams``
(and ``model.pdiparams.info`` on 2.6).

Tracing uses dy2st's AST mode (``full_graph=True``; with the default SOT mode Paddle 3.3.1 warns "You can set
full_graph=True, then you can assign input spec"). Its limits show up as export errors in model code, e.g. a
default argument naming a module global (``def f(self, x, depth=LEVELS)``) raises "NameError: name 'LEVELS' is not
defined" in the converted code. The trace runs inside ``tracing.fast_tracing`` (same program, less time).
"""
import copy
import logging
import math
import os

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.core.export.deploy import SAVE_NAME
from paddle_models.core.export.tracing import fast_tracing
from paddle_models.layers.resize import portable_resize
from paddle_models.utils.compat import legacy_mode, legacy_program_apis

logger = logging.getLogger(__name__)

# spatial size of the random input of the oneDNN check where the export leaves it free
CHECK_HW = (64, 96)


class ExportModel(nn.Layer):
    """The model as deployed: its main output, followed by ``output_op`` (PaddleSeg 2.8's WrappedModel semantics).

    Args:
        model (nn.Layer): A segmentation model whose forward returns a list of logits [N, C, H, W].
        output_op (str): 'argmax' (int32 ids [N, H, W]), 'softmax' (probabilities) or 'none' (logits).
    """

    def __init__(self, model, output_op):
        super().__init__()
        self.model = model
        self.output_op = output_op

    def forward(self, x):
        out = self.model(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        if self.output_op == 'argmax':
            out = paddle.argmax(out, axis=1, dtype='int32')
        elif self.output_op == 'softmax':
            out = F.softmax(out, axis=1)
        return out


def save_program(model, out_dir, shape, output_op, portable):
    """Trace and save; returns the op names of the traced program (best effort, for diagnostics)."""
    wrapped = ExportModel(model, output_op)
    wrapped.eval()
    spec = [paddle.static.InputSpec(shape=list(shape), dtype='float32', name='x')]  # it rewrites the list
    static = paddle.jit.to_static(wrapped, input_spec=spec, full_graph=True)
    # legacy_program_apis: Paddle 3.3's C-only APIs (matmul, gelu, ...) in a legacy program (a no-op under PIR)
    with portable_resize(portable), fast_tracing(), legacy_program_apis():
        paddle.jit.save(static, os.path.join(out_dir, SAVE_NAME))
        try:
            program = static.forward.concrete_program.main_program
            ops = program.global_block().ops
            return [op.name() if callable(getattr(op, 'name', None)) else op.type for op in ops]
        except Exception:  # noqa: BLE001  (only used to name a culprit op in a message)
            return []


def find_program_file(out_dir):
    """The program file ``paddle.jit.save`` wrote in ``out_dir``: ``model.json`` (PIR) or ``model.pdmodel``
    (legacy)."""
    for name in (SAVE_NAME + '.json', SAVE_NAME + '.pdmodel'):
        if os.path.isfile(os.path.join(out_dir, name)):
            return name
    raise RuntimeError(f"paddle.jit.save wrote no {SAVE_NAME}.json or {SAVE_NAME}.pdmodel in {out_dir}")


def random_input(shape):
    """The checks' input: standard normal, seeded, of ``shape`` with a free batch of 1 and free H, W of
    ``CHECK_HW``."""
    rng = np.random.default_rng(0)
    n, c, h, w = shape
    dims = [n or 1, c, h or CHECK_HW[0], w or CHECK_HW[1]]
    return rng.standard_normal(dims).astype('float32')


def first_output(out):
    """The main output of a model that returns a list (PaddleSeg's convention) or a tensor."""
    return out[0] if isinstance(out, (list, tuple)) else out


def fold_batch_norms(model, check_input):
    """A copy of ``model`` (eval) in which every ``ConvBNAct`` block (``paddle_models.layers``: Conv2D ->
    BatchNorm2D -> activation, NCHW) computes its convolution and batch norm as one convolution with folded weights
    (``w * g / sqrt(var + eps)``, bias ``(b - mean) * g / sqrt(var + eps) + beta``), or ``model`` itself where it has
    no such block.

    Why: Paddle Inference's oneDNN passes fold each conv + batch norm pair when the predictor is created (a fuse
    pass, then constant folding that runs each pair's arithmetic as a small program); on a model with about a
    thousand of them (MscaleOCRNet on HRNet-W48) that is half of ``create_predictor``. Folded once here, the
    program holds conv2d + bias, which the same passes fuse as before. Only the block's own ``forward`` is
    replaced: code that reads ``conv`` or calls ``norm_act`` (SegFormer's and PSPNet's shortcuts) still sees the
    original layers. The copy must give the original's logits on the check input (max abs difference at most
    1e-4 of their largest magnitude) or the original model is traced instead, with a warning; and where the
    oneDNN check fails on the folded program, ``export_model`` traces and checks the unfolded model instead
    (oneDNN's output deviated on the folded MultiScaleAttention + HarDNet program, for reasons not found yet).
    Legacy programs are traced unfolded (:func:`_legacy_bias_is_reshaped`)."""
    if _legacy_bias_is_reshaped() or not any(_foldable(layer) for layer in model.sublayers(include_self=True)):
        return model
    folded = copy.deepcopy(model)
    folded.eval()
    count = 0
    for layer in folded.sublayers(include_self=True):
        if not _foldable(layer):
            continue
        conv, bn = layer._conv, layer._batch_norm
        out_channels = conv.weight.shape[0]
        gamma = bn.weight.numpy().astype('float64') if bn.weight is not None else np.ones(out_channels)
        beta = bn.bias.numpy().astype('float64') if bn.bias is not None else np.zeros(out_channels)
        scale = gamma / np.sqrt(bn._variance.numpy().astype('float64') + bn._epsilon)
        bias = conv.bias.numpy().astype('float64') if conv.bias is not None else np.zeros(out_channels)
        new = copy.deepcopy(conv)
        new.weight.set_value((conv.weight.numpy().astype('float64') *
                              scale.reshape([-1] + [1] * (len(conv.weight.shape) - 1))).astype('float32'))
        if new.bias is None:
            new.bias = new.create_parameter([out_channels], is_bias=True, dtype='float32')
        new.bias.set_value(((bias - bn._mean.numpy().astype('float64')) * scale + beta).astype('float32'))
        layer._folded_conv = new
        layer.forward = _folded_forward.__get__(layer)
        count += 1
    try:
        with paddle.no_grad():
            x = paddle.to_tensor(check_input)
            want, got = first_output(model(x)).numpy(), first_output(folded(x)).numpy()
        diff = float(np.max(np.abs(got.astype('float64') - want))) if want.size else 0.0
        ok = got.shape == want.shape and math.isfinite(diff) and \
            diff <= 1e-4 * max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    except Exception as err:  # noqa: BLE001  (any failure: trace the model as it is)
        ok, diff = False, err
    if not ok:
        logger.warning("folding the batch norms into the convolutions changed the model's output (%s); "
                       "exporting the model unfolded", diff)
        return model
    logger.debug("folded %d batch norms into their convolutions", count)
    return folded


def _folded_forward(self, x):
    """``ConvBNAct.forward`` of a block whose batch norm :func:`fold_batch_norms` folded into ``_folded_conv``."""
    return self._act(self._folded_conv(x))


def _foldable(layer):
    """Whether ``layer`` is a ``ConvBNAct`` block of a plain NCHW ``Conv2D`` and ``BatchNorm2D``
    (what :func:`fold_batch_norms` folds)."""
    from paddle_models.layers.conv import ConvBNAct

    return (type(layer) is ConvBNAct and type(layer._conv) is nn.Conv2D and type(layer._batch_norm) is nn.BatchNorm2D
            and layer._conv._data_format == 'NCHW' and layer._batch_norm._data_format == 'NCHW')


def _legacy_bias_is_reshaped():
    """Whether the trace will be a legacy program (Paddle 2.6, or Paddle 3 under ``FLAGS_enable_pir_api=0`` as
    tools/quantize.py traces). There a conv's bias is traced as ``reshape2`` of the bias + ``elementwise_add``, which
    Paddle Inference's conv + bias fusion does not match, so a folded block would run as three ops (conv, add,
    activation; in INT8 each behind its own quantize/dequantize: a folded HarDNet's INT8 program ran 1.4x slower
    than the unfolded one), while conv + batch norm + activation fuse into one oneDNN convolution."""
    return legacy_mode()
