"""``export_model``: checks the arguments, picks the format's writer (a Paddle program, ONNX or OpenVINO) and
writes its files into a temporary folder that replaces ``save_dir`` only when complete
(``core/folders.py: ReplacingWrite``: the temporary folder beside it, the lock ``.NAME.lock``, the clean-up of
killed exports), so a failure leaves nothing half-written and a previous export intact.
"""
import contextlib
import logging
import os

from paddle_models.core.export.checks import check_program, dynamic_output
from paddle_models.core.export.deploy import (DEPLOY_FILE, OUTPUT_OPS, PARAMS_FILE, check_deploy_classes,
                                              check_input_shape, check_save_dir, check_transforms, output_dtype,
                                              write_deploy)
from paddle_models.core.export.onnx import check_onnx_packages, export_onnx, onnx_result
from paddle_models.core.export.openvino import OPENVINO_PROGRAM, check_openvino, export_openvino
from paddle_models.core.export.program import (deploy_target, find_program_file, folded_deploy_form, random_input,
                                               save_program, unfolded_deploy_form)
from paddle_models.core.folders import ReplacingWrite
from paddle_models.errors import UserError

logger = logging.getLogger(__name__)

FORMATS = ('paddle', 'onnx', 'openvino')


def export_model(model, save_dir, input_shape=None, output_op='argmax', transforms=None, portable=True,
                 fmt='paddle', keep_program=False, class_names=None, palette=None, backend=None):
    """Export ``model`` for Paddle Inference into ``save_dir`` and check it with oneDNN (``fmt='paddle'``), or to
    ONNX and check it with ONNX Runtime (``fmt='onnx'``, see ``core/export/onnx.py``).

    The model's deploy form (``layers/deploy.py: deploy_form``, a copy: ``model`` itself is never traced) is traced
    with ``paddle.jit.to_static`` (full graph) for an input of ``input_shape`` — by default [None, 3, None, None],
    a free batch and spatial size — with the portable resize (unless ``portable`` is False), saved with
    ``paddle.jit.save`` to ``save_dir/model``, and described in ``save_dir/deploy.yaml``.
    Everything is written into a temporary folder beside ``save_dir`` that replaces ``save_dir`` only at the end,
    so a failure leaves nothing half-written (and a previous export in ``save_dir`` intact).

    Then the saved program runs once in Paddle Inference with oneDNN on a small random input, compared with the
    dynamic graph's output; only where that fails or deviates does it also run without oneDNN (see
    ``core/export/checks.py``). A failing plain-CPU run fails the export (RuntimeError). A failing or deviating oneDNN run is
    recorded in deploy.yaml (``enable_mkldnn: false`` and ``mkldnn_error``) and logged as a warning naming the
    cause.

    Args:
        model (nn.Layer): Segmentation model returning a list of logits (PaddleSeg convention). Its train/eval
            state is restored afterwards.
        save_dir (str): Output folder. It must not exist, be empty, or hold a previous export (a deploy.yaml).
        input_shape (list|None): [N, C, H, W] of the exported input; None or -1 entries stay free.
            Default: [None, 3, None, None].
        output_op (str): 'argmax', 'softmax' or 'none', as PaddleSeg's export. Default: 'argmax'.
        transforms (list|None): The validation transforms config (list of dicts with a 'type'), written to
            deploy.yaml for the runner's preprocessing. None writes an empty list (with a warning).
        portable (bool): Resize with the ops Paddle Inference's oneDNN executor accepts under PIR
            (``DeployTarget.portable_resize``; Paddle format only). Default: True.
        fmt (str): 'paddle' (Paddle Inference program), 'onnx' (``model.onnx``) or 'openvino' (a legacy program
            for Paddle Inference's OpenVINO engine; this process must be in legacy mode, see
            :func:`export_openvino`). Default: 'paddle'.
        keep_program (bool): With ``fmt='onnx'``, keep the Paddle program the ONNX model was converted from in
            ``save_dir/paddle`` (model.json/.pdmodel + model.pdiparams), e.g. to compare ONNX Runtime with Paddle
            Inference on the very same graph. Default: False.
        class_names (list|None): A name per class id, written to deploy.yaml (``class_names``) for the runners'
            logs and reports. Default: None (not written).
        palette (list|None): An ``[r, g, b]`` (integers 0..255) per class id, written to deploy.yaml
            (``palette``) for the runners' pseudo-colour PNGs. Default: None (not written). Both lists must have
            one entry per class of the model (its ``num_classes`` attribute, where it has one).
        backend (str|None): With ``fmt='onnx'``: the runtime the export is checked in and deploy.yaml names,
            'onnxruntime' (None: the default) or 'openvino' (the standalone OpenVINO runtime). Other formats run
            in Paddle Inference only: None.

    Returns:
        dict: ``save_dir``, ``model`` (program file), ``params``, ``deploy_yaml`` (absolute paths),
        ``program_format`` ('pir' or 'legacy'), ``input_shape``, ``output_op``, ``onednn`` (bool: the oneDNN check
        passed) and ``onednn_error`` (None or the reason). With ``fmt='onnx'``: ``save_dir``, ``model``
        (model.onnx), ``params`` (None), ``deploy_yaml``, ``program_format`` ('onnx'), ``input_shape``,
        ``output_op``, ``opset``, ``check_error`` (max |onnx - paddle| / max |paddle|, or for argmax the
        fraction of differing pixels), ``backend`` (the runtime checked and named in deploy.yaml) and
        ``paddle_program`` (the kept program's folder, or None). With
        ``fmt='openvino'``: the Paddle keys plus ``openvino`` (True) and ``check_error`` (the engine against the
        same program without it).

    Raises:
        UserError: A bad ``output_op``, ``input_shape``, ``transforms``, ``class_names``, ``palette``,
            ``save_dir`` or ``fmt``; for ONNX also
            paddle2onnx/onnxruntime missing, an op paddle2onnx cannot convert, or an ONNX Runtime run that fails
            or does not match the dynamic model; for OpenVINO a Paddle without the engine, a PIR-mode process, a
            model that cannot be traced as a legacy program, or an engine run that fails or does not match.
    """
    backend = _check_format(fmt, output_op, backend)
    shape = check_input_shape(input_shape)
    transforms = check_transforms(transforms)
    classes = check_deploy_classes(class_names, palette, model)
    save_dir = os.path.abspath(os.fspath(save_dir))
    check_save_dir(save_dir)

    write = ReplacingWrite(save_dir, 'save_dir')  # locked: one writer; the leftovers of killed exports removed
    tmp_dir = write.open()
    try:
        with _export_state(model):
            if fmt == 'onnx':
                info = export_onnx(model, tmp_dir, shape, output_op, transforms, keep_program, classes, backend)
            elif fmt == 'openvino':
                info = export_openvino(model, tmp_dir, shape, output_op, transforms, classes)
            else:
                info = _export_paddle(model, tmp_dir, shape, output_op, transforms, portable, classes)
        write.commit()
    except BaseException:
        write.abort()
        raise
    if fmt == 'onnx':
        return onnx_result(info, save_dir, shape, output_op)
    if fmt == 'openvino':
        return _openvino_result(info, save_dir)
    return _paddle_result(info, save_dir, shape, output_op)


