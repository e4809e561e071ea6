"""OpenVINO exports (``fmt='openvino'``, ``export.py --format openvino``): a legacy program (``model.pdmodel``) for
Paddle Inference's OpenVINO engine, whose pass works on the legacy IR only (see ``paddle_models.core.legacy``);
``deploy.yaml`` adds ``enable_openvino: true``.
"""
import os
import shutil

import paddle
import yaml

from paddle_models.core.export.checks import agreement, paddle_error_line, predict
from paddle_models.core.export.deploy import DEPLOY_FILE, PARAMS_FILE, SAVE_NAME, output_dtype, write_deploy
from paddle_models.core.export.program import random_input
from paddle_models.errors import UserError
from paddle_models.utils.compat import legacy_mode

OPENVINO_PROGRAM = SAVE_NAME + '.pdmodel'  # a legacy program (see export_openvino)


def check_openvino():
    """A UserError where this process cannot write an OpenVINO export: a Paddle without the engine (2.6), or one
    importing with PIR on (export.py re-runs itself with ``FLAGS_enable_pir_api=0``; see ``core/legacy.py``)."""
    from paddle_models.core.exported import openvino_available

    if not openvino_available():
        raise UserError(f"--format openvino needs Paddle Inference's OpenVINO engine, which Paddle "
                        f"{paddle.__version__} does not have (Paddle 3.x CPU builds do)")
    if not legacy_mode():
        raise UserError("--format openvino needs legacy programs: run it with FLAGS_enable_pir_api=0 set before "
                        "Paddle is imported (export.py does this itself)")


def export_openvino(model, tmp_dir, shape, output_op, transforms, classes=None):
    """Trace the logits as a legacy program (an export of its own, checked with oneDNN as every Paddle export),
    append ``output_op`` as a legacy op, check Paddle Inference's OpenVINO engine against the same program without
    it, write deploy.yaml (``enable_openvino: true``).

    Why a legacy program with logits out and Paddle's own resize ops: see ``paddle_models.core.legacy``. Why the
    check: Paddle's engine logs an error of OpenVINO's run and carries on with empty outputs (LinkNet's program:
    [N, 0, 0] class ids), so an export the engine does not run right fails here instead of in deployment."""
    from paddle_models.core.export.dispatch import export_model  # the package's entry; it calls this module
    from paddle_models.core.legacy import TRACE_ERRORS, append_output_op

    logits_dir = os.path.join(tmp_dir, 'logits')
    try:
        logits = export_model(model, logits_dir, input_shape=shape, output_op='none', transforms=transforms,
                              portable=False)
    except TRACE_ERRORS as err:
        raise UserError(f"OpenVINO export: model {type(model).__name__} cannot be traced as a legacy program "
                        f"(FLAGS_enable_pir_api=0): {paddle_error_line(err)}") from None
    paddle.enable_static()
    try:
        append_output_op(logits_dir, tmp_dir, output_op, paddle.static.Executor(paddle.CPUPlace()))
    finally:
        paddle.disable_static()
    program, params = os.path.join(tmp_dir, OPENVINO_PROGRAM), os.path.join(tmp_dir, PARAMS_FILE)
    data = random_input(shape)
    want = predict(program, params, data, onednn=logits['onednn'])
    try:
        got = predict(program, params, data, onednn=logits['onednn'], openvino=True)
    except Exception as err:  # noqa: BLE001  (Paddle's/OpenVINO's C++ errors: one line)
        raise UserError(f"OpenVINO export: Paddle Inference's OpenVINO engine cannot run model "
                        f"{type(model).__name__} on an input of shape {list(data.shape)}: {paddle_error_line(err)}") \
            from None
    error, differs = agreement(got, want, output_op, 'openvino')
    if differs:
        raise UserError(f"OpenVINO export: Paddle Inference's OpenVINO engine runs model {type(model).__name__} "
                        f"wrongly ({differs}; without it: {list(want.shape)}); export it with --format paddle")
    with open(os.path.join(logits_dir, DEPLOY_FILE), encoding='utf-8') as f:
        deploy = yaml.safe_load(f)['Deploy']
    deploy.update({'model': OPENVINO_PROGRAM, 'params': PARAMS_FILE, 'output_op': output_op,
                   'output_dtype': output_dtype(output_op), 'enable_openvino': True})
    write_deploy(tmp_dir, dict(deploy, **(classes or {})))
    shutil.rmtree(logits_dir)
    return {'program_format': 'legacy', 'input_shape': shape, 'output_op': output_op, 'onednn': logits['onednn'],
            'onednn_error': logits['onednn_error'], 'openvino': True, 'check_error': error}
