"""The Paddle program of an export: the deploy target, the model's deploy form (batch norms folded where they fold),
the deployed model (main output + ``output_op``), its trace and save.

The export never traces the user's model object: :func:`deploy_target` describes what the export writes (a
``layers/deploy.py: DeployTarget``) and ``layers/deploy.py: deploy_form`` gives the copy to trace, every layer in its
deploy form (``to_deploy``). The copy is traced with ``paddle.jit.to_static`` for an input of the export's
``input_shape`` inside ``layers/deploy.py: tracing_for(target)``, which for Paddle Inference with ``portable``
builds bilinear and nearest resizing from ops its oneDNN executor accepts under PIR (see ``checks``), and saved
with ``paddle.jit.save``:
``model.json`` (Paddle 3.x, PIR program) or ``model.pdmodel`` (Paddle 2.6, or legacy mode), ``model.pdiparams``
(and ``model.pdiparams.info`` on 2.6).

Tracing uses dy2st's AST mode (``full_graph=True``; with the default SOT mode Paddle 3.3.1 warns "You can set
full_graph=True, then you can assign input spec"). Its limits show up as export errors in model code, e.g. a
default argument naming a module global (``def f(self, x, depth=LEVELS)``) raises "NameError: name 'LEVELS' is not
defined" in the converted code. The trace runs inside ``tracing.fast_tracing`` (same program, less time).
"""
import dataclasses
import logging
import math
import os

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle_models.core.export.deploy import SAVE_NAME
from paddle_models.core.export.tracing import fast_tracing
from paddle_models.layers.conv import ConvAct
from paddle_models.layers.deploy import DeployTarget, deploy_form, tracing_for
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


def deploy_target(fmt='paddle', portable=True):
    """The ``DeployTarget`` of an export to ``fmt`` ('paddle': a Paddle Inference program, also the legacy program
    of ``--format openvino``; 'onnx': the program paddle2onnx converts) from this process: a legacy program in
    legacy mode (``utils/compat.py: legacy_mode``), else PIR. Batch norms are folded in PIR programs for Paddle
    Inference only (legacy: see :func:`_legacy_bias_is_reshaped`); the portable resize is for Paddle Inference
    with ``portable``."""
    program = 'legacy' if legacy_mode() else 'pir'
    if fmt == 'onnx':
        return DeployTarget(program=program, runtime='onnx')
    return DeployTarget(program=program, runtime='paddle', fold_norms=not _legacy_bias_is_reshaped(),
                        portable_resize=bool(portable))


def save_program(form, out_dir, shape, output_op, target):
    """Trace ``form`` (a model's ``deploy_form`` for ``target``) inside ``tracing_for(target)`` and save; returns
    the op names of the traced program (best effort, for diagnostics)."""
    wrapped = ExportModel(form, output_op)
    wrapped.eval()
    spec = [paddle.static.InputSpec(shape=list(shape), dtype='float32', name='x')]  # it rewrites the list
    static = paddle.jit.to_static(wrapped, input_spec=spec, full_graph=True)
    # legacy_program_apis: Paddle 3.3's C-only APIs (matmul, gelu, ...) in a legacy program (a no-op under PIR)
    with tracing_for(target), fast_tracing(), legacy_program_apis():
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


def folded_deploy_form(model, target, check_input):
    """``(form, folded)``: ``deploy_form(model, target)`` and whether it folded any batch norm (``ConvBNAct.to_deploy``
    with ``target.fold_norms``). A folded form must give the model's logits on the check input (max abs difference
    at most 1e-4 of their largest magnitude), or the unfolded form is returned instead, with a warning; and where
    the oneDNN check fails on the folded program, ``export_model`` traces and checks the unfolded form instead
    (oneDNN's output deviated on the folded MultiScaleAttention + HarDNet program, for reasons not found yet)."""
    form = deploy_form(model, target)
    if not target.fold_norms or not any(isinstance(layer, ConvAct) for layer in form.sublayers(include_self=True)):
        return form, False
    try:
        with paddle.no_grad():
            x = paddle.to_tensor(check_input)
            want, got = first_output(model(x)).numpy(), first_output(form(x)).numpy()
        diff = float(np.max(np.abs(got.astype('float64') - want))) if want.size else 0.0
        ok = got.shape == want.shape and math.isfinite(diff) and \
            diff <= 1e-4 * max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    except Exception as err:  # noqa: BLE001  (any failure: trace the model unfolded)
        ok, diff = False, err
    if not ok:
        logger.warning("folding the batch norms into the convolutions changed the model's output (%s); "
                       "exporting the model unfolded", diff)
        return unfolded_deploy_form(model, target), False
    return form, True


def unfolded_deploy_form(model, target):
    """``deploy_form(model, target)`` with the batch norms left unfolded."""
    return deploy_form(model, dataclasses.replace(target, fold_norms=False))


def _legacy_bias_is_reshaped():
    """Whether the trace will be a legacy program (Paddle 2.6, or Paddle 3 under ``FLAGS_enable_pir_api=0`` as
    tools/quantize.py traces). There a conv's bias is traced as ``reshape2`` of the bias + ``elementwise_add``, which
    Paddle Inference's conv + bias fusion does not match, so a folded block would run as three ops (conv, add,
    activation; in INT8 each behind its own quantize/dequantize: a folded HarDNet's INT8 program ran 1.4x slower
    than the unfolded one), while conv + batch norm + activation fuse into one oneDNN convolution."""
    return legacy_mode()