def _check_format(fmt, output_op, backend):
    """The checked ``backend`` (ONNX: 'onnxruntime' by default); a UserError names a bad ``fmt``, ``output_op`` or
    ``backend``, the packages an ONNX export lacks, or what keeps this process from an OpenVINO export."""
    if fmt not in FORMATS:
        raise UserError(f"format: unknown value {fmt!r}; expected one of {', '.join(FORMATS)}")
    if output_op not in OUTPUT_OPS:
        raise UserError(f"output_op: unknown value {output_op!r}; expected one of {', '.join(OUTPUT_OPS)}")
    if fmt == 'onnx':
        backend = backend or 'onnxruntime'
        check_onnx_packages(backend)
    elif backend is not None:
        raise UserError(f"backend: {backend!r} applies to ONNX exports (format onnx); format {fmt} runs in Paddle "
                        f"Inference only")
    if fmt == 'openvino':
        check_openvino()
    return backend


@contextlib.contextmanager
def _export_state(model):
    """``model`` in eval mode (for the dynamic reference the checks compare with); on exit every sublayer's
    train/eval state is as it was."""
    modes = [(layer, layer.training) for layer in model.sublayers(include_self=True)]
    try:
        model.eval()
        yield
    finally:
        model.train() if modes[0][1] else model.eval()  # also Paddle's global tracer mode, as the root had it
        for layer, training in modes:
            layer.training = training


