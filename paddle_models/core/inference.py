"""The former name of :mod:`paddle_models.core.exported` (running an export folder from Python: ``InferenceModel``).

docs/deployment.md named ``paddle_models.core.inference`` before the engine's modules got distinct names
(``core/logits.py``: a model's logits for one preprocessed image; ``core/exported.py``: an export run from Python;
``core/predict_files.py``: predicting image files), so code written from it keeps working. Importing this module gives
``paddle_models.core.exported`` itself (one module object: its attributes and any patch of them are shared).
New code imports ``paddle_models.core.exported``.
"""
import sys
import warnings

from paddle_models.core import exported

warnings.warn("paddle_models.core.inference is now paddle_models.core.exported", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = exported
