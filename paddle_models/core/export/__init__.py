"""Export a segmentation model to a Paddle Inference program + ``deploy.yaml`` (PaddleSeg's deployment format),
ONNX, or a legacy program for Paddle Inference's OpenVINO engine, and check that what was written runs and matches.

One module per concern:

* ``dispatch``: ``export_model``, the entry (argument checks, the format's writer, the atomic folder swap through
  ``core/folders.py: ReplacingWrite``);
* ``deploy``: ``deploy.yaml``'s entries, checked and written;
* ``program``: the Paddle program (the deployed model with its ``output_op``, trace and save, input spec, batch
  norms folded into their convolutions);
* ``tracing``: speed-ups of dy2st's tracing that patch private Paddle objects for the duration of one trace;
* ``checks``: the saved program run with oneDNN and, where that fails or deviates, on the plain CPU kernels;
* ``onnx``: ONNX through paddle2onnx in a child process, checked in ONNX Runtime or OpenVINO;
* ``openvino``: the legacy program for Paddle Inference's OpenVINO engine.

Output (``save_dir``), Paddle format: ``model.json`` (Paddle 3.x, PIR program) or ``model.pdmodel`` (Paddle 2.6,
legacy program), ``model.pdiparams`` (and ``model.pdiparams.info`` on 2.6) and ``deploy.yaml``.
"""
from paddle_models.core.export.deploy import DEPLOY_FILE, OUTPUT_OPS
from paddle_models.core.export.dispatch import FORMATS, export_model
from paddle_models.core.export.onnx import onnx_session

__all__ = ['DEPLOY_FILE', 'FORMATS', 'OUTPUT_OPS', 'export_model', 'onnx_session']