def _export_paddle(model, tmp_dir, shape, output_op, transforms, portable, classes):
    """Trace and check the Paddle program (:func:`_traced_and_checked`) and write deploy.yaml; returns
    ``{'program_file', 'onednn_error'}``."""
    program_file, onednn_error = _traced_and_checked(model, tmp_dir, shape, output_op, portable)
    deploy = {
        'model': program_file,
        'params': PARAMS_FILE,
        'backend': 'paddle_inference',
        'transforms': transforms,
        'input_shape': shape,
        'output_op': output_op,
        'output_dtype': output_dtype(output_op),
        'enable_mkldnn': onednn_error is None,
    }
    if onednn_error is not None:
        deploy['mkldnn_error'] = onednn_error
    write_deploy(tmp_dir, dict(deploy, **classes))
    return {'program_file': program_file, 'onednn_error': onednn_error}


def _traced_and_checked(model, tmp_dir, shape, output_op, portable):
    """Save the program of the model's deploy form (batch norms folded where they fold,
    ``program.folded_deploy_form``) into ``tmp_dir`` and check it with oneDNN (``checks.check_program``); where
    oneDNN fails on the folded program, the unfolded form is traced and checked instead. Returns (program file
    name, None or why oneDNN failed)."""
    check_input = random_input(shape)
    reference = dynamic_output(model, check_input, output_op)
    target = deploy_target('paddle', portable)
    form, folded = folded_deploy_form(model, target, check_input)
    while True:
        op_names = save_program(form, tmp_dir, shape, output_op, target)
        program_file = find_program_file(tmp_dir)
        program_path, params_path = os.path.join(tmp_dir, program_file), os.path.join(tmp_dir, PARAMS_FILE)
        onednn_error = check_program(program_path, params_path, check_input, reference, output_op, op_names)
        if onednn_error is None or not folded:
            return program_file, onednn_error
        # oneDNN has gone wrong on some folded programs (MultiScaleAttention on HarDNet): the unfolded one decides
        logger.info("oneDNN fails on the program with folded batch norms (%s); exporting it unfolded", onednn_error)
        for name in os.listdir(tmp_dir):
            os.remove(os.path.join(tmp_dir, name))
        form, folded = unfolded_deploy_form(model, target), False


def _paddle_result(info, save_dir, shape, output_op):
    """export_model's answer for a Paddle program (see its Returns), after logging how oneDNN fared."""
    program_file, onednn_error = info['program_file'], info['onednn_error']
    if onednn_error is None:
        logger.info("exported %s (%s); Paddle Inference runs it with oneDNN", save_dir, program_file)
    else:
        logger.warning("exported %s (%s), but Paddle Inference with oneDNN fails on it: %s; deploy.yaml records "
                       "enable_mkldnn: false, so deploy/python/infer.py runs it without oneDNN",
                       save_dir, program_file, onednn_error)
    return {
        'save_dir': save_dir,
        'model': os.path.join(save_dir, program_file),
        'params': os.path.join(save_dir, PARAMS_FILE),
        'deploy_yaml': os.path.join(save_dir, DEPLOY_FILE),
        'program_format': 'pir' if program_file.endswith('.json') else 'legacy',
        'input_shape': shape,
        'output_op': output_op,
        'onednn': onednn_error is None,
        'onednn_error': onednn_error,
    }


def _openvino_result(info, save_dir):
    """export_model's answer for an OpenVINO export: ``export_openvino``'s keys plus the files' paths."""
    logger.info("exported %s (%s); Paddle Inference's OpenVINO engine matches its oneDNN/CPU run", save_dir,
                OPENVINO_PROGRAM)
    return dict(info, save_dir=save_dir, model=os.path.join(save_dir, OPENVINO_PROGRAM),
                params=os.path.join(save_dir, PARAMS_FILE), deploy_yaml=os.path.join(save_dir, DEPLOY_FILE))
